/*
 * dialer.c - dial in the background, again after a back-off (dialer.h).
 *
 * States, under mu: IDLE (a stream was handed out; wait for redial),
 * DIALING (the dial aio is out), WAITING (the sleep aio is out; then
 * DIALING). Only one aio is out at a time, so a redial while DIALING or
 * WAITING does nothing. The back-off doubles after a failed dial up to
 * backoff_max_ns and starts over after a dial that worked. Close marks
 * closing, stops both aios (waiting for their callbacks, which then post
 * nothing), and frees.
 */
#include "dialer.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <nng/supplemental/tls/tls.h>

#include "rpc_impl.h"
#include "stream_url.h"

enum state { IDLE, DIALING, WAITING };

struct dctx__dialer {
    nng_stream_dialer *d;
    struct dctx__dialer_options o; /* immutable; the strings are not kept */
    nng_aio *dial, *wait;
    pthread_mutex_t mu;
    enum state state;   /* protected by mu */
    int64_t backoff_ns; /* the next wait after a failure; protected by mu */
    bool closing;       /* protected by mu */
    atomic_uint_fast64_t dials;
};

static void start_dial(struct dctx__dialer *d)
{
    atomic_fetch_add_explicit(&d->dials, 1, memory_order_relaxed);
    nng_stream_dialer_dial(d->d, d->dial);
}

/* Sleep ns, then dial; mu held. */
static void wait_then_dial(struct dctx__dialer *d, int64_t ns)
{
    d->state = WAITING;
    nng_sleep_aio((nng_duration)((ns + 999999) / 1000000), d->wait);
}

static void dialed(void *arg)
{
    struct dctx__dialer *d = arg;
    int rv = nng_aio_result(d->dial);
    pthread_mutex_lock(&d->mu);
    if (d->closing) {
        pthread_mutex_unlock(&d->mu);
        if (rv == 0) {
            nng_stream *s = nng_aio_get_output(d->dial, 0);
            nng_stream_close(s);
            nng_stream_free(s);
        }
        return;
    }
    if (rv == 0) {
        d->state = IDLE; /* the back-off stays until the owner says it worked */
        pthread_mutex_unlock(&d->mu);
        d->o.on_stream(d->o.owner, nng_aio_get_output(d->dial, 0));
        return;
    }
    int64_t ns = d->backoff_ns;
    d->backoff_ns = ns * 2 < d->o.backoff_max_ns ? ns * 2 : d->o.backoff_max_ns;
    wait_then_dial(d, ns);
    pthread_mutex_unlock(&d->mu);
    if (d->o.on_fail != NULL)
        d->o.on_fail(d->o.owner, dctx__status_from_nng(rv), nng_strerror(rv));
}

static void waited(void *arg)
{
    struct dctx__dialer *d = arg;
    pthread_mutex_lock(&d->mu);
    bool go = !d->closing && nng_aio_result(d->wait) == 0;
    if (go)
        d->state = DIALING;
    pthread_mutex_unlock(&d->mu);
    if (go)
        start_dial(d);
}

void dctx__dialer_redial(struct dctx__dialer *d, bool worked)
{
    pthread_mutex_lock(&d->mu);
    bool go = !d->closing && d->state == IDLE;
    if (go && worked) {
        d->backoff_ns = DCTX__DIAL_BACKOFF_MIN_NS;
        d->state = DIALING;
    } else if (go) {
        int64_t ns = d->backoff_ns;
        d->backoff_ns = ns * 2 < d->o.backoff_max_ns ? ns * 2 : d->o.backoff_max_ns;
        wait_then_dial(d, ns);
        go = false;
    }
    pthread_mutex_unlock(&d->mu);
    if (go)
        start_dial(d);
}

static int set_tls(nng_stream_dialer *sd, const struct dctx__dialer_options *o)
{
    nng_tls_config *cfg;
    int rv = nng_tls_config_alloc(&cfg, NNG_TLS_MODE_CLIENT);
    if (rv != 0)
        return rv;
    if (o->tls_ca_file != NULL)
        rv = nng_tls_config_ca_file(cfg, o->tls_ca_file);
    if (rv == 0 && o->tls_server_name != NULL)
        rv = nng_tls_config_server_name(cfg, o->tls_server_name);
    if (rv == 0 && o->tls_cert_key_file != NULL)
        rv = nng_tls_config_cert_key_file(cfg, o->tls_cert_key_file, NULL);
    if (rv == 0)
        rv = nng_stream_dialer_set_ptr(sd, NNG_OPT_TLS_CONFIG, cfg);
    nng_tls_config_free(cfg); /* the dialer holds its own reference */
    return rv;
}

int dctx__dialer_open(const char *url, const struct dctx__dialer_options *o,
                      struct dctx__dialer **out)
{
    *out = NULL;
    char nurl[DCTX__STREAM_URL_BYTES];
    if (url == NULL || o->on_stream == NULL || dctx__stream_url(url, nurl) != 0)
        return DCTX_INVALID_ARGUMENT;
    struct dctx__dialer *d = calloc(1, sizeof *d);
    if (d == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    d->o = *o;
    d->o.tls_ca_file = d->o.tls_server_name = d->o.tls_cert_key_file = NULL;
    if (d->o.backoff_max_ns < DCTX__DIAL_BACKOFF_MIN_NS)
        d->o.backoff_max_ns = DCTX__DIAL_BACKOFF_MIN_NS;
    d->backoff_ns = DCTX__DIAL_BACKOFF_MIN_NS;
    int rv = nng_stream_dialer_alloc(&d->d, nurl);
    /* Before the first byte: a TLS handshake is several small writes,
     * which Nagle's algorithm would hold back (55 ms a handshake, seen
     * here). ipc has no such option: ignored. */
    if (rv == 0)
        (void)nng_stream_dialer_set_bool(d->d, NNG_OPT_TCP_NODELAY, true);
    if (rv == 0 && strncmp(url, "tls+", 4) == 0)
        rv = set_tls(d->d, o);
    if (rv == 0)
        rv = nng_aio_alloc(&d->dial, dialed, d);
    if (rv == 0)
        rv = nng_aio_alloc(&d->wait, waited, d);
    if (rv != 0) {
        if (d->dial != NULL)
            nng_aio_free(d->dial);
        if (d->d != NULL)
            nng_stream_dialer_free(d->d);
        free(d);
        return dctx__status_from_nng(rv);
    }
    pthread_mutex_init(&d->mu, NULL);
    d->state = DIALING;
    *out = d;
    start_dial(d);
    return 0;
}

uint64_t dctx__dialer_dials(const struct dctx__dialer *d)
{
    return atomic_load_explicit(&((struct dctx__dialer *)d)->dials, memory_order_relaxed);
}

/* nng's part of the close. Not inlined, and not ended by a tail call, so
 * that ThreadSanitizer's reports of nng's own teardown show
 * dctx__dialer_close, which tests/tsan.supp names: libnng has no frame
 * pointers, so a report skips the frame that called into nng and shows its
 * caller. */
__attribute__((noinline)) static void nng_teardown(struct dctx__dialer *d)
{
    nng_stream_dialer_close(d->d);
    nng_aio_stop(d->dial);
    nng_aio_stop(d->wait);
    /* The dialer before the aios: nng reaps both, and in this order its
     * reap lock orders the aios' last use before their teardown. */
    nng_stream_dialer_free(d->d);
    nng_aio_free(d->dial);
    nng_aio_free(d->wait);
    __asm__ volatile("" ::: "memory");
}

void dctx__dialer_close(struct dctx__dialer *d)
{
    if (d == NULL)
        return;
    pthread_mutex_lock(&d->mu);
    d->closing = true;
    pthread_mutex_unlock(&d->mu);
    nng_teardown(d);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
