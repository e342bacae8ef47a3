/*
 * acceptor.h - a server's listener for the session protocol: an nng stream
 * listener on one URL (ipc, tcp, tls+tcp) that accepts connections
 * forever and hands each stream to the owner. A failed accept (out of
 * descriptors, say) is retried after a pause, never in a spin. Never
 * installed.
 */
#ifndef DCTX_RPC_ACCEPTOR_H
#define DCTX_RPC_ACCEPTOR_H

#include <stdint.h>

#include <nng/nng.h>

struct dctx__acceptor;

/* A connection came: the owner owns s from here. From an nng callback, one
 * at a time; it must not block or close the acceptor. */
typedef void (*dctx__acceptor_fn)(void *owner, nng_stream *s);

struct dctx__acceptor_options {
    const char *tls_cert_key_file;  /* tls+tcp: PEM with the certificate and key */
    const char *tls_client_ca_file; /* tls+tcp: require client certificates of this CA */
    dctx__acceptor_fn on_stream;
    void *owner;
};

/* How long a failed accept waits before the next. */
#define DCTX__ACCEPT_RETRY_MS 100

/* dctx__acceptor_open listens on url and starts accepting. Returns 0, or
 * the status nng's failure maps to (dctx__status_from_nng: a bad URL or
 * certificate INVALID_ARGUMENT, a missing path NOT_FOUND, an address in
 * use UNAVAILABLE, ...), with *out NULL. */
int dctx__acceptor_open(const char *url, const struct dctx__acceptor_options *o,
                        struct dctx__acceptor **out);

/* The URL to dial it at: url, with the port a tcp://...:0 was given. */
const char *dctx__acceptor_url(const struct dctx__acceptor *a);

/* Accepts that failed (and were retried after DCTX__ACCEPT_RETRY_MS). */
uint64_t dctx__acceptor_failures(const struct dctx__acceptor *a);

/* dctx__acceptor_close stops accepting and waits for its callbacks; the
 * streams it handed out are the owner's. Not from an nng callback. NULL
 * is fine. */
void dctx__acceptor_close(struct dctx__acceptor *a);

#endif /* DCTX_RPC_ACCEPTOR_H */
