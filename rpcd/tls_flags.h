/*
 * tls_flags.h - the TLS flags rpcd's commands share: --tls-cert (a
 * certificate and key, PEM: a server's own, a caller's for mutual TLS),
 * --tls-ca and --tls-server-name (how a caller verifies a server), and on
 * `serve` --tls-client-ca (mutual TLS: callers must present a certificate
 * of that CA). File names are kept, not copied: they are argv's.
 */
#ifndef RPCD_TLS_FLAGS_H
#define RPCD_TLS_FLAGS_H

#include <stdbool.h>
#include <stdio.h>

#include <dctx/rpc.h>

struct rpcd_tls {
    const char *cert, *ca, *server_name, *client_ca; /* NULL: not given */
};

/* If flag is one of the TLS flags (--tls-client-ca only when server),
 * store val in t and return 1; another flag: 0. */
int rpcd_tls_flag(const char *flag, const char *val, bool server, struct rpcd_tls *t);

/* t's caller side into channel options: CA, server name, certificate. */
void rpcd_tls_channel(const struct rpcd_tls *t, dctx_rpc_channel_options *o);

/* The flags' lines for a --help; server: serve's (with --tls-client-ca). */
void rpcd_tls_usage(FILE *out, bool server);

#endif
