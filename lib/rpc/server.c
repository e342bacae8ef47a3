/*
 * server.c - a REP socket, a method table and a pool of workers.
 *
 * Receiving never stops: RECEIVERS pooled nng contexts always have a
 * receive posted. When one gets a message, a fresh context takes over its
 * receive at once and the one that got it (it holds the requester's
 * backtrace) stays with the request until its reply is sent; then it goes
 * back to the pool. So a Cancel is read even while every worker is busy,
 * and a peer that never reads its replies holds only its own contexts:
 * replies are sent asynchronously with a timeout, never waited for.
 *
 * A Call is checked and its context rebuilt on the receiving (nng) thread,
 * registered by its token, and queued; workers run handlers. A Cancel
 * looks the token up: a queued call is dropped (PREVENTED), a running
 * one has its context canceled with the caller's cause (STOPPED), a
 * finished one is TOO_LATE, an unknown one is remembered until its budget
 * ends so the call, if it comes, is refused (PREVENTED). A lost pipe
 * cancels every call that came on it; closing cancels the root of all.
 *
 * Call states: QUEUED -> RUNNING -> FINISHED, or QUEUED -> DROPPED by a
 * cancel or a lost caller, decided by compare-and-swap.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rpc_impl.h" /* nng.h first: the protocol headers need it */
#include "listen.h"
#include "context/alloc.h"
#include "context/clock.h"
#include "context/hooks.h"

#include <dctx/trace.h>

#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include "text.h"
#include "token_table.h"
#include "wire_impl.h"

#define RECEIVERS 4
#define METHOD_BUCKETS 256
#define REPLY_SEND_TIMEOUT_MS 5000
#define TOMBSTONE_MAX_NS (60 * 1000000000LL)
#define TOMBSTONES_MAX 65536
/* Finished tokens remembered, to answer a late cancel TOO_LATE and refuse
 * a replayed call. A cancel comes late only by the reply's time in transit
 * (the caller pushes none once its call ended), and 4096 calls are 40 ms
 * at 100k calls/s; each entry is kept memory (16384 were 1.2 MB of the
 * server's resident set under load). */
#define FINISHED_MAX 4096
/* Contexts beyond the calls in flight: receivers, cancels, error replies. */
#define IO_SLACK 1024

enum call_state { QUEUED, RUNNING, FINISHED, DROPPED };

struct method {
    char *name;
    dctx_rpc_handler_fn fn;
    void *arg;
    void *owned;    /* freed with the method: what a wrapper (pb.c) made for arg */
    unsigned flags; /* DCTX_RPC_INLINE */
    struct method *next;
};

struct server_call {
    atomic_int refs; /* the work queue/worker, plus lookups in the token table */
    dctx_rpc_server *srv;
    struct dctx__io *io; /* holds the caller's backtrace until the reply */
    dctx *ctx;           /* the rebuilt context, canceled from outside */
    uint8_t token[DCTX_TOKEN_BYTES];
    const struct method *method;
    Dctx__Wire__Frame *frame; /* the request; the payload lives here */
    atomic_int state;         /* enum call_state */
    atomic_bool caller_gone;  /* its caller canceled it or was lost: no reply needed */
    int64_t received_ns;
    struct server_call *next; /* work queue; protected by srv->mu */
};

struct dctx_rpc_reply {
    void *payload;
    size_t len;
    char message[DCTX__MESSAGE_SIZE];
};

struct dctx_rpc_server {
    nng_socket sock;
    dctx_rpc_server_options opts;
    dctx *root;                             /* every call's context descends from it */
    struct method *methods[METHOD_BUCKETS]; /* written before start only */
    struct dctx__io_pool pool;
    struct dctx__listeners listeners;
    dctx__token_table *tokens;
    pthread_mutex_t mu;
    pthread_cond_t work_cv;          /* work queued, or stopping */
    pthread_cond_t idle_cv;          /* in_flight reached 0. CLOCK_MONOTONIC */
    struct server_call *head, *tail; /* protected by mu */
    /* Calls admitted and not yet over, counted without the mutex: admit
     * counts a call in, then checks closing; close sets closing, then
     * waits for the count (seq_cst both: one sees the other). */
    atomic_int in_flight;
    atomic_bool closing;    /* set once, under mu */
    bool stopping, started; /* protected by mu */
    pthread_t *workers;
    int n_workers;
    atomic_uint_fast64_t calls, cancels_received, peers_lost, canceled_by_peer_loss, bad_frames,
        expired_in_queue, traces_dropped;
    atomic_uint_fast64_t by_code[DCTX_CODE_MAX + 1];
    atomic_uint_fast64_t outcomes[DCTX_RPC_CANCEL_OUTCOMES];
};

static void count(atomic_uint_fast64_t *c)
{
    atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
}

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

/* A call answered without running: refused, or ended by its cancel. */
static void emit_refusal(dctx_rpc_server *srv, const char *method, int code, const char *message)
{
    dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CALL_END,
                         .method = method != NULL ? method : "",
                         .code = code,
                         .message = message};
    emit(srv, &ev);
}

static void emit_call_end(struct server_call *call, int code, const char *message)
{
    dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CALL_END,
                         .method = call->method->name,
                         .code = code,
                         .message = message,
                         .elapsed_ns = dctx_now() - call->received_ns,
                         .ctx = call->ctx};
    emit(call->srv, &ev);
}

static void emit_refusal(dctx_rpc_server *srv, const char *method, int code, const char *message);

/* ===== Replies ===== */

static void reply_sent(void *owner, struct dctx__io *io, int rv)
{
    (void)owner;
    if (rv != 0) { /* the peer is gone or does not read: drop it */
        nng_msg_free(nng_aio_get_msg(io->aio));
        nng_aio_set_msg(io->aio, NULL);
    }
    dctx__io_put(io);
}

/* Send f on io (which holds the requester's backtrace), then give io back. */
static void send_frame(struct dctx__io *io, const Dctx__Wire__Frame *f)
{
    nng_msg *m = NULL;
    if (dctx__frame_pack(f, &m) != 0) {
        dctx__io_put(io);
        return;
    }
    io->fn = reply_sent;
    nng_aio_set_timeout(io->aio, REPLY_SEND_TIMEOUT_MS);
    nng_aio_set_msg(io->aio, m);
    nng_ctx_send(io->nctx, io->aio);
}

static void send_reply(dctx_rpc_server *srv, struct dctx__io *io, int code, const char *message,
                       const void *payload, size_t len)
{
    count(&srv->by_code[code >= 0 && code <= DCTX_CODE_MAX ? code : DCTX_UNKNOWN]);
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
    send_frame(io, &f);
}

/* Refuse a call (method may be NULL for a frame that is not one). */
static void refuse(dctx_rpc_server *srv, struct dctx__io *io, const char *method, int code,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void refuse(dctx_rpc_server *srv, struct dctx__io *io, const char *method, int code,
                   const char *fmt, ...)
{
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit_refusal(srv, method, code, msg);
    send_reply(srv, io, code, msg, NULL, 0);
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
    dctx_release(call->ctx);
    dctx__frame_free(call->frame);
    free(call);
}

/* Count one call out of in_flight, waking a close waiting for none. */
static void in_flight_leave(dctx_rpc_server *srv)
{
    /* Only a closing server waits for the count to reach 0. The server
     * outlives this: close joins the workers and waits for nng's
     * callbacks before it frees anything. */
    if (atomic_fetch_sub(&srv->in_flight, 1) == 1 && atomic_load(&srv->closing)) {
        pthread_mutex_lock(&srv->mu);
        pthread_cond_broadcast(&srv->idle_cv);
        pthread_mutex_unlock(&srv->mu);
    }
}

/* The call is over (answered or dropped): forget its token, count it out. */
static void call_end(struct server_call *call)
{
    dctx_rpc_server *srv = call->srv;
    dctx__token_finish(srv->tokens, call->token, call);
    in_flight_leave(srv);
    call_unref(call);
}

/* Stop a call from outside: a Cancel frame, a lost caller, shutdown. A
 * cancel caused by a deadline upstream ends the context as a deadline:
 * the caller's deadline passed, whatever the transit did to ours. */
static int call_cancel(struct server_call *call, int cause, const char *msg)
{
    atomic_store(&call->caller_gone, true);
    int err = cause == DCTX_DEADLINE_EXCEEDED ? DCTX_DEADLINE_EXCEEDED : DCTX_CANCELED;
    int expected = QUEUED;
    if (atomic_compare_exchange_strong(&call->state, &expected, DROPPED)) {
        dctx__cancel_err(call->ctx, err, cause, msg);
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
    dctx_rpc_server *srv = call->srv;
    int expected = QUEUED;
    if (!atomic_compare_exchange_strong(&call->state, &expected, RUNNING)) {
        dctx__io_put(call->io); /* dropped: its caller gave up; no reply */
        call_end(call);
        return;
    }
    int err = dctx_err(call->ctx);
    if (err != 0) {
        /* Refused unrun: the budget ran out in the queue, or the server is
         * closing (the cause says UNAVAILABLE then). */
        const char *msg = NULL;
        int cause = dctx_cause(call->ctx, &msg);
        int code = err == DCTX_DEADLINE_EXCEEDED ? err : cause;
        if (err == DCTX_DEADLINE_EXCEEDED)
            count(&srv->expired_in_queue);
        char text[DCTX_WIRE_MESSAGE_BYTES_MAX];
        snprintf(text, sizeof text, "%s while queued%s%s", dctx_strerror(err), msg ? ": " : "",
                 msg ? msg : "");
        emit_call_end(call, code, text);
        send_reply(srv, call->io, code, text, NULL, 0);
    } else {
        dctx_rpc_reply reply = {.payload = NULL};
        const Dctx__Wire__Call *c = call->frame->call;
        const void *req = c->has_payload ? c->payload.data : NULL;
        size_t len = c->has_payload ? c->payload.len : 0;
        const struct method *m = call->method;
        int code = m->fn(m->arg, call->ctx, req, len, &reply);
        if (code < 0 || code > DCTX_CODE_MAX)
            code = DCTX_UNKNOWN;
        emit_call_end(call, code, reply.message);
        if (atomic_load(&call->caller_gone)) {
            /* Nobody reads it: the caller's REQ context dropped the call. */
            count(&srv->by_code[code]);
            dctx__io_put(call->io);
        } else {
            send_reply(srv, call->io, code, reply.message, reply.payload, reply.len);
        }
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

/* Admit a checked Call: count it in, register its token, queue it. */
static void admit(dctx_rpc_server *srv, struct server_call *call, uint32_t pipe)
{
    bool room = atomic_fetch_add(&srv->in_flight, 1) < srv->opts.max_in_flight;
    bool closing = atomic_load(&srv->closing);
    if (!room || closing)
        in_flight_leave(srv);
    if (closing) {
        refuse(srv, call->io, call->method->name, DCTX_UNAVAILABLE, "server shutting down");
        call_unref(call);
        return;
    }
    if (!room) {
        refuse(srv, call->io, call->method->name, DCTX_RESOURCE_EXHAUSTED,
               "server busy: %d calls in flight", srv->opts.max_in_flight);
        call_unref(call);
        return;
    }
    int rc = dctx__token_insert(srv->tokens, call->token, call, pipe, dctx_now());
    if (rc != 0) {
        if (rc == DCTX_CANCELED) /* its cancel overtook it */
            refuse(srv, call->io, call->method->name, rc, "canceled before it arrived");
        else
            refuse(srv, call->io, call->method->name, rc, "cancel token refused: %s",
                   dctx_strerror(rc));
        in_flight_leave(srv);
        call_unref(call);
        return;
    }
    int64_t deadline;
    dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CALL_START,
                         .method = call->method->name,
                         .deadline_in_ns =
                             dctx_deadline(call->ctx, &deadline) ? deadline - dctx_now() : -1,
                         .ctx = call->ctx};
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

/* A Call frame. f is ours. */
static void on_call(dctx_rpc_server *srv, struct dctx__io *io, Dctx__Wire__Frame *f, uint32_t pipe)
{
    count(&srv->calls);
    const Dctx__Wire__Call *c = f->call;
    char err[DCTX__WIRE_ERR_BYTES];
    if (!dctx__method_name_valid(c->method) || c->context == NULL) {
        count(&srv->bad_frames);
        refuse(srv, io, NULL, DCTX_INVALID_ARGUMENT, "call without a valid method name or context");
        dctx__frame_free(f);
        return;
    }
    const struct method *m = find_method(srv, c->method);
    if (m == NULL) {
        refuse(srv, io, c->method, DCTX_UNIMPLEMENTED, "unknown method %s", c->method);
        dctx__frame_free(f);
        return;
    }
    dctx *ctx = NULL;
    bool trace_dropped = false;
    int rc = dctx__wire_decode(srv->root, c->context, dctx_now(), srv->opts.max_budget_ns, &ctx,
                               err, &trace_dropped);
    if (trace_dropped) {
        count(&srv->traces_dropped);
        dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_TRACE_DROPPED,
                             .method = c->method,
                             .message = "malformed traceparent dropped"};
        emit(srv, &ev);
    }
    struct server_call *call = rc == 0 ? calloc(1, sizeof *call) : NULL;
    if (call == NULL) {
        if (rc == DCTX_INVALID_ARGUMENT)
            count(&srv->bad_frames);
        refuse(srv, io, c->method, rc ? rc : DCTX_RESOURCE_EXHAUSTED, "%s",
               rc ? err : "out of memory");
        dctx_release(ctx);
        dctx__frame_free(f);
        return;
    }
    atomic_init(&call->refs, 1);
    call->srv = srv;
    call->io = io;
    call->ctx = ctx;
    memcpy(call->token, c->context->cancel_token.data, DCTX_TOKEN_BYTES);
    call->method = m;
    call->frame = f;
    atomic_init(&call->state, QUEUED);
    call->received_ns = dctx_now();
    admit(srv, call, pipe);
}

/* A Cancel frame: act, and answer with what it did. */
static void on_cancel(dctx_rpc_server *srv, struct dctx__io *io, Dctx__Wire__Frame *f)
{
    count(&srv->cancels_received);
    const Dctx__Wire__Cancel *c = f->cancel;
    if (!c->has_cancel_token || c->cancel_token.len != DCTX_TOKEN_BYTES) {
        count(&srv->bad_frames);
        refuse(srv, io, NULL, DCTX_INVALID_ARGUMENT, "cancel token must be %d bytes",
               DCTX_TOKEN_BYTES);
        dctx__frame_free(f);
        return;
    }
    int cause =
        c->has_code && c->code >= 1 && c->code <= DCTX_CODE_MAX ? (int)c->code : DCTX_CANCELED;
    char msg[DCTX__MESSAGE_SIZE];
    dctx__message_copy(msg, c->message);
    int64_t now = dctx_now(); /* also the time it was read, for the event */
    int64_t keep = c->has_budget_us && c->budget_us < (uint64_t)TOMBSTONE_MAX_NS / 1000
                       ? (int64_t)c->budget_us * 1000
                       : TOMBSTONE_MAX_NS;
    void *found = NULL;
    int outcome;
    switch (dctx__token_cancel(srv->tokens, c->cancel_token.data, now, now + keep, call_retain,
                               &found)) {
    case DCTX__TOKEN_LIVE:
        outcome = call_cancel(found, cause, msg[0] ? msg : NULL);
        call_unref(found);
        break;
    case DCTX__TOKEN_FINISHED:
        outcome = DCTX_RPC_CANCEL_TOO_LATE;
        break;
    default:
        outcome = DCTX_RPC_CANCEL_PREVENTED; /* remembered: refused if it comes */
    }
    count(&srv->outcomes[outcome]);
    dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CANCEL_RECEIVED,
                         .code = cause,
                         .message = msg,
                         .elapsed_ns = dctx_now() - now,
                         .outcome = outcome};
    emit(srv, &ev);
    dctx__frame_free(f);
    Dctx__Wire__CancelAck ack = DCTX__WIRE__CANCEL_ACK__INIT;
    ack.has_outcome = 1;
    ack.outcome = (Dctx__Wire__CancelOutcome)outcome;
    Dctx__Wire__Frame out = DCTX__WIRE__FRAME__INIT;
    out.body_case = DCTX__WIRE__FRAME__BODY_CANCEL_ACK;
    out.cancel_ack = &ack;
    send_frame(io, &out);
}

static void on_receive(void *owner, struct dctx__io *io, int rv);

static void post_receive(dctx_rpc_server *srv, struct dctx__io *io)
{
    io->fn = on_receive;
    io->owner = srv;
    nng_aio_set_timeout(io->aio, NNG_DURATION_INFINITE);
    nng_ctx_recv(io->nctx, io->aio);
}

static void on_receive(void *owner, struct dctx__io *io, int rv)
{
    dctx_rpc_server *srv = owner;
    if (rv == NNG_ECLOSED)
        return; /* the socket is closing; fini frees the io */
    if (rv != 0) {
        post_receive(srv, io);
        return;
    }
    nng_msg *msg = nng_aio_get_msg(io->aio);
    nng_aio_set_msg(io->aio, NULL);
    /* A fresh context takes over the receive; this one stays with the
     * request. If none can be had, this message is dropped instead. */
    struct dctx__io *next = NULL;
    if (dctx__io_get(&srv->pool, on_receive, srv, &next) != 0) {
        count(&srv->bad_frames);
        nng_msg_free(msg);
        post_receive(srv, io);
        return;
    }
    post_receive(srv, next);

    uint32_t pipe = (uint32_t)nng_msg_get_pipe(msg).id;
    Dctx__Wire__Frame *f = dctx__frame_unpack(msg);
    nng_msg_free(msg);
    if (f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_CALL) {
        on_call(srv, io, f, pipe);
    } else if (f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_CANCEL) {
        on_cancel(srv, io, f);
    } else {
        /* Dropped, not answered: a peer sending garbage may not read
         * either, and every held answer would keep a pooled context. */
        count(&srv->bad_frames);
        dctx__frame_free(f);
        dctx__io_put(io);
    }
}

/* ===== Lost callers ===== */

static void cancel_for_lost_peer(void *p, void *arg)
{
    struct server_call *call = p;
    dctx_rpc_server *srv = arg;
    count(&srv->canceled_by_peer_loss);
    call_cancel(call, DCTX_CANCELED, "caller lost (connection closed)");
    call_unref(call);
}

static void pipe_added(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)ev;
    dctx_rpc_server *srv = arg;
    dctx__listeners_pipe_added(&srv->listeners, (uint32_t)p.id);
}

static void pipe_removed(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)ev;
    dctx_rpc_server *srv = arg;
    if (dctx__listeners_is_probe(&srv->listeners, (uint32_t)p.id))
        return; /* the listener guard's own connection */
    count(&srv->peers_lost);
    dctx__token_each_of_pipe(srv->tokens, (uint32_t)p.id, call_retain, cancel_for_lost_peer, srv);
}

/* ===== Server ===== */

void dctx_rpc_server_options_init(dctx_rpc_server_options *o)
{
    memset(o, 0, sizeof *o);
    o->workers = DCTX_RPC_DEFAULT_WORKERS;
    o->max_in_flight = DCTX_RPC_DEFAULT_MAX_IN_FLIGHT;
    o->recv_max_bytes = DCTX_RPC_DEFAULT_RECV_MAX_BYTES;
    o->shutdown_grace_ns = DCTX_RPC_DEFAULT_SHUTDOWN_GRACE_NS;
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
    if (srv->opts.workers < 1 || srv->opts.max_in_flight < 1 || srv->opts.max_budget_ns < 0) {
        free(srv);
        return DCTX_INVALID_ARGUMENT;
    }
    if (srv->opts.recv_max_bytes == 0)
        srv->opts.recv_max_bytes = DCTX_RPC_DEFAULT_RECV_MAX_BYTES;
    int rc = dctx__token_table_open((size_t)srv->opts.max_in_flight, TOMBSTONES_MAX, FINISHED_MAX,
                                    &srv->tokens);
    if (rc == 0 && dctx_with_cancel(dctx_background(), &srv->root) != 0)
        rc = DCTX_RESOURCE_EXHAUSTED;
    if (rc == 0 && nng_rep0_open(&srv->sock) != 0)
        rc = DCTX_RESOURCE_EXHAUSTED;
    if (rc != 0) {
        dctx_release(srv->root);
        if (srv->tokens != NULL)
            dctx__token_table_close(srv->tokens);
        free(srv);
        return rc;
    }
    nng_socket_set_size(srv->sock, NNG_OPT_RECVMAXSZ, srv->opts.recv_max_bytes);
    dctx__listeners_init(&srv->listeners, srv->sock, srv->opts.recv_max_bytes,
                         srv->opts.tls_cert_key_file);
    nng_pipe_notify(srv->sock, NNG_PIPE_EV_ADD_POST, pipe_added, srv);
    nng_pipe_notify(srv->sock, NNG_PIPE_EV_REM_POST, pipe_removed, srv);
    dctx__io_pool_init(&srv->pool, srv->sock,
                       (size_t)srv->opts.max_in_flight + RECEIVERS + IO_SLACK);
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
    return dctx__listeners_add(&srv->listeners, url);
}

static int add_method(dctx_rpc_server *srv, const char *name, dctx_rpc_handler_fn fn, void *arg,
                      void *owned, unsigned flags)
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

int dctx__server_register_owned(dctx_rpc_server *srv, const char *method, dctx_rpc_handler_fn fn,
                                void *arg, unsigned flags, void *owned)
{
    if (srv == NULL || fn == NULL || srv->started || (flags & ~DCTX_RPC_INLINE) != 0)
        return DCTX_INVALID_ARGUMENT;
    return add_method(srv, method, fn, arg, owned, flags);
}

/* Stop and join the workers started so far (none has a call yet). */
static void stop_workers(dctx_rpc_server *srv)
{
    pthread_mutex_lock(&srv->mu);
    srv->stopping = true;
    pthread_cond_broadcast(&srv->work_cv);
    pthread_mutex_unlock(&srv->mu);
    for (int i = 0; i < srv->n_workers; i++)
        pthread_join(srv->workers[i], NULL);
    srv->stopping = false;
    srv->n_workers = 0;
    free(srv->workers);
    srv->workers = NULL;
}

/* Every step that can fail comes before the first receive is posted, and
 * each undoes the ones before it: a failed start leaves the server as it
 * was, to be started again or closed. */
int dctx_rpc_server_start(dctx_rpc_server *srv)
{
    if (srv == NULL || srv->started)
        return DCTX_INVALID_ARGUMENT;
    struct dctx__io *receivers[RECEIVERS] = {NULL};
    int rc = 0;
    for (int i = 0; i < RECEIVERS && rc == 0; i++)
        rc = dctx__io_get(&srv->pool, on_receive, srv, &receivers[i]);
    size_t size = (size_t)srv->opts.workers * sizeof *srv->workers;
    if (rc == 0 && (srv->workers = dctx__malloc(size)) == NULL)
        rc = DCTX_RESOURCE_EXHAUSTED;
    while (rc == 0 && srv->n_workers < srv->opts.workers) {
        if (dctx__thread_start(&srv->workers[srv->n_workers], worker_main, srv) != 0)
            rc = DCTX_RESOURCE_EXHAUSTED;
        else
            srv->n_workers++;
    }
    if (rc == 0)
        rc = dctx__listeners_guard(&srv->listeners);
    if (rc != 0) {
        stop_workers(srv);
        for (int i = 0; i < RECEIVERS; i++)
            if (receivers[i] != NULL)
                dctx__io_put(receivers[i]);
        return rc;
    }
    for (int i = 0; i < RECEIVERS; i++)
        post_receive(srv, receivers[i]);
    srv->started = true;
    return 0;
}

int dctx_rpc_server_close(dctx_rpc_server *srv)
{
    if (srv == NULL)
        return 0;
    pthread_mutex_lock(&srv->mu);
    atomic_store(&srv->closing, true);
    pthread_mutex_unlock(&srv->mu);
    dctx_cancel_cause(srv->root, DCTX_UNAVAILABLE, "server shutting down");

    /* Bounded wait for the canceled handlers. */
    int rc = 0;
    int64_t until = dctx_now() + srv->opts.shutdown_grace_ns;
    pthread_mutex_lock(&srv->mu);
    while (atomic_load(&srv->in_flight) > 0 && rc == 0) {
        dctx__cond_wait_until(&srv->idle_cv, &srv->mu, until);
        if (atomic_load(&srv->in_flight) > 0 && dctx_now() >= until)
            rc = DCTX_DEADLINE_EXCEEDED;
    }
    srv->stopping = true;
    pthread_cond_broadcast(&srv->work_cv);
    pthread_mutex_unlock(&srv->mu);

    dctx__listeners_fini(&srv->listeners);
    nng_close(srv->sock); /* receives and unsent replies end; pipe callbacks are over */
    for (int i = 0; i < srv->n_workers; i++)
        pthread_join(srv->workers[i], NULL); /* a handler past the grace is still waited for */
    free(srv->workers);
    dctx__io_pool_fini(&srv->pool);
    dctx__token_table_close(srv->tokens);
    dctx_release(srv->root);
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
    out->listeners_restarted = atomic_load(&srv->listeners.restarts);
    out->traces_dropped = atomic_load(&srv->traces_dropped);
    for (int i = 0; i <= DCTX_CODE_MAX; i++)
        out->by_code[i] = atomic_load(&srv->by_code[i]);
    for (int i = 0; i < DCTX_RPC_CANCEL_OUTCOMES; i++)
        out->cancel_outcomes[i] = atomic_load(&srv->outcomes[i]);
    out->in_flight = (uint64_t)atomic_load(&srv->in_flight);
}
