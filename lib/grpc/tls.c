/*
 * tls.c - TLS credentials from PEM files (tls.h).
 *
 * A file with both the chain and its key is given to gRPC twice, as the
 * chain and as the key: OpenSSL's PEM readers under gRPC take the blocks
 * of their own kind and skip the others. The files are checked here for
 * those blocks, so a wrong file is refused when the gateway opens rather
 * than at each caller's handshake.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/dctx.h>

#include "tls.h"

/* The whole file at path, NUL-terminated, into *out (to free). */
static int read_pem(const char *path, char **out)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return errno == ENOENT   ? DCTX_NOT_FOUND
               : errno == EACCES ? DCTX_PERMISSION_DENIED
                                 : DCTX_INVALID_ARGUMENT;
    char *buf = malloc(DCTX__GRPC_PEM_BYTES_MAX + 1);
    size_t n = buf != NULL ? fread(buf, 1, DCTX__GRPC_PEM_BYTES_MAX + 1, f) : 0;
    bool failed = buf != NULL && ferror(f);
    fclose(f);
    if (buf == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    if (failed || n > DCTX__GRPC_PEM_BYTES_MAX || memchr(buf, '\0', n) != NULL) {
        explicit_bzero(buf, n); /* it may have held a key */
        free(buf);
        return DCTX_INVALID_ARGUMENT;
    }
    buf[n] = '\0';
    *out = buf;
    return 0;
}

/* A buffer that held a private key, wiped first. */
static void free_secret(char *s)
{
    if (s != NULL)
        explicit_bzero(s, strlen(s));
    free(s);
}

static bool has_certificate(const char *pem)
{
    return strstr(pem, "-----BEGIN CERTIFICATE-----") != NULL;
}

/* "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY"; not an encrypted
 * one: gRPC takes no passphrase. */
static bool has_private_key(const char *pem)
{
    if (strstr(pem, "-----BEGIN ENCRYPTED PRIVATE KEY-----") != NULL ||
        strstr(pem, "Proc-Type: 4,ENCRYPTED") != NULL)
        return false;
    const char *begin = strstr(pem, "-----BEGIN ");
    for (; begin != NULL; begin = strstr(begin + 1, "-----BEGIN ")) {
        const char *end = strstr(begin + 11, "-----");
        const char *key = strstr(begin + 11, "PRIVATE KEY-----");
        if (end != NULL && key != NULL && key + strlen("PRIVATE KEY") == end)
            return true;
    }
    return false;
}

/* The chain and key of path, checked. */
static int read_cert_key(const char *path, char **out)
{
    int rc = read_pem(path, out);
    if (rc == 0 && (!has_certificate(*out) || !has_private_key(*out))) {
        free_secret(*out);
        *out = NULL;
        rc = DCTX_INVALID_ARGUMENT;
    }
    return rc;
}

static int read_ca(const char *path, char **out)
{
    int rc = read_pem(path, out);
    if (rc == 0 && !has_certificate(*out)) {
        free(*out);
        *out = NULL;
        rc = DCTX_INVALID_ARGUMENT;
    }
    return rc;
}

int dctx__grpc_server_tls(const char *cert_key_file, const char *client_ca_file,
                          grpc_server_credentials **out)
{
    *out = NULL;
    char *cert_key = NULL, *ca = NULL;
    int rc = read_cert_key(cert_key_file, &cert_key);
    if (rc == 0 && client_ca_file != NULL)
        rc = read_ca(client_ca_file, &ca);
    if (rc == 0) {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = cert_key, .cert_chain = cert_key};
        *out = grpc_ssl_server_credentials_create_ex(
            ca, &pair, 1,
            ca != NULL ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                       : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
            NULL);
        if (*out == NULL)
            rc = DCTX_RESOURCE_EXHAUSTED;
    }
    free_secret(cert_key);
    free(ca);
    return rc;
}

int dctx__grpc_channel_tls(const char *ca_file, const char *cert_key_file,
                           grpc_channel_credentials **out)
{
    *out = NULL;
    char *ca = NULL, *cert_key = NULL;
    int rc = ca_file != NULL ? read_ca(ca_file, &ca) : 0;
    if (rc == 0 && cert_key_file != NULL)
        rc = read_cert_key(cert_key_file, &cert_key);
    if (rc == 0) {
        grpc_ssl_pem_key_cert_pair pair = {.private_key = cert_key, .cert_chain = cert_key};
        *out = grpc_ssl_credentials_create(ca, cert_key != NULL ? &pair : NULL, NULL, NULL);
        if (*out == NULL)
            rc = DCTX_RESOURCE_EXHAUSTED;
    }
    free(ca);
    free_secret(cert_key);
    return rc;
}
