/*
 * gateway_stream.c - a gRPC stream bridged to a dctx stream: for the
 * methods the gateway was told are streams (any of the three kinds: the
 * bridge relays both ways until each side is done).
 *
 * Two threads per stream, each blocking on one side only: "down" opens
 * the dctx stream, then receives from it and sends each message to gRPC,
 * one at a time, and at the end sends the status; "up" sends the gRPC
 * caller's messages to the dctx stream (blocking on its credit) and
 * half-closes it when the caller has sent everything. gRPC's operations
 * complete on the gateway's queue thread, which only records the result
 * and wakes the thread waiting for it (dctx__gateway_stream_completed).
 * The caller's cancel or deadline cancels the stream's context
 * (gateway_call.c's close), which ends both directions: the dctx stream
 * ends, and gRPC fails the operations still posted.
 */
#include <dctx/stream.h>
#include <grpc/byte_buffer.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "gateway.h"

/* The stack of a stream's threads: they block in a few known calls. */
#define STREAM_THREAD_STACK_BYTES (512 * 1024)

struct bridge {
    struct gateway_call *c;
    dctx_rpc_stream *st;
    unsigned char *first; /* the caller's first message */
    size_t first_len;
    bool has_first; /* false: the caller half-closed without a message */
};

void dctx__gateway_stream_completed(struct gateway_call *c, enum gateway_tag_kind kind, bool ok)
{
    if (kind == TAG_STREAM_RECV) {
        c->recv_done = true;
        c->recv_ok = ok;
    } else {
        c->send_done = true;
        c->send_ok = ok;
    }
    pthread_cond_broadcast(&c->changed);
}

/* Posts one operation of the stream (mu held; op NULL: an empty batch,
 * which completes at once, behind what the queue holds already); false if
 * gRPC refused it. */
static bool post(struct gateway_call *c, grpc_op *op, struct gateway_tag *tag)
{
    if (grpc_call_start_batch(c->call, op, op != NULL ? 1 : 0, tag, NULL) != GRPC_CALL_OK)
        return false;
    c->refs++;
    return true;
}

enum from_caller { CALLER_MESSAGE, CALLER_DONE, CALLER_FAILED, CALLER_UNREADABLE };

/* The end of the caller's messages is the same to the C core whether the
 * caller half-closed or canceled (a RST_STREAM closes the read side too):
 * only the call's close, which completes on the queue right behind it,
 * says which. An empty batch waits for the queue to get past it; by then
 * a cancel has canceled the call's context. */
static bool canceled_at_end(struct gateway_call *c)
{
    pthread_mutex_lock(&c->mu);
    c->recv_done = false;
    bool posted = post(c, NULL, &c->stream_recv_tag);
    while (posted && !c->recv_done)
        pthread_cond_wait(&c->changed, &c->mu);
    bool canceled = c->base != NULL && dctx_err(c->base) != 0;
    pthread_mutex_unlock(&c->mu);
    return canceled;
}

/* The next message from the gRPC caller into *out (malloc'd), or that it
 * has sent everything, or that its side failed (the call ended), or that
 * its message cannot be read (compression, memory). */
static enum from_caller recv_from_caller(struct gateway_call *c, unsigned char **out, size_t *len)
{
    grpc_op op = {.op = GRPC_OP_RECV_MESSAGE};
    op.data.recv_message.recv_message = &c->incoming;
    pthread_mutex_lock(&c->mu);
    c->incoming = NULL;
    c->recv_done = false;
    bool posted = post(c, &op, &c->stream_recv_tag);
    while (posted && !c->recv_done)
        pthread_cond_wait(&c->changed, &c->mu);
    grpc_byte_buffer *bb = c->incoming;
    bool ok = posted && c->recv_ok;
    c->incoming = NULL;
    pthread_mutex_unlock(&c->mu);
    enum from_caller got = !ok                                   ? CALLER_FAILED
                           : bb == NULL                          ? CALLER_DONE
                           : dctx__grpc_read_bytes(bb, out, len) ? CALLER_MESSAGE
                                                                 : CALLER_UNREADABLE;
    if (bb != NULL)
        grpc_byte_buffer_destroy(bb);
    return got == CALLER_DONE && canceled_at_end(c) ? CALLER_FAILED : got;
}

/* Sends one message to the gRPC caller and waits for it to leave. */
static bool send_to_caller(struct gateway_call *c, const void *data, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer(data, len);
    grpc_op op = {.op = GRPC_OP_SEND_MESSAGE};
    pthread_mutex_lock(&c->mu);
    c->outgoing = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    op.data.send_message.send_message = c->outgoing;
    c->send_done = false;
    bool posted = post(c, &op, &c->stream_send_tag);
    while (posted && !c->send_done)
        pthread_cond_wait(&c->changed, &c->mu);
    bool sent = posted && c->send_ok;
    grpc_byte_buffer_destroy(c->outgoing);
    c->outgoing = NULL;
    pthread_mutex_unlock(&c->mu);
    return sent;
}

/* Ends the stream from the gateway's side: its context canceled with
 * code as the cause. */
static void cancel_stream(struct gateway_call *c, int code, const char *why)
{
    pthread_mutex_lock(&c->mu);
    dctx *base = dctx_retain(c->base);
    pthread_mutex_unlock(&c->mu);
    dctx_cancel_cause(base, code, why);
    dctx_release(base);
}

/* The caller's messages to dctx. Only the caller's clean half-close
 * half-closes the dctx stream: a failed or unreadable message, or a
 * message dctx refused, cancels it (a cut stream is never taken for a
 * whole one). */
static void *up(void *arg)
{
    struct bridge *b = arg;
    int rc = b->has_first ? dctx_rpc_stream_send(b->st, b->first, b->first_len) : 0;
    unsigned char *msg = NULL;
    size_t len = 0;
    enum from_caller got = CALLER_DONE;
    while (rc == 0 && (got = recv_from_caller(b->c, &msg, &len)) == CALLER_MESSAGE) {
        rc = dctx_rpc_stream_send(b->st, msg, len);
        free(msg);
        msg = NULL;
    }
    if (rc != 0)
        cancel_stream(b->c, rc, "a message of the gRPC caller could not go on to dctx");
    else if (got == CALLER_FAILED)
        cancel_stream(b->c, DCTX_CANCELED, "the gRPC caller's stream ended before its half-close");
    else if (got == CALLER_UNREADABLE)
        cancel_stream(b->c, DCTX_RESOURCE_EXHAUSTED,
                      "a message of the gRPC caller cannot be read (compression or memory)");
    else
        dctx_rpc_stream_close_send(b->st);
    return NULL;
}

static void *down(void *arg)
{
    struct bridge *b = arg;
    struct gateway_call *c = b->c;
    dctx_grpc_gateway *gw = c->gw;
    int rc = dctx_rpc_stream_open(gw->forward, c->ctx, c->method, &b->st);
    pthread_t up_thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, STREAM_THREAD_STACK_BYTES);
    bool up_runs = rc == 0 && pthread_create(&up_thread, &attr, up, b) == 0;
    pthread_attr_destroy(&attr);
    dctx_rpc_result res = {.message = ""};
    if (rc != 0) {
        dctx_rpc_result_set(&res, rc, dctx__gateway_not_started(rc), NULL, 0);
    } else {
        atomic_fetch_add(&gw->to_dctx, 1);
        if (!up_runs)
            cancel_stream(c, DCTX_RESOURCE_EXHAUSTED,
                          "no thread for the stream's messages to dctx");
        dctx_rpc_message m;
        while (dctx_rpc_stream_recv(b->st, &m)) {
            bool sent = send_to_caller(c, m.data, m.len);
            dctx_rpc_message_free(&m);
            if (!sent) {
                cancel_stream(c, DCTX_CANCELED, "the gRPC caller is gone");
                break;
            }
        }
        dctx_rpc_stream_finish(b->st, &res);
    }
    atomic_fetch_add(&gw->to_grpc, 1);
    pthread_mutex_lock(&c->mu);
    dctx__gateway_reply_locked(c, res.code, res.message, NULL, 0);
    pthread_mutex_unlock(&c->mu);
    dctx_rpc_result_free(&res);
    /* The status is on its way: gRPC ends the caller's side, and with it a
     * receive the up thread may still wait on. */
    if (up_runs)
        pthread_join(up_thread, NULL);
    dctx_rpc_stream_release(b->st);
    free(b->first);
    free(b);
    atomic_fetch_sub(&gw->streams, 1);
    pthread_mutex_lock(&c->mu);
    dctx__gateway_unlock_dropping(c);
    return NULL;
}

const char *dctx__gateway_stream(struct gateway_call *c, dctx *ctx, const void *req, size_t len)
{
    dctx_grpc_gateway *gw = c->gw;
    if (atomic_fetch_add(&gw->streams, 1) >= gw->max_streams) {
        atomic_fetch_sub(&gw->streams, 1);
        dctx_release(ctx);
        return "too many streams through the gateway at once";
    }
    struct bridge *b = calloc(1, sizeof *b);
    if (b != NULL && req != NULL && len > 0 && (b->first = malloc(len)) == NULL) {
        free(b);
        b = NULL;
    }
    if (b == NULL) {
        atomic_fetch_sub(&gw->streams, 1);
        dctx_release(ctx);
        return "no memory for the stream";
    }
    if (req != NULL && len > 0)
        memcpy(b->first, req, len);
    b->first_len = len;
    b->has_first = req != NULL;
    b->c = c;
    pthread_mutex_lock(&c->mu);
    c->ctx = ctx;
    c->stream = true;
    c->refs++; /* the down thread's */
    pthread_mutex_unlock(&c->mu);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, STREAM_THREAD_STACK_BYTES);
    pthread_t t;
    bool started = pthread_create(&t, &attr, down, b) == 0;
    pthread_attr_destroy(&attr);
    if (!started) {
        pthread_mutex_lock(&c->mu);
        c->refs--;
        c->ctx = NULL;
        c->stream = false;
        pthread_mutex_unlock(&c->mu);
        atomic_fetch_sub(&gw->streams, 1);
        dctx_release(ctx);
        free(b->first);
        free(b);
        return "no thread for the stream";
    }
    return NULL;
}
