/*
 * stream.c - sending and receiving on a stream, the same on both sides
 * (stream.h): credit first, then the frame; a message taken gives back
 * credit once half a window was taken (stream_half.c).
 */
#include "stream_impl.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/hooks.h"
#include "session.h"

/* A message's data lives in a message's block (stream_half.h): the one
 * the peer's frame was copied into, or one made here. */
int dctx_rpc_message_set(dctx_rpc_message *m, const void *data, size_t len, int64_t budget_ns)
{
    m->data = NULL;
    m->len = 0;
    m->budget_ns = budget_ns;
    struct dctx__stream_msg *block = dctx__msg_alloc(len);
    if (block == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    if (len > 0)
        memcpy(block->data, data, len);
    m->data = block->data;
    m->len = len;
    return 0;
}

void dctx_rpc_message_free(dctx_rpc_message *m)
{
    if (m == NULL)
        return;
    if (m->data != NULL)
        dctx__msg_free((struct dctx__stream_msg *)((unsigned char *)m->data -
                                                   offsetof(struct dctx__stream_msg, data)));
    m->data = NULL;
    m->len = 0;
}

void dctx__stream_take_frame(dctx_rpc_stream *st, const Dctx__Wire__Frame *f,
                             struct dctx__session *s)
{
    if (st == NULL) {
        dctx__session_fail(s, DCTX_INVALID_ARGUMENT, "a stream frame for a unary call");
    } else if (f->body_case == DCTX__WIRE__FRAME__BODY_MESSAGE) {
        const Dctx__Wire__StreamMessage *m = f->message;
        if (!dctx__stream_half_push(&st->half, m->has_payload ? m->payload.data : NULL,
                                    m->has_payload ? m->payload.len : 0))
            dctx__session_fail(s, DCTX_RESOURCE_EXHAUSTED,
                               "a stream message past the credit granted");
    } else if (f->body_case == DCTX__WIRE__FRAME__BODY_HALF_CLOSE) {
        dctx__stream_half_peer_done(&st->half);
    } else {
        dctx__stream_half_credit(&st->half, f->credit->messages, f->credit->bytes);
    }
}

void dctx__stream_event_counts(dctx_rpc_stream *st, dctx_rpc_event *ev)
{
    ev->stream = st != NULL;
    if (st != NULL)
        dctx__stream_half_counts(&st->half, &ev->messages_received, &ev->messages_sent);
}

void dctx__stream_grant(dctx_rpc_stream *st, uint32_t messages, uint32_t bytes)
{
    if (messages == 0 && bytes == 0)
        return;
    Dctx__Wire__Credit c = DCTX__WIRE__CREDIT__INIT;
    c.has_messages = messages > 0;
    c.messages = messages;
    c.has_bytes = bytes > 0;
    c.bytes = bytes;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CREDIT;
    f.credit = &c;
    (void)st->ops->send(st->owner, &f); /* a stream that ended needs none */
}

int dctx_rpc_stream_send(dctx_rpc_stream *st, const void *data, size_t len)
{
    if (st == NULL || (data == NULL && len > 0))
        return DCTX_INVALID_ARGUMENT;
    if (st->send_closed)
        return DCTX_FAILED_PRECONDITION;
    if (!dctx__stream_half_reserve(&st->half, len)) {
        int end = st->ops->end_code(st->owner);
        return end == DCTX__STREAM_OVER ? DCTX_FAILED_PRECONDITION : end;
    }
    Dctx__Wire__StreamMessage m = DCTX__WIRE__STREAM_MESSAGE__INIT;
    m.has_payload = 1;
    m.payload.data = (uint8_t *)data;
    m.payload.len = len;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_MESSAGE;
    f.message = &m;
    int rc = st->ops->send(st->owner, &f);
    if (rc != 0)
        dctx__stream_half_refund(&st->half, len);
    return rc == DCTX__STREAM_OVER ? DCTX_FAILED_PRECONDITION : rc;
}

int dctx_rpc_stream_set_idle_timeout(dctx_rpc_stream *st, int64_t idle_ns)
{
    if (st == NULL || idle_ns < 0)
        return DCTX_INVALID_ARGUMENT;
    pthread_mutex_lock(&st->half.mu);
    st->half.idle_ns = idle_ns;
    pthread_mutex_unlock(&st->half.mu);
    return 0;
}

/* A receive, by whoever holds the receiver's role. */
static bool recv_taking(dctx_rpc_stream *st, dctx_rpc_message *out)
{
    out->data = NULL;
    out->len = 0;
    out->budget_ns = -1;
    struct dctx__stream_msg *m = NULL;
    uint32_t grant = 0, grant_bytes = 0;
    int rc = dctx__stream_half_take(&st->half, &m, &grant, &grant_bytes);
    dctx__stream_grant(st, grant, grant_bytes);
    if (rc == -2) { /* idle: the stream ends as by its deadline */
        char why[64];
        snprintf(why, sizeof why, "stream idle for %lld ms",
                 (long long)(st->half.idle_ns / 1000000));
        dctx__cancel_err(st->ctx, DCTX_DEADLINE_EXCEEDED, DCTX_DEADLINE_EXCEEDED, why);
    }
    if (rc != 1)
        return false;
    int64_t deadline;
    out->budget_ns = dctx_rpc_deadline(st->ctx, &deadline) ? deadline - dctx_now() : -1;
    out->len = m->len;
    out->data = m->data; /* the block becomes the caller's: no copy */
    return true;
}

bool dctx_rpc_stream_recv(dctx_rpc_stream *st, dctx_rpc_message *out)
{
    /* No stream, or an asynchronous receive is armed. */
    if (st == NULL || atomic_exchange_explicit(&st->half.receiving, true, memory_order_acquire)) {
        out->data = NULL;
        out->len = 0;
        out->budget_ns = -1;
        return false;
    }
    bool got = recv_taking(st, out);
    atomic_store_explicit(&st->half.receiving, false, memory_order_release);
    return got;
}

/* Deferred deliveries hand the reaper back after this many messages, so
 * that a busy stream never holds it from other work. */
#define DEFERRED_BATCH 64

/* The stream whose callback this thread runs: it may arm the next
 * receive without taking the receiver's role again. */
static _Thread_local dctx_rpc_stream *delivering_now;

static void deliver_deferred(void *arg);

/* Deliver the due asynchronous receive, and each one its callback armed
 * again while messages wait (stream_half.h: fn). Each armed receive
 * holds the owner: st stays valid through its callback. */
static void deliver(dctx_rpc_stream *st, bool deferred)
{
    for (int n = 0;; n++) {
        if (deferred && n == DEFERRED_BATCH &&
            dctx__reaper_defer(&st->deliver_later, deliver_deferred, st))
            return; /* the due receive goes on at the reaper's tail */
        dctx_rpc_message m;
        bool got = recv_taking(st, &m); /* due: never waits */
        if (!got)
            dctx__stream_half_end_delivered(&st->half);
        dctx_rpc_stream *outer = delivering_now;
        delivering_now = st;
        dctx_rpc_stream_recv_fn fn = st->half.fn; /* the callback may arm the next */
        fn(st->half.fn_arg, st, got ? &m : NULL);
        delivering_now = outer;
        bool more = dctx__stream_half_next(&st->half);
        st->ops->drop(st->owner); /* may free st unless more holds it */
        if (!more)
            return;
    }
}

static void deliver_deferred(void *arg)
{
    deliver(arg, true);
}

static void kick(void *arg, bool on_this_thread)
{
    dctx_rpc_stream *st = arg;
    /* The reaper runs from the stream's channel or server open on: a
     * deferral does not fail. */
    if (on_this_thread || !dctx__reaper_defer(&st->deliver_later, deliver_deferred, st))
        deliver(st, false);
}

int dctx_rpc_stream_recv_start(dctx_rpc_stream *st, dctx_rpc_stream_recv_fn fn, void *arg)
{
    if (st == NULL || fn == NULL)
        return DCTX_INVALID_ARGUMENT;
    /* The receiver's role: the delivery's own, or taken here. */
    bool inside = delivering_now == st;
    if (!inside && atomic_exchange_explicit(&st->half.receiving, true, memory_order_acquire))
        return DCTX_FAILED_PRECONDITION;
    st->ops->hold(st->owner);
    int rc = dctx__stream_half_arm(&st->half, fn, arg, kick, st);
    if (rc <= 0) {
        st->ops->drop(st->owner);
        if (!inside)
            atomic_store_explicit(&st->half.receiving, false, memory_order_release);
        return DCTX_FAILED_PRECONDITION;
    }
    if (rc == 2)
        kick(st, false); /* due already: never inside this call */
    return 0;
}
