/*
 * client.c - channels and calls on the session protocol
 * (proto/PROTOCOL.md).
 *
 * Design
 *   A channel dials its URL in the background (dialer.c) and keeps at most
 *   one connection, a session (session.c), in use: calls go on it once
 *   both hellos are exchanged. When it ends, every call on it fails
 *   UNAVAILABLE and the dialer dials again. A call is sent at most once:
 *   nothing is resent on another connection.
 *
 *   A call is named on its connection by a call id. The channel's map
 *   (call_map.h) holds every id in flight: from the Call frame until its
 *   Reply has been read and, if a Cancel was sent, until its CancelAck has
 *   been read too, so a late answer never lands on a new call. The map,
 *   the connection in use and every call's progress (sent, replied, ack
 *   due, decided) are guarded by the channel's mutex mu.
 *
 *   One path ends a call: decide() sets its result, once, under mu, on
 *   whichever thread learned the end first (the reply's reader, the thread
 *   that canceled its context, the end of its connection, the channel's
 *   close); then conclude() hands it to its finisher, which runs finish()
 *   (counters, events, the done callback, the wake of handle waiters):
 *     - a blocking call (dctx_rpc_call_raw) is finished by its caller's
 *       own thread, woken from its futex word: one wake per call;
 *     - an asynchronous call by the deciding thread when that is the
 *       library's (the reply's reader, a connection's end, a closing
 *       channel); when it is the user's, inside dctx_cancel, by the
 *       reaper thread if finishing runs user code (a done callback or an
 *       event hook), so none runs inside dctx_cancel, else right there.
 *
 *   Cancel: the call's context gets an after-func of the library's own
 *   kind, run by the canceling thread (no executor hand-off: it is the
 *   cancel's latency on every hop). It sends the Cancel frame straight
 *   into the connection's send queue (never blocks: conn.h) and decides
 *   the call with the context's error. The CancelAck, read later, is the
 *   cancel's outcome.
 *
 *   Streams (stream.h): a stream is a call whose handle also holds a half
 *   (stream_half.h: messages and credit) and a context of its own, which
 *   release cancels. Its end is the call's: decide() ends the half's
 *   waits (lock order: mu, then the half's), and finish() concludes it,
 *   so an armed receive gets the end only once the status is known. Its
 *   frames go on the connection in use, under mu, while it is not decided.
 *
 * Who frees what
 *   References to a call: one for the machinery (dropped by finish), one
 *   for the caller's handle, one for a pending after-func, one while its id
 *   is in the map, and a stream's: one while a stream frame is handed to
 *   it and one per armed receive, until its callback returned. The
 *   channel counts calls not yet finished (in_flight): close waits for it
 *   to reach 0. An after-func that finds its call not yet finishing
 *   (under the call's own mutex) counts itself in too, so the channel
 *   stays while it uses it.
 *   Connections are closed, never inside an nng callback, by the reaper
 *   thread after they end, or by the channel's close (whichever claims
 *   one first, under mu); close waits until every one is gone.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/clock.h"
#include "context/futex.h"
#include "context/hooks.h"
#include "rpc_impl.h"

#include <dctx/trace.h>

#include "call_map.h"
#include "channel_set.h"
#include "dialer.h"
#include "frame.h"
#include "reaper.h"
#include "session.h"
#include "stream_impl.h"
#include "text.h"
#include "wire_impl.h"

/* How long the callee remembers a cancel for a call without a deadline. */
#define TOMBSTONE_NO_DEADLINE_US (60 * 1000000ULL)
/* How long a closing channel lets pushed cancels go out. */
#define CANCEL_FLUSH_NS (250 * 1000000LL)

struct conn {
    dctx_rpc_channel *ch;
    struct dctx__session *s;
    bool claimed;      /* someone is closing it; protected by ch->mu */
    bool draining;     /* the server drains: no new calls on it; protected by ch->mu */
    struct conn *next; /* ch->conns; protected by ch->mu */
    struct dctx__reap_item reap;
};

struct dctx_rpc_channel {
    /* A channel over several URLs is a set of channels of one URL each,
     * and nothing else of this is used (channel_set.h); NULL otherwise. */
    struct dctx__channel_set *set;
    struct dctx__dialer *dialer;
    char *url;
    dctx_rpc_channel_options opts;
    pthread_mutex_t mu;
    pthread_cond_t cv;         /* a connection is ready; in_flight reached 0; a
                                    connection was freed. CLOCK_MONOTONIC */
    struct conn *ready;        /* the connection calls go on; protected by mu */
    struct conn *conns;        /* every connection not yet freed; protected by mu */
    struct dctx__call_map ids; /* the ready connection's ids in flight; protected by mu */
    uint32_t last_id;          /* protected by mu */
    char last_error[128];      /* why the last dial or connection failed; protected by mu */
    /* The last connection failed its handshake (calls fail at once
     * UNAUTHENTICATED then: waiting would not change the keys); protected
     * by mu. */
    bool refused;
    unsigned char server_key[DCTX_PUBLIC_KEY_BYTES]; /* opts.server_key points here */
    /* Calls not yet finished. Counted without the mutex: a call counts
     * itself in, then checks closing; close sets closing, then waits for
     * the count (both seq_cst, so one sees the other). */
    atomic_int in_flight;
    atomic_bool closing; /* set once, under mu */
    atomic_uint_fast64_t calls, not_sent_budget, cancels_pushed, bad_frames;
    /* The keepalive interval new connections use: the option's, doubled
     * each time a server says the pings come too often (as gRPC's clients
     * do), so a channel set below a server's minimum does not flap. */
    atomic_int keepalive_ms;
    atomic_uint_fast64_t by_code[DCTX_CODE_MAX + 1];
    atomic_uint_fast64_t outcomes[DCTX_RPC_CANCEL_OUTCOMES];
};

struct dctx_rpc_handle {
    atomic_int refs;
    dctx_rpc_channel *ch;
    dctx *ctx;           /* retained until the call is finished */
    int64_t deadline_ns; /* the context's, or DCTX_DEADLINE_NONE */
    uint8_t token[DCTX_TOKEN_BYTES];
    dctx_after *after; /* the cancel trigger; NULL if ctx can never be done */
    dctx_rpc_done_fn done;
    void *done_arg;
    char *method; /* for events; NULL without an event hook */
    int64_t started_ns;
    bool waited; /* a blocking call: its caller's thread finishes it */
    /* A stream's messages both ways (NULL for a unary call), with the
     * context it made to cancel the stream on release (stream->ctx); kept
     * until the handle is freed. */
    dctx_rpc_stream *stream;

    /* Progress, protected by ch->mu. */
    uint32_t id;  /* on the connection; 0 until sent */
    bool in_map;  /* id is in ch->ids */
    bool replied; /* its Reply was read (or will never come) */
    bool ack_due; /* a Cancel was sent; its CancelAck not read yet */
    bool decided; /* result is set */
    bool pushed;  /* a Cancel was sent: CANCEL_PUSHED is due */
    /* Calls taken off a connection that ended (or a closing channel): the
     * list, and whether this call was decided by the taking. */
    struct dctx_rpc_handle *gone_next;
    bool gone_decided, gone_ack_due;

    pthread_mutex_t mu; /* guards finishing, for the after-func */
    bool finishing;

    dctx_rpc_result result;      /* written once, by decide */
    int pushed_cause;            /* the cancel's cause, for CANCEL_PUSHED */
    int64_t pushed_ns;           /* when the Cancel frame was queued */
    char *pushed_msg;            /* its message; made only with an event hook */
    atomic_int decided_word;     /* futex word: 1 once decided (a blocking call's wake) */
    atomic_int ended;            /* futex word: 1 once done has returned */
    atomic_int sleepers;         /* threads asleep on one of the words */
    atomic_int outcome;          /* futex word: enum dctx_rpc_cancel_outcome */
    struct dctx__reap_item reap; /* to be finished on the reaper thread */
};

static void finish(dctx_rpc_handle *call);

/* ===== Small helpers ===== */

static void count(atomic_uint_fast64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

static void call_unref(dctx_rpc_handle *call)
{
    if (atomic_fetch_sub_explicit(&call->refs, 1, memory_order_acq_rel) != 1)
        return;
    dctx_rpc_result_free(&call->result);
    free(call->pushed_msg);
    free(call->method);
    if (call->stream != NULL) {
        dctx__stream_half_fini(&call->stream->half);
        dctx_release(call->stream->ctx);
        free(call->stream);
    }
    pthread_mutex_destroy(&call->mu);
    free(call);
}

/* Count one call in; false (not counted) if the channel closes. */
static bool in_flight_enter(dctx_rpc_channel *ch)
{
    atomic_fetch_add(&ch->in_flight, 1);
    if (!atomic_load(&ch->closing))
        return true;
    atomic_fetch_sub(&ch->in_flight, 1); /* close waits with a timeout: no wake owed */
    return false;
}

/* Count one out. The last touch of ch: once the count is 0 a closing
 * channel may be freed. */
static void in_flight_leave(dctx_rpc_channel *ch)
{
    if (!atomic_load(&ch->closing)) {
        atomic_fetch_sub(&ch->in_flight, 1);
        return;
    }
    pthread_mutex_lock(&ch->mu);
    if (atomic_fetch_sub(&ch->in_flight, 1) == 1)
        pthread_cond_broadcast(&ch->cv);
    pthread_mutex_unlock(&ch->mu);
}

/* Wait for *word to leave value, up to timeout_ns (< 0: forever). The
 * sleepers count spares set_word a system call when nobody waits: the
 * waiter counts itself (seq_cst) before its futex checks the word, the
 * setter stores (seq_cst) before it reads the count, so one of them sees
 * the other. */
static bool wait_word(atomic_int *word, atomic_int *sleepers, int value, int64_t timeout_ns)
{
    int64_t until = timeout_ns < 0 ? INT64_MAX : dctx_now() + timeout_ns;
    while (atomic_load_explicit(word, memory_order_acquire) == value) {
        if (dctx_now() >= until)
            return false;
        atomic_fetch_add_explicit(sleepers, 1, memory_order_seq_cst);
        dctx__futex_wait(word, value, until);
        atomic_fetch_sub_explicit(sleepers, 1, memory_order_relaxed);
    }
    return true;
}

static void set_word(atomic_int *word, atomic_int *sleepers, int value)
{
    atomic_store_explicit(word, value, memory_order_seq_cst);
    if (atomic_load_explicit(sleepers, memory_order_seq_cst) != 0)
        dctx__futex_wake(word, INT_MAX);
}

static void set_outcome(dctx_rpc_handle *call, int outcome)
{
    count(&call->ch->outcomes[outcome]);
    set_word(&call->outcome, &call->sleepers, outcome);
}

/* ===== Deciding and finishing a call ===== */

/* Set the call's result, once; ch->mu held. res is moved into the call. */
static bool decide(dctx_rpc_handle *call, dctx_rpc_result *res)
{
    if (call->decided) {
        dctx_rpc_result_free(res);
        return false;
    }
    call->decided = true;
    call->result = *res;
    if (call->stream != NULL) /* its waits end; messages read already stay to be taken */
        dctx__stream_half_end(&call->stream->half);
    return true;
}

/* Free the call's id once nothing more will come for it; ch->mu held.
 * Returns true if the map's reference is the caller's to drop. */
static bool release_id(dctx_rpc_handle *call)
{
    if (!call->in_map || !call->replied || call->ack_due)
        return false;
    dctx__call_map_remove(&call->ch->ids, call->id);
    call->in_map = false;
    return true;
}

static void finish_deferred(void *arg)
{
    finish(arg);
}

/* Hand a decided call to its finisher (see Design); no lock held.
 * user_thread: the deciding thread is the user's (a cancel, a close). */
static void conclude(dctx_rpc_handle *call, bool user_thread)
{
    /* finish runs user code only through done and the event hook. */
    bool user_code = call->done != NULL || call->ch->opts.on_event != NULL;
    if (call->waited)
        set_word(&call->decided_word, &call->sleepers, 1);
    else if (!user_thread || !user_code || !dctx__reaper_defer(&call->reap, finish_deferred, call))
        finish(call); /* the reaper runs from open on: the last case does not happen */
}

/* The CANCEL_PUSHED event, from the finisher's thread. */
static void report_pushed(dctx_rpc_handle *call)
{
    dctx_rpc_channel *ch = call->ch;
    dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CANCEL_PUSHED,
                         .method = call->method,
                         .code = call->pushed_cause,
                         .message = call->pushed_msg != NULL ? call->pushed_msg : "",
                         .elapsed_ns = dctx_now() - call->pushed_ns};
    ch->opts.on_event(ch->opts.event_arg, &ev);
}

static void report_end(dctx_rpc_handle *call)
{
    dctx_rpc_channel *ch = call->ch;
    dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CALL_END,
                         .method = call->method,
                         .code = call->result.code,
                         .message = call->result.message,
                         .elapsed_ns = dctx_now() - call->started_ns,
                         .ctx = call->ctx};
    dctx__stream_event_counts(call->stream, &ev);
    dctx_trace t;
    if (dctx_trace_get(call->ctx, &t)) {
        ev.trace_id = t.trace_id;
        ev.span_id = t.span_id;
        ev.parent_span_id = t.parent_span_id[0] ? t.parent_span_id : NULL;
    }
    ch->opts.on_event(ch->opts.event_arg, &ev);
}

/* Run once per call, with no lock held, after decide. */
static void finish(dctx_rpc_handle *call)
{
    dctx_rpc_channel *ch = call->ch;
    pthread_mutex_lock(&call->mu);
    call->finishing = true;
    pthread_mutex_unlock(&call->mu);
    /* The after-func's reference: ours to drop if we stopped it; if it ran
     * or runs, it drops its own. Stopping also frees the handle. (add()
     * stores call->after before the after-func can run.) */
    if (call->after != NULL && dctx_after_stop(call->after))
        call_unref(call);
    int code = call->result.code;
    count(&ch->by_code[code >= 0 && code <= DCTX_CODE_MAX ? code : DCTX_UNKNOWN]);
    call->result.cancel_outcome = atomic_load_explicit(&call->outcome, memory_order_acquire);
    if (ch->opts.on_event != NULL) {
        pthread_mutex_lock(&ch->mu);
        bool pushed = call->pushed;
        pthread_mutex_unlock(&ch->mu);
        if (pushed)
            report_pushed(call);
        report_end(call);
    }
    if (call->done != NULL)
        call->done(call->done_arg, &call->result);
    /* No lock: past finishing, nobody reads ctx (context_done and
     * dctx_rpc_handle_cancel_outcome look at finishing first). */
    dctx_release(call->ctx);
    call->ctx = NULL;
    set_word(&call->ended, &call->sleepers, 1);
    /* Now a receive armed on the stream gets its end (on the reaper): its
     * callback may call dctx_rpc_stream_finish, which returns at once. */
    if (call->stream != NULL)
        dctx__stream_half_conclude(&call->stream->half);
    in_flight_leave(ch);
    call_unref(call);
}

/* ===== Frames from the server ===== */

static void result_from_reply(const Dctx__Wire__Reply *r, dctx_rpc_result *res)
{
    int code = r->has_code ? (int)r->code : DCTX_UNKNOWN;
    if (code < 0 || code > DCTX_CODE_MAX)
        code = DCTX_UNKNOWN;
    bool payload = code == DCTX_OK && r->has_payload;
    dctx__result_set(res, code, r->message, payload ? r->payload.data : NULL,
                     payload ? r->payload.len : 0);
}

/* A frame naming an id not in flight: the server broke the protocol. */
static void unknown_id(struct conn *c, const char *kind, uint32_t id)
{
    char why[96];
    snprintf(why, sizeof why, "a %s for call id %u, which is not in flight", kind, id);
    dctx__session_fail(c->s, DCTX_INVALID_ARGUMENT, why);
}

static void on_reply(struct conn *c, const Dctx__Wire__Frame *f)
{
    dctx_rpc_channel *ch = c->ch;
    dctx_rpc_result res;
    result_from_reply(f->reply, &res); /* before the lock: it allocates */
    pthread_mutex_lock(&ch->mu);
    if (ch->ready != c) { /* the channel is closing: its calls are ended already */
        pthread_mutex_unlock(&ch->mu);
        dctx_rpc_result_free(&res);
        return;
    }
    dctx_rpc_handle *call = dctx__call_map_find(&ch->ids, f->call_id);
    if (call == NULL || call->replied) {
        pthread_mutex_unlock(&ch->mu);
        dctx_rpc_result_free(&res);
        unknown_id(c, "reply", f->call_id);
        return;
    }
    call->replied = true;
    bool decided = decide(call, &res);
    bool unref = release_id(call);
    pthread_mutex_unlock(&ch->mu);
    if (decided)
        conclude(call, false);
    if (unref)
        call_unref(call);
}

static void on_cancel_ack(struct conn *c, const Dctx__Wire__Frame *f)
{
    dctx_rpc_channel *ch = c->ch;
    pthread_mutex_lock(&ch->mu);
    if (ch->ready != c) { /* the channel is closing: its cancels are settled already */
        pthread_mutex_unlock(&ch->mu);
        return;
    }
    dctx_rpc_handle *call = dctx__call_map_find(&ch->ids, f->call_id);
    if (call == NULL || !call->ack_due) {
        pthread_mutex_unlock(&ch->mu);
        unknown_id(c, "cancel_ack", f->call_id);
        return;
    }
    call->ack_due = false;
    bool unref = release_id(call);
    if (!unref) /* the map still holds it, but a close may drop that at once */
        atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&ch->mu);
    const Dctx__Wire__CancelAck *a = f->cancel_ack;
    int outcome = a->has_outcome && (int)a->outcome >= DCTX_RPC_CANCEL_STOPPED &&
                          (int)a->outcome <= DCTX_RPC_CANCEL_TOO_LATE
                      ? (int)a->outcome
                      : DCTX_RPC_CANCEL_UNREACHED;
    set_outcome(call, outcome);
    call_unref(call); /* the map's, or the one taken above */
}

/* A stream's message or credit from the server. One for a call no longer
 * in flight is dropped; one for a unary call, or a message past the
 * credit granted, is a protocol error. */
static void on_stream_frame(struct conn *c, const Dctx__Wire__Frame *f)
{
    dctx_rpc_channel *ch = c->ch;
    pthread_mutex_lock(&ch->mu);
    dctx_rpc_handle *call = ch->ready == c ? dctx__call_map_find(&ch->ids, f->call_id) : NULL;
    if (call != NULL)
        atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&ch->mu);
    if (call == NULL)
        return;
    dctx__stream_take_frame(call->stream, f, c->s);
    call_unref(call);
}

static bool got_frame(void *owner, struct dctx__session *s, Dctx__Wire__Frame *f)
{
    (void)s;
    if (f->body_case == DCTX__WIRE__FRAME__BODY_MESSAGE ||
        f->body_case == DCTX__WIRE__FRAME__BODY_CREDIT) {
        on_stream_frame(owner, f);
    } else if (f->body_case == DCTX__WIRE__FRAME__BODY_REPLY) {
        on_reply(owner, f);
    } else if (f->body_case == DCTX__WIRE__FRAME__BODY_CANCEL_ACK) {
        on_cancel_ack(owner, f);
    } else if (f->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY) {
        const Dctx__Wire__GoAway *g = f->goaway;
        struct conn *c = owner;
        int ms = atomic_load_explicit(&c->ch->keepalive_ms, memory_order_relaxed);
        if (g->has_min_ping_interval_ms && ms > 0 && ms < INT32_MAX / 2) /* pinged too often */
            atomic_store_explicit(&c->ch->keepalive_ms, ms * 2, memory_order_relaxed);
    } else if (f->body_case == DCTX__WIRE__FRAME__BODY_DRAIN) {
        struct conn *c = owner;
        pthread_mutex_lock(&c->ch->mu);
        c->draining = true; /* calls in flight go on; new ones fail at once */
        pthread_mutex_unlock(&c->ch->mu);
    }
    /* Pongs and GoAways need nothing here: the session ends after a
     * GoAway. */
    return false;
}

/* ===== Connections ===== */

static void conn_ready(void *owner, struct dctx__session *s, const struct dctx__session_peer *peer)
{
    (void)s;
    (void)peer;
    struct conn *c = owner;
    dctx_rpc_channel *ch = c->ch;
    pthread_mutex_lock(&ch->mu);
    if (!c->claimed && !atomic_load(&ch->closing)) {
        ch->ready = c;
        ch->refused = false;
        pthread_cond_broadcast(&ch->cv);
    }
    pthread_mutex_unlock(&ch->mu);
}

static void conn_free(struct conn *c)
{
    dctx_rpc_channel *ch = c->ch;
    pthread_mutex_lock(&ch->mu);
    for (struct conn **p = &ch->conns; *p != NULL; p = &(*p)->next) {
        if (*p == c) {
            *p = c->next;
            break;
        }
    }
    pthread_cond_broadcast(&ch->cv);
    pthread_mutex_unlock(&ch->mu);
    free(c);
}

static void conn_close_deferred(void *arg)
{
    struct conn *c = arg;
    dctx__session_close(c->s);
    conn_free(c);
}

/* What take_calls does to each call, and the list it builds. */
struct taking {
    int code;
    const char *msg;
    dctx_rpc_handle *list;
};

static void take_one(void *p, void *arg)
{
    dctx_rpc_handle *call = p;
    struct taking *t = arg;
    call->in_map = false;
    call->replied = true;
    call->gone_ack_due = call->ack_due;
    call->ack_due = false;
    call->gone_decided = false;
    if (!call->decided) {
        dctx_rpc_result res;
        dctx__result_set(&res, t->code, t->msg, NULL, 0);
        call->gone_decided = decide(call, &res);
    }
    call->gone_next = t->list;
    t->list = call;
}

/* Take every call out of the map, deciding those still waiting with code
 * and msg; ch->mu held. Returns them as a list (gone_next), each with the
 * map's reference, for settle_calls. */
static dctx_rpc_handle *take_calls(dctx_rpc_channel *ch, int code, const char *msg)
{
    struct taking t = {.code = code, .msg = msg, .list = NULL};
    dctx__call_map_clear(&ch->ids, take_one, &t);
    return t.list;
}

/* Conclude what take_calls decided, settle cancels left unanswered, and
 * drop the map's references; no lock held. */
static void settle_calls(dctx_rpc_handle *list, bool user_thread)
{
    while (list != NULL) {
        dctx_rpc_handle *call = list;
        list = call->gone_next;
        if (call->gone_ack_due)
            set_outcome(call, DCTX_RPC_CANCEL_UNREACHED);
        if (call->gone_decided)
            conclude(call, user_thread);
        call_unref(call);
    }
}

/* The connection ended (the server went away, a read or write failed, or
 * a protocol error): its calls fail, it is closed on the reaper thread,
 * and the dialer dials again. From an nng callback. */
static void conn_ended(void *owner, struct dctx__session *s, int code, const char *why)
{
    struct conn *c = owner;
    dctx_rpc_channel *ch = c->ch;
    /* At most one per session: a protocol error ends it. */
    atomic_fetch_add_explicit(&ch->bad_frames, dctx__session_bad_frames(s), memory_order_relaxed);
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX];
    snprintf(msg, sizeof msg, "connection to %s lost (%s)", ch->url, why);
    pthread_mutex_lock(&ch->mu);
    bool worked = ch->ready == c;
    /* Over TLS, a connection that ends before the hellos is almost always
     * its handshake refused (this side's checks of the server's certificate,
     * or the server's of ours): say so, nng's words alone ("Connection
     * shutdown") do not. */
    if (!worked && code != DCTX_UNAUTHENTICATED && strncmp(ch->url, "tls+", 4) == 0)
        snprintf(ch->last_error, sizeof ch->last_error, "TLS handshake failed: %s", why);
    else
        snprintf(ch->last_error, sizeof ch->last_error, "%s", why);
    if (!worked && code == DCTX_UNAUTHENTICATED) {
        ch->refused = true;
        pthread_cond_broadcast(&ch->cv); /* calls waiting for it fail now */
    }
    dctx_rpc_handle *gone = NULL;
    if (worked) {
        ch->ready = NULL;
        gone = take_calls(ch, DCTX_UNAVAILABLE, msg);
    }
    bool close_here = !c->claimed;
    c->claimed = true;
    /* Under mu: a close that set closing may free the dialer next. */
    if (!atomic_load(&ch->closing))
        dctx__dialer_redial(ch->dialer, worked);
    pthread_mutex_unlock(&ch->mu);
    settle_calls(gone, false);
    if (close_here && !dctx__reaper_defer(&c->reap, conn_close_deferred, c)) {
        /* No reaper thread: leave it to the channel's close. */
        pthread_mutex_lock(&ch->mu);
        c->claimed = false;
        pthread_mutex_unlock(&ch->mu);
    }
}

static void dialed(void *owner, nng_stream *st)
{
    dctx_rpc_channel *ch = owner;
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        nng_stream_close(st);
        nng_stream_free(st);
        dctx__dialer_redial(ch->dialer, false);
        return;
    }
    c->ch = ch;
    size_t max = ch->opts.recv_max_bytes + DCTX__FRAME_OVERHEAD_BYTES;
    struct dctx__session_options so = {
        .server = false,
        .max_frame_bytes = max > UINT32_MAX ? UINT32_MAX : (uint32_t)max,
        .keepalive_ms = atomic_load_explicit(&ch->keepalive_ms, memory_order_relaxed),
        .ping_timeout_ms = dctx__ns_to_ms(ch->opts.keepalive_timeout_ns),
        .identity = ch->opts.identity,
        .server_key = ch->opts.server_key,
        .on_ready = conn_ready,
        .on_frame = got_frame,
        .on_end = conn_ended,
        .owner = c,
    };
    if (dctx__session_open(st, &so, &c->s) != 0) {
        free(c);
        dctx__dialer_redial(ch->dialer, false);
        return;
    }
    pthread_mutex_lock(&ch->mu);
    c->next = ch->conns;
    ch->conns = c;
    pthread_mutex_unlock(&ch->mu);
    dctx__session_start(c->s);
}

static void dial_failed(void *owner, int code, const char *why)
{
    (void)code;
    dctx_rpc_channel *ch = owner;
    pthread_mutex_lock(&ch->mu);
    snprintf(ch->last_error, sizeof ch->last_error, "%s", why);
    pthread_mutex_unlock(&ch->mu);
}

/* ===== Channel ===== */

void dctx_rpc_channel_options_init(dctx_rpc_channel_options *o)
{
    memset(o, 0, sizeof *o);
    o->policy.send = DCTX_WIRE_SEND_ALL;
    o->policy.reserve_ns = DCTX_RPC_DEFAULT_RESERVE_NS;
    o->connect_wait_ns = DCTX_RPC_DEFAULT_CONNECT_WAIT_NS;
    o->recv_max_bytes = DCTX_RPC_DEFAULT_RECV_MAX_BYTES;
    o->cancel_ack_timeout_ns = DCTX_RPC_DEFAULT_CANCEL_ACK_TIMEOUT_NS;
    o->keepalive_ns = DCTX_RPC_DEFAULT_KEEPALIVE_NS;
    o->keepalive_timeout_ns = DCTX_RPC_DEFAULT_KEEPALIVE_TIMEOUT_NS;
}

static void channel_free(dctx_rpc_channel *ch)
{
    dctx__call_map_fini(&ch->ids);
    pthread_cond_destroy(&ch->cv);
    pthread_mutex_destroy(&ch->mu);
    free(ch->url);
    free(ch);
}

int dctx_rpc_channel_open(const char *url, const dctx_rpc_channel_options *opts,
                          dctx_rpc_channel **out)
{
    if (out != NULL)
        *out = NULL;
    if (url == NULL || out == NULL ||
        (opts != NULL && (opts->keepalive_ns < 0 || opts->keepalive_timeout_ns < 0 ||
                          (opts->identity == NULL) != (opts->server_key == NULL))))
        return DCTX_INVALID_ARGUMENT;
    dctx_rpc_channel *ch = calloc(1, sizeof *ch);
    if (ch == NULL || (ch->url = strdup(url)) == NULL) {
        free(ch);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    if (opts != NULL)
        ch->opts = *opts;
    else
        dctx_rpc_channel_options_init(&ch->opts);
    if (ch->opts.server_key != NULL) {
        memcpy(ch->server_key, ch->opts.server_key, sizeof ch->server_key);
        ch->opts.server_key = ch->server_key;
    }
    if (ch->opts.recv_max_bytes == 0)
        ch->opts.recv_max_bytes = DCTX_RPC_DEFAULT_RECV_MAX_BYTES;
    if (ch->opts.cancel_ack_timeout_ns <= 0)
        ch->opts.cancel_ack_timeout_ns = DCTX_RPC_DEFAULT_CANCEL_ACK_TIMEOUT_NS;
    pthread_mutex_init(&ch->mu, NULL);
    dctx__cond_init_monotonic(&ch->cv);
    dctx__call_map_init(&ch->ids);
    atomic_init(&ch->keepalive_ms, dctx__ns_to_ms(ch->opts.keepalive_ns));
    snprintf(ch->last_error, sizeof ch->last_error, "not connected yet");
    /* Redial quickly: a next hop that restarts should be back in ms. The
     * longest back-off is half the time a call waits for a connection, so
     * a server that comes up late is dialed before the first call to it
     * gives up. */
    int64_t backoff_max = ch->opts.connect_wait_ns / 2;
    struct dctx__dialer_options dopt = {
        .tls_ca_file = ch->opts.tls_ca_file,
        .tls_server_name = ch->opts.tls_server_name,
        .tls_cert_key_file = ch->opts.tls_cert_key_file,
        .backoff_max_ns = backoff_max < 10000000LL     ? 10000000LL
                          : backoff_max > 1000000000LL ? 1000000000LL
                                                       : backoff_max,
        .on_stream = dialed,
        .on_fail = dial_failed,
        .owner = ch,
    };
    /* Deferred work must never fail later: finishing a canceled call
     * there is what keeps user code out of dctx_cancel. */
    int rc =
        dctx__reaper_start() ? dctx__dialer_open(url, &dopt, &ch->dialer) : DCTX_RESOURCE_EXHAUSTED;
    if (rc != 0) {
        channel_free(ch);
        return rc;
    }
    *out = ch;
    return 0;
}

int dctx_rpc_channel_open_urls(const char *const *urls, size_t n,
                               const dctx_rpc_channel_options *opts, dctx_rpc_channel **out)
{
    if (out != NULL)
        *out = NULL;
    if (urls == NULL || out == NULL || n == 0)
        return DCTX_INVALID_ARGUMENT;
    if (n == 1)
        return dctx_rpc_channel_open(urls[0], opts, out);
    dctx_rpc_channel *ch = calloc(1, sizeof *ch);
    if (ch == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    int rc = dctx__channel_set_open(urls, n, opts, &ch->set);
    if (rc != 0) {
        free(ch);
        return rc;
    }
    *out = ch;
    return 0;
}

enum dctx__channel_state dctx__channel_state(dctx_rpc_channel *ch)
{
    pthread_mutex_lock(&ch->mu);
    enum dctx__channel_state st = ch->ready == NULL     ? DCTX__CHANNEL_DIALING
                                  : ch->ready->draining ? DCTX__CHANNEL_DRAINING
                                                        : DCTX__CHANNEL_READY;
    pthread_mutex_unlock(&ch->mu);
    return st;
}

void dctx_rpc_channel_close(dctx_rpc_channel *ch)
{
    if (ch == NULL)
        return;
    if (ch->set != NULL) {
        dctx__channel_set_close(ch->set);
        free(ch);
        return;
    }
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX];
    snprintf(msg, sizeof msg, "channel to %s closed", ch->url);
    pthread_mutex_lock(&ch->mu);
    atomic_store(&ch->closing, true);
    pthread_cond_broadcast(&ch->cv); /* calls waiting for a connection give up */
    struct conn *ready = ch->ready;
    ch->ready = NULL;
    dctx_rpc_handle *gone = take_calls(ch, DCTX_UNAVAILABLE, msg);
    pthread_mutex_unlock(&ch->mu);
    settle_calls(gone, false); /* their callbacks run here, before close returns */

    /* Every call is decided; wait until each is finished. */
    pthread_mutex_lock(&ch->mu);
    while (atomic_load(&ch->in_flight) > 0)
        dctx__cond_wait_until(&ch->cv, &ch->mu, dctx_now() + 10000000LL);
    pthread_mutex_unlock(&ch->mu);

    dctx__dialer_close(ch->dialer); /* no connection comes after this */
    /* Close what nobody closes yet: the ready connection after its pushed
     * cancels went out, the others at once; then wait for the reaper's. */
    for (;;) {
        pthread_mutex_lock(&ch->mu);
        struct conn *c = ch->conns;
        while (c != NULL && c->claimed)
            c = c->next;
        if (c != NULL)
            c->claimed = true;
        pthread_mutex_unlock(&ch->mu);
        if (c == NULL)
            break;
        if (c == ready)
            dctx__session_close_after_flush(c->s, CANCEL_FLUSH_NS);
        else
            dctx__session_close(c->s);
        conn_free(c);
    }
    pthread_mutex_lock(&ch->mu);
    while (ch->conns != NULL)
        dctx__cond_wait_until(&ch->cv, &ch->mu, dctx_now() + 10000000LL);
    pthread_mutex_unlock(&ch->mu); /* the reaper's last unlock is behind us (conn_free) */
    dctx__reaper_wait();           /* streams' receive callbacks deferred there may touch ch */
    channel_free(ch);
}

void dctx_rpc_channel_stats_get(dctx_rpc_channel *ch, dctx_rpc_channel_stats *out)
{
    if (ch->set != NULL) {
        dctx__channel_set_stats(ch->set, out);
        return;
    }
    memset(out, 0, sizeof *out);
    out->calls = atomic_load(&ch->calls);
    out->not_sent_budget = atomic_load(&ch->not_sent_budget);
    out->cancels_pushed = atomic_load(&ch->cancels_pushed);
    out->bad_frames = atomic_load(&ch->bad_frames);
    for (int i = 0; i <= DCTX_CODE_MAX; i++)
        out->by_code[i] = atomic_load(&ch->by_code[i]);
    for (int i = 0; i < DCTX_RPC_CANCEL_OUTCOMES; i++)
        out->cancel_outcomes[i] = atomic_load(&ch->outcomes[i]);
    pthread_mutex_lock(&ch->mu);
    out->connections = ch->ready != NULL ? 1 : 0;
    out->draining = ch->ready != NULL && ch->ready->draining ? 1 : 0;
    snprintf(out->last_error, sizeof out->last_error, "%s", ch->last_error);
    pthread_mutex_unlock(&ch->mu);
}

/* Wait (bounded by connect_wait_ns and the call's deadline) for a ready
 * connection; err names why there is none. */
static int wait_connected(dctx_rpc_channel *ch, int64_t deadline_ns, char *err)
{
    int64_t until = dctx_now() + ch->opts.connect_wait_ns;
    if (until > deadline_ns)
        until = deadline_ns;
    pthread_mutex_lock(&ch->mu);
    while (ch->ready == NULL && !ch->refused && !atomic_load(&ch->closing) && dctx_now() < until)
        dctx__cond_wait_until(&ch->cv, &ch->mu, until);
    int rc = 0;
    if (atomic_load(&ch->closing)) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "channel to %s closed", ch->url);
        rc = DCTX_UNAVAILABLE;
    } else if (ch->ready == NULL && ch->refused) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "no authenticated connection to %s: %.120s", ch->url,
                 ch->last_error);
        rc = DCTX_UNAUTHENTICATED;
    } else if (ch->ready == NULL) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "no connection to %s (%s)", ch->url, ch->last_error);
        rc = DCTX_UNAVAILABLE;
    }
    pthread_mutex_unlock(&ch->mu);
    return rc;
}

/* ===== Pushing a cancel ===== */

/* Send the Cancel frame: the call id, the token, the cause, and how long
 * the callee must remember it in case the call has not arrived yet (a
 * relay may reorder). ch->mu held; the call is on the ready connection. */
static bool push_cancel(dctx_rpc_handle *call, int cause, const char *cause_msg)
{
    Dctx__Wire__Cancel c = DCTX__WIRE__CANCEL__INIT;
    c.has_cancel_token = 1;
    c.cancel_token.data = call->token;
    c.cancel_token.len = sizeof call->token;
    c.has_code = 1;
    c.code = (uint32_t)cause;
    c.message = (char *)cause_msg;
    c.has_budget_us = 1;
    int64_t left = call->deadline_ns - dctx_now();
    c.budget_us = call->deadline_ns == DCTX_DEADLINE_NONE ? TOMBSTONE_NO_DEADLINE_US
                  : left > 0                              ? (uint64_t)left / 1000 + 1
                                                          : 1;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CANCEL;
    f.cancel = &c;
    f.has_call_id = 1;
    f.call_id = call->id;
    return dctx__session_send(call->ch->ready->s, &f) == 0;
}

/* The call's context is done: run by the thread that canceled it, after
 * its node locks are released (dctx__after_func_inline). Takes only the
 * call's and the channel's mutexes; sending never blocks. */
static void context_done(void *arg)
{
    dctx_rpc_handle *call = arg;
    dctx_rpc_channel *ch = call->ch;
    /* Hold the channel while the call is not finishing: once finish has
     * begun, the call may leave, its context go and the channel be freed.
     * The cause is read while that cannot happen. */
    const char *msg = NULL;
    char text[DCTX__MESSAGE_SIZE];
    int cause = 0;
    dctx_rpc_result res;
    pthread_mutex_lock(&call->mu);
    bool live = !call->finishing;
    if (live) {
        atomic_fetch_add(&ch->in_flight, 1);
        cause = dctx_cause(call->ctx, &msg);
        dctx__message_copy(text, msg);
        dctx__result_from_context(call->ctx, &res);
    }
    pthread_mutex_unlock(&call->mu);
    if (!live) {
        call_unref(call);
        return;
    }

    pthread_mutex_lock(&ch->mu);
    bool decided = false;
    if (!call->decided) {
        /* Sent and not answered: tell the server. Not sent yet: start
         * sees the call decided and never sends it. */
        if (call->in_map && !call->replied) {
            if (push_cancel(call, cause, text)) {
                call->ack_due = true;
                call->pushed = true;
                call->pushed_cause = cause;
                call->pushed_ns = dctx_now();
                atomic_store_explicit(&call->outcome, DCTX_RPC_CANCEL_PENDING,
                                      memory_order_relaxed);
            } else { /* the connection is gone, or its queue full even for control */
                set_outcome(call, DCTX_RPC_CANCEL_UNREACHED);
            }
        }
        decided = decide(call, &res);
    } else {
        dctx_rpc_result_free(&res);
    }
    pthread_mutex_unlock(&ch->mu);
    if (call->pushed) {
        count(&ch->cancels_pushed);
        if (ch->opts.on_event != NULL)
            call->pushed_msg = strdup(text); /* NULL: the event goes with "" */
    }
    if (decided)
        conclude(call, true);
    in_flight_leave(ch);
    call_unref(call); /* the after-func's reference */
}

/* ===== Starting a call ===== */

static int call_new(dctx_rpc_channel *ch, dctx *ctx, dctx_rpc_done_fn done, void *arg, bool waited,
                    dctx_rpc_handle **out)
{
    dctx_rpc_handle *call = calloc(1, sizeof *call);
    if (call == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    atomic_init(&call->refs, 1);
    call->ch = ch;
    call->ctx = dctx_retain(ctx);
    if (!dctx_rpc_deadline(ctx, &call->deadline_ns))
        call->deadline_ns = DCTX_DEADLINE_NONE;
    call->done = done;
    call->done_arg = arg;
    call->waited = waited;
    pthread_mutex_init(&call->mu, NULL);
    call->result.message = "";
    *out = call;
    return 0;
}

/* Put the call on the ready connection: an id, the map, the Call frame in
 * the send queue. Runs under ch->mu; err names a failure. */
static int send_call(dctx_rpc_handle *call, Dctx__Wire__Frame *f, char *err)
{
    dctx_rpc_channel *ch = call->ch;
    if (call->decided)
        return 0; /* canceled before it could go: never sent */
    struct conn *c = ch->ready;
    if (c == NULL) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "connection to %s lost (%s)", ch->url, ch->last_error);
        return DCTX_UNAVAILABLE;
    }
    if (c->draining) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "%s is draining: it takes no new calls", ch->url);
        return DCTX_UNAVAILABLE;
    }
    do
        call->id = ++ch->last_id;
    while (call->id == 0 || dctx__call_map_find(&ch->ids, call->id) != NULL);
    f->has_call_id = 1;
    f->call_id = call->id;
    if (dctx__call_map_insert(&ch->ids, call->id, call) != 0) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "out of memory");
        return DCTX_RESOURCE_EXHAUSTED;
    }
    int rc = dctx__session_send(c->s, f);
    size_t over = rc == DCTX_RESOURCE_EXHAUSTED ? dctx__session_oversize(c->s, f) : 0;
    if (over > 0) {
        snprintf(err, DCTX__WIRE_ERR_BYTES,
                 "call of %zu bytes is over the server's limit of %u bytes", over,
                 dctx__session_peer_hello(c->s)->max_frame_bytes);
    } else if (rc == DCTX_RESOURCE_EXHAUSTED) {
        snprintf(err, DCTX__WIRE_ERR_BYTES,
                 "the connection's send queue is full: the server is not reading");
    } else if (rc != 0) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "connection to %s lost (%s)", ch->url, ch->last_error);
    }
    if (rc != 0) {
        dctx__call_map_remove(&ch->ids, call->id);
        return rc;
    }
    call->in_map = true;
    atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed); /* the map's */
    return 0;
}

/* Encode the context and send; the budget on the wire is what is left
 * when the call leaves, not what was left before waiting for a
 * connection. */
static int pack_and_send(dctx_rpc_handle *call, dctx *ctx, const char *method, const void *req,
                         size_t req_len, bool stream, char *err)
{
    /* ctx is the starter's (call->ctx may be gone: a cancel may have
     * decided and finished the call already; send_call then sends
     * nothing). */
    struct dctx__wire_out hdr;
    int rc = dctx__wire_encode(ctx, &call->ch->opts.policy, dctx_now(), &hdr, err);
    if (rc != 0)
        return rc;
    memcpy(call->token, hdr.token, sizeof call->token);
    Dctx__Wire__Call c = DCTX__WIRE__CALL__INIT;
    c.has_method = 1;
    c.method.data = (uint8_t *)method;
    c.method.len = strlen(method);
    c.context = &hdr.hdr;
    c.has_payload = !stream;
    c.payload.data = (uint8_t *)req;
    c.payload.len = req_len;
    c.has_stream = stream;
    c.stream = stream;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &c;
    pthread_mutex_lock(&call->ch->mu);
    rc = send_call(call, &f, err);
    pthread_mutex_unlock(&call->ch->mu);
    return rc;
}

/* Undo a call that failed before it was on its way. */
static void abandon(dctx_rpc_handle *call)
{
    dctx_release(call->ctx);
    call_unref(call);
}

/* A call that could not be sent is the starter's to end (it returns the
 * code), unless an after-func decided it first; true if it is. */
static bool claim_unsent(dctx_rpc_handle *call)
{
    pthread_mutex_lock(&call->ch->mu);
    bool ours = !call->decided;
    call->decided = true;
    pthread_mutex_unlock(&call->ch->mu);
    return ours;
}

/* Everything that can fail before the call is on its way; err names it.
 * After 0 the call ends through decide and its finisher. */
static int stream_attach(dctx_rpc_handle *call);

static int start(dctx_rpc_channel *ch, dctx *ctx, const char *method, const void *req,
                 size_t req_len, dctx_rpc_done_fn done, void *arg, bool waited, bool stream,
                 dctx_rpc_handle **out, char *err)
{
    err[0] = '\0';
    if (ch == NULL || !dctx__method_name_valid(method) || (req == NULL && req_len > 0)) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "bad channel, method name or request");
        return DCTX_INVALID_ARGUMENT;
    }
    if (ctx == NULL)
        ctx = dctx_background();
    if (dctx_err(ctx) != 0) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "%s before the call was sent",
                 dctx_strerror(dctx_err(ctx)));
        return dctx_err(ctx);
    }
    dctx_rpc_handle *call = NULL;
    int rc = call_new(ch, ctx, done, arg, waited, &call);
    /* The name is kept for events only. */
    if (rc == 0 && ch->opts.on_event != NULL && (call->method = strdup(method)) == NULL)
        rc = DCTX_RESOURCE_EXHAUSTED;
    if (rc == 0 && stream)
        rc = stream_attach(call);
    if (rc == 0 && !in_flight_enter(ch)) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "channel to %s closed", ch->url);
        rc = DCTX_UNAVAILABLE;
    }
    if (rc != 0) {
        if (call != NULL)
            abandon(call);
        if (err[0] == '\0')
            snprintf(err, DCTX__WIRE_ERR_BYTES, "%s", dctx_strerror(rc));
        return rc;
    }
    /* From the cancel trigger on, the call may end on another thread at
     * once: what it and the caller need is in place before. */
    call->started_ns = dctx_now();
    atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed); /* the caller's */
    rc = wait_connected(ch, call->deadline_ns, err);
    /* The cancel trigger before the frame goes: a cancel from here on
     * either finds the call sent (and pushes) or keeps it from going. A
     * context that can never be done needs none. */
    if (rc == 0 && dctx__can_be_done(ctx)) {
        atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
        if (dctx__after_func_inline(ctx, context_done, call, &call->after) != 0) {
            atomic_fetch_sub_explicit(&call->refs, 1, memory_order_relaxed);
            rc = DCTX_RESOURCE_EXHAUSTED;
        }
    }
    if (rc == 0)
        rc = pack_and_send(call, ctx, method, req, req_len, stream, err);
    if (rc == DCTX_DEADLINE_EXCEEDED)
        count(&ch->not_sent_budget);
    if (rc != 0 && !claim_unsent(call)) {
        /* An after-func decided it first: it ends as every call does. */
        rc = 0;
    }
    if (rc != 0) {
        /* As finish does: an after-func that runs from here on must not
         * touch the channel, which may go once the count is left. */
        pthread_mutex_lock(&call->mu);
        call->finishing = true;
        pthread_mutex_unlock(&call->mu);
        if (call->after != NULL && dctx_after_stop(call->after))
            call_unref(call);
        in_flight_leave(ch);
        call_unref(call); /* the caller's */
        abandon(call);
        if (err[0] == '\0')
            snprintf(err, DCTX__WIRE_ERR_BYTES, "%s", dctx_strerror(rc));
        return rc;
    }
    count(&ch->calls);
    if (out != NULL)
        *out = call;
    else
        call_unref(call);
    return 0;
}

int dctx_rpc_call_start(dctx_rpc_channel *ch, dctx *ctx, const char *method, const void *req,
                        size_t req_len, dctx_rpc_done_fn done, void *arg, dctx_rpc_handle **out)
{
    char err[DCTX__WIRE_ERR_BYTES];
    if (out != NULL)
        *out = NULL;
    if (ch != NULL && ch->set != NULL)
        ch = dctx__channel_set_pick(ch->set);
    return start(ch, ctx, method, req, req_len, done, arg, false, false, out, err);
}

int dctx_rpc_call_raw(dctx_rpc_channel *ch, dctx *ctx, const char *method, const void *req,
                      size_t req_len, dctx_rpc_result *res)
{
    char err[DCTX__WIRE_ERR_BYTES];
    dctx_rpc_handle *call = NULL;
    if (ch != NULL && ch->set != NULL)
        ch = dctx__channel_set_pick(ch->set);
    int rc = start(ch, ctx, method, req, req_len, NULL, NULL, true, false, &call, err);
    if (rc != 0) {
        if (res != NULL)
            dctx__result_set(res, rc, err, NULL, 0);
        return rc;
    }
    /* This thread is the call's finisher: whoever decides it wakes us. */
    wait_word(&call->decided_word, &call->sleepers, 0, -1);
    finish(call);
    rc = call->result.code;
    if (res != NULL) {
        *res = call->result; /* the storage moves to the caller */
        res->cancel_outcome = atomic_load_explicit(&call->outcome, memory_order_acquire);
        memset(&call->result, 0, sizeof call->result);
    }
    call_unref(call);
    return rc;
}

bool dctx_rpc_handle_wait(dctx_rpc_handle *call, int64_t timeout_ns)
{
    return call != NULL && wait_word(&call->ended, &call->sleepers, 0, timeout_ns);
}

int dctx_rpc_handle_result(dctx_rpc_handle *call, dctx_rpc_result *res)
{
    if (call == NULL) {
        if (res != NULL)
            dctx__result_set(res, DCTX_INVALID_ARGUMENT, "no call", NULL, 0);
        return DCTX_INVALID_ARGUMENT;
    }
    wait_word(&call->ended, &call->sleepers, 0, -1);
    if (res != NULL) {
        dctx__result_set(res, call->result.code, call->result.message, call->result.payload,
                         call->result.payload_len);
        res->cancel_outcome = atomic_load_explicit(&call->outcome, memory_order_acquire);
    }
    return call->result.code;
}

int dctx_rpc_handle_cancel_outcome(dctx_rpc_handle *call, int64_t timeout_ns)
{
    if (call == NULL)
        return DCTX_RPC_CANCEL_NONE;
    /* Right after a cancel the after-func that pushes it may not have run
     * yet: a call not finishing whose context is done will end through
     * it, with the outcome PENDING by then, so wait for the end first. */
    pthread_mutex_lock(&call->mu);
    bool due = !call->finishing && call->ctx != NULL && dctx_done(call->ctx);
    pthread_mutex_unlock(&call->mu);
    if (due)
        wait_word(&call->ended, &call->sleepers, 0, timeout_ns);
    wait_word(&call->outcome, &call->sleepers, DCTX_RPC_CANCEL_PENDING, timeout_ns);
    return atomic_load_explicit(&call->outcome, memory_order_acquire);
}

void dctx_rpc_handle_release(dctx_rpc_handle *call)
{
    if (call != NULL)
        call_unref(call);
}

/* ===== Streams (stream.h) ===== */

/* A stream's frame goes on the connection its Call went on: while the
 * call is not decided it is the ready one (a connection that ends
 * decides every call on it). */
static int stream_send(void *owner, Dctx__Wire__Frame *f)
{
    dctx_rpc_handle *call = owner;
    dctx_rpc_channel *ch = call->ch;
    pthread_mutex_lock(&ch->mu);
    int rc;
    if (call->decided)
        rc = call->result.code != DCTX_OK ? call->result.code : DCTX__STREAM_OVER;
    else if (ch->ready == NULL || !call->in_map)
        rc = DCTX_UNAVAILABLE;
    else {
        f->has_call_id = 1;
        f->call_id = call->id;
        rc = dctx__session_send(ch->ready->s, f);
    }
    pthread_mutex_unlock(&ch->mu);
    return rc;
}

static int stream_end_code(void *owner)
{
    dctx_rpc_handle *call = owner;
    pthread_mutex_lock(&call->ch->mu);
    int rc = !call->decided                 ? 0
             : call->result.code != DCTX_OK ? call->result.code
                                            : DCTX__STREAM_OVER;
    pthread_mutex_unlock(&call->ch->mu);
    if (rc == 0)
        rc = dctx_err(call->stream->ctx) != 0 ? dctx_err(call->stream->ctx) : DCTX_CANCELED;
    return rc;
}

static void stream_hold(void *owner)
{
    dctx_rpc_handle *call = owner;
    atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
}

static void stream_drop(void *owner)
{
    call_unref(owner);
}

static const struct dctx__stream_ops client_stream_ops = {
    .send = stream_send, .end_code = stream_end_code, .hold = stream_hold, .drop = stream_drop};

/* A stream's half, before its Call goes (the server may answer at once).
 * Its waits end when the call is decided (decide), which the end of the
 * stream's context does too: the half needs no after-func of its own. */
static int stream_attach(dctx_rpc_handle *call)
{
    dctx_rpc_stream *st = calloc(1, sizeof *st);
    if (st == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    int rc = dctx__stream_half_init(&st->half, NULL);
    if (rc != 0) {
        free(st);
        return rc;
    }
    st->ops = &client_stream_ops;
    st->owner = call;
    st->half.end_held = true; /* until finish concludes it */
    call->stream = st;
    return 0;
}

int dctx_rpc_stream_open(dctx_rpc_channel *ch, dctx *ctx, const char *method, dctx_rpc_stream **out)
{
    char err[DCTX__WIRE_ERR_BYTES];
    if (out == NULL)
        return DCTX_INVALID_ARGUMENT;
    *out = NULL;
    if (ch != NULL && ch->set != NULL)
        ch = dctx__channel_set_pick(ch->set);
    /* A context of the stream's own: release cancels it. */
    dctx *own = NULL;
    if (dctx_with_cancel(ctx != NULL ? ctx : dctx_background(), &own) != 0)
        return DCTX_RESOURCE_EXHAUSTED;
    dctx_rpc_handle *call = NULL;
    int rc = start(ch, own, method, NULL, 0, NULL, NULL, false, true, &call, err);
    if (rc != 0) {
        dctx_release(own);
        return rc;
    }
    call->stream->ctx = own;
    *out = call->stream;
    return 0;
}

int dctx_rpc_stream_close_send(dctx_rpc_stream *st)
{
    if (st == NULL || st->ops != &client_stream_ops)
        return DCTX_INVALID_ARGUMENT;
    if (st->send_closed)
        return 0;
    st->send_closed = true;
    Dctx__Wire__HalfClose h = DCTX__WIRE__HALF_CLOSE__INIT;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_HALF_CLOSE;
    f.half_close = &h;
    int rc = st->ops->send(st->owner, &f);
    return rc == DCTX__STREAM_OVER ? 0 : rc; /* the server ended it first: nothing to close */
}

int dctx_rpc_stream_finish(dctx_rpc_stream *st, dctx_rpc_result *res)
{
    if (st == NULL || st->ops != &client_stream_ops) {
        if (res != NULL)
            dctx__result_set(res, DCTX_INVALID_ARGUMENT, "not a client's stream", NULL, 0);
        return DCTX_INVALID_ARGUMENT;
    }
    return dctx_rpc_handle_result(st->owner, res);
}

void dctx_rpc_stream_release(dctx_rpc_stream *st)
{
    if (st == NULL || st->ops != &client_stream_ops)
        return;
    /* Canceling a stream that ended already changes nothing. */
    dctx_cancel_cause(st->ctx, DCTX_CANCELED, "stream released before its end");
    call_unref(st->owner);
}
