/*
 * dialer.h - a channel's connector for the session protocol: dials one URL
 * (ipc, tcp, tls+tcp) in the background, hands each connected stream to
 * the owner, and dials again, after a back-off, when told the connection
 * ended or when a dial fails. Never installed.
 */
#ifndef DCTX_RPC_DIALER_H
#define DCTX_RPC_DIALER_H

#include <stdbool.h>
#include <stdint.h>

#include <nng/nng.h>

struct dctx__dialer;

/* A connection: the owner owns s from here. From an nng callback, until
 * dctx__dialer_close returns. Over tls+tcp the dial completes with the TCP
 * connection: nng runs the handshake with the first I/O, so a server that
 * fails verification ends the session on the stream, not the dial. */
typedef void (*dctx__dialer_fn)(void *owner, nng_stream *s);
/* A dial failed (the next one comes after the back-off): a status code
 * and nng's words. From an nng callback. */
typedef void (*dctx__dialer_fail_fn)(void *owner, int code, const char *why);

/* The back-off starts here and doubles after each failed dial. */
#define DCTX__DIAL_BACKOFF_MIN_NS 10000000LL /* 10 ms */

struct dctx__dialer_options {
    const char *tls_ca_file;       /* tls+tcp: the CA to verify the server with */
    const char *tls_server_name;   /* tls+tcp: the name the server must bear */
    const char *tls_cert_key_file; /* tls+tcp: a certificate to present (mutual TLS) */
    int64_t backoff_max_ns;        /* the longest wait between dials; at least the minimum */
    dctx__dialer_fn on_stream;
    dctx__dialer_fail_fn on_fail; /* may be NULL */
    void *owner;
};

/* dctx__dialer_open checks url and the TLS files and starts dialing.
 * Returns 0, or (with *out NULL) the status nng's failure maps to: a bad
 * URL or CA file INVALID_ARGUMENT, a missing file NOT_FOUND, no memory
 * RESOURCE_EXHAUSTED. The strings are copied. */
int dctx__dialer_open(const char *url, const struct dctx__dialer_options *o,
                      struct dctx__dialer **out);

/* dctx__dialer_redial: the connection it handed out ended; dial again, at
 * once if it worked (the protocol's hellos were exchanged), else after the
 * back-off, which keeps growing: a peer that accepts and drops every
 * connection is not redialed in a spin. From any thread, callbacks
 * included; nothing while a dial is under way. */
void dctx__dialer_redial(struct dctx__dialer *d, bool worked);

/* Dials made (the owner's on_fail sees those that failed). */
uint64_t dctx__dialer_dials(const struct dctx__dialer *d);

/* dctx__dialer_close stops dialing and waits for its callbacks. Not from
 * an nng callback. NULL is fine. */
void dctx__dialer_close(struct dctx__dialer *d);

#endif /* DCTX_RPC_DIALER_H */
