/*
 * client.c - channels and calls.
 *
 * A channel is one REQ socket dialed to one URL, in the background, with
 * resend off (NNG_OPT_REQ_RESENDTIME infinite): a call is sent at most
 * once, and a lost connection fails the calls waiting on it with
 * NNG_ECONNRESET, which is DCTX_UNAVAILABLE here, at once.
 *
 * A call borrows a pooled nng context (io.c) and walks SENDING ->
 * RECEIVING -> DONE in its aio callback, or, for a blocking call, on the
 * caller's own thread, which waits on an aio that has no callback: nng
 * then wakes it directly from the thread that read the reply, one wake-up
 * where a callback costs two (the nng task thread, then the caller). The
 * steps are the same function either way (call_step). Its context gets an after-func
 * of the library's own kind, run by the canceling thread itself (no
 * executor hand-off: it is the cancel's latency on every hop):
 * when the context is done first, the after-func marks the call canceled,
 * aborts the aio (the callback then ends the call with the context's
 * error) and pushes a Cancel frame, on a second pooled context of the same
 * socket, that carries the token and the cause; the answer (CancelAck) is
 * the cancel's outcome. Call state is guarded by the call's mutex, which
 * the callback and the after-func both take; nng never runs our callback
 * inside nng_ctx_send, nng_ctx_recv or nng_aio_cancel, so holding the
 * mutex across them is safe.
 *
 * References to a call: one for the machinery (dropped when it ends), one
 * for the caller's handle, one for a pending after-func, one for a cancel
 * in flight. The channel counts calls and cancels in flight, so close can
 * wait for them after nng_close made them all end.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "context/clock.h"
#include "context/futex.h"
#include "context/hooks.h"
#include "rpc_impl.h" /* nng.h first: the protocol headers need it */

#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>

#include <dctx/trace.h>
#include "text.h"
#include "wire_impl.h"

/* The aio timeout past the call's deadline: the context's own timer ends
 * the call on time; this only guards against a stalled executor. */
#define BACKSTOP_NS (1000 * 1000000LL)
/* How long the callee remembers a cancel for a call without a deadline. */
#define TOMBSTONE_NO_DEADLINE_US (60 * 1000000ULL)

struct dctx_rpc_channel {
    nng_socket sock;
    nng_dialer dialer;
    char *url;
    dctx_rpc_channel_options opts;
    struct dctx__io_pool pool;        /* async calls and cancels: callbacks step them */
    struct dctx__io_pool waited_pool; /* blocking calls: the caller's thread steps them */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* pipes came up; in_flight reached 0. CLOCK_MONOTONIC */
    atomic_int pipes;  /* connected pipes; written under mu */
    /* Calls and cancels not yet ended. Counted without the mutex: a call
     * counts itself in, then checks closing; close sets closing, then
     * waits for the count (both seq_cst, so one sees the other). */
    atomic_int in_flight;
    atomic_bool closing; /* set once, under mu (for wait_connected) */
    bool socket_closed;  /* nng_close returned; protected by mu */
    bool abandoned;      /* close gave up waiting for it; protected by mu */
    atomic_uint_fast64_t calls, not_sent_budget, cancels_pushed;
    atomic_uint_fast64_t by_code[DCTX_CODE_MAX + 1];
    atomic_uint_fast64_t outcomes[DCTX_RPC_CANCEL_OUTCOMES];
};

enum phase { SENDING, RECEIVING, DONE };

struct dctx_rpc_handle {
    atomic_int refs;
    dctx_rpc_channel *ch;
    dctx *ctx;           /* retained until the call ends */
    int64_t deadline_ns; /* the context's, or DCTX_DEADLINE_NONE */
    uint8_t token[DCTX_TOKEN_BYTES];
    dctx_after *after; /* the cancel trigger; NULL if ctx can never be done */
    dctx_rpc_done_fn done;
    void *done_arg;
    char *method; /* for events; NULL without an event hook */
    int64_t started_ns;

    pthread_mutex_t mu;
    enum phase phase;    /* protected by mu */
    struct dctx__io *io; /* while SENDING or RECEIVING; protected by mu */
    bool canceled;       /* the context ended first; protected by mu */

    dctx_rpc_result result; /* written once, when the call ends */
    atomic_int ended;       /* futex word: 1 once done has returned */
    atomic_int sleepers;    /* threads asleep on ended or outcome */

    enum phase cancel_phase; /* touched only by the cancel's own callbacks */
    /* For the CANCEL_PUSHED event, reported from the send's callback (not
     * inside the dctx_cancel that pushed it): the cause and a copy of its
     * message, made only when the channel has an event hook. Written
     * before the send starts, read and freed by its callback. */
    int pushed_cause;
    char *pushed_msg;
    atomic_int outcome; /* futex word: enum dctx_rpc_cancel_outcome */
};

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
    pthread_mutex_destroy(&call->mu);
    free(call);
}

/* Count one call or cancel in; false (not counted) if the channel closes. */
static bool in_flight_enter(dctx_rpc_channel *ch)
{
    atomic_fetch_add(&ch->in_flight, 1);
    if (!atomic_load(&ch->closing))
        return true;
    atomic_fetch_sub(&ch->in_flight, 1); /* close polls: no wake-up owed */
    return false;
}

/* Count one out. The last touch of ch: once the count is 0 a closing
 * channel may be freed. While it is not closing nobody waits on the
 * count (close polls it, too, in case it started just after the check). */
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

/* ===== Results ===== */

void dctx_rpc_result_free(dctx_rpc_result *res)
{
    if (res == NULL)
        return;
    free(res->internal);
    memset(res, 0, sizeof *res);
    res->message = "";
}

/* Fill res with a copy of message (cut to the wire limit) and payload, in
 * one allocation. On no memory: the code stays, the texts go. */
void dctx__result_set(dctx_rpc_result *res, int code, const char *message, const void *payload,
                      size_t payload_len)
{
    size_t mlen = message != NULL
                      ? dctx__utf8_prefix(message, strlen(message), DCTX_WIRE_MESSAGE_BYTES_MAX)
                      : 0;
    char *block = malloc(mlen + 1 + payload_len);
    memset(res, 0, sizeof *res);
    res->code = code;
    res->message = "";
    if (block == NULL)
        return;
    memcpy(block, message != NULL ? message : "", mlen);
    block[mlen] = '\0';
    if (payload_len > 0)
        memcpy(block + mlen + 1, payload, payload_len);
    res->internal = block;
    res->message = block;
    res->payload = block + mlen + 1;
    res->payload_len = payload_len;
}

static void result_setf(dctx_rpc_result *res, int code, const char *fmt, ...)
{
    char buf[DCTX_WIRE_MESSAGE_BYTES_MAX * 2]; /* dctx__result_set cuts on a character */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    dctx__result_set(res, code, buf, NULL, 0);
}

const char *dctx_rpc_cancel_outcome_name(int outcome)
{
    static const char *const names[] = {"none",     "stopped", "prevented",
                                        "too_late", "pending", "unreached"};
    return outcome >= 0 && outcome < DCTX_RPC_CANCEL_OUTCOMES ? names[outcome] : "?";
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
}

static void pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    (void)p;
    dctx_rpc_channel *ch = arg;
    pthread_mutex_lock(&ch->mu);
    atomic_fetch_add_explicit(&ch->pipes, ev == NNG_PIPE_EV_ADD_PRE ? 1 : -1, memory_order_relaxed);
    pthread_cond_broadcast(&ch->cv);
    pthread_mutex_unlock(&ch->mu);
}

static int dial(dctx_rpc_channel *ch)
{
    int rv = nng_dialer_create(&ch->dialer, ch->sock, ch->url);
    if (rv != 0)
        return rv;
    /* Redial quickly: a next hop that restarts should be back in ms. nng
     * waits a random time below its back-off (which doubles up to the
     * maximum) before each attempt, so the maximum is half the time a call
     * waits for a connection: a server that comes up late is dialed
     * before the first call to it gives up. */
    int64_t max_ms = ch->opts.connect_wait_ns / 2000000;
    nng_dialer_set_ms(ch->dialer, NNG_OPT_RECONNMINT, 10);
    nng_dialer_set_ms(ch->dialer, NNG_OPT_RECONNMAXT,
                      (nng_duration)(max_ms < 10     ? 10
                                     : max_ms > 1000 ? 1000
                                                     : max_ms));
    nng_dialer_set_size(ch->dialer, NNG_OPT_RECVMAXSZ, ch->opts.recv_max_bytes);
    if (strncmp(ch->url, "tls+", 4) == 0) {
        if (ch->opts.tls_ca_file != NULL &&
            (rv = nng_dialer_set_string(ch->dialer, NNG_OPT_TLS_CA_FILE, ch->opts.tls_ca_file)) !=
                0)
            return rv;
        if (ch->opts.tls_server_name != NULL &&
            (rv = nng_dialer_set_string(ch->dialer, NNG_OPT_TLS_SERVER_NAME,
                                        ch->opts.tls_server_name)) != 0)
            return rv;
    }
    return nng_dialer_start(ch->dialer, NNG_FLAG_NONBLOCK);
}

int dctx_rpc_channel_open(const char *url, const dctx_rpc_channel_options *opts,
                          dctx_rpc_channel **out)
{
    if (out != NULL)
        *out = NULL;
    if (url == NULL || out == NULL)
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
    if (ch->opts.recv_max_bytes == 0)
        ch->opts.recv_max_bytes = DCTX_RPC_DEFAULT_RECV_MAX_BYTES;
    if (ch->opts.cancel_ack_timeout_ns <= 0)
        ch->opts.cancel_ack_timeout_ns = DCTX_RPC_DEFAULT_CANCEL_ACK_TIMEOUT_NS;
    pthread_mutex_init(&ch->mu, NULL);
    dctx__cond_init_monotonic(&ch->cv);

    int rv = nng_req0_open(&ch->sock);
    if (rv == 0) {
        dctx__io_pool_init(&ch->pool, ch->sock, 0);
        dctx__io_pool_init(&ch->waited_pool, ch->sock, 0);
        ch->waited_pool.waited = true;
        /* At most once: never resend a call by ourselves. */
        nng_socket_set_ms(ch->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
        nng_socket_set_size(ch->sock, NNG_OPT_RECVMAXSZ, ch->opts.recv_max_bytes);
        /* ADD_PRE and REM_POST come exactly once each per pipe. */
        nng_pipe_notify(ch->sock, NNG_PIPE_EV_ADD_PRE, pipe_event, ch);
        nng_pipe_notify(ch->sock, NNG_PIPE_EV_REM_POST, pipe_event, ch);
        rv = dial(ch);
        if (rv != 0) {
            nng_close(ch->sock);
            dctx__io_pool_fini(&ch->pool);
            dctx__io_pool_fini(&ch->waited_pool);
        }
    }
    if (rv != 0) {
        pthread_cond_destroy(&ch->cv);
        pthread_mutex_destroy(&ch->mu);
        free(ch->url);
        free(ch);
        return dctx__status_from_nng(rv);
    }
    *out = ch;
    return 0;
}

static void channel_free(dctx_rpc_channel *ch)
{
    pthread_cond_destroy(&ch->cv);
    pthread_mutex_destroy(&ch->mu);
    free(ch->url);
    free(ch);
}

/* nng 1.5.2 can hang in nng_close of a REQ socket: its reaper thread waits
 * forever in req0_pipe_stop for the pipe's own receive (nng issues #1543,
 * #1813; seen here about once in ten closes right after a canceled call).
 * So the socket is closed on a thread of its own; close waits a bounded
 * time, and if nng never returns the channel's memory is left to that
 * thread (the pipe callbacks still point at it). */
#define SOCKET_CLOSE_WAIT_NS (500 * 1000000LL)
#define CANCEL_FLUSH_NS (250 * 1000000LL)
#define CLOSE_POLL_NS (10 * 1000000LL) /* how often close re-aborts what is in flight */

static void *close_socket(void *arg)
{
    dctx_rpc_channel *ch = arg;
    nng_close(ch->sock);
    pthread_mutex_lock(&ch->mu);
    ch->socket_closed = true;
    bool abandoned = ch->abandoned;
    pthread_cond_broadcast(&ch->cv);
    pthread_mutex_unlock(&ch->mu);
    if (abandoned)
        channel_free(ch);
    return NULL;
}

void dctx_rpc_channel_close(dctx_rpc_channel *ch)
{
    if (ch == NULL)
        return;
    pthread_mutex_lock(&ch->mu);
    atomic_store(&ch->closing, true);
    pthread_cond_broadcast(&ch->cv); /* calls waiting for a connection give up */
    pthread_mutex_unlock(&ch->mu);
    /* Quiesce before nng_close: end our own operations and close our
     * contexts first. (nng 1.5.2's close of a socket whose contexts had
     * operations ended by the close itself hung here about one time in
     * ten.) Calls are aborted at once; cancels just pushed get up to
     * CANCEL_FLUSH_NS to reach the server (a caller whose deadline passed
     * often closes right after: its callee must still learn the cause).
     * Aborting repeats until nothing is in flight: an operation may be
     * started by a callback of the one just aborted. */
    int64_t flush_until = dctx_now() + CANCEL_FLUSH_NS;
    pthread_mutex_lock(&ch->mu);
    while (atomic_load(&ch->in_flight) > 0) {
        pthread_mutex_unlock(&ch->mu);
        dctx__io_pool_abort(&ch->pool, dctx_now() >= flush_until);
        dctx__io_pool_abort(&ch->waited_pool, true);
        pthread_mutex_lock(&ch->mu);
        dctx__cond_wait_until(&ch->cv, &ch->mu, dctx_now() + CLOSE_POLL_NS);
    }
    pthread_mutex_unlock(&ch->mu);
    dctx__io_pool_fini(&ch->pool);
    dctx__io_pool_fini(&ch->waited_pool);
    pthread_t closer;
    if (pthread_create(&closer, NULL, close_socket, ch) != 0) {
        close_socket(ch); /* no thread: close here, unbounded */
        channel_free(ch);
        return;
    }
    pthread_detach(closer);
    int64_t until = dctx_now() + SOCKET_CLOSE_WAIT_NS;
    pthread_mutex_lock(&ch->mu);
    while (!ch->socket_closed && dctx_now() < until)
        dctx__cond_wait_until(&ch->cv, &ch->mu, until);
    bool closed = ch->socket_closed;
    ch->abandoned = !closed;
    pthread_mutex_unlock(&ch->mu);
    if (closed)
        channel_free(ch);
}

void dctx_rpc_channel_stats_get(dctx_rpc_channel *ch, dctx_rpc_channel_stats *out)
{
    memset(out, 0, sizeof *out);
    out->calls = atomic_load(&ch->calls);
    out->not_sent_budget = atomic_load(&ch->not_sent_budget);
    out->cancels_pushed = atomic_load(&ch->cancels_pushed);
    for (int i = 0; i <= DCTX_CODE_MAX; i++)
        out->by_code[i] = atomic_load(&ch->by_code[i]);
    for (int i = 0; i < DCTX_RPC_CANCEL_OUTCOMES; i++)
        out->cancel_outcomes[i] = atomic_load(&ch->outcomes[i]);
    int pipes = atomic_load(&ch->pipes);
    out->connections = pipes > 0 ? (uint32_t)pipes : 0;
}

/* Wait (bounded by the call's deadline) for a connection. */
static int wait_connected(dctx_rpc_channel *ch, int64_t deadline_ns)
{
    if (atomic_load_explicit(&ch->pipes, memory_order_relaxed) > 0)
        return 0;
    int64_t until = dctx_now() + ch->opts.connect_wait_ns;
    if (until > deadline_ns)
        until = deadline_ns;
    pthread_mutex_lock(&ch->mu);
    while (atomic_load_explicit(&ch->pipes, memory_order_relaxed) == 0 &&
           !atomic_load(&ch->closing) && dctx_now() < until)
        dctx__cond_wait_until(&ch->cv, &ch->mu, until);
    bool up =
        atomic_load_explicit(&ch->pipes, memory_order_relaxed) > 0 && !atomic_load(&ch->closing);
    pthread_mutex_unlock(&ch->mu);
    return up ? 0 : DCTX_UNAVAILABLE;
}

/* ===== Ending a call ===== */

/* Called without the call's mutex, once, by whoever ended the call. */
static void finish(dctx_rpc_handle *call)
{
    dctx_rpc_channel *ch = call->ch;
    /* The after-func's reference: ours to drop if we stopped it; if it ran
     * or runs, it drops its own. */
    if (call->after != NULL && dctx_after_stop(call->after))
        call_unref(call);
    count(&ch->by_code[call->result.code <= DCTX_CODE_MAX ? call->result.code : DCTX_UNKNOWN]);
    call->result.cancel_outcome = atomic_load_explicit(&call->outcome, memory_order_acquire);
    if (ch->opts.on_event != NULL) {
        dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CALL_END,
                             .method = call->method,
                             .code = call->result.code,
                             .message = call->result.message,
                             .elapsed_ns = dctx_now() - call->started_ns,
                             .ctx = call->ctx};
        dctx_trace t;
        if (dctx_trace_get(call->ctx, &t)) {
            ev.trace_id = t.trace_id;
            ev.span_id = t.span_id;
            ev.parent_span_id = t.parent_span_id[0] ? t.parent_span_id : NULL;
        }
        ch->opts.on_event(ch->opts.event_arg, &ev);
    }
    if (call->done != NULL)
        call->done(call->done_arg, &call->result);
    dctx_release(call->ctx);
    call->ctx = NULL;
    set_word(&call->ended, &call->sleepers, 1);
    in_flight_leave(ch);
    call_unref(call);
}

/* The status when the context ended first: its error, with its cause. A
 * context canceled because a deadline passed upstream reports
 * DEADLINE_EXCEEDED, as gRPC asks of a client that sees CANCELLED. */
static void result_from_context(dctx_rpc_handle *call)
{
    const char *msg = NULL;
    int cause = dctx_cause(call->ctx, &msg);
    int err = dctx_err(call->ctx);
    if (cause == DCTX_DEADLINE_EXCEEDED)
        err = DCTX_DEADLINE_EXCEEDED;
    if (cause != 0 && cause != err)
        result_setf(&call->result, err, "%s (cause: %s%s%s)", dctx_strerror(err),
                    dctx_code_name(cause), msg ? ": " : "", msg ? msg : "");
    else
        result_setf(&call->result, err, "%s%s%s", dctx_strerror(err), msg ? ": " : "",
                    msg ? msg : "");
}

static void result_from_nng(dctx_rpc_handle *call, int rv)
{
    int code = dctx__status_from_nng(rv);
    if (rv == NNG_ECONNRESET)
        result_setf(&call->result, code, "connection to %s lost", call->ch->url);
    else if (rv == NNG_ECLOSED)
        result_setf(&call->result, code, "channel to %s closed", call->ch->url);
    else
        result_setf(&call->result, code, "%s", nng_strerror(rv));
}

static void result_from_reply(dctx_rpc_handle *call, nng_msg *msg)
{
    Dctx__Wire__Frame *f = dctx__frame_unpack(msg);
    if (f == NULL || f->body_case != DCTX__WIRE__FRAME__BODY_REPLY) {
        result_setf(&call->result, DCTX_INTERNAL, "malformed reply from %s", call->ch->url);
    } else {
        const Dctx__Wire__Reply *r = f->reply;
        int code = r->has_code ? (int)r->code : DCTX_UNKNOWN;
        if (code < 0 || code > DCTX_CODE_MAX)
            code = DCTX_UNKNOWN;
        bool payload = code == DCTX_OK && r->has_payload;
        dctx__result_set(&call->result, code, r->message, payload ? r->payload.data : NULL,
                         payload ? r->payload.len : 0);
    }
    dctx__frame_free(f);
}

static bool closing(dctx_rpc_channel *ch)
{
    return atomic_load_explicit(&ch->closing, memory_order_acquire);
}

/* End the call under its mutex: give the io back and let go. */
static void end_locked(dctx_rpc_handle *call)
{
    struct dctx__io *io = call->io;
    call->io = NULL;
    call->phase = DONE;
    pthread_mutex_unlock(&call->mu);
    dctx__io_put(io);
    finish(call);
}

/* One step of the call, its operation on io having ended with rv: post
 * the receive (true: there is a next step) or end the call (false). */
static bool call_step(dctx_rpc_handle *call, struct dctx__io *io, int rv)
{
    pthread_mutex_lock(&call->mu);
    if (call->phase == SENDING) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(io->aio));
            nng_aio_set_msg(io->aio, NULL);
        }
        if (rv == 0 && !call->canceled && !closing(call->ch)) {
            call->phase = RECEIVING;
            nng_ctx_recv(io->nctx, io->aio);
            pthread_mutex_unlock(&call->mu);
            return true;
        }
    } else if (rv == 0) {
        nng_msg *msg = nng_aio_get_msg(io->aio);
        nng_aio_set_msg(io->aio, NULL);
        result_from_reply(call, msg);
        nng_msg_free(msg);
        end_locked(call);
        return false;
    }
    /* Here the call ends without a reply: its context ended, the channel
     * is closing (the send may even have gone: rv 0), or nng failed. */
    if (call->canceled)
        result_from_context(call);
    else if (closing(call->ch) && (rv == 0 || rv == NNG_ECANCELED))
        result_from_nng(call, NNG_ECLOSED);
    else
        result_from_nng(call, rv);
    end_locked(call);
    return false;
}

static void call_io_done(void *owner, struct dctx__io *io, int rv)
{
    (void)call_step(owner, io, rv);
}

/* ===== Pushing a cancel ===== */

static void cancel_end(dctx_rpc_handle *call, struct dctx__io *io, int outcome)
{
    dctx_rpc_channel *ch = call->ch;
    dctx__io_put(io);
    count(&ch->outcomes[outcome]);
    set_word(&call->outcome, &call->sleepers, outcome);
    in_flight_leave(ch);
    call_unref(call);
}

/* The Cancel frame is on its way: tell the event hook, on this nng thread. */
static void report_pushed(dctx_rpc_handle *call)
{
    dctx_rpc_channel *ch = call->ch;
    if (ch->opts.on_event == NULL)
        return;
    dctx_rpc_event ev = {.kind = DCTX_RPC_EVENT_CANCEL_PUSHED,
                         .method = call->method,
                         .code = call->pushed_cause,
                         .message = call->pushed_msg != NULL ? call->pushed_msg : ""};
    ch->opts.on_event(ch->opts.event_arg, &ev);
    free(call->pushed_msg);
    call->pushed_msg = NULL;
}

static void cancel_io_done(void *owner, struct dctx__io *io, int rv)
{
    dctx_rpc_handle *call = owner;
    if (call->cancel_phase == SENDING) {
        if (rv == 0)
            report_pushed(call);
        if (rv == 0 && !closing(call->ch)) {
            call->cancel_phase = RECEIVING;
            nng_ctx_recv(io->nctx, io->aio);
            return;
        }
        nng_msg_free(nng_aio_get_msg(io->aio));
        nng_aio_set_msg(io->aio, NULL);
        cancel_end(call, io, DCTX_RPC_CANCEL_UNREACHED);
        return;
    }
    int outcome = DCTX_RPC_CANCEL_UNREACHED;
    if (rv == 0) {
        nng_msg *msg = nng_aio_get_msg(io->aio);
        nng_aio_set_msg(io->aio, NULL);
        Dctx__Wire__Frame *f = dctx__frame_unpack(msg);
        if (f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_CANCEL_ACK &&
            f->cancel_ack->has_outcome && (int)f->cancel_ack->outcome >= DCTX_RPC_CANCEL_STOPPED &&
            (int)f->cancel_ack->outcome <= DCTX_RPC_CANCEL_TOO_LATE)
            outcome = (int)f->cancel_ack->outcome;
        dctx__frame_free(f);
        nng_msg_free(msg);
    }
    cancel_end(call, io, outcome);
}

/* Send the Cancel frame: the token, the cause, and how long the callee
 * must remember it in case the call has not arrived yet. The caller has
 * counted the cancel in the channel's in_flight (while the call itself
 * was still counted there, so the channel could not be freed meanwhile).
 * cause_msg is already cut to the wire limit. */
static void push_cancel(dctx_rpc_handle *call, int cause, const char *cause_msg)
{
    dctx_rpc_channel *ch = call->ch;
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

    nng_msg *m = NULL;
    struct dctx__io *io = NULL;
    if (dctx__frame_pack(&f, &m) != 0 || dctx__io_get(&ch->pool, cancel_io_done, call, &io) != 0) {
        nng_msg_free(m);
        set_word(&call->outcome, &call->sleepers, DCTX_RPC_CANCEL_UNREACHED);
        count(&ch->outcomes[DCTX_RPC_CANCEL_UNREACHED]);
        in_flight_leave(ch);
        return;
    }
    /* a close lets it reach the server first (bounded) */
    atomic_store_explicit(&io->spare, true, memory_order_relaxed);
    count(&ch->cancels_pushed);
    if (ch->opts.on_event != NULL) {
        call->pushed_cause = cause;
        call->pushed_msg = strdup(cause_msg); /* NULL: the event goes with "" */
    }
    atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
    call->cancel_phase = SENDING;
    nng_aio_set_timeout(io->aio,
                        dctx__ms_until(dctx_now() + ch->opts.cancel_ack_timeout_ns, dctx_now()));
    nng_aio_set_msg(io->aio, m);
    nng_ctx_send(io->nctx, io->aio);
}

/* The call's context is done: run by the thread that canceled it, after
 * its node locks are released (dctx__after_func_inline). Takes only the
 * call's and the channel's mutexes, and nng's calls here never block. */
static void context_done(void *arg)
{
    dctx_rpc_handle *call = arg;
    dctx_rpc_channel *ch = call->ch;
    pthread_mutex_lock(&call->mu);
    bool live = call->phase != DONE;
    bool push = false;
    if (live) {
        /* Count the cancel in the channel while the call still is: once the
         * mutex is let go the call may end, and its owner close the channel. */
        push = in_flight_enter(ch);
        call->canceled = true;
        atomic_store_explicit(&call->outcome, DCTX_RPC_CANCEL_PENDING, memory_order_relaxed);
    }
    /* The cause is read now: the call (and its hold on ctx) may end as
     * soon as the mutex is let go. */
    const char *msg = NULL;
    int cause = live ? dctx_cause(call->ctx, &msg) : 0;
    char text[DCTX__MESSAGE_SIZE];
    dctx__message_copy(text, msg);
    pthread_mutex_unlock(&call->mu);
    /* The frame first, then our own end: the callee is waiting on the
     * frame, and aborting the aio costs a wake-up (the caller's thread). */
    if (push)
        push_cancel(call, cause, text);
    if (live) {
        pthread_mutex_lock(&call->mu);
        /* Still live: io is still this call's. NULL: start has not sent it
         * yet; it will see canceled. A reply that came meanwhile stands. */
        if (call->phase != DONE && call->io != NULL)
            nng_aio_cancel(call->io->aio);
        pthread_mutex_unlock(&call->mu);
    }
    call_unref(call); /* the after-func's reference */
}

/* ===== Starting a call ===== */

static int call_new(dctx_rpc_channel *ch, dctx *ctx, dctx_rpc_done_fn done, void *arg,
                    dctx_rpc_handle **out)
{
    dctx_rpc_handle *call = calloc(1, sizeof *call);
    if (call == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    atomic_init(&call->refs, 1);
    call->ch = ch;
    call->ctx = dctx_retain(ctx);
    if (!dctx_deadline(ctx, &call->deadline_ns))
        call->deadline_ns = DCTX_DEADLINE_NONE;
    call->done = done;
    call->done_arg = arg;
    pthread_mutex_init(&call->mu, NULL);
    call->phase = SENDING;
    call->result.message = "";
    *out = call;
    return 0;
}

static int pack_call(dctx_rpc_handle *call, const char *method, const void *req, size_t req_len,
                     nng_msg **msg, char *err)
{
    struct dctx__wire_out hdr;
    int rc = dctx__wire_encode(call->ctx, &call->ch->opts.policy, dctx_now(), &hdr, err);
    if (rc != 0)
        return rc;
    memcpy(call->token, hdr.token, sizeof call->token);
    Dctx__Wire__Call c = DCTX__WIRE__CALL__INIT;
    c.method = (char *)method;
    c.context = &hdr.hdr;
    c.has_payload = 1;
    c.payload.data = (uint8_t *)req;
    c.payload.len = req_len;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &c;
    return dctx__frame_pack(&f, msg);
}

/* Everything that can fail before the call is on its way; err names it. */
static int start(dctx_rpc_channel *ch, dctx *ctx, const char *method, const void *req,
                 size_t req_len, dctx_rpc_done_fn done, void *arg, bool waited,
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
    int rc = call_new(ch, ctx, done, arg, &call);
    nng_msg *msg = NULL;
    struct dctx__io *io = NULL;
    /* The name is kept for events only. */
    if (rc == 0 && ch->opts.on_event != NULL && (call->method = strdup(method)) == NULL)
        rc = DCTX_RESOURCE_EXHAUSTED;
    if (rc == 0 && (rc = wait_connected(ch, call->deadline_ns)) != 0)
        snprintf(err, DCTX__WIRE_ERR_BYTES, "no connection to %s", ch->url);
    /* Packed once connected: the budget on the wire is what is left when
     * the call leaves, not what was left before waiting for a pipe. */
    if (rc == 0)
        rc = pack_call(call, method, req, req_len, &msg, err);
    if (rc == DCTX_DEADLINE_EXCEEDED)
        count(&ch->not_sent_budget);
    if (rc == 0)
        rc = dctx__io_get(waited ? &ch->waited_pool : &ch->pool, call_io_done, call, &io);
    if (rc == 0 && !in_flight_enter(ch)) {
        rc = DCTX_UNAVAILABLE;
        dctx__io_put(io);
    }
    /* A context that can never be done needs no cancel trigger. */
    if (rc == 0 && dctx__can_be_done(ctx)) {
        atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
        if (dctx__after_func_inline(ctx, context_done, call, &call->after) != 0) {
            atomic_fetch_sub_explicit(&call->refs, 1, memory_order_relaxed);
            dctx__io_put(io); /* before leaving: a closing channel may then go */
            in_flight_leave(ch);
            rc = DCTX_RESOURCE_EXHAUSTED;
        }
    }
    if (rc != 0) {
        nng_msg_free(msg);
        if (call != NULL) {
            dctx_release(call->ctx);
            call_unref(call);
        }
        if (err[0] == '\0')
            snprintf(err, DCTX__WIRE_ERR_BYTES, "%s", dctx_strerror(rc));
        return rc;
    }
    count(&ch->calls);
    call->started_ns = dctx_now();
    if (out != NULL) {
        atomic_fetch_add_explicit(&call->refs, 1, memory_order_relaxed);
        *out = call;
    }
    pthread_mutex_lock(&call->mu);
    call->io = io;
    int64_t now = dctx_now();
    nng_aio_set_timeout(io->aio, call->deadline_ns == DCTX_DEADLINE_NONE
                                     ? NNG_DURATION_INFINITE
                                     : dctx__ms_until(call->deadline_ns + BACKSTOP_NS, now));
    nng_aio_set_msg(io->aio, msg);
    nng_ctx_send(io->nctx, io->aio);
    pthread_mutex_unlock(&call->mu);
    return 0;
}

int dctx_rpc_call_start(dctx_rpc_channel *ch, dctx *ctx, const char *method, const void *req,
                        size_t req_len, dctx_rpc_done_fn done, void *arg, dctx_rpc_handle **out)
{
    char err[DCTX__WIRE_ERR_BYTES];
    if (out != NULL)
        *out = NULL;
    return start(ch, ctx, method, req, req_len, done, arg, false, out, err);
}

bool dctx_rpc_handle_wait(dctx_rpc_handle *call, int64_t timeout_ns)
{
    return call != NULL && wait_word(&call->ended, &call->sleepers, 0, timeout_ns);
}

int dctx_rpc_handle_result(dctx_rpc_handle *call, dctx_rpc_result *res)
{
    if (call == NULL)
        return DCTX_INVALID_ARGUMENT;
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
     * yet: a live call whose context is done will end through it, with the
     * outcome PENDING by then, so wait for the end first. */
    pthread_mutex_lock(&call->mu);
    bool due = call->phase != DONE && call->ctx != NULL && dctx_done(call->ctx);
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

int dctx_rpc_call_raw(dctx_rpc_channel *ch, dctx *ctx, const char *method, const void *req,
                      size_t req_len, dctx_rpc_result *res)
{
    char err[DCTX__WIRE_ERR_BYTES];
    dctx_rpc_handle *call = NULL;
    int rc = start(ch, ctx, method, req, req_len, NULL, NULL, true, &call, err);
    if (rc != 0) {
        if (res != NULL)
            dctx__result_set(res, rc, err, NULL, 0);
        return rc;
    }
    /* This thread steps the call: only its own steps end it (a cancel or a
     * close only aborts the operation under way), so io stays ours. */
    pthread_mutex_lock(&call->mu);
    struct dctx__io *io = call->io;
    pthread_mutex_unlock(&call->mu);
    do
        nng_aio_wait(io->aio);
    while (call_step(call, io, nng_aio_result(io->aio)));
    rc = call->result.code;
    if (res != NULL) {
        *res = call->result; /* the storage moves to the caller */
        res->cancel_outcome = atomic_load_explicit(&call->outcome, memory_order_acquire);
        memset(&call->result, 0, sizeof call->result);
    }
    call_unref(call);
    return rc;
}
