/*
 * client_stream.c - a stream call to a gRPC server from a dctx context
 * (grpc.h, "Client streams"): any of the three kinds, the context's
 * deadline, cancel and values carried as for a unary call.
 *
 * Each stream has a queue of its own that its operations are plucked
 * from, each by the thread that asked for it: a sender and a receiver may
 * be two threads. The call's status is asked for when it opens and taken
 * once, by whoever needs it first (a failed send, finish, release); a
 * stream released before its end is canceled first, so every operation
 * posted completes before the queue goes.
 */
#include <dctx/grpc.h>
#include <dctx/stream.h>
#include <grpc/byte_buffer.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "edge.h"

struct dctx_grpc_stream {
    dctx *ctx; /* held: the metadata points into its values */
    struct dctx__grpc_md md;
    grpc_completion_queue *cq;
    grpc_call *call;
    dctx_after *after;
    grpc_metadata_array initial, trailing;
    bool initial_asked; /* by the first receive */
    grpc_status_code status;
    grpc_slice details;
    /* The status, taken once (status_mu); its result kept for finish. */
    pthread_mutex_t status_mu;
    bool ended;
    dctx_rpc_result result;
    bool send_closed;
    /* One tag per kind of operation: each is plucked by its asker. */
    char tag_start, tag_send, tag_recv, tag_status;
};

/* Post one batch and wait for it; gRPC's success flag. */
static bool run(dctx_grpc_stream *st, grpc_op *ops, size_t n, void *tag)
{
    if (grpc_call_start_batch(st->call, ops, n, tag, NULL) != GRPC_CALL_OK) {
        /* Refused (metadata gRPC will not send): end the call, so that
         * its status comes. */
        grpc_call_cancel_with_status(st->call, GRPC_STATUS_INTERNAL,
                                     "gRPC refused an operation of the stream", NULL);
        return false;
    }
    grpc_event ev =
        grpc_completion_queue_pluck(st->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    return ev.type == GRPC_OP_COMPLETE && ev.success;
}

/* The status, taken once: it comes when the server ended the call, its
 * deadline passed or it was canceled. */
static int end_status(dctx_grpc_stream *st)
{
    pthread_mutex_lock(&st->status_mu);
    if (!st->ended) {
        grpc_completion_queue_pluck(st->cq, &st->tag_status, gpr_inf_future(GPR_CLOCK_REALTIME),
                                    NULL);
        dctx__grpc_status_result(st->ctx, st->status, st->details, NULL, 0, &st->result);
        st->ended = true;
    }
    int code = st->result.code;
    pthread_mutex_unlock(&st->status_mu);
    return code;
}

static bool has_ended(dctx_grpc_stream *st)
{
    pthread_mutex_lock(&st->status_mu);
    bool ended = st->ended;
    pthread_mutex_unlock(&st->status_mu);
    return ended;
}

int dctx_grpc_stream_open(dctx_grpc_channel *ch, dctx *ctx, const char *method,
                          dctx_grpc_stream **out)
{
    if (out == NULL)
        return DCTX_INVALID_ARGUMENT;
    *out = NULL;
    if (ch == NULL || method == NULL || method[0] != '/')
        return DCTX_INVALID_ARGUMENT;
    if (ctx == NULL)
        ctx = dctx_background();
    dctx_rpc_result why;
    int64_t budget;
    if (!dctx__grpc_can_start(ctx, &budget, &why)) {
        int code = why.code;
        dctx_rpc_result_free(&why);
        return code;
    }
    dctx_grpc_stream *st = calloc(1, sizeof *st);
    if (st == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    int rc = dctx__grpc_md_collect(ctx, &st->md);
    if (rc != 0) {
        free(st);
        return rc;
    }
    st->ctx = dctx_retain(ctx);
    pthread_mutex_init(&st->status_mu, NULL);
    st->cq = grpc_completion_queue_create_for_pluck(NULL);
    st->call = dctx__grpc_call_open(ch, ctx, method, st->cq, budget, &st->after);
    grpc_metadata_array_init(&st->initial);
    grpc_metadata_array_init(&st->trailing);
    st->status = GRPC_STATUS_UNKNOWN;
    st->details = grpc_empty_slice();
    grpc_op status = {.op = GRPC_OP_RECV_STATUS_ON_CLIENT};
    status.data.recv_status_on_client.trailing_metadata = &st->trailing;
    status.data.recv_status_on_client.status = &st->status;
    status.data.recv_status_on_client.status_details = &st->details;
    grpc_op start = {.op = GRPC_OP_SEND_INITIAL_METADATA};
    start.data.send_initial_metadata.count = st->md.n;
    start.data.send_initial_metadata.metadata = st->md.entries;
    if (grpc_call_start_batch(st->call, &status, 1, &st->tag_status, NULL) != GRPC_CALL_OK) {
        st->ended = true; /* nothing to pluck */
        dctx_rpc_result_set(&st->result, DCTX_INTERNAL, "gRPC refused the stream's operations",
                            NULL, 0);
        dctx_grpc_stream_release(st);
        return DCTX_INTERNAL;
    }
    if (!run(st, &start, 1, &st->tag_start)) {
        rc = end_status(st);
        dctx_grpc_stream_release(st);
        return rc != DCTX_OK ? rc : DCTX_UNAVAILABLE;
    }
    *out = st;
    return 0;
}

int dctx_grpc_stream_send(dctx_grpc_stream *st, const void *data, size_t len)
{
    if (st == NULL || (data == NULL && len > 0))
        return DCTX_INVALID_ARGUMENT;
    if (st->send_closed)
        return DCTX_FAILED_PRECONDITION;
    grpc_slice s = grpc_slice_from_copied_buffer(data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_op op = {.op = GRPC_OP_SEND_MESSAGE};
    op.data.send_message.send_message = bb;
    bool sent = run(st, &op, 1, &st->tag_send);
    grpc_byte_buffer_destroy(bb);
    if (sent)
        return 0;
    int code = end_status(st); /* the send failed: the call has ended */
    return code != DCTX_OK ? code : DCTX_FAILED_PRECONDITION;
}

int dctx_grpc_stream_close_send(dctx_grpc_stream *st)
{
    if (st == NULL)
        return DCTX_INVALID_ARGUMENT;
    if (st->send_closed)
        return DCTX_FAILED_PRECONDITION;
    st->send_closed = true;
    grpc_op op = {.op = GRPC_OP_SEND_CLOSE_FROM_CLIENT};
    if (run(st, &op, 1, &st->tag_send))
        return 0;
    int code = end_status(st);
    return code != DCTX_OK ? code : DCTX_FAILED_PRECONDITION;
}

bool dctx_grpc_stream_recv(dctx_grpc_stream *st, dctx_rpc_message *out)
{
    if (out != NULL) {
        out->data = NULL;
        out->len = 0;
        out->budget_ns = -1;
    }
    if (st == NULL || out == NULL)
        return false;
    grpc_byte_buffer *bb = NULL;
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (!st->initial_asked) { /* the server's headers come before its first message */
        st->initial_asked = true;
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &st->initial;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &bb;
    if (!run(st, ops, n, &st->tag_recv) || bb == NULL) {
        if (bb != NULL)
            grpc_byte_buffer_destroy(bb);
        return false; /* the end: finish says how */
    }
    unsigned char *data = NULL;
    size_t len = 0;
    bool read = dctx__grpc_read_bytes(bb, &data, &len);
    grpc_byte_buffer_destroy(bb);
    int64_t deadline, left = -1;
    if (dctx_rpc_deadline(st->ctx, &deadline))
        left = deadline > dctx_now() ? deadline - dctx_now() : 0;
    if (!read || dctx_rpc_message_set(out, data, len, left) != 0) {
        /* Unreadable (compression) or no memory: the stream cannot go on. */
        free(data);
        grpc_call_cancel_with_status(st->call, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "a message of the gRPC server cannot be read", NULL);
        return false;
    }
    free(data);
    return true;
}

int dctx_grpc_stream_finish(dctx_grpc_stream *st, dctx_rpc_result *res)
{
    if (st == NULL) {
        dctx_rpc_result_set(res, DCTX_INVALID_ARGUMENT, "no stream", NULL, 0);
        return DCTX_INVALID_ARGUMENT;
    }
    /* gRPC hands out the status only once the messages before it were
     * read: those nobody received go unread here. */
    dctx_rpc_message m;
    while (!has_ended(st) && dctx_grpc_stream_recv(st, &m))
        dctx_rpc_message_free(&m);
    int code = end_status(st);
    if (res != NULL)
        dctx_rpc_result_set(res, code, st->result.message, NULL, 0);
    return code;
}

void dctx_grpc_stream_release(dctx_grpc_stream *st)
{
    if (st == NULL)
        return;
    if (!has_ended(st))
        grpc_call_cancel_with_status(st->call, GRPC_STATUS_CANCELLED,
                                     "the dctx stream was released", NULL);
    end_status(st); /* every operation posted has completed */
    dctx__grpc_call_close(st->call, st->after);
    grpc_completion_queue_shutdown(st->cq);
    grpc_completion_queue_destroy(st->cq);
    grpc_metadata_array_destroy(&st->initial);
    grpc_metadata_array_destroy(&st->trailing);
    grpc_slice_unref(st->details);
    dctx_rpc_result_free(&st->result);
    pthread_mutex_destroy(&st->status_mu);
    dctx_release(st->ctx);
    free(st);
}
