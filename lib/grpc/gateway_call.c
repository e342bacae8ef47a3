/*
 * gateway_call.c - one gRPC call's way through the gateway.
 *
 * A call arrives as a TAG_NEW_CALL completion. The gateway then posts, on
 * gRPC's thread, two operations: RECV_CLOSE_ON_SERVER alone (its
 * completion says whether the caller canceled, and comes only at the
 * call's very end), and the initial metadata with RECV_MESSAGE. When the
 * request is in, it builds the dctx context (deadline, values) and starts
 * a dctx call: the first hand-off. The dctx completion callback sends the
 * reply and status: the second. A close that says "cancelled" before the
 * dctx call ended cancels its context, with DEADLINE_EXCEEDED if the gRPC
 * deadline had come (within gRPC's rounding), else CANCELED.
 *
 * A call is freed when nothing can touch it any more: refs counts the
 * operations posted and not completed, plus the dctx callback to come.
 * mu orders gRPC's thread (completions) against dctx's (the reply): gRPC
 * synchronizes the two inside, where a sanitizer cannot see it.
 */
#include <dctx/trace.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "gateway.h"
#include "health.h"

/* The gRPC deadline's cancel comes from the caller's RST_STREAM up to one
 * unit of its timeout's rounding before our copy of the deadline, and
 * earlier still by as long as the C core took to read the caller's headers
 * (our copy counts from then): milliseconds on a loaded machine. A cancel
 * that close to the deadline is taken for it: a twentieth of the timeout,
 * at least 2 ms and at most 50. */
#define DEADLINE_SLACK_MIN_NS 2000000LL
#define DEADLINE_SLACK_MAX_NS 50000000LL

static int64_t deadline_slack(const struct gateway_call *c)
{
    int64_t slack = (c->caller_deadline_ns - c->arrived_ns) / 20;
    return slack < DEADLINE_SLACK_MIN_NS   ? DEADLINE_SLACK_MIN_NS
           : slack > DEADLINE_SLACK_MAX_NS ? DEADLINE_SLACK_MAX_NS
                                           : slack;
}

static void call_free(struct gateway_call *c)
{
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->call != NULL)
        grpc_call_unref(c->call);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->changed);
    free(c);
}

static bool request_call(dctx_grpc_gateway *gw)
{
    struct gateway_call *c = calloc(1, sizeof *c);
    if (c == NULL)
        return false;
    c->gw = gw;
    c->new_tag = (struct gateway_tag){TAG_NEW_CALL, c};
    c->recv_tag = (struct gateway_tag){TAG_RECV, c};
    c->close_tag = (struct gateway_tag){TAG_CLOSE, c};
    c->send_tag = (struct gateway_tag){TAG_SEND, c};
    c->stream_recv_tag = (struct gateway_tag){TAG_STREAM_RECV, c};
    c->stream_send_tag = (struct gateway_tag){TAG_STREAM_SEND, c};
    c->watch_tag = (struct gateway_tag){TAG_WATCH_SEND, c};
    c->caller_deadline_ns = DCTX_DEADLINE_NONE;
    c->budget_ns = -1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->changed, NULL);
    grpc_call_details_init(&c->details);
    grpc_metadata_array_init(&c->md);
    if (grpc_server_request_call(gw->server, &c->call, &c->details, &c->md, gw->cq, gw->cq,
                                 &c->new_tag) != GRPC_CALL_OK) {
        call_free(c);
        return false;
    }
    atomic_fetch_add(&gw->requested, 1);
    return true;
}

void dctx__gateway_request_calls(dctx_grpc_gateway *gw)
{
    while (!atomic_load(&gw->closing) && atomic_load(&gw->requested) < GATEWAY_CALLS_REQUESTED &&
           request_call(gw))
        ;
}

static void report(struct gateway_call *c)
{
    dctx_grpc_gateway *gw = c->gw;
    /* The budget handed on ends a unit before the caller's deadline: a
     * call it ended was ended by the caller's deadline too. */
    if (c->canceled_by == 0 && c->base != NULL && c->caller_deadline_ns != DCTX_DEADLINE_NONE &&
        dctx_err(c->base) == DCTX_DEADLINE_EXCEEDED)
        c->canceled_by = DCTX_DEADLINE_EXCEEDED;
    atomic_fetch_add(&gw->by_code[c->code], 1);
    if (c->canceled_by == DCTX_CANCELED)
        atomic_fetch_add(&gw->canceled_by_caller, 1);
    else if (c->canceled_by == DCTX_DEADLINE_EXCEEDED)
        atomic_fetch_add(&gw->deadline_by_caller, 1);
    if (gw->on_event == NULL)
        return;
    char *peer = grpc_call_get_peer(c->call);
    dctx_grpc_gateway_event ev = {.method = c->method,
                                  .peer = peer != NULL ? peer : "",
                                  .code = c->code,
                                  .message = c->message != NULL ? c->message : "",
                                  .canceled_by = c->canceled_by,
                                  .budget_ns = c->budget_ns,
                                  .duration_ns = dctx_now() - c->arrived_ns,
                                  .values = c->values};
    gw->on_event(gw->event_arg, &ev);
    gpr_free(peer);
}

/* Drops one of the call's references (mu held; released here). The last
 * reports the call and frees it. */
void dctx__gateway_unlock_dropping(struct gateway_call *c)
{
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->mu);
    if (!last)
        return;
    dctx_grpc_gateway *gw = c->gw;
    report(c);
    dctx_release(c->ctx);
    dctx_release(c->base);
    free(c->message);
    call_free(c);
    dctx__gateway_call_ended(gw);
}

void dctx__gateway_reply_locked(struct gateway_call *c, int code, const char *message,
                                const void *payload, size_t len)
{
    if (code < 0 || code > DCTX_CODE_MAX)
        code = DCTX_UNKNOWN;
    c->replied = true;
    c->code = code;
    c->message = message != NULL && message[0] != '\0' ? strdup(message) : NULL;
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (code == DCTX_OK && !c->stream) {
        grpc_slice s = grpc_slice_from_copied_buffer(payload, len);
        c->reply = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->reply;
    }
    c->status_details = grpc_slice_from_copied_string(c->message != NULL ? c->message : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = (grpc_status_code)code;
    ops[n++].data.send_status_from_server.status_details =
        c->message != NULL ? &c->status_details : NULL;
    if (grpc_call_start_batch(c->call, ops, n, &c->send_tag, NULL) == GRPC_CALL_OK) {
        c->refs++;
        return;
    }
    /* No status can go: end the call, so that nothing waits for one. */
    c->code = DCTX_UNAVAILABLE;
    grpc_call_cancel(c->call, NULL);
    if (c->reply != NULL)
        grpc_byte_buffer_destroy(c->reply);
    c->reply = NULL;
    grpc_slice_unref(c->status_details);
}

static void reply(struct gateway_call *c, int code, const char *message)
{
    pthread_mutex_lock(&c->mu);
    dctx__gateway_reply_locked(c, code, message, NULL, 0);
    pthread_mutex_unlock(&c->mu);
}

/* The dctx call's end, on a dctx thread: the hand-off back to gRPC. */
static void on_dctx_done(void *arg, const dctx_rpc_result *res)
{
    struct gateway_call *c = arg;
    atomic_fetch_add(&c->gw->to_grpc, 1);
    pthread_mutex_lock(&c->mu);
    dctx__gateway_reply_locked(c, res->code, res->message, res->payload, res->payload_len);
    dctx__gateway_unlock_dropping(c);
}

static void serve_health(struct gateway_call *c, const unsigned char *req, size_t len)
{
    atomic_fetch_add(&c->gw->health_checks, 1);
    unsigned char out[3];
    size_t out_len = 0;
    const char *message = NULL;
    int code =
        dctx__health_check(req, len, !atomic_load(&c->gw->draining), out, &out_len, &message);
    pthread_mutex_lock(&c->mu);
    dctx__gateway_reply_locked(c, code, message, out, out_len);
    pthread_mutex_unlock(&c->mu);
}

/* Why dctx_rpc_call_start refused a call, for the gRPC caller. */
const char *dctx__gateway_not_started(int code)
{
    switch (code) {
    case DCTX_INVALID_ARGUMENT:
        return "the method name or a value breaks a rule of the dctx wire";
    case DCTX_UNAVAILABLE:
        return "no dctx server behind the gateway takes calls (down, or draining)";
    case DCTX_DEADLINE_EXCEEDED:
        return "the gRPC deadline left no time to call on";
    default:
        return dctx_strerror(code);
    }
}

static bool is_stream(const dctx_grpc_gateway *gw, const char *method)
{
    for (size_t i = 0; i < gw->n_stream_methods; i++)
        if (strcmp(gw->stream_methods[i], method) == 0)
            return true;
    return false;
}

/* The request is in: the first hand-off, to dctx. */
static void forward(struct gateway_call *c, const void *req, size_t len, bool has_request,
                    bool stream)
{
    dctx_grpc_gateway *gw = c->gw;
    char message[160];
    int64_t left = dctx__grpc_budget_ns(c->details.deadline);
    if (left >= 0) {
        /* gRPC rounded the caller's timeout up: one unit off, so no hop
         * behind the gateway has more time than the caller had. */
        c->unit_ns = dctx__grpc_timeout_unit_ns(left);
        c->caller_deadline_ns = dctx_now() + left;
        c->budget_ns = left - c->unit_ns;
        if (c->budget_ns <= 0) {
            c->budget_ns = 0;
            reply(c, DCTX_DEADLINE_EXCEEDED, "the gRPC deadline left no time to call on");
            return;
        }
    }
    dctx *ctx = NULL, *base = NULL;
    int rc = dctx__gateway_context(gw, &c->md, c->budget_ns, &base, &ctx, &c->values, message,
                                   sizeof message);
    if (rc != 0) {
        reply(c, rc, message);
        return;
    }
    atomic_fetch_add(&gw->values_carried, c->values);
    pthread_mutex_lock(&c->mu);
    c->base = base;
    if (!stream)
        c->refs++; /* the dctx callback's */
    pthread_mutex_unlock(&c->mu);
    if (stream) {
        const char *why = dctx__gateway_stream(c, ctx, has_request ? req : NULL, len);
        if (why != NULL)
            reply(c, DCTX_RESOURCE_EXHAUSTED, why);
        return;
    }
    /* Counted before: the answer may come back on this thread. */
    atomic_fetch_add(&gw->to_dctx, 1);
    if (gw->local != NULL)
        rc = dctx_rpc_server_call_start(gw->local, ctx, gw->local_policy, c->method, req, len,
                                        on_dctx_done, c);
    else
        rc = dctx_rpc_call_start(gw->forward, ctx, c->method, req, len, on_dctx_done, c, NULL);
    dctx_release(ctx);
    if (rc != 0) {
        atomic_fetch_sub(&gw->to_dctx, 1);
        pthread_mutex_lock(&c->mu);
        c->refs--;
        dctx__gateway_reply_locked(c, rc, dctx__gateway_not_started(rc), NULL, 0);
        pthread_mutex_unlock(&c->mu);
    }
}

/* The call's method, bounded as on the dctx wire. */
static bool take_method(struct gateway_call *c)
{
    size_t n = GRPC_SLICE_LENGTH(c->details.method);
    if (n > DCTX_WIRE_METHOD_BYTES_MAX)
        return false;
    memcpy(c->method, GRPC_SLICE_START_PTR(c->details.method), n);
    c->method[n] = '\0';
    return true;
}

static void on_new_call(struct gateway_call *c, bool ok)
{
    dctx_grpc_gateway *gw = c->gw;
    atomic_fetch_sub(&gw->requested, 1);
    if (!ok) { /* the server shuts down: no call came */
        call_free(c);
        return;
    }
    dctx__gateway_request_calls(gw);
    atomic_fetch_add(&gw->calls, 1);
    pthread_mutex_lock(&gw->mu);
    gw->in_flight++;
    pthread_mutex_unlock(&gw->mu);
    c->arrived_ns = dctx_now();

    grpc_op close_op = {.op = GRPC_OP_RECV_CLOSE_ON_SERVER};
    close_op.data.recv_close_on_server.cancelled = &c->cancelled;
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &c->request;
    pthread_mutex_lock(&c->mu);
    c->refs = 1; /* held until both are posted */
    if (grpc_call_start_batch(c->call, &close_op, 1, &c->close_tag, NULL) == GRPC_CALL_OK)
        c->refs++;
    if (grpc_call_start_batch(c->call, ops, 2, &c->recv_tag, NULL) == GRPC_CALL_OK)
        c->refs++;
    else
        grpc_call_cancel(c->call, NULL);
    dctx__gateway_unlock_dropping(c);
}

static void on_recv(struct gateway_call *c, bool ok)
{
    unsigned char *req = NULL;
    size_t len = 0;
    bool method_ok = take_method(c);
    /* A stream's caller may send nothing at all; a unary caller must. */
    bool stream = method_ok && is_stream(c->gw, c->method);
    if (!ok) {
        reply(c, DCTX_CANCELED, "the call ended before its request");
    } else if (!method_ok) {
        reply(c, DCTX_INVALID_ARGUMENT, "the method name is over 256 bytes");
    } else if (c->request == NULL && !stream) {
        reply(c, DCTX_INTERNAL, "the gRPC caller sent no request message");
    } else if (c->request != NULL && !dctx__grpc_read_bytes(c->request, &req, &len)) {
        reply(c, DCTX_RESOURCE_EXHAUSTED, "cannot read the request (compression or memory)");
    } else if (strcmp(c->method, DCTX__HEALTH_CHECK) == 0) {
        serve_health(c, req, len);
    } else if (strcmp(c->method, DCTX__HEALTH_WATCH) == 0) {
        dctx__gateway_watch_start(c, req, len);
    } else {
        forward(c, req, len, c->request != NULL, stream);
    }
    free(req);
    if (c->request != NULL)
        grpc_byte_buffer_destroy(c->request);
    c->request = NULL;
    pthread_mutex_lock(&c->mu);
    dctx__gateway_unlock_dropping(c);
}

/* The call's very end, as gRPC saw it. */
static void on_close(struct gateway_call *c)
{
    dctx_grpc_gateway *gw = c->gw;
    if (c->watching) /* on the cq thread, as its start: no race */
        dctx__gateway_watch_end(c);
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    if (c->watching && !c->replied) /* a watch ends only so */
        c->code = atomic_load(&gw->closing) ? DCTX_UNAVAILABLE : DCTX_CANCELED;
    dctx *cancel = NULL;
    int cause = DCTX_CANCELED;
    const char *why = "the gRPC caller canceled the call";
    if (c->cancelled && !c->replied) {
        int64_t now = dctx_now();
        if (atomic_load(&gw->closing)) {
            cause = DCTX_UNAVAILABLE;
            why = "the gRPC gateway is closing";
        } else if (c->caller_deadline_ns != DCTX_DEADLINE_NONE &&
                   now >= c->caller_deadline_ns - c->unit_ns - deadline_slack(c)) {
            cause = DCTX_DEADLINE_EXCEEDED;
            why = "the gRPC caller's deadline passed";
        }
        bool by_caller = cause != DCTX_UNAVAILABLE; /* not the gateway's own close */
        c->canceled_by = by_caller ? cause : 0;
        cancel = dctx_retain(c->base);
    }
    pthread_mutex_unlock(&c->mu);
    /* Outside mu: the cancel may end the dctx call on this thread, and its
     * callback takes mu. */
    if (cancel != NULL) {
        dctx_cancel_cause(cancel, cause, why);
        dctx_release(cancel);
    }
    pthread_mutex_lock(&c->mu);
    dctx__gateway_unlock_dropping(c);
}

static void on_send(struct gateway_call *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->reply != NULL)
        grpc_byte_buffer_destroy(c->reply);
    c->reply = NULL;
    grpc_slice_unref(c->status_details);
    dctx__gateway_unlock_dropping(c);
}

void dctx__gateway_on_tag(struct gateway_tag *tag, bool ok)
{
    struct gateway_call *c = tag->call;
    switch (tag->kind) {
    case TAG_NEW_CALL:
        on_new_call(c, ok);
        break;
    case TAG_RECV:
        on_recv(c, ok);
        break;
    case TAG_CLOSE:
        on_close(c);
        break;
    case TAG_SEND:
        on_send(c);
        break;
    case TAG_WATCH_SEND:
        dctx__gateway_watch_sent(c, ok);
        break;
    case TAG_STREAM_RECV:
    case TAG_STREAM_SEND:
        pthread_mutex_lock(&c->mu);
        dctx__gateway_stream_completed(c, tag->kind, ok);
        dctx__gateway_unlock_dropping(c);
        break;
    case TAG_SHUTDOWN:
        break;
    }
}
