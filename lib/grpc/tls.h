/*
 * tls.h - TLS credentials for the gateway and the gRPC channels, from
 * PEM files named as dctx's own TLS options name them (one file with the
 * certificate chain and its key; a CA file).
 */
#ifndef DCTX_GRPC_TLS_H
#define DCTX_GRPC_TLS_H

#include <grpc/grpc_security.h>

/* The largest PEM file read: certificate chains and CA bundles are a few
 * hundred KiB at most. */
#define DCTX__GRPC_PEM_BYTES_MAX (1024 * 1024)

/* dctx__grpc_server_tls makes server credentials presenting the chain and
 * key in cert_key_file; with client_ca_file (else NULL), callers must
 * present a certificate signed by one of its CAs. Returns 0, or
 * DCTX_NOT_FOUND / DCTX_PERMISSION_DENIED (a file), DCTX_INVALID_ARGUMENT
 * (not PEM with a certificate and a private key, a CA file without a
 * certificate, over DCTX__GRPC_PEM_BYTES_MAX), DCTX_RESOURCE_EXHAUSTED. */
int dctx__grpc_server_tls(const char *cert_key_file, const char *client_ca_file,
                          grpc_server_credentials **out);

/* dctx__grpc_channel_tls makes channel credentials that trust the CAs of
 * ca_file (NULL: gRPC's default roots) and present the chain and key of
 * cert_key_file when the server asks (NULL: none). Returns as
 * dctx__grpc_server_tls. */
int dctx__grpc_channel_tls(const char *ca_file, const char *cert_key_file,
                           grpc_channel_credentials **out);

#endif /* DCTX_GRPC_TLS_H */
