/*
 * server.c - sessions from callers, a method table and a pool of workers
 * (proto/PROTOCOL.md).
 *
 * Design
 *   Every listen URL has an acceptor (acceptor.c) that accepts without a
 *   limit of its own; each connection is a session (session.c) whose
 *   frames are handled on its receive callback, so a Cancel is read even
 *   while every worker is busy, and a ping is answered at once.
 *
 *   A Call is checked and its context rebuilt on the receiving thread,
 *   registered by its id on its connection and by its token in the
 *   server's table, and queued; workers run handlers (DCTX_RPC_INLINE
 *   ones run on the receiving thread). Every Call gets exactly one Reply,
 *   unless its connection is gone. A Cancel finds its call by id on its
 *   connection, or else by its token: a queued call is prevented (it is
 *   answered CANCELLED at once), a running one has its
 *   context canceled with the caller's cause (STOPPED), a finished one is
 *   TOO_LATE, and an unknown token is remembered until its budget ends so
 *   the call, if it comes (a relay may reorder), is refused (PREVENTED). A
 *   connection that ends cancels every call that came on it; closing
 *   cancels the root of all.
 *
 *   Call states: QUEUED -> RUNNING -> FINISHED, or QUEUED -> DROPPED by a
 *   cancel or a lost caller, decided by compare-and-swap.
 *
 *   A call's id leaves its connection's map just before its Reply is
 *   queued: the caller may reuse the id as soon as it reads the Reply, and
 *   its next Call must not find the id still taken. A Cancel read after
 *   that finds the call by token, finished: TOO_LATE.
 *
 *   Streams (stream.h): a stream call has a half (stream_half.h) from its
 *   Call on, so its messages are taken even before a worker runs the
 *   handler; the half's waits end with the call's context, and the
 *   handler's return ends the stream with its status, as a Reply.
 *
 *   Calls from this process (dctx_rpc_server_call_start) are server_calls
 *   without a connection (conn NULL, local set): checked and rebuilt as a
 *   Call frame would be, admitted and run the same way, answered to a
 *   callback (answer_local) instead of a Reply. They have no token: only
 *   their caller's context cancels them, by an after-func that cancels a
 *   running handler at once and leaves the rest (an unrun call's answer,
 *   the event, done) to the reaper. Starters, after-funcs and deferred
 *   cancels hold the server (local_holds); close waits until none does.
 *
 * Who frees what
 *   A connection (struct conn) is counted: one reference while its session
 *   lives, one per call that came on it. The session's end (on_end, or the
 *   server's own decision) drops the first, once; the last drop defers the
 *   close of the session and the free to the reaper thread, never inside
 *   an nng callback. A call holds its frame (the request lives in it), its
 *   context, its connection and its stream until call_unref; a stream
 *   frame being handed to it and an armed receive each hold the call.
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_impl.h"
#include "context/alloc.h"
#include "context/clock.h"
#include "context/hooks.h"

#include <dctx/trace.h>
#include <sodium.h>

#include "acceptor.h"
#include "authorize.h"
#include "call_map.h"
#include "drain_deadline.h"
#include "frame.h"
#include "handshake.h"
#include "reaper.h"
#include "session.h"
#include "stream_impl.h"
#include "text.h"
#include "token_table.h"
#include "wire_impl.h"

#define METHOD_BUCKETS 256
#define TOMBSTONE_MAX_NS (60 * 1000000000LL)
#define TOMBSTONES_MAX 65536
/* Finished tokens remembered, to answer a late cancel TOO_LATE and refuse
 * a replayed call. A cancel comes late only by the reply's time in transit
 * (the caller pushes none once its call ended), and 4096 calls are 40 ms
 * at 100k calls/s; each entry is kept memory (16384 were 1.2 MB of the
 * server's resident set under load). */
#define FINISHED_MAX 4096
/* How long a closing server lets its connections' last replies and
 * GoAways go out, and their callers close, all of them together. */
#define CLOSE_FLUSH_NS (100 * 1000000LL)
/* How long a connection ended by a protocol error waits for its peer to
 * read the GoAway and close. */
#define LINGER_NS (500 * 1000000LL)

enum call_state { QUEUED, RUNNING, FINISHED, DROPPED };

struct method {
    char *name;
    dctx_rpc_handler_fn fn;
    dctx_rpc_stream_handler_fn stream_fn; /* a stream method: fn is NULL */
    void *arg;
    void *owned;    /* freed with the method: what a wrapper (pb.c) made for arg */
    unsigned flags; /* DCTX_RPC_INLINE */
    struct method *next;
};

struct conn {
    dctx_rpc_server *srv;
    struct dctx__session *s;
    uint32_t number;  /* names its calls in the token table, for peer loss */
    atomic_int refs;  /* one while the session lives, one per call */
    atomic_bool over; /* the session ended (or the server ended it): once */
    bool lingered;    /* the reaper let the peer close first, or found no need */
    bool unstarted;   /* accepted before the server started; protected by srv->mu */
    pthread_mutex_t mu;
    struct dctx__call_map ids; /* calls in flight from this peer; protected by mu */
    struct conn *prev, *next;  /* srv->conns; protected by srv->mu */
    /* Written by the session's ready callback, before any call is read:
     * the parent of the caller's calls' contexts, which holds its proven
     * key (NULL: srv->call_root, a caller without keys). The key itself
     * is the session's (caller_key). */
    dctx *root;
    char addr[64]; /* the peer's address, for reports; "" if the transport has none */
    struct dctx__reap_item reap;
};

struct server_call {
    atomic_int refs; /* the work queue/worker, plus lookups (token table, ids) */
    dctx_rpc_server *srv;
    struct conn *conn; /* where the reply goes; referenced. NULL: a call from this process */
    uint32_t id;       /* the call id on conn */
    dctx *ctx;         /* the rebuilt context, canceled from outside */
    uint8_t token[DCTX_TOKEN_BYTES];
    const struct method *method;
    Dctx__Wire__Frame *frame; /* the request; the payload lives here */
    const void *req;          /* the request bytes, in frame or local */
    size_t req_len;
    dctx_rpc_stream *stream; /* a stream's messages both ways; NULL for a unary call */
    atomic_int state;        /* enum call_state */
    int64_t received_ns;
    struct server_call *next; /* work queue; protected by srv->mu */
    struct local_call *local; /* a call from this process; else NULL */
};

/* A call from this process (dctx_rpc_server_call_start): its answer goes
 * to done, once, and its caller's cancel reaches it through an after-func
 * on the caller's context, as a Cancel frame would. */
struct local_call {
    dctx_rpc_done_fn done;
    void *arg;
    dctx *caller;        /* read by the after-func only, while it holds it */
    dctx_after *after;   /* set before the call is admitted; NULL: never done */
    atomic_bool decided; /* done has run or is running */
    atomic_int phase;    /* enum local_phase */
    /* The caller's cancel, taken on the canceling thread for the
     * reaper's part (local_cancel). */
    int cause;
    bool first;   /* the cancel decided the call: res is done's */
    bool stopped; /* the handler was running: its context was canceled */
    dctx_rpc_result res;
    char cause_text[DCTX__MESSAGE_SIZE];
    struct dctx__reap_item reap;
    unsigned char req[]; /* the request, copied */
};

/* An after-func that fires before the call is admitted leaves the cancel
 * for the starter to push once it is. */
enum local_phase { LOCAL_STARTING, LOCAL_ADMITTED, LOCAL_CANCELED_STARTING };

struct dctx_rpc_reply {
    void *payload;
    size_t len;
    char message[DCTX__MESSAGE_SIZE];
};

struct acceptor_item {
    struct dctx__acceptor *a;
    struct acceptor_item *next;
};

struct dctx_rpc_server {
    dctx_rpc_server_options opts;
    dctx *root;           /* cancels every call: they descend from it */
    dctx *call_root;      /* root with instance_id (drain_deadline.h): every call's parent */
    uint64_t instance_id; /* random, not 0: this server in calls' routes */
    /* With an identity: its public key, the caller's key of calls from
     * this process, and the parent of their contexts (call_root holding
     * it); else NULL. */
    bool has_own_key;
    unsigned char own_key[DCTX_PUBLIC_KEY_BYTES];
    dctx *local_root;
    struct method *methods[METHOD_BUCKETS]; /* written before start only */
    dctx__token_table *tokens;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;          /* work queued, or stopping */
    pthread_cond_t idle_cv;          /* in_flight reached 0; a connection freed. MONOTONIC */
    struct server_call *head, *tail; /* protected by mu */
    struct acceptor_item *acceptors; /* protected by mu */
    struct conn *conns;              /* every connection not yet freed; protected by mu */
    uint32_t conn_number;            /* the last given; protected by mu */
    /* Calls admitted and not yet over, counted without the mutex: admit
     * counts a call in, then checks closing; close sets closing, then
     * waits for the count (seq_cst both: one sees the other). */
    atomic_int in_flight;
    /* What of the calls from this process may still touch the server: a
     * starter inside dctx_rpc_server_call_start, an after-func on a
     * caller's context not yet stopped or returned, a cancel's deferred
     * part. Its release is the holder's last touch of the server, so
     * nothing wakes close: close looks again every few milliseconds until
     * none is left. */
    atomic_int local_holds;
    atomic_bool closing; /* set once, under mu */
    bool shut_down;      /* dctx_rpc_server_shutdown ran; its result: */
    int shutdown_rc;
    atomic_uint_fast64_t accept_failures_closed; /* of the listeners shutdown closed */
    atomic_bool started; /* set once by start; read by the receiving threads */
    atomic_llong
        flush_until; /* closing: when connections stop waiting for their peers; 0 till then */
    bool stopping;   /* protected by mu */
    pthread_t *workers;
    int n_workers;
    atomic_uint_fast64_t calls, cancels_received, peers_lost, canceled_by_peer_loss, bad_frames,
        expired_in_queue, traces_dropped, connections, unauthenticated, denied, sealed_aes256gcm,
        sealed_chacha20poly1305;
    struct dctx__report_limit *reports; /* DENIED and UNAUTHENTICATED events */
    atomic_uint_fast64_t by_code[DCTX_CODE_MAX + 1];
    atomic_uint_fast64_t outcomes[DCTX_RPC_CANCEL_OUTCOMES];
};

static void count(atomic_uint_fast64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

/* ===== Events ===== */

static void emit(dctx_rpc_server *srv, dctx_rpc_event *ev)
{
    if (srv->opts.on_event == NULL)
        return;
    if (ev->message == NULL)
        ev->message = "";
    dctx_trace t;
    if (ev->ctx != NULL && dctx_trace_get(ev->ctx, &t)) {
        ev->trace_id = t.trace_id;
        ev->span_id = t.span_id;
        ev->parent_span_id = t.parent_span_id[0] ? t.parent_span_id : NULL;
    }
    srv->opts.on_event(srv->opts.event_arg, ev);
}

static void emit_call_end(struct server_call *call, int code, const char *message)
{
    dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CALL_END,
                         .method = call->method->name,
                         .code = code,
                         .message = message,
                         .elapsed_ns = dctx_now() - call->received_ns,
                         .ctx = call->ctx};
    dctx__stream_event_counts(call->stream, &ev);
    emit(call->srv, &ev);
}

/* ===== Connections ===== */

static void conn_close_deferred(void *arg);

static void conn_lingered(void *arg)
{
    struct conn *c = arg;
    (void)dctx__reaper_defer(&c->reap, conn_close_deferred, c);
}

/* On the reaper, after the last reference. A peer that may still be
 * reading (its GoAway, a drain's last replies) is given until the drain's
 * deadline, or LINGER_NS after a protocol error, to close its end first
 * (session.h); one that closed already is closed at once. */
static void conn_close_deferred(void *arg)
{
    struct conn *c = arg;
    dctx_rpc_server *srv = c->srv;
    if (!c->lingered) {
        c->lingered = true;
        int64_t until = dctx_now() + LINGER_NS, flush_until = atomic_load(&srv->flush_until);
        if (flush_until != 0 && flush_until < until)
            until = flush_until;
        if (dctx__session_linger(c->s, until, conn_lingered, c))
            return;
    }
    dctx__session_close(c->s);
    dctx_release(c->root);
    dctx__call_map_fini(&c->ids);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_lock(&srv->mu);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    pthread_cond_broadcast(&srv->idle_cv);
    pthread_mutex_unlock(&srv->mu);
    free(c);
}

/* A reference for a call or the server's own use, unless the count has
 * reached 0: the connection is then being closed (its callbacks may still
 * run until the reaper closes it), and must not come back to life. */
static bool conn_tryref(struct conn *c)
{
    int n = atomic_load_explicit(&c->refs, memory_order_relaxed);
    while (n > 0)
        if (atomic_compare_exchange_weak_explicit(&c->refs, &n, n + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    return false;
}

static void conn_unref(struct conn *c)
{
    if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
        return;
    /* The reaper runs from the server's open on, so this queues. */
    (void)dctx__reaper_defer(&c->reap, conn_close_deferred, c);
}

static bool call_retain(void *p);
static void call_unref(struct server_call *call);
static int call_cancel(struct server_call *call, int cause, const char *msg);

static void cancel_for_lost_peer(void *p, void *arg)
{
    struct server_call *call = p;
    dctx_rpc_server *srv = arg;
    if (call_cancel(call, DCTX_CANCELED, "caller lost (connection closed)") !=
        DCTX_RPC_CANCEL_TOO_LATE)
        count(&srv->canceled_by_peer_loss);
    call_unref(call);
}

/* The connection is over, once: its calls are canceled and its session's
 * reference goes. A peer that left is counted; the server's own closing
 * is not a loss. */
static void conn_over(struct conn *c, bool lost)
{
    if (atomic_exchange(&c->over, true))
        return;
    dctx_rpc_server *srv = c->srv;
    if (lost && !atomic_load(&srv->closing))
        count(&srv->peers_lost);
    dctx__token_each_of_pipe(srv->tokens, c->number, call_retain, cancel_for_lost_peer, srv);
    conn_unref(c);
}

/* The session ended: the peer left, the stream failed, or a protocol
 * error (which the session counted: at most one per session, since it
 * ends it). */
static void conn_ended(void *owner, struct dctx__session *s, int code, const char *why)
{
    struct conn *c = owner;
    atomic_fetch_add_explicit(&c->srv->bad_frames, dctx__session_bad_frames(s),
                              memory_order_relaxed);
    if (code == DCTX_UNAUTHENTICATED) {
        count(&c->srv->unauthenticated);
        const char *peer = c->addr[0] != '\0' ? c->addr : "a local peer";
        dctx_rpc_event ev = {
            .kind = DCTX_RPC_EVENT_UNAUTHENTICATED, .code = code, .message = why, .peer = peer};
        /* By address without its port: one host's connections are one peer. */
        const char *colon = strrchr(peer, ':');
        size_t host_len = colon != NULL ? (size_t)(colon - peer) : strlen(peer);
        if (dctx__report_limit_take(c->srv->reports, peer, host_len, dctx_now(), &ev.suppressed))
            emit(c->srv, &ev);
    }
    conn_over(c, true);
}

/* The hellos are exchanged; with keys, the caller proved its key: its
 * calls' contexts will hold it. From the receive callback, before any
 * call is read. */
static void conn_ready(void *owner, struct dctx__session *s, const struct dctx__session_peer *peer)
{
    struct conn *c = owner;
    if (peer->cipher != 0)
        count(peer->cipher == DCTX__CIPHER_AES256_GCM ? &c->srv->sealed_aes256gcm
                                                      : &c->srv->sealed_chacha20poly1305);
    if (peer->authenticated && dctx_with_value(c->srv->call_root, &dctx_rpc_caller_key, peer->key,
                                               sizeof peer->key, &c->root) != 0)
        dctx__session_fail(s, DCTX_RESOURCE_EXHAUSTED, "no memory for the caller's context");
}

/* The key the caller on c proved, or NULL (no keys; or the session is
 * not ready: then no call came on it). */
static const unsigned char *caller_key(const struct conn *c)
{
    const struct dctx__session_peer *peer = dctx__session_peer_hello(c->s);
    return peer != NULL && peer->authenticated ? peer->key : NULL;
}

/* ===== Replies ===== */

static int send_on(struct conn *c, Dctx__Wire__Frame *f, uint32_t id)
{
    f->has_call_id = 1;
    f->call_id = id;
    return dctx__session_send(c->s, f);
}

/* An answer's code in the stats: every answer is counted once, by
 * answer, refuse or refuse_local. */
static void count_answer(dctx_rpc_server *srv, int code)
{
    count(&srv->by_code[code >= 0 && code <= DCTX_CODE_MAX ? code : DCTX_UNKNOWN]);
}

/* Answer call id on c: the id leaves the map first (see Design), then the
 * Reply goes. A reply over the caller's limit goes as RESOURCE_EXHAUSTED;
 * one that cannot be queued (the caller does not read) ends the
 * connection: never a call without a reply on a connection that stays. */
static void send_reply(struct conn *c, uint32_t id, int code, const char *message,
                       const void *payload, size_t len)
{
    pthread_mutex_lock(&c->mu);
    dctx__call_map_remove(&c->ids, id);
    pthread_mutex_unlock(&c->mu);
    Dctx__Wire__Reply r = DCTX__WIRE__REPLY__INIT;
    r.has_code = 1;
    r.code = (uint32_t)code;
    r.message = (char *)(message != NULL ? message : "");
    if (payload != NULL && code == DCTX_OK) {
        r.has_payload = 1;
        r.payload.data = (uint8_t *)payload;
        r.payload.len = len;
    }
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_REPLY;
    f.reply = &r;
    int rc = send_on(c, &f, id);
    char text[96];
    size_t over = rc == DCTX_RESOURCE_EXHAUSTED ? dctx__session_oversize(c->s, &f) : 0;
    if (over > 0) {
        /* over the caller's limit: say so instead */
        snprintf(text, sizeof text, "response of %zu bytes is over the caller's limit of %u bytes",
                 over, dctx__session_peer_hello(c->s)->max_frame_bytes);
        r.code = DCTX_RESOURCE_EXHAUSTED;
        r.message = text;
        r.has_payload = 0;
        rc = send_on(c, &f, id);
    }
    if (rc != DCTX_RESOURCE_EXHAUSTED)
        return; /* sent, or the connection is gone: nobody to answer */
    dctx__session_shutdown(c->s);
    conn_over(c, true);
}

/* A hold on the server by a call from this process (local_holds). */
static void local_hold(dctx_rpc_server *srv)
{
    atomic_fetch_add_explicit(&srv->local_holds, 1, memory_order_relaxed);
}

/* Its release: the last touch of srv by whoever held it. */
static void local_release(dctx_rpc_server *srv)
{
    atomic_fetch_sub_explicit(&srv->local_holds, 1, memory_order_release);
}

/* Give a call from this process its answer: done runs unless the
 * caller's cancel decided the call first. The caller's after-func is
 * stopped here, once: every call is answered once. */
static void answer_local(struct server_call *call, int code, const char *message,
                         const void *payload, size_t len)
{
    struct local_call *l = call->local;
    dctx_rpc_server *srv = call->srv;
    if (l->after != NULL && dctx_after_stop(l->after)) {
        call_unref(call); /* the after-func's reference */
        local_release(srv);
    }
    l->after = NULL;
    if (atomic_exchange(&l->decided, true))
        return;
    dctx_rpc_result res = {.code = code,
                           .message = message != NULL ? message : "",
                           .payload = code == DCTX_OK ? payload : NULL,
                           .payload_len = code == DCTX_OK ? len : 0};
    l->done(l->arg, &res);
}

/* Answer a call, over its connection or to its caller in this process. */
static void answer(struct server_call *call, int code, const char *message, const void *payload,
                   size_t len)
{
    count_answer(call->srv, code);
    if (call->local != NULL)
        answer_local(call, code, message, payload, len);
    else
        send_reply(call->conn, call->id, code, message, payload, len);
}

/* The CALL_END event of a call refused unrun (method NULL: none named). */
static void emit_refused(dctx_rpc_server *srv, const char *method, int code, const char *msg)
{
    dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CALL_END,
                         .method = method != NULL ? method : "",
                         .code = code,
                         .message = msg};
    emit(srv, &ev);
}

/* Refuse a call unrun (method may be NULL when none was named). */
static void refuse(struct conn *c, uint32_t id, const char *method, int code, const char *fmt, ...)
    DCTX_PRINTF(5, 6);

static void refuse(struct conn *c, uint32_t id, const char *method, int code, const char *fmt, ...)
{
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit_refused(c->srv, method, code, msg);
    count_answer(c->srv, code);
    send_reply(c, id, code, msg, NULL, 0);
}

/* Refuse an admitted call unrun: a cancel that finds it now is too late. */
static void refuse_call(struct server_call *call, int code, const char *fmt, ...) DCTX_PRINTF(3, 4);

static void refuse_call(struct server_call *call, int code, const char *fmt, ...)
{
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    atomic_store(&call->state, FINISHED);
    emit_refused(call->srv, call->method->name, code, msg);
    answer(call, code, msg, NULL, 0);
}

void dctx__reply_take_payload(dctx_rpc_reply *reply, void *data, size_t len)
{
    free(reply->payload);
    reply->payload = data;
    reply->len = len;
}

int dctx_rpc_reply_set_payload(dctx_rpc_reply *reply, const void *data, size_t len)
{
    void *copy = malloc(len ? len : 1);
    if (copy == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    if (len > 0)
        memcpy(copy, data, len);
    free(reply->payload);
    reply->payload = copy;
    reply->len = len;
    return 0;
}

void dctx_rpc_reply_set_message(dctx_rpc_reply *reply, const char *fmt, ...)
{
    char text[DCTX_WIRE_MESSAGE_BYTES_MAX * 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    dctx__message_copy(reply->message, text);
}

/* ===== Calls ===== */

static bool call_retain(void *p)
{
    struct server_call *call = p;
    atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
    return true;
}

static void call_unref(struct server_call *call)
{
    if (atomic_fetch_sub_explicit(&call->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (call->stream != NULL) {
        dctx__stream_half_fini(&call->stream->half);
        free(call->stream);
    }
    dctx_release(call->ctx);
    dctx__frame_free(call->frame);
    if (call->conn != NULL)
        conn_unref(call->conn);
    free(call->local);
    free(call);
}

/* Count one call out of in_flight, waking a close waiting for none. */
static void in_flight_leave(dctx_rpc_server *srv)
{
    /* Only a closing server waits for the count to reach 0. The server
     * outlives this: close joins the workers and waits for every
     * connection before it frees anything. */
    if (atomic_fetch_sub(&srv->in_flight, 1) == 1 && atomic_load(&srv->closing)) {
        pthread_mutex_lock(&srv->mu);
        pthread_cond_broadcast(&srv->idle_cv);
        pthread_mutex_unlock(&srv->mu);
    }
}

/* The call is over (answered): forget its token, count it out. */
static void call_end(struct server_call *call)
{
    dctx_rpc_server *srv = call->srv;
    if (call->local == NULL)
        dctx__token_finish(srv->tokens, call->token, call);
    in_flight_leave(srv);
    call_unref(call);
}

/* Answer a call that will not run: dropped by its cancel, its budget gone
 * in the queue, or the server closing (the cause says UNAVAILABLE then). */
static void answer_unrun(struct server_call *call, bool dropped)
{
    dctx_rpc_server *srv = call->srv;
    const char *msg = NULL;
    int err = dctx_err(call->ctx);
    int cause = dctx_cause(call->ctx, &msg);
    int code = dropped || err == DCTX_DEADLINE_EXCEEDED ? err : cause;
    if (!dropped && err == DCTX_DEADLINE_EXCEEDED)
        count(&srv->expired_in_queue);
    char text[DCTX_WIRE_MESSAGE_BYTES_MAX];
    snprintf(text, sizeof text, "%s %s%s%s", dctx_strerror(err),
             dropped ? "before it ran" : "while queued", msg ? ": " : "", msg ? msg : "");
    emit_call_end(call, code, text);
    answer(call, code, text, NULL, 0);
}

/* Stop a call from outside: a Cancel frame, a lost caller, shutdown. A
 * cancel caused by a deadline upstream ends the context as a deadline:
 * the caller's deadline passed, whatever the transit did to ours. */
static int call_cancel(struct server_call *call, int cause, const char *msg)
{
    int err = cause == DCTX_DEADLINE_EXCEEDED ? DCTX_DEADLINE_EXCEEDED : DCTX_CANCELED;
    int expected = QUEUED;
    if (atomic_compare_exchange_strong(&call->state, &expected, DROPPED)) {
        /* Answered now, not when a worker takes it: its id and its slot
         * are free at once, however long the workers stay busy. */
        dctx__cancel_err(call->ctx, err, cause, msg);
        answer_unrun(call, true);
        return DCTX_RPC_CANCEL_PREVENTED;
    }
    if (expected == RUNNING) {
        dctx__cancel_err(call->ctx, err, cause, msg);
        return DCTX_RPC_CANCEL_STOPPED;
    }
    return DCTX_RPC_CANCEL_TOO_LATE;
}

/* ===== Workers ===== */

static void run_call(struct server_call *call)
{
    int expected = QUEUED;
    if (!atomic_compare_exchange_strong(&call->state, &expected, RUNNING)) {
        call_end(call); /* dropped: call_cancel answered it */
        return;
    }
    if (dctx_err(call->ctx) != 0) {
        atomic_store(&call->state, FINISHED); /* a cancel from here on is too late */
        answer_unrun(call, false);
    } else {
        dctx_rpc_reply reply = {.payload = NULL};
        const struct method *m = call->method;
        int code = m->stream_fn != NULL
                       ? m->stream_fn(m->arg, call->ctx, call->stream, &reply)
                       : m->fn(m->arg, call->ctx, call->req, call->req_len, &reply);
        if (code < 0 || code > DCTX_CODE_MAX)
            code = DCTX_UNKNOWN;
        if (call->stream != NULL) { /* its status is all a stream ends with */
            dctx__stream_half_end(&call->stream->half);
            free(reply.payload);
            reply.payload = NULL;
        }
        /* Finished before the reply goes: a cancel read after it is too
         * late, and the caller's leaving no longer cancels it. */
        atomic_store(&call->state, FINISHED);
        emit_call_end(call, code, reply.message);
        answer(call, code, reply.message, reply.payload, reply.len);
        free(reply.payload);
    }
    atomic_store(&call->state, FINISHED);
    call_end(call);
}

static void *worker_main(void *arg)
{
    dctx_rpc_server *srv = arg;
    pthread_mutex_lock(&srv->mu);
    for (;;) {
        struct server_call *call = srv->head;
        if (call == NULL) {
            if (srv->stopping)
                break;
            pthread_cond_wait(&srv->work_cv, &srv->mu);
            continue;
        }
        srv->head = call->next;
        if (srv->head == NULL)
            srv->tail = NULL;
        pthread_mutex_unlock(&srv->mu);
        run_call(call);
        pthread_mutex_lock(&srv->mu);
    }
    pthread_mutex_unlock(&srv->mu);
    return NULL;
}

/* ===== Receiving ===== */

/* djb2: method names are the server's own, registered before start, so
 * nobody outside chooses what collides. */
static size_t method_bucket(const char *name)
{
    size_t h = 5381;
    for (const char *p = name; *p; p++)
        h = h * 33 + (unsigned char)*p;
    return h % METHOD_BUCKETS;
}

static const struct method *find_method(const dctx_rpc_server *srv, const char *name)
{
    for (const struct method *m = srv->methods[method_bucket(name)]; m != NULL; m = m->next)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

/* Admit a checked Call: count it in, register its token, queue it. The
 * call's id is already in its connection's map. */
static void admit(dctx_rpc_server *srv, struct server_call *call)
{
    struct conn *c = call->conn; /* NULL: a call from this process */
    bool room = atomic_fetch_add(&srv->in_flight, 1) < srv->opts.max_in_flight;
    bool closing = atomic_load(&srv->closing);
    if (!room || closing)
        in_flight_leave(srv);
    if (closing || !room) {
        if (closing)
            refuse_call(call, DCTX_UNAVAILABLE, "server draining: it takes no new calls");
        else
            refuse_call(call, DCTX_RESOURCE_EXHAUSTED, "server busy: %d calls in flight",
                        srv->opts.max_in_flight);
        call_unref(call);
        return;
    }
    /* A call from this process is canceled by its caller's context only:
     * it has no token for a peer to name it by. */
    int rc =
        c != NULL ? dctx__token_insert(srv->tokens, call->token, call, c->number, dctx_now()) : 0;
    if (rc != 0) {
        if (rc == DCTX_CANCELED) /* its cancel overtook it */
            refuse_call(call, rc, "canceled before it arrived");
        else
            refuse_call(call, rc, "cancel token refused: %s", dctx_strerror(rc));
        in_flight_leave(srv);
        call_unref(call);
        return;
    }
    /* Its connection may have ended since the frame was read (a worker
     * found the caller not reading): its loss walked the table without it. */
    if (c != NULL && atomic_load(&c->over) &&
        call_cancel(call, DCTX_CANCELED, "caller lost (connection closed)") !=
            DCTX_RPC_CANCEL_TOO_LATE)
        count(&srv->canceled_by_peer_loss);
    int64_t deadline;
    dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CALL_START,
                         .method = call->method->name,
                         .deadline_in_ns =
                             dctx_deadline(call->ctx, &deadline) ? deadline - dctx_now() : -1,
                         .ctx = call->ctx,
                         .stream = call->stream != NULL};
    emit(srv, &ev);
    if (call->method->flags & DCTX_RPC_INLINE) {
        run_call(call); /* on this receiving thread: no hand-off */
        return;
    }
    pthread_mutex_lock(&srv->mu);
    call->next = NULL;
    if (srv->tail != NULL)
        srv->tail->next = call;
    else
        srv->head = call;
    srv->tail = call;
    pthread_cond_signal(&srv->work_cv);
    pthread_mutex_unlock(&srv->mu);
}

/* Enter call under id on c, in one look at the map: an id in flight is a
 * protocol error (the session ends; false), no memory a refusal (false).
 * The entry goes with the call's reply (send_reply). */
static bool take_id(struct conn *c, uint32_t id, struct server_call *call)
{
    pthread_mutex_lock(&c->mu);
    int rc = dctx__call_map_insert(&c->ids, id, call);
    pthread_mutex_unlock(&c->mu);
    if (rc == DCTX_ALREADY_EXISTS) {
        char why[64];
        snprintf(why, sizeof why, "call id %u is already in flight", id);
        dctx__session_fail(c->s, DCTX_INVALID_ARGUMENT, why);
    } else if (rc != 0) {
        count(&c->srv->calls);
        refuse(c, id, NULL, DCTX_RESOURCE_EXHAUSTED, "out of memory");
    }
    return rc == 0;
}

/* ===== Streams ===== */

static int stream_send(void *owner, Dctx__Wire__Frame *f)
{
    struct server_call *call = owner;
    return send_on(call->conn, f, call->id);
}

static int stream_end_code(void *owner)
{
    struct server_call *call = owner;
    int err = dctx_err(call->ctx);
    return err != 0 ? err : DCTX_CANCELED;
}

static void stream_hold(void *owner)
{
    (void)call_retain(owner);
}

static void stream_drop(void *owner)
{
    call_unref(owner);
}

static const struct dctx__stream_ops server_stream_ops = {
    .send = stream_send, .end_code = stream_end_code, .hold = stream_hold, .drop = stream_drop};

/* A stream call's messages, from its Call on (they may come before a
 * worker takes it); false: no memory. */
static bool stream_new(struct server_call *call, dctx *ctx)
{
    dctx_rpc_stream *st = calloc(1, sizeof *st);
    if (st == NULL || dctx__stream_half_init(&st->half, ctx) != 0) {
        free(st);
        return false;
    }
    st->ops = &server_stream_ops;
    st->owner = call;
    st->ctx = ctx;
    call->stream = st;
    return true;
}

/* A stream frame (message, half-close, credit) for a call on c. One for a
 * call that ended is dropped (the caller may not know yet); one for a
 * unary call, or a message past the credit granted, is a protocol error. */
static void on_stream_frame(struct conn *c, const Dctx__Wire__Frame *f)
{
    pthread_mutex_lock(&c->mu);
    struct server_call *call = dctx__call_map_find(&c->ids, f->call_id);
    if (call != NULL)
        call_retain(call);
    pthread_mutex_unlock(&c->mu);
    if (call == NULL)
        return;
    dctx__stream_take_frame(call->stream, f, c->s);
    call_unref(call);
}

/* The allow list's and the authorize hook's decision on a call of the
 * caller with key (NULL: none) at addr: DCTX_OK, or the status that
 * refuses it, with why, counted and reported at most once per caller per
 * second. */
static int policy_decision(dctx_rpc_server *srv, const unsigned char *key, const char *addr,
                           const char *name, char *why, size_t why_len)
{
    if (srv->opts.allow == NULL && srv->opts.authorize == NULL)
        return DCTX_OK;
    int code = dctx__authorize(&srv->opts, key, name, why, why_len);
    if (code == DCTX_OK)
        return DCTX_OK;
    count(&srv->denied);
    /* The peer is its key, else its address; it is written out only for
     * a refusal the limit lets through (a flood of them stays cheap). */
    dctx_rpc_event ev = {
        .kind = DCTX_RPC_EVENT_DENIED, .method = name, .code = code, .message = why};
    if (srv->opts.on_event == NULL ||
        !dctx__report_limit_take(srv->reports, key != NULL ? (const void *)key : addr,
                                 key != NULL ? DCTX_PUBLIC_KEY_BYTES : strlen(addr), dctx_now(),
                                 &ev.suppressed))
        return code;
    char key_text[DCTX_PUBLIC_KEY_TEXT_BYTES];
    if (key != NULL)
        dctx_public_key_text(key, key_text);
    ev.peer = key != NULL ? key_text : addr;
    emit(srv, &ev);
    return code;
}

/* A call the allow list or the authorize hook refuses: answered. True if
 * refused. */
static bool refused_by_policy(struct conn *c, uint32_t id, const char *name)
{
    char why[DCTX_WIRE_MESSAGE_BYTES_MAX];
    int code = policy_decision(c->srv, caller_key(c), c->addr[0] != '\0' ? c->addr : "a local peer",
                               name, why, sizeof why);
    if (code == DCTX_OK)
        return false;
    refuse(c, id, name, code, "%s", why);
    return true;
}

/* The caller's context rebuilt from hdr under root (NULL: call_root), as
 * dctx__wire_decode does, with a call loop named and a malformed
 * traceparent counted and reported. */
static int rebuild_context(dctx_rpc_server *srv, dctx *root, const Dctx__Wire__ContextHeader *hdr,
                           int64_t now, const char *method, dctx **out, char *err)
{
    bool trace_dropped = false;
    int rc = dctx__wire_decode(root != NULL ? root : srv->call_root, hdr, now,
                               srv->opts.max_budget_ns, srv->instance_id, out, err, &trace_dropped);
    if (rc == DCTX_FAILED_PRECONDITION) /* the call came back: name this server */
        snprintf(err, DCTX__WIRE_ERR_BYTES, "call loop through %s",
                 srv->opts.name != NULL ? srv->opts.name : "this server");
    if (trace_dropped) {
        count(&srv->traces_dropped);
        dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_TRACE_DROPPED,
                             .method = method,
                             .message = "malformed traceparent dropped"};
        emit(srv, &ev);
    }
    return rc;
}

/* A Call frame. f is ours. */
static void on_call(struct conn *c, Dctx__Wire__Frame *f)
{
    dctx_rpc_server *srv = c->srv;
    uint32_t id = f->call_id;
    /* Made first, so that one look at the map both checks the id and
     * enters the call; until admitted it is only this thread's. */
    struct server_call *call = calloc(1, sizeof *call);
    if (call == NULL) {
        count(&srv->calls);
        refuse(c, id, NULL, DCTX_RESOURCE_EXHAUSTED, "out of memory");
        dctx__frame_free(f);
        return;
    }
    if (!take_id(c, id, call)) { /* a protocol error is not a call: no reply */
        free(call);
        dctx__frame_free(f);
        return;
    }
    count(&srv->calls); /* and exactly one reply, counted by its status */
    const Dctx__Wire__Call *call_frame = f->call;
    char err[DCTX__WIRE_ERR_BYTES];
    /* The name as text: refused, never cut, with a NUL or invalid UTF-8. */
    char name[DCTX_WIRE_METHOD_BYTES_MAX + 1];
    const ProtobufCBinaryData *mb = &call_frame->method;
    bool named =
        call_frame->has_method && mb->len < sizeof name && memchr(mb->data, '\0', mb->len) == NULL;
    if (named) {
        memcpy(name, mb->data, mb->len);
        name[mb->len] = '\0';
    }
    if (!named || !dctx__method_name_valid(name) || call_frame->context == NULL) {
        count(&srv->bad_frames);
        refuse(c, id, NULL, DCTX_INVALID_ARGUMENT,
               "call without a valid method name (UTF-8 without NUL, \"/...\", at most %d "
               "bytes) or context",
               DCTX_WIRE_METHOD_BYTES_MAX);
        free(call);
        dctx__frame_free(f);
        return;
    }
    /* Before the method is looked up: a caller refused learns nothing of
     * what the server has. */
    if (refused_by_policy(c, id, name)) {
        free(call);
        dctx__frame_free(f);
        return;
    }
    const struct method *m = find_method(srv, name);
    bool stream = call_frame->has_stream && call_frame->stream;
    if (m == NULL || (m->stream_fn != NULL) != stream) {
        refuse(c, id, name, DCTX_UNIMPLEMENTED,
               m == NULL ? "unknown method %s"
               : stream  ? "%s is not a stream method"
                         : "%s is a stream method: open a stream",
               name);
        free(call);
        dctx__frame_free(f);
        return;
    }
    dctx *ctx = NULL;
    int rc = rebuild_context(srv, c->root, call_frame->context, dctx_now(), name, &ctx, err);
    if (rc != 0) {
        if (rc == DCTX_INVALID_ARGUMENT)
            count(&srv->bad_frames);
        refuse(c, id, name, rc, "%s", err);
        free(call);
        dctx__frame_free(f);
        return;
    }
    if (!conn_tryref(c)) { /* the connection is over: nobody to answer */
        pthread_mutex_lock(&c->mu);
        dctx__call_map_remove(&c->ids, id);
        pthread_mutex_unlock(&c->mu);
        free(call);
        dctx_release(ctx);
        dctx__frame_free(f);
        return;
    }
    if (stream && !stream_new(call, ctx)) {
        conn_unref(c);
        refuse(c, id, name, DCTX_RESOURCE_EXHAUSTED, "no memory for the stream");
        free(call);
        dctx_release(ctx);
        dctx__frame_free(f);
        return;
    }
    atomic_init(&call->refs, 1);
    call->srv = srv;
    call->conn = c; /* with the reference taken above */
    call->id = id;
    call->ctx = ctx;
    memcpy(call->token, call_frame->context->cancel_token.data, DCTX_TOKEN_BYTES);
    call->method = m;
    call->frame = f;
    call->req = call_frame->has_payload ? call_frame->payload.data : NULL;
    call->req_len = call_frame->has_payload ? call_frame->payload.len : 0;
    atomic_init(&call->state, QUEUED);
    call->received_ns = dctx_now();
    admit(srv, call);
}

/* The call a Cancel names: by id on its connection (its token must match),
 * else NULL. Retained. */
static struct server_call *find_by_id(struct conn *c, uint32_t id, const uint8_t *token)
{
    pthread_mutex_lock(&c->mu);
    struct server_call *call = dctx__call_map_find(&c->ids, id);
    if (call != NULL && sodium_memcmp(call->token, token, DCTX_TOKEN_BYTES) == 0)
        call_retain(call);
    else
        call = NULL;
    pthread_mutex_unlock(&c->mu);
    return call;
}

/* Did the calls of a and b come from one caller? */
static bool same_caller(const struct conn *a, const struct conn *b)
{
    if (a == b)
        return true;
    if (a == NULL) /* a call from this process: only its caller's context cancels it */
        return false;
    const unsigned char *ka = caller_key(a), *kb = caller_key(b);
    return ka != NULL && kb != NULL && sodium_memcmp(ka, kb, DCTX_PUBLIC_KEY_BYTES) == 0;
}

/* A Cancel frame: act, and answer with what it did. */
static void on_cancel(struct conn *c, Dctx__Wire__Frame *f)
{
    dctx_rpc_server *srv = c->srv;
    count(&srv->cancels_received);
    const Dctx__Wire__Cancel *cf = f->cancel;
    if (!cf->has_cancel_token || cf->cancel_token.len != DCTX_TOKEN_BYTES) {
        char why[64];
        snprintf(why, sizeof why, "cancel token must be %d bytes", DCTX_TOKEN_BYTES);
        dctx__session_fail(c->s, DCTX_INVALID_ARGUMENT, why);
        return;
    }
    int cause =
        cf->has_code && cf->code >= 1 && cf->code <= DCTX_CODE_MAX ? (int)cf->code : DCTX_CANCELED;
    char msg[DCTX__MESSAGE_SIZE];
    dctx__message_copy(msg, cf->message);
    int64_t now = dctx_now(); /* also the time it was read, for the event */
    int outcome;
    struct server_call *call = find_by_id(c, f->call_id, cf->cancel_token.data);
    if (call != NULL) {
        outcome = call_cancel(call, cause, msg[0] ? msg : NULL);
        call_unref(call);
    } else {
        int64_t keep = cf->has_budget_us && cf->budget_us < (uint64_t)TOMBSTONE_MAX_NS / 1000
                           ? (int64_t)cf->budget_us * 1000
                           : TOMBSTONE_MAX_NS;
        void *found = NULL;
        switch (dctx__token_cancel(srv->tokens, cf->cancel_token.data, now, now + keep, call_retain,
                                   &found)) {
        case DCTX__TOKEN_LIVE:
            /* Only the caller that made a call may cancel it: the same
             * proven key, or without keys the same connection. A token
             * read off the wire and sent from elsewhere is answered as an
             * unknown one (nothing is said of the call) and does nothing. */
            if (same_caller(((struct server_call *)found)->conn, c))
                outcome = call_cancel(found, cause, msg[0] ? msg : NULL);
            else
                outcome = DCTX_RPC_CANCEL_PREVENTED;
            call_unref(found);
            break;
        case DCTX__TOKEN_FINISHED:
            outcome = DCTX_RPC_CANCEL_TOO_LATE;
            break;
        default:
            outcome = DCTX_RPC_CANCEL_PREVENTED; /* remembered: refused if it comes */
        }
    }
    count(&srv->outcomes[outcome]);
    dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CANCEL_RECEIVED,
                         .code = cause,
                         .message = msg,
                         .elapsed_ns = dctx_now() - now,
                         .outcome = outcome};
    emit(srv, &ev);
    Dctx__Wire__CancelAck ack = DCTX__WIRE__CANCEL_ACK__INIT;
    ack.has_outcome = 1;
    ack.outcome = (Dctx__Wire__CancelOutcome)outcome;
    Dctx__Wire__Frame out = DCTX__WIRE__FRAME__INIT;
    out.body_case = DCTX__WIRE__FRAME__BODY_CANCEL_ACK;
    out.cancel_ack = &ack;
    (void)send_on(c, &out, f->call_id); /* a control frame: fails only if c is gone */
}

static bool got_frame(void *owner, struct dctx__session *s, Dctx__Wire__Frame *f)
{
    (void)s;
    if (f->body_case == DCTX__WIRE__FRAME__BODY_CALL) {
        on_call(owner, f);
        return true; /* on_call owns f */
    }
    if (f->body_case == DCTX__WIRE__FRAME__BODY_CANCEL)
        on_cancel(owner, f);
    else if (f->body_case == DCTX__WIRE__FRAME__BODY_MESSAGE ||
             f->body_case == DCTX__WIRE__FRAME__BODY_HALF_CLOSE ||
             f->body_case == DCTX__WIRE__FRAME__BODY_CREDIT)
        on_stream_frame(owner, f);
    return false; /* pongs and GoAways: nothing to do (a GoAway ends the session) */
}

/* The peer's address as text ("" for ipc and abstract sockets). */
static void peer_address(nng_stream *st, char *out, size_t len)
{
    out[0] = '\0';
    nng_sockaddr sa;
    if (nng_stream_get_addr(st, NNG_OPT_REMADDR, &sa) != 0)
        return;
    char host[INET6_ADDRSTRLEN];
    if (sa.s_family == NNG_AF_INET &&
        inet_ntop(AF_INET, &sa.s_in.sa_addr, host, sizeof host) != NULL)
        snprintf(out, len, "%s:%u", host, ntohs(sa.s_in.sa_port));
    else if (sa.s_family == NNG_AF_INET6 &&
             inet_ntop(AF_INET6, sa.s_in6.sa_addr, host, sizeof host) != NULL)
        snprintf(out, len, "[%s]:%u", host, ntohs(sa.s_in6.sa_port));
}

/* A connection came (an nng callback of an acceptor). */
static void accepted(void *owner, nng_stream *st)
{
    dctx_rpc_server *srv = owner;
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        nng_stream_close(st);
        nng_stream_free(st);
        return;
    }
    c->srv = srv;
    atomic_init(&c->refs, 1);
    peer_address(st, c->addr, sizeof c->addr);
    pthread_mutex_init(&c->mu, NULL);
    dctx__call_map_init(&c->ids);
    size_t max = srv->opts.recv_max_bytes + DCTX__FRAME_OVERHEAD_BYTES;
    struct dctx__session_options so = {
        .server = true,
        .max_frame_bytes = max > UINT32_MAX ? UINT32_MAX : (uint32_t)max,
        .max_calls = (uint32_t)srv->opts.max_in_flight,
        .name = srv->opts.name,
        .keepalive_ms = dctx__ns_to_ms(srv->opts.keepalive_ns),
        .ping_timeout_ms = dctx__ns_to_ms(srv->opts.keepalive_timeout_ns),
        .min_ping_interval_ms = dctx__ns_to_ms(srv->opts.keepalive_min_interval_ns),
        .identity = srv->opts.identity,
        .on_ready = conn_ready,
        .on_frame = got_frame,
        .on_end = conn_ended,
        .owner = c,
    };
    if (dctx__session_open(st, &so, &c->s) != 0) {
        pthread_mutex_destroy(&c->mu);
        free(c);
        return;
    }
    pthread_mutex_lock(&srv->mu);
    c->number = ++srv->conn_number;
    c->next = srv->conns;
    if (srv->conns != NULL)
        srv->conns->prev = c;
    srv->conns = c;
    bool closing = atomic_load(&srv->closing);
    /* Frames are read once the server has started: methods are
     * registered until then. */
    c->unstarted = !atomic_load(&srv->started);
    bool go = !closing && !c->unstarted;
    pthread_mutex_unlock(&srv->mu);
    count(&srv->connections);
    if (closing) {
        dctx__session_shutdown(c->s);
        conn_over(c, false);
    } else if (go) {
        dctx__session_start(c->s);
    }
}

/* ===== Calls from this process ===== */

/* The cancel's part that may run user code (an unrun call's answer, the
 * event hook, done), on the reaper as a channel's finish is: never inside
 * the caller's dctx_cancel, nor on the timer's thread. */
static void local_cancel_deferred(void *arg)
{
    struct server_call *call = arg;
    struct local_call *l = call->local;
    dctx_rpc_server *srv = call->srv;
    int64_t now = dctx_now();
    int outcome = call_cancel(call, l->cause, l->cause_text[0] ? l->cause_text : NULL);
    if (l->stopped)
        outcome = DCTX_RPC_CANCEL_STOPPED; /* its context was canceled while it ran */
    count(&srv->cancels_received);
    count(&srv->outcomes[outcome]);
    dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CANCEL_RECEIVED,
                         .method = call->method->name,
                         .code = l->cause,
                         .message = l->cause_text,
                         .elapsed_ns = dctx_now() - now,
                         .outcome = outcome};
    emit(srv, &ev);
    if (l->first) {
        l->res.cancel_outcome = outcome;
        l->done(l->arg, &l->res);
        dctx_rpc_result_free(&l->res);
    }
    call_unref(call);
    local_release(srv);
}

/* The caller's context ended: its cause goes to the call as a Cancel
 * frame's would, and the call is decided with the caller's error unless
 * its answer came first (a remote caller decides so too). A running
 * handler's context is canceled here, at once; the rest is deferred. */
static void local_cancel(struct server_call *call, dctx *caller)
{
    struct local_call *l = call->local;
    l->first = !atomic_exchange(&l->decided, true);
    const char *msg = NULL;
    l->cause = dctx_cause(caller, &msg);
    dctx__message_copy(l->cause_text, msg);
    if (l->first)
        dctx__result_from_context(caller, &l->res);
    l->stopped = atomic_load(&call->state) == RUNNING;
    if (l->stopped)
        dctx__cancel_err(
            call->ctx, l->cause == DCTX_DEADLINE_EXCEEDED ? DCTX_DEADLINE_EXCEEDED : DCTX_CANCELED,
            l->cause, l->cause_text[0] ? l->cause_text : NULL);
    call_retain(call);
    local_hold(call->srv);
    if (!dctx__reaper_defer(&l->reap, local_cancel_deferred, call))
        local_cancel_deferred(call); /* the reaper runs from the server's open on */
}

/* The after-func on the caller's context. */
static void local_caller_done(void *arg)
{
    struct server_call *call = arg;
    dctx_rpc_server *srv = call->srv;
    int phase = LOCAL_STARTING;
    if (!atomic_compare_exchange_strong(&call->local->phase, &phase, LOCAL_CANCELED_STARTING))
        local_cancel(call, call->local->caller);
    call_unref(call);
    local_release(srv); /* the last touch of srv: close may free it now */
}

/* Answer a call refused before it was made: counted and reported as the
 * server's answers are. */
static void refuse_local(dctx_rpc_server *srv, const char *method, int code, const char *why,
                         dctx_rpc_done_fn done, void *arg)
{
    count_answer(srv, code);
    emit_refused(srv, method, code, why);
    dctx_rpc_result res = {.code = code, .message = why};
    done(arg, &res);
}

/* What a remote call's Call frame is checked for, done on the caller's
 * own thread: 0 with *out the method, or the code of the refusal, answered. */
static int local_method(dctx_rpc_server *srv, const char *method, dctx_rpc_done_fn done, void *arg,
                        const struct method **out)
{
    char why[DCTX_WIRE_MESSAGE_BYTES_MAX];
    int code = policy_decision(srv, srv->has_own_key ? srv->own_key : NULL, "this process", method,
                               why, sizeof why);
    if (code == DCTX_OK) {
        *out = find_method(srv, method);
        if (*out == NULL || (*out)->stream_fn != NULL) {
            code = DCTX_UNIMPLEMENTED;
            snprintf(why, sizeof why,
                     *out == NULL ? "unknown method %s" : "%s is a stream method: open a stream",
                     method);
        }
    }
    if (code != DCTX_OK)
        refuse_local(srv, method, code, why, done, arg);
    return code;
}

/* dctx_rpc_server_call_start's work, under the starter's hold. The call
 * goes as over a socket: the caller's side encodes the context (what
 * fails there is the starter's code to return), the server checks the
 * policy and the method, then rebuilds the context from the header (the
 * budget after the reserve, the values under the policy, a new span, the
 * loop check). One instant for both ends: no transit, so the deadline is
 * the caller's less the reserve, never later. */
static int local_start(dctx_rpc_server *srv, dctx *ctx, const dctx_wire_policy *policy,
                       const char *method, const void *req, size_t req_len, dctx_rpc_done_fn done,
                       void *arg)
{
    struct dctx__wire_out hdr;
    char err[DCTX__WIRE_ERR_BYTES];
    int64_t now = dctx_now();
    int rc = dctx__wire_encode(ctx, policy, now, &hdr, err);
    if (rc != 0)
        return rc;
    count(&srv->calls);
    const struct method *m = NULL;
    if (local_method(srv, method, done, arg, &m) != DCTX_OK)
        return 0;
    dctx *call_ctx = NULL;
    rc = rebuild_context(srv, srv->local_root, &hdr.hdr, now, method, &call_ctx, err);
    if (rc != 0) {
        refuse_local(srv, method, rc, err, done, arg);
        return 0;
    }
    struct server_call *call = calloc(1, sizeof *call);
    struct local_call *l = malloc(sizeof *l + req_len);
    if (call == NULL || l == NULL) {
        free(call);
        free(l);
        dctx_release(call_ctx);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    if (req_len > 0)
        memcpy(l->req, req, req_len);
    l->done = done;
    l->arg = arg;
    l->caller = ctx;
    l->after = NULL;
    atomic_init(&l->decided, false);
    atomic_init(&l->phase, LOCAL_STARTING);
    atomic_init(&call->refs, 2); /* the queue's and the starter's */
    call->srv = srv;
    call->ctx = call_ctx; /* no token: nobody outside this process can name the call */
    call->method = m;
    call->req = l->req;
    call->req_len = req_len;
    call->local = l;
    atomic_init(&call->state, QUEUED);
    call->received_ns = dctx_now();
    if (dctx__can_be_done(ctx)) {
        atomic_fetch_add(&call->refs, 1);
        local_hold(srv);
        if (dctx__after_func_inline(ctx, local_caller_done, call, &l->after) != 0) {
            local_release(srv);
            dctx_release(call_ctx);
            free(l);
            free(call);
            return DCTX_RESOURCE_EXHAUSTED;
        }
    }
    admit(srv, call);
    int phase = LOCAL_STARTING;
    if (!atomic_compare_exchange_strong(&l->phase, &phase, LOCAL_ADMITTED))
        local_cancel(call, ctx); /* its caller's context ended while it started */
    call_unref(call);
    return 0;
}

int dctx_rpc_server_call_start(dctx_rpc_server *srv, dctx *ctx, const dctx_wire_policy *policy,
                               const char *method, const void *req, size_t req_len,
                               dctx_rpc_done_fn done, void *arg)
{
    if (srv == NULL || ctx == NULL || method == NULL || done == NULL ||
        (req == NULL && req_len > 0) || !dctx__method_name_valid(method))
        return DCTX_INVALID_ARGUMENT;
    if (!atomic_load(&srv->started))
        return DCTX_UNAVAILABLE;
    if (req_len > srv->opts.recv_max_bytes)
        return DCTX_RESOURCE_EXHAUSTED;
    if (dctx_err(ctx) != 0) {
        const char *msg;
        return dctx_cause(ctx, &msg) == DCTX_DEADLINE_EXCEEDED ? DCTX_DEADLINE_EXCEEDED
                                                               : dctx_err(ctx);
    }
    /* Till the return: done may run before it, and whoever done wakes may
     * close the server. */
    local_hold(srv);
    int rc = local_start(srv, ctx, policy, method, req, req_len, done, arg);
    local_release(srv);
    return rc;
}

/* ===== Server ===== */

void dctx_rpc_server_options_init(dctx_rpc_server_options *o)
{
    memset(o, 0, sizeof *o);
    o->workers = DCTX_RPC_DEFAULT_WORKERS;
    o->max_in_flight = DCTX_RPC_DEFAULT_MAX_IN_FLIGHT;
    o->recv_max_bytes = DCTX_RPC_DEFAULT_RECV_MAX_BYTES;
    o->shutdown_grace_ns = DCTX_RPC_DEFAULT_SHUTDOWN_GRACE_NS;
    o->keepalive_ns = DCTX_RPC_DEFAULT_KEEPALIVE_NS;
    o->keepalive_timeout_ns = DCTX_RPC_DEFAULT_KEEPALIVE_TIMEOUT_NS;
    o->keepalive_min_interval_ns = DCTX_RPC_DEFAULT_KEEPALIVE_MIN_INTERVAL_NS;
}

int dctx_rpc_server_open(const dctx_rpc_server_options *opts, dctx_rpc_server **out)
{
    if (out == NULL)
        return DCTX_INVALID_ARGUMENT;
    *out = NULL;
    dctx_rpc_server *srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    if (opts != NULL)
        srv->opts = *opts;
    else
        dctx_rpc_server_options_init(&srv->opts);
    if (srv->opts.workers < 1 || srv->opts.max_in_flight < 1 || srv->opts.max_budget_ns < 0 ||
        srv->opts.keepalive_ns < 0 || srv->opts.keepalive_timeout_ns < 0 ||
        srv->opts.keepalive_min_interval_ns < 0 ||
        (srv->opts.allow != NULL && srv->opts.identity == NULL)) {
        free(srv);
        return DCTX_INVALID_ARGUMENT;
    }
    if (srv->opts.recv_max_bytes == 0)
        srv->opts.recv_max_bytes = DCTX_RPC_DEFAULT_RECV_MAX_BYTES;
    /* Connections are closed on the reaper thread, never in nng's
     * callbacks: it must be running before the first one comes. */
    int rc = dctx__reaper_start()
                 ? dctx__token_table_open((size_t)srv->opts.max_in_flight, TOMBSTONES_MAX,
                                          FINISHED_MAX, &srv->tokens)
                 : DCTX_RESOURCE_EXHAUSTED;
    if (rc == 0 && dctx_with_cancel(dctx_background(), &srv->root) != 0)
        rc = DCTX_RESOURCE_EXHAUSTED;
    if (rc == 0 && (srv->reports = dctx__report_limit_open()) == NULL)
        rc = DCTX_RESOURCE_EXHAUSTED;
    while (rc == 0 && srv->instance_id == 0)
        if (!dctx__random(&srv->instance_id, sizeof srv->instance_id))
            rc = DCTX_RESOURCE_EXHAUSTED;
    if (rc == 0 && dctx_with_value(srv->root, &dctx__drain_key, &srv->instance_id,
                                   sizeof srv->instance_id, &srv->call_root) != 0)
        rc = DCTX_RESOURCE_EXHAUSTED;
    if (rc == 0 && srv->opts.identity != NULL) {
        srv->has_own_key = true;
        dctx_identity_public_key(srv->opts.identity, srv->own_key);
        if (dctx_with_value(srv->call_root, &dctx_rpc_caller_key, srv->own_key, sizeof srv->own_key,
                            &srv->local_root) != 0)
            rc = DCTX_RESOURCE_EXHAUSTED;
    }
    if (rc != 0) {
        dctx_release(srv->call_root);
        dctx_release(srv->root);
        dctx__report_limit_close(srv->reports);
        if (srv->tokens != NULL)
            dctx__token_table_close(srv->tokens);
        free(srv);
        return rc;
    }
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->work_cv, NULL);
    dctx__cond_init_monotonic(&srv->idle_cv);
    *out = srv;
    return 0;
}

int dctx_rpc_server_listen(dctx_rpc_server *srv, const char *url)
{
    if (srv == NULL || url == NULL)
        return DCTX_INVALID_ARGUMENT;
    struct acceptor_item *item = calloc(1, sizeof *item);
    if (item == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    struct dctx__acceptor_options ao = {.tls_cert_key_file = srv->opts.tls_cert_key_file,
                                        .tls_client_ca_file = srv->opts.tls_client_ca_file,
                                        .on_stream = accepted,
                                        .owner = srv};
    int rc = dctx__acceptor_open(url, &ao, &item->a);
    if (rc != 0) {
        free(item);
        return rc;
    }
    pthread_mutex_lock(&srv->mu);
    bool closing = atomic_load(&srv->closing);
    if (!closing) {
        item->next = srv->acceptors;
        srv->acceptors = item;
    }
    pthread_mutex_unlock(&srv->mu);
    if (closing) { /* shut down: it would never be closed */
        dctx__acceptor_close(item->a);
        free(item);
        return DCTX_INVALID_ARGUMENT;
    }
    return 0;
}

static int add_method(dctx_rpc_server *srv, const char *name, dctx_rpc_handler_fn fn,
                      dctx_rpc_stream_handler_fn stream_fn, void *arg, void *owned, unsigned flags)
{
    if (!dctx__method_name_valid(name))
        return DCTX_INVALID_ARGUMENT;
    if (find_method(srv, name) != NULL)
        return DCTX_ALREADY_EXISTS;
    struct method *m = calloc(1, sizeof *m);
    if (m == NULL || (m->name = strdup(name)) == NULL) {
        free(m);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    m->fn = fn;
    m->stream_fn = stream_fn;
    m->arg = arg;
    m->owned = owned;
    m->flags = flags;
    size_t b = method_bucket(name);
    m->next = srv->methods[b];
    srv->methods[b] = m;
    return 0;
}

int dctx_rpc_server_register_flags(dctx_rpc_server *srv, const char *method, dctx_rpc_handler_fn fn,
                                   void *arg, unsigned flags)
{
    return dctx__server_register_owned(srv, method, fn, arg, flags, NULL);
}

int dctx_rpc_server_register(dctx_rpc_server *srv, const char *method, dctx_rpc_handler_fn fn,
                             void *arg)
{
    return dctx_rpc_server_register_flags(srv, method, fn, arg, 0);
}

int dctx_rpc_server_register_stream(dctx_rpc_server *srv, const char *method,
                                    dctx_rpc_stream_handler_fn fn, void *arg)
{
    if (srv == NULL || method == NULL || fn == NULL || atomic_load(&srv->started))
        return DCTX_INVALID_ARGUMENT;
    return add_method(srv, method, NULL, fn, arg, NULL, 0);
}

size_t dctx_rpc_server_methods(const dctx_rpc_server *srv, const char **names, size_t max)
{
    size_t n = 0;
    for (size_t b = 0; srv != NULL && b < METHOD_BUCKETS; b++)
        for (const struct method *m = srv->methods[b]; m != NULL; m = m->next, n++)
            if (n < max)
                names[n] = m->name;
    return n;
}

int dctx__server_register_owned(dctx_rpc_server *srv, const char *method, dctx_rpc_handler_fn fn,
                                void *arg, unsigned flags, void *owned)
{
    if (srv == NULL || fn == NULL || atomic_load(&srv->started) || (flags & ~DCTX_RPC_INLINE) != 0)
        return DCTX_INVALID_ARGUMENT;
    return add_method(srv, method, fn, NULL, arg, owned, flags);
}

/* Stop and join the workers started so far. */
static void stop_workers(dctx_rpc_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    srv->stopping = true;
    pthread_cond_broadcast(&srv->work_cv);
    pthread_mutex_unlock(&srv->mu);
    for (int i = 0; i < srv->n_workers; i++)
        pthread_join(srv->workers[i], NULL); /* a handler past the grace is still waited for */
    srv->stopping = false;
    srv->n_workers = 0;
    free(srv->workers);
    srv->workers = NULL;
}

/* Every step that can fail comes first, and a failure undoes the steps
 * before it: a failed start leaves the server as it was, to be started
 * again or closed. */
int dctx_rpc_server_start(dctx_rpc_server *srv)
{
    if (srv == NULL || atomic_load(&srv->started) || srv->shut_down)
        return DCTX_INVALID_ARGUMENT;
    int rc = 0;
    size_t size = (size_t)srv->opts.workers * sizeof *srv->workers;
    if ((srv->workers = dctx__malloc(size)) == NULL)
        rc = DCTX_RESOURCE_EXHAUSTED;
    while (rc == 0 && srv->n_workers < srv->opts.workers) {
        if (dctx__thread_start(&srv->workers[srv->n_workers], worker_main, srv) != 0)
            rc = DCTX_RESOURCE_EXHAUSTED;
        else
            srv->n_workers++;
    }
    if (rc != 0) {
        stop_workers(srv);
        return rc;
    }
    /* Start the sessions accepted so far; later ones start as accepted. A
     * session is started once, so each is taken off under mu. */
    pthread_mutex_lock(&srv->mu);
    atomic_store(&srv->started, true);
    for (;;) {
        struct conn *c = srv->conns;
        while (c != NULL && !c->unstarted)
            c = c->next;
        if (c == NULL)
            break;
        c->unstarted = false;
        bool held = conn_tryref(c);
        pthread_mutex_unlock(&srv->mu);
        if (held) {
            dctx__session_start(c->s);
            conn_unref(c);
        }
        pthread_mutex_lock(&srv->mu);
    }
    pthread_mutex_unlock(&srv->mu);
    return 0;
}

/* Tell every connection the server is going, and end it: its last replies
 * and the GoAway go out (bounded) before the reaper closes it. */
static void end_connections(dctx_rpc_server *srv)
{
    Dctx__Wire__GoAway g = DCTX__WIRE__GO_AWAY__INIT;
    g.has_code = 1;
    g.code = DCTX_UNAVAILABLE;
    g.message = (char *)"server shutting down";
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_GOAWAY;
    f.goaway = &g;
    for (;;) {
        pthread_mutex_lock(&srv->mu);
        struct conn *c = srv->conns;
        while (c != NULL && atomic_load(&c->over))
            c = c->next;
        bool held = c != NULL && conn_tryref(c);
        pthread_mutex_unlock(&srv->mu);
        if (c == NULL)
            return;
        if (!held)
            continue;        /* ended meanwhile: its reaper item is queued */
        conn_over(c, false); /* its calls are answered first, the GoAway after them */
        (void)dctx__session_send(c->s, &f);
        conn_unref(c);
    }
}

/* Tell every caller the server drains (PROTOCOL.md, "Drain"): it takes no
 * new calls, and those in flight have grace_ms to finish. Sending never
 * waits on the peer (a write the socket cannot take goes on nng's thread),
 * so it is done under mu, which keeps the list still. */
static void drain_connections(dctx_rpc_server *srv, int64_t grace_ns)
{
    Dctx__Wire__Drain d = DCTX__WIRE__DRAIN__INIT;
    d.has_grace_ms = 1;
    d.grace_ms = (uint32_t)dctx__ns_to_ms(grace_ns);
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_DRAIN;
    f.drain = &d;
    pthread_mutex_lock(&srv->mu);
    for (struct conn *c = srv->conns; c != NULL; c = c->next)
        if (!atomic_load(&c->over))
            (void)dctx__session_send(c->s, &f); /* a control frame; fails only if c ended */
    pthread_mutex_unlock(&srv->mu);
}

/* The grace ran out: what still runs is stopped, as by a deadline, with a
 * cause that says why. */
static void force_close(dctx_rpc_server *srv)
{
    char why[DCTX_WIRE_MESSAGE_BYTES_MAX];
    snprintf(why, sizeof why, "server shut down: its drain's grace of %lld ms ran out",
             (long long)(srv->opts.shutdown_grace_ns / 1000000));
    dctx__cancel_err(srv->root, DCTX_DEADLINE_EXCEEDED, DCTX_UNAVAILABLE, why);
}

int dctx_rpc_server_shutdown(dctx_rpc_server *srv)
{
    if (srv == NULL)
        return 0;
    if (srv->shut_down)
        return srv->shutdown_rc;
    srv->shut_down = true;
    pthread_mutex_lock(&srv->mu);
    atomic_store(&srv->closing, true); /* calls from here on are refused "draining" */
    struct acceptor_item *acceptors = srv->acceptors;
    srv->acceptors = NULL;
    pthread_mutex_unlock(&srv->mu);
    while (acceptors != NULL) { /* no connection comes after this */
        struct acceptor_item *next = acceptors->next;
        atomic_fetch_add(&srv->accept_failures_closed, dctx__acceptor_failures(acceptors->a));
        dctx__acceptor_close(acceptors->a);
        free(acceptors);
        acceptors = next;
    }

    /* The drain: calls in flight finish within the grace; then the rest
     * are stopped. */
    int rc = 0;
    int64_t until = dctx_now() + srv->opts.shutdown_grace_ns;
    /* The drain's end is every call's deadline from now on, for
     * dctx_rpc_deadline and the budgets of their calls onward. */
    (void)dctx__drain_begin(srv->instance_id, until);
    drain_connections(srv, srv->opts.shutdown_grace_ns);
    pthread_mutex_lock(&srv->mu);
    while (atomic_load(&srv->in_flight) > 0 && dctx_now() < until)
        dctx__cond_wait_until(&srv->idle_cv, &srv->mu, until);
    bool late = atomic_load(&srv->in_flight) > 0;
    pthread_mutex_unlock(&srv->mu);
    if (late) {
        force_close(srv);
        rc = DCTX_DEADLINE_EXCEEDED;
    }
    dctx_cancel_cause(srv->root, DCTX_UNAVAILABLE, "server shut down");

    stop_workers(srv); /* a handler past the grace is still waited for; its reply is queued */
    atomic_store(&srv->flush_until, dctx_now() + CLOSE_FLUSH_NS);
    end_connections(srv); /* a GoAway after every reply */
    pthread_mutex_lock(&srv->mu);
    while (srv->conns != NULL || atomic_load_explicit(&srv->local_holds, memory_order_acquire) > 0)
        dctx__cond_wait_until(&srv->idle_cv, &srv->mu, dctx_now() + 10000000LL);
    /* The reaper's last unlock is behind us (conn_close_deferred). */
    pthread_mutex_unlock(&srv->mu);
    srv->shutdown_rc = rc;
    return rc;
}

int dctx_rpc_server_close(dctx_rpc_server *srv)
{
    if (srv == NULL)
        return 0;
    int rc = dctx_rpc_server_shutdown(srv);
    dctx__drain_end(srv->instance_id);
    dctx__token_table_close(srv->tokens);
    dctx_release(srv->local_root);
    dctx_release(srv->call_root);
    dctx_release(srv->root);
    dctx__report_limit_close(srv->reports);
    for (int b = 0; b < METHOD_BUCKETS; b++) {
        for (struct method *m = srv->methods[b], *next; m != NULL; m = next) {
            next = m->next;
            free(m->name);
            free(m->owned);
            free(m);
        }
    }
    pthread_cond_destroy(&srv->idle_cv);
    pthread_cond_destroy(&srv->work_cv);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
    return rc;
}

void dctx_rpc_server_stats_get(dctx_rpc_server *srv, dctx_rpc_server_stats *out)
{
    memset(out, 0, sizeof *out);
    out->calls = atomic_load(&srv->calls);
    out->cancels_received = atomic_load(&srv->cancels_received);
    out->peers_lost = atomic_load(&srv->peers_lost);
    out->calls_canceled_by_peer_loss = atomic_load(&srv->canceled_by_peer_loss);
    out->bad_frames = atomic_load(&srv->bad_frames);
    out->expired_in_queue = atomic_load(&srv->expired_in_queue);
    out->traces_dropped = atomic_load(&srv->traces_dropped);
    out->connections_accepted = atomic_load(&srv->connections);
    out->unauthenticated = atomic_load(&srv->unauthenticated);
    out->sealed_aes256gcm = atomic_load(&srv->sealed_aes256gcm);
    out->sealed_chacha20poly1305 = atomic_load(&srv->sealed_chacha20poly1305);
    out->denied = atomic_load(&srv->denied);
    for (int i = 0; i <= DCTX_CODE_MAX; i++)
        out->by_code[i] = atomic_load(&srv->by_code[i]);
    for (int i = 0; i < DCTX_RPC_CANCEL_OUTCOMES; i++)
        out->cancel_outcomes[i] = atomic_load(&srv->outcomes[i]);
    out->in_flight = (uint64_t)atomic_load(&srv->in_flight);
    out->accept_failures = atomic_load(&srv->accept_failures_closed);
    pthread_mutex_lock(&srv->mu);
    for (struct acceptor_item *a = srv->acceptors; a != NULL; a = a->next)
        out->accept_failures += dctx__acceptor_failures(a->a);
    pthread_mutex_unlock(&srv->mu);
}
