/*
 * listen.h - a server's listeners and their guard (listen.c).
 * Never installed.
 */
#ifndef DCTX_RPC_LISTEN_H
#define DCTX_RPC_LISTEN_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <nng/nng.h>

struct listener;

struct dctx__listeners {
    nng_socket sock;
    size_t recv_max_bytes;
    const char *tls_cert_key_file;
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* wakes the guard to stop; CLOCK_MONOTONIC */
    struct listener **items; /* protected by mu */
    size_t n;                /* protected by mu */
    bool stopping;           /* protected by mu */
    bool guarded;
    pthread_t guard;
    atomic_uint_fast64_t restarts;    /* listeners re-created */
    atomic_uint_fast64_t pipes_added; /* pipes the socket got (ADD_POST) */
    atomic_bool probing;              /* a probe is out */
    atomic_uint_least32_t probe_pipe; /* the probe's pipe at the server, 0: none */
};

void dctx__listeners_init(struct dctx__listeners *ls, nng_socket sock, size_t recv_max_bytes,
                          const char *tls_cert_key_file);
/* Listen on url. Returns 0, DCTX_INVALID_ARGUMENT, DCTX_UNAVAILABLE or
 * DCTX_RESOURCE_EXHAUSTED. */
int dctx__listeners_add(struct dctx__listeners *ls, const char *url);
/* Start the guard thread. */
int dctx__listeners_guard(struct dctx__listeners *ls);
/* The server socket's pipe events, for the probe: a pipe was added; and
 * is this pipe (going away) the probe's? (Then it is not a lost peer.) */
void dctx__listeners_pipe_added(struct dctx__listeners *ls, uint32_t pipe);
bool dctx__listeners_is_probe(struct dctx__listeners *ls, uint32_t pipe);
/* Stop the guard and forget the listeners (nng_close of the socket closes
 * them; call this before it). */
void dctx__listeners_fini(struct dctx__listeners *ls);

#endif /* DCTX_RPC_LISTEN_H */
