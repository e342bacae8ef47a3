/*
 * acceptor.c - a stream listener that accepts forever (acceptor.h).
 *
 * Two aios: accept, always posted while the acceptor is open, and pause,
 * which sleeps DCTX__ACCEPT_RETRY_MS after a failed accept before the next
 * one is posted (at the descriptor limit an accept fails at once, and
 * posting the next straight away would spin a core). Close marks closing,
 * closes the listener (the accept under way fails with ECLOSED), then
 * stops both aios, which waits for their callbacks and keeps a callback
 * from posting again; only then frees.
 */
#include "acceptor.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/supplemental/tls/tls.h>

#include "rpc_impl.h"
#include "stream_url.h"

struct dctx__acceptor {
    nng_stream_listener *l;
    struct dctx__acceptor_options o; /* immutable */
    nng_aio *accept, *pause;
    atomic_bool closing;
    atomic_uint_fast64_t failures;
    char url[NNG_MAXADDRLEN + 16];
};

static void post_accept(struct dctx__acceptor *a)
{
    if (!atomic_load(&a->closing))
        nng_stream_listener_accept(a->l, a->accept);
}

static void accepted(void *arg)
{
    struct dctx__acceptor *a = arg;
    int rv = nng_aio_result(a->accept);
    if (rv == 0) {
        nng_stream *s = nng_aio_get_output(a->accept, 0);
        if (a->o.on_stream != NULL) {
            a->o.on_stream(a->o.owner, s);
        } else {
            nng_stream_close(s);
            nng_stream_free(s);
        }
        post_accept(a);
        return;
    }
    if (atomic_load(&a->closing) || rv == NNG_ECLOSED)
        return;
    atomic_fetch_add_explicit(&a->failures, 1, memory_order_relaxed);
    nng_sleep_aio(DCTX__ACCEPT_RETRY_MS, a->pause); /* then paused() accepts again */
}

static void paused(void *arg)
{
    post_accept(arg);
}

static int set_tls(nng_stream_listener *l, const char *cert_key_file, const char *client_ca_file)
{
    nng_tls_config *cfg;
    int rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_SERVER);
    if (rv != 0)
        return rv;
    if (cert_key_file != NULL)
        rv = nng_tls_config_cert_key_file(cfg, cert_key_file, NULL);
    if (rv == 0 && client_ca_file != NULL) { /* mutual TLS */
        rv = nng_tls_config_ca_file(cfg, client_ca_file);
        if (rv == 0)
            rv = nng_tls_config_auth_mode(cfg, NNG_TLS_AUTH_MODE_REQUIRED);
    }
    if (rv == 0)
        rv = nng_stream_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, cfg);
    nng_tls_config_free(cfg); /* the listener holds its own reference */
    return rv;
}

/* The URL with the bound port, for a tcp URL (tcp://host:0 binds any). */
static void resolve_url(struct dctx__acceptor *a, const char *url)
{
    snprintf(a->url, sizeof a->url, "%s", url);
    int port = 0;
    const char *colon = strrchr(url, ':');
    if (strstr(url, "tcp://") == NULL || colon == NULL ||
        nng_stream_listener_get_int(a->l, NNG_OPT_TCP_BOUND_PORT, &port) != 0)
        return;
    snprintf(a->url, sizeof a->url, "%.*s:%d", (int)(colon - url), url, port);
}

int dctx__acceptor_open(const char *url, const struct dctx__acceptor_options *o,
                        struct dctx__acceptor **out)
{
    *out = NULL;
    char nurl[DCTX__STREAM_URL_BYTES];
    if (url == NULL || strlen(url) >= NNG_MAXADDRLEN || dctx__stream_url(url, nurl) != 0)
        return DCTX_INVALID_ARGUMENT;
    struct dctx__acceptor *a = calloc(1, sizeof *a);
    if (a == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    a->o = *o;
    int rv = nng_stream_listener_alloc(&a->l, nurl);
    if (rv == 0) /* as dialer.c: for the TLS handshake's small writes */
        (void)nng_stream_listener_set_bool(a->l, NNG_OPT_TCP_NODELAY, true);
    if (rv == 0 && strncmp(url, "tls+", 4) == 0)
        rv = set_tls(a->l, o->tls_cert_key_file, o->tls_client_ca_file);
    if (rv == 0)
        rv = nng_stream_listener_listen(a->l);
    if (rv == 0)
        rv = nng_aio_alloc(&a->accept, accepted, a);
    if (rv == 0)
        rv = nng_aio_alloc(&a->pause, paused, a);
    if (rv != 0) {
        if (a->accept != NULL)
            nng_aio_free(a->accept);
        if (a->l != NULL)
            nng_stream_listener_free(a->l);
        free(a);
        return dctx__status_from_nng(rv);
    }
    resolve_url(a, url);
    *out = a;
    post_accept(a);
    return 0;
}

const char *dctx__acceptor_url(const struct dctx__acceptor *a)
{
    return a->url;
}

uint64_t dctx__acceptor_failures(const struct dctx__acceptor *a)
{
    return atomic_load_explicit(&((struct dctx__acceptor *)a)->failures, memory_order_relaxed);
}

/* nng's part of the close, kept a frame of its own as in dialer.c, so
 * that tests/tsan.supp can name dctx__acceptor_close. */
__attribute__((noinline)) static void nng_teardown(struct dctx__acceptor *a)
{
    nng_stream_listener_close(a->l);
    nng_aio_stop(a->accept);
    nng_aio_stop(a->pause);
    nng_stream_listener_free(a->l); /* before the aios: as in dialer.c */
    nng_aio_free(a->accept);
    nng_aio_free(a->pause);
    __asm__ volatile("" ::: "memory");
}

void dctx__acceptor_close(struct dctx__acceptor *a)
{
    if (a == NULL)
        return;
    atomic_store(&a->closing, true);
    nng_teardown(a);
    free(a);
}
