/*
 * listen.c - a server's listeners, and the guard that re-creates one
 * that stopped accepting.
 *
 * Why: in nng 1.5.2 (fixed in 1.6.0, nng issue #1518) a peer that closes
 * its connection during the SP handshake makes the transport fail the
 * listener's accept with NNG_ECLOSED, which the listener takes for its own
 * shutdown: it never accepts again. Seen here on ipc after a few hundred
 * half-open connections.
 *
 * How: nng counts that failure in the listener's "other" error statistic
 * (with the rarer errors it survives). Every GUARD_PERIOD_MS the guard reads
 * the statistic of each listener; when it has grown, the guard dials the
 * listener itself, and only if the probe's pipe does not reach the server's
 * socket within PROBE_WAIT_MS does it close the listener and listen again
 * on the same URL (closing a listener also closes the pipes it accepted, so
 * a healthy listener is left alone). The probe must be seen from the
 * server's side: a dead listener's transport still completes handshakes,
 * so the dialer believes it is connected while the socket never gets the
 * pipe. Probing only after an anomaly keeps the server's work and
 * statistics clean in normal operation; the probe's own pipe is marked so
 * its going away is not counted as a lost peer.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rpc_impl.h" /* nng.h first: the protocol headers need it */

#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>

#include "context/alloc.h"
#include "context/clock.h"
#include "listen.h"

#define GUARD_PERIOD_MS 200
#define PROBE_WAIT_MS 500
/* nng counts an ordinary disconnect as an "other" error too, so the count
 * grows in normal operation: probe a listener at most this often. */
#define PROBE_MIN_INTERVAL_NS (2000 * 1000000LL)

struct listener {
    char *url;
    nng_listener l;
    uint64_t other_seen; /* the "other" error count last looked at */
    int64_t last_probe;  /* dctx_now() of the last probe */
};

static int start_listener(struct dctx__listeners *ls, struct listener *li)
{
    int rv = nng_listener_create(&li->l, ls->sock, li->url);
    if (rv == 0)
        nng_listener_set_size(li->l, NNG_OPT_RECVMAXSZ, ls->recv_max_bytes);
    if (rv == 0 && strncmp(li->url, "tls+", 4) == 0 && ls->tls_cert_key_file != NULL)
        rv = nng_listener_set_string(li->l, NNG_OPT_TLS_CERT_KEY_FILE, ls->tls_cert_key_file);
    if (rv == 0)
        rv = nng_listener_start(li->l, 0);
    if (rv != 0 && li->l.id != 0)
        nng_listener_close(li->l);
    return rv;
}

void dctx__listeners_init(struct dctx__listeners *ls, nng_socket sock, size_t recv_max_bytes,
                          const char *tls_cert_key_file)
{
    memset(ls, 0, sizeof *ls);
    ls->sock = sock;
    ls->recv_max_bytes = recv_max_bytes;
    ls->tls_cert_key_file = tls_cert_key_file;
    pthread_mutex_init(&ls->mu, NULL);
    dctx__cond_init_monotonic(&ls->cv);
}

int dctx__listeners_add(struct dctx__listeners *ls, const char *url)
{
    struct listener *li = calloc(1, sizeof *li);
    if (li == NULL || (li->url = strdup(url)) == NULL) {
        free(li);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    int rv = start_listener(ls, li);
    if (rv != 0) {
        free(li->url);
        free(li);
        return dctx__status_from_nng(rv);
    }
    pthread_mutex_lock(&ls->mu);
    struct listener **grown = realloc(ls->items, (ls->n + 1) * sizeof *grown);
    if (grown != NULL) {
        ls->items = grown;
        ls->items[ls->n++] = li;
    }
    pthread_mutex_unlock(&ls->mu);
    if (grown == NULL) {
        nng_listener_close(li->l);
        free(li->url);
        free(li);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    return 0;
}

/* The listener's "other" error count, or 0 when nng keeps no statistics. */
static uint64_t other_errors(nng_stat *all, nng_listener l)
{
    nng_stat *mine = all != NULL ? nng_stat_find_listener(all, l) : NULL;
    nng_stat *other = mine != NULL ? nng_stat_find(mine, "other") : NULL;
    return other != NULL ? nng_stat_value(other) : 0;
}

void dctx__listeners_pipe_added(struct dctx__listeners *ls, uint32_t pipe)
{
    /* While a probe is out, the next new pipe is taken to be the probe's.
     * A real peer arriving at that moment is then not counted as lost when
     * it leaves: a counter off by one, rarely, against a false alarm. */
    if (atomic_load_explicit(&ls->probing, memory_order_acquire))
        atomic_store_explicit(&ls->probe_pipe, pipe, memory_order_relaxed);
    atomic_fetch_add_explicit(&ls->pipes_added, 1, memory_order_release);
}

bool dctx__listeners_is_probe(struct dctx__listeners *ls, uint32_t pipe)
{
    uint32_t probe = pipe;
    return atomic_compare_exchange_strong(&ls->probe_pipe, &probe, 0);
}

/* Does url still deliver new connections to the server's socket? */
static bool accepts(struct dctx__listeners *ls, const char *url)
{
    if (strncmp(url, "tls+", 4) == 0)
        return true; /* a probe would need the server's trust; not guarded */
    nng_socket s;
    if (nng_req0_open(&s) != 0)
        return true; /* when we cannot probe, do not tear a listener down */
    uint_fast64_t before = atomic_load_explicit(&ls->pipes_added, memory_order_acquire);
    atomic_store_explicit(&ls->probing, true, memory_order_release);
    /* A blocking dial returns once the probe's side of the connection is
     * set up, so the close below never meets a dial in progress (nng
     * 1.5.2's ipc dialer has a race there). */
    bool up = nng_dial(s, url, NULL, 0) != 0; /* cannot dial: leave it */
    for (int waited = 0; !up && waited < PROBE_WAIT_MS; waited += 5) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
        up = atomic_load_explicit(&ls->pipes_added, memory_order_acquire) != before;
    }
    atomic_store_explicit(&ls->probing, false, memory_order_release);
    nng_close(s);
    return up;
}

/* One round of the guard. */
static void check(struct dctx__listeners *ls)
{
    nng_stat *all = NULL;
    if (nng_stats_get(&all) != 0)
        return;
    pthread_mutex_lock(&ls->mu);
    for (size_t i = 0; i < ls->n; i++) {
        struct listener *li = ls->items[i];
        uint64_t other = other_errors(all, li->l);
        if (other <= li->other_seen || dctx_now() - li->last_probe < PROBE_MIN_INTERVAL_NS)
            continue; /* nothing new, or probed a moment ago: look again later */
        li->other_seen = other;
        li->last_probe = dctx_now();
        if (accepts(ls, li->url))
            continue;
        nng_listener_close(li->l);
        li->other_seen = 0; /* a new listener counts from zero */
        if (start_listener(ls, li) == 0)
            atomic_fetch_add_explicit(&ls->restarts, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&ls->mu);
    nng_stats_free(all);
}

static void *guard_main(void *arg)
{
    struct dctx__listeners *ls = arg;
    pthread_mutex_lock(&ls->mu);
    while (!ls->stopping) {
        dctx__cond_wait_until(&ls->cv, &ls->mu, dctx_now() + GUARD_PERIOD_MS * 1000000LL);
        if (ls->stopping)
            break;
        pthread_mutex_unlock(&ls->mu);
        check(ls);
        pthread_mutex_lock(&ls->mu);
    }
    pthread_mutex_unlock(&ls->mu);
    return NULL;
}

int dctx__listeners_guard(struct dctx__listeners *ls)
{
    if (dctx__thread_start(&ls->guard, guard_main, ls) != 0)
        return DCTX_RESOURCE_EXHAUSTED;
    ls->guarded = true;
    return 0;
}

void dctx__listeners_fini(struct dctx__listeners *ls)
{
    if (ls->guarded) {
        pthread_mutex_lock(&ls->mu);
        ls->stopping = true;
        pthread_cond_signal(&ls->cv);
        pthread_mutex_unlock(&ls->mu);
        pthread_join(ls->guard, NULL);
    }
    for (size_t i = 0; i < ls->n; i++) {
        free(ls->items[i]->url);
        free(ls->items[i]);
    }
    free(ls->items);
    pthread_cond_destroy(&ls->cv);
    pthread_mutex_destroy(&ls->mu);
}
