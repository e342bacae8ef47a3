/*
 * stream_half.c - a stream's messages and credit on one side
 * (stream_half.h).
 */
#include "stream_half.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "context/clock.h"
#include "context/hooks.h"
#include "block_pool.h"

_Static_assert(DCTX_RPC_STREAM_FIRST_WINDOW_MESSAGES <= DCTX_RPC_STREAM_WINDOW_MESSAGES &&
                   DCTX_RPC_STREAM_FIRST_WINDOW_BYTES <= DCTX_RPC_STREAM_WINDOW_BYTES,
               "a window starts at most at its largest");

/* What a grant adds to a window of w (at most `most`): w again, up to
 * most. */
static uint32_t growth(uint32_t w, uint32_t most)
{
    return w < most / 2 ? w : most - w;
}

struct dctx__stream_msg *dctx__msg_alloc(size_t len)
{
    struct dctx__stream_msg *m = dctx__block_alloc(sizeof *m + len);
    if (m != NULL) {
        m->next = NULL;
        m->len = len;
    }
    return m;
}

void dctx__msg_free(struct dctx__stream_msg *m)
{
    if (m != NULL)
        dctx__block_free(m, sizeof *m + m->len);
}

/* An armed receive is due: mu held. Checks armed and delivering first:
 * only then is mine nobody's to touch. */
static bool due(struct dctx__stream_half *h)
{
    return h->armed && !h->delivering &&
           (h->head != NULL || h->mine != NULL || h->peer_done || (h->ended && !h->end_held));
}

/* Take the armed receive for delivery if due (mu held); the kick to run
 * once mu is released, or NULL. */
static void (*take_due(struct dctx__stream_half *h, void **arg))(void *, bool)
{
    if (!due(h))
        return NULL;
    h->armed = false;
    h->delivering = true;
    *arg = h->kick_arg;
    return h->kick;
}

/* Unlock mu, then start the armed receive's delivery if it became due
 * (take_due): on this thread if on_this_thread, else deferred. */
static void unlock_kicking(struct dctx__stream_half *h, bool on_this_thread)
{
    void *karg = NULL;
    void (*kick)(void *, bool) = take_due(h, &karg);
    pthread_mutex_unlock(&h->mu);
    if (kick != NULL)
        kick(karg, on_this_thread);
}

static void wake_all(void *arg)
{
    struct dctx__stream_half *h = arg;
    pthread_mutex_lock(&h->mu);
    h->ended = true;
    pthread_cond_broadcast(&h->cv);
    unlock_kicking(h, false);
}

/* The after-func of the stream's context: its last touch of h says it
 * has returned (fini waits for that). */
static void wake_after_func(void *arg)
{
    struct dctx__stream_half *h = arg;
    wake_all(h);
    atomic_store_explicit(&h->woken, true, memory_order_release);
}

int dctx__stream_half_init(struct dctx__stream_half *h, dctx *ctx)
{
    memset(h, 0, sizeof *h);
    pthread_mutex_init(&h->mu, NULL);
    dctx__cond_init_monotonic(&h->cv);
    h->tail = &h->head;
    h->allow = h->credit = h->window = DCTX_RPC_STREAM_FIRST_WINDOW_MESSAGES;
    h->allow_bytes = h->credit_bytes = h->window_bytes = DCTX_RPC_STREAM_FIRST_WINDOW_BYTES;
    if (ctx != NULL && dctx__can_be_done(ctx) &&
        dctx__after_func_inline(ctx, wake_after_func, h, &h->wake) != 0) {
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    return 0;
}

void dctx__stream_half_fini(struct dctx__stream_half *h)
{
    /* Not stopped: the after-func has run, runs, or is about to (the
     * cancel that took it runs it before it returns): wait for its return,
     * not for the lock, which it may not have taken yet. */
    if (h->wake != NULL && !dctx_after_stop(h->wake))
        while (!atomic_load_explicit(&h->woken, memory_order_acquire))
            sched_yield();
    struct dctx__stream_msg *lists[] = {h->head, h->mine};
    for (size_t i = 0; i < 2; i++) {
        for (struct dctx__stream_msg *m = lists[i], *next; m != NULL; m = next) {
            next = m->next;
            dctx__msg_free(m);
        }
    }
    pthread_cond_destroy(&h->cv);
    pthread_mutex_destroy(&h->mu);
}

bool dctx__stream_half_push(struct dctx__stream_half *h, const void *data, size_t len)
{
    /* Made and filled before the lock: the receiver takes it meanwhile. */
    struct dctx__stream_msg *m = dctx__msg_alloc(len);
    if (m != NULL && len > 0)
        memcpy(m->data, data, len);
    pthread_mutex_lock(&h->mu);
    bool taken = m != NULL && h->allow > 0 && h->allow_bytes > 0;
    if (taken) {
        *h->tail = m;
        h->tail = &m->next;
        h->allow--;
        h->allow_bytes -= (int64_t)len;
        atomic_fetch_add_explicit(&h->received, 1, memory_order_relaxed);
        pthread_cond_broadcast(&h->cv);
    }
    unlock_kicking(h, true);
    if (!taken)
        dctx__msg_free(m); /* past the window: the caller fails the session */
    return taken;
}

void dctx__stream_half_peer_done(struct dctx__stream_half *h)
{
    pthread_mutex_lock(&h->mu);
    h->peer_done = true;
    pthread_cond_broadcast(&h->cv);
    unlock_kicking(h, true);
}

void dctx__stream_half_credit(struct dctx__stream_half *h, uint32_t messages, uint32_t bytes)
{
    pthread_mutex_lock(&h->mu);
    h->credit += messages;
    h->credit_bytes += bytes;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

void dctx__stream_half_end(struct dctx__stream_half *h)
{
    wake_all(h);
}

int dctx__stream_half_take(struct dctx__stream_half *h, struct dctx__stream_msg **m,
                           uint32_t *grant_messages, uint32_t *grant_bytes)
{
    *grant_messages = *grant_bytes = 0;
    if (h->mine == NULL) {
        pthread_mutex_lock(&h->mu);
        int64_t until = h->idle_ns > 0 ? dctx_now() + h->idle_ns : 0;
        bool idle = false;
        while (h->head == NULL && !h->peer_done && !h->ended && !idle) {
            if (until == 0) {
                pthread_cond_wait(&h->cv, &h->mu);
            } else {
                dctx__cond_wait_until(&h->cv, &h->mu, until);
                idle = dctx_now() >= until;
            }
        }
        int rc = h->head != NULL ? 1 : h->peer_done ? 0 : idle ? -2 : -1;
        h->mine = h->head;
        h->head = NULL;
        h->tail = &h->head;
        pthread_mutex_unlock(&h->mu);
        if (rc != 1)
            return rc;
    }
    *m = h->mine;
    h->mine = h->mine->next;
    if (h->mine != NULL)
        __builtin_prefetch(h->mine); /* written on the reader's core: its line is not here */
    h->taken++;
    h->taken_bytes += (*m)->len;
    /* Half a window taken: give it back, and double the window (up to
     * the most) for a receiver that so shows it reads. */
    if (h->taken >= h->window / 2 || h->taken_bytes >= h->window_bytes / 2) {
        uint32_t grow = growth(h->window, DCTX_RPC_STREAM_WINDOW_MESSAGES);
        uint32_t grow_bytes = growth(h->window_bytes, DCTX_RPC_STREAM_WINDOW_BYTES);
        h->window += grow;
        h->window_bytes += grow_bytes;
        /* A Credit's bytes are 32 bits: what a message of nearly 4 GiB
         * passes them by goes with the next grant. */
        uint64_t bytes = h->taken_bytes + grow_bytes;
        *grant_messages = h->taken + grow;
        *grant_bytes = bytes > UINT32_MAX ? UINT32_MAX : (uint32_t)bytes;
        pthread_mutex_lock(&h->mu);
        h->allow += *grant_messages;
        h->allow_bytes += *grant_bytes;
        pthread_mutex_unlock(&h->mu);
        h->taken = 0;
        h->taken_bytes = bytes - *grant_bytes;
    }
    return 1;
}

bool dctx__stream_half_reserve(struct dctx__stream_half *h, size_t len)
{
    if (h->my_credit <= 0 || h->my_credit_bytes <= 0) {
        pthread_mutex_lock(&h->mu);
        while ((h->my_credit + h->credit <= 0 || h->my_credit_bytes + h->credit_bytes <= 0) &&
               !h->ended)
            pthread_cond_wait(&h->cv, &h->mu);
        h->my_credit += h->credit;
        h->my_credit_bytes += h->credit_bytes;
        h->credit = h->credit_bytes = 0;
        pthread_mutex_unlock(&h->mu);
    }
    if (atomic_load_explicit(&h->ended, memory_order_relaxed))
        return false;
    h->my_credit--;
    h->my_credit_bytes -= (int64_t)len;
    atomic_fetch_add_explicit(&h->sent, 1, memory_order_relaxed);
    return true;
}

int dctx__stream_half_arm(struct dctx__stream_half *h, dctx_rpc_stream_recv_fn fn, void *fn_arg,
                          void (*kick)(void *, bool), void *kick_arg)
{
    pthread_mutex_lock(&h->mu);
    int rc = h->end_delivered ? -1 : 0;
    if (!h->armed && !h->end_delivered) {
        h->armed = true;
        h->fn = fn;
        h->fn_arg = fn_arg;
        h->kick = kick;
        h->kick_arg = kick_arg;
        void *karg = NULL;
        rc = take_due(h, &karg) != NULL ? 2 : 1;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

bool dctx__stream_half_next(struct dctx__stream_half *h)
{
    pthread_mutex_lock(&h->mu);
    h->delivering = false;
    void *karg = NULL;
    bool more = take_due(h, &karg) != NULL;
    if (!more && !h->armed)
        atomic_store_explicit(&h->receiving, false, memory_order_release);
    pthread_mutex_unlock(&h->mu);
    return more;
}

void dctx__stream_half_end_delivered(struct dctx__stream_half *h)
{
    pthread_mutex_lock(&h->mu);
    h->end_delivered = true;
    pthread_mutex_unlock(&h->mu);
}

void dctx__stream_half_conclude(struct dctx__stream_half *h)
{
    pthread_mutex_lock(&h->mu);
    h->end_held = false;
    unlock_kicking(h, false);
}

void dctx__stream_half_counts(struct dctx__stream_half *h, uint64_t *received, uint64_t *sent)
{
    *received = atomic_load_explicit(&h->received, memory_order_relaxed);
    *sent = atomic_load_explicit(&h->sent, memory_order_relaxed);
}

void dctx__stream_half_refund(struct dctx__stream_half *h, size_t len)
{
    h->my_credit++;
    h->my_credit_bytes += (int64_t)len;
    atomic_fetch_sub_explicit(&h->sent, 1, memory_order_relaxed);
}
