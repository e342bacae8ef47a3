/*
 * client_call.c - one call to a gRPC server from a dctx context (grpc.h,
 * "Client"): blocking (dctx_grpc_call, on a queue of its own) or not
 * (dctx_grpc_call_start, on its channel's queue, whose thread runs done).
 *
 * A call is one batch of six operations. The context's cancel reaches it
 * by an after-func holding its own reference to the gRPC call and to gRPC
 * (grpc_init), so a cancel that races with the call's end, and runs after
 * it, finds both alive; stopped in time, the after-func's references are
 * dropped by the call's end. Metadata slices point into the context's
 * values: the context is held for the whole call.
 */
#include <dctx/grpc.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "edge.h"

/* One call, from its start to its end. */
struct outbound {
    struct dctx__grpc_async_tag tag; /* first: the queue hands it back */
    dctx *ctx;                       /* held */
    struct dctx__grpc_md md;
    grpc_call *call;
    dctx_after *after;
    grpc_byte_buffer *request, *response;
    grpc_status_code status;
    grpc_slice details;
    grpc_metadata_array initial, trailing;
    dctx_rpc_done_fn done; /* asynchronous calls */
    void *arg;
};

static int add_value(void *arg, const char *name, const void *value, size_t len)
{
    struct dctx__grpc_md *md = arg;
    if (md->n == DCTX_WIRE_VALUES_MAX || !dctx__grpc_key_sendable(name, value, len))
        return 0;
    grpc_metadata *e = &md->entries[md->n++];
    memset(e, 0, sizeof *e);
    e->key = grpc_slice_from_static_buffer(name, strlen(name));
    e->value = grpc_slice_from_static_buffer(value, len);
    return 0;
}

int dctx__grpc_md_collect(dctx *ctx, struct dctx__grpc_md *md)
{
    md->n = 0;
    return dctx_wire_each_value(ctx, NULL, add_value, md);
}

/* The context's cancel, on an after-func thread: cancels the gRPC call and
 * drops what the after-func held (a reference to the call, and gRPC
 * itself: the cancel may run after the call ended and its channel
 * closed). */
static void cancel_call(void *arg)
{
    grpc_call *call = arg;
    grpc_call_cancel_with_status(call, GRPC_STATUS_CANCELLED, "the dctx context ended", NULL);
    grpc_call_unref(call);
    grpc_shutdown();
}

grpc_call *dctx__grpc_call_open(dctx_grpc_channel *ch, dctx *ctx, const char *method,
                                grpc_completion_queue *cq, int64_t budget, dctx_after **after)
{
    /* Copied: gRPC reads the path after the call is made. */
    grpc_slice path = grpc_slice_from_copied_string(method);
    grpc_call *call = grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, path,
                                               NULL, dctx__grpc_deadline(budget), NULL);
    grpc_slice_unref(path);
    grpc_init(); /* the after-func's, with a reference to the call */
    grpc_call_ref(call);
    if (dctx_after_func(ctx, cancel_call, call, after) != 0) {
        *after = NULL;
        grpc_call_unref(call);
        grpc_shutdown();
    }
    return call;
}

void dctx__grpc_call_close(grpc_call *call, dctx_after *after)
{
    if (after != NULL && dctx_after_stop(after)) {
        grpc_call_unref(call); /* the after-func never ran: what it held */
        grpc_shutdown();
    }
    grpc_call_unref(call);
}

bool dctx__grpc_can_start(dctx *ctx, int64_t *budget, dctx_rpc_result *res)
{
    int64_t deadline;
    bool timed = dctx_rpc_deadline(ctx, &deadline); /* a drain's end included */
    *budget = -1;
    if (timed) {
        *budget = deadline - dctx_now();
        /* gRPC rounds the timeout it sends up by up to one unit: take it
         * off first, so the server never gets more time than we have. */
        *budget -= dctx__grpc_timeout_unit_ns(*budget);
    }
    if (!dctx_done(ctx) && !(timed && *budget <= 0))
        return true;
    const char *cause_msg = NULL;
    int code = dctx_done(ctx) ? dctx_cause(ctx, &cause_msg) : DCTX_DEADLINE_EXCEEDED;
    dctx_rpc_result_set(res, code,
                        cause_msg        ? cause_msg
                        : dctx_done(ctx) ? dctx_strerror(dctx_err(ctx))
                                         : "no time left to call",
                        NULL, 0);
    return false;
}

/* Make the call on cq and post its batch with tag; 0, or a code with res
 * saying why (o then holds nothing). */
static int begin(struct outbound *o, dctx_grpc_channel *ch, dctx *ctx, const char *method,
                 const void *req, size_t req_len, grpc_completion_queue *cq, void *tag,
                 dctx_rpc_result *res)
{
    int64_t budget;
    if (!dctx__grpc_can_start(ctx, &budget, res))
        return res->code;
    int rc = dctx__grpc_md_collect(ctx, &o->md);
    if (rc != 0) {
        dctx_rpc_result_set(res, rc, "the context's values break a limit of the dctx wire", NULL,
                            0);
        return rc;
    }
    o->ctx = dctx_retain(ctx);
    o->call = dctx__grpc_call_open(ch, ctx, method, cq, budget, &o->after);
    grpc_slice body = grpc_slice_from_copied_buffer(req, req_len);
    o->request = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    o->status = GRPC_STATUS_UNKNOWN;
    o->details = grpc_empty_slice();
    grpc_metadata_array_init(&o->initial);
    grpc_metadata_array_init(&o->trailing);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = o->md.n;
    ops[0].data.send_initial_metadata.metadata = o->md.entries;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = o->request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &o->initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &o->response;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &o->trailing;
    ops[5].data.recv_status_on_client.status = &o->status;
    ops[5].data.recv_status_on_client.status_details = &o->details;
    grpc_call_error err = grpc_call_start_batch(o->call, ops, 6, tag, NULL);
    if (err == GRPC_CALL_OK)
        return 0;
    rc = err == GRPC_CALL_ERROR_INVALID_METADATA ? DCTX_INVALID_ARGUMENT : DCTX_INTERNAL;
    dctx_rpc_result_set(res, rc, "gRPC refused the call's metadata or operations", NULL, 0);
    return rc;
}

int dctx__grpc_status_result(dctx *ctx, grpc_status_code status, grpc_slice details,
                             const void *payload, size_t len, dctx_rpc_result *res)
{
    int code = (int)status;
    if (code < 0 || code > DCTX_CODE_MAX)
        code = DCTX_UNKNOWN;
    if (code != DCTX_OK && dctx_done(ctx)) {
        /* The context ended the call: say why, as a dctx call would. */
        const char *cause_msg = NULL;
        char message[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
        code = dctx_cause(ctx, &cause_msg);
        snprintf(message, sizeof message, "%s%s%s", dctx_strerror(dctx_err(ctx)),
                 cause_msg ? ": " : "", cause_msg ? cause_msg : "");
        dctx_rpc_result_set(res, code, message, NULL, 0);
        return code;
    }
    /* Cut to the wire's limit; the result then cuts on a UTF-8 boundary. */
    char message[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
    size_t n = GRPC_SLICE_LENGTH(details);
    n = n < sizeof message - 1 ? n : sizeof message - 1;
    memcpy(message, GRPC_SLICE_START_PTR(details), n);
    message[n] = '\0';
    dctx_rpc_result_set(res, code, message, code == DCTX_OK ? payload : NULL,
                        code == DCTX_OK ? len : 0);
    return res->code;
}

/* The result of a unary call gRPC ran: its status and response, or the
 * context's end. */
static void result_of(struct outbound *o, dctx_rpc_result *res)
{
    grpc_slice body = grpc_empty_slice();
    if (o->status == GRPC_STATUS_OK &&
        (o->response == NULL || !dctx__grpc_read_slice(o->response, &body)))
        dctx_rpc_result_set(res, DCTX_INTERNAL, "the gRPC server sent OK and no message", NULL, 0);
    else
        dctx__grpc_status_result(o->ctx, o->status, o->details, GRPC_SLICE_START_PTR(body),
                                 GRPC_SLICE_LENGTH(body), res);
    grpc_slice_unref(body);
}

/* Free what begin made (after the batch completed, or was refused). */
static void end(struct outbound *o)
{
    if (o->call == NULL)
        return;
    grpc_metadata_array_destroy(&o->initial);
    grpc_metadata_array_destroy(&o->trailing);
    grpc_slice_unref(o->details);
    grpc_byte_buffer_destroy(o->request);
    if (o->response != NULL)
        grpc_byte_buffer_destroy(o->response);
    dctx__grpc_call_close(o->call, o->after);
    dctx_release(o->ctx);
}

static bool arguments_valid(dctx_grpc_channel *ch, const char *method, const void *req,
                            size_t req_len, dctx_rpc_result *res)
{
    if (ch != NULL && method != NULL && method[0] == '/' && (req != NULL || req_len == 0))
        return true;
    dctx_rpc_result_set(res, DCTX_INVALID_ARGUMENT, "no channel, method or request", NULL, 0);
    return false;
}

int dctx_grpc_call(dctx_grpc_channel *ch, dctx *ctx, const char *method, const void *req,
                   size_t req_len, dctx_rpc_result *res)
{
    dctx_rpc_result scratch;
    if (res == NULL)
        res = &scratch;
    if (ctx == NULL)
        ctx = dctx_background();
    if (arguments_valid(ch, method, req, req_len, res)) {
        struct outbound o = {.call = NULL};
        grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
        int tag;
        if (begin(&o, ch, ctx, method, req, req_len, cq, &tag, res) == 0) {
            grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            result_of(&o, res);
        }
        end(&o);
        dctx__grpc_queue_destroy(cq);
    }
    int code = res->code;
    if (res == &scratch)
        dctx_rpc_result_free(&scratch);
    return code;
}

/* An asynchronous call's batch completed, on its channel's thread. */
static void ended_async(struct dctx__grpc_async_tag *tag, bool ok)
{
    (void)ok; /* a batch of a client call always completes with its status */
    struct outbound *o = (struct outbound *)tag;
    dctx_rpc_result res;
    result_of(o, &res);
    o->done(o->arg, &res);
    dctx_rpc_result_free(&res);
    end(o);
    free(o);
}

int dctx_grpc_call_start(dctx_grpc_channel *ch, dctx *ctx, const char *method, const void *req,
                         size_t req_len, dctx_rpc_done_fn done, void *arg)
{
    dctx_rpc_result res;
    if (ctx == NULL)
        ctx = dctx_background();
    if (done == NULL)
        return DCTX_INVALID_ARGUMENT;
    if (!arguments_valid(ch, method, req, req_len, &res)) {
        dctx_rpc_result_free(&res);
        return DCTX_INVALID_ARGUMENT;
    }
    grpc_completion_queue *cq = dctx__grpc_channel_queue(ch);
    struct outbound *o = cq != NULL ? calloc(1, sizeof *o) : NULL;
    if (o == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    o->tag.end = ended_async;
    o->done = done;
    o->arg = arg;
    int rc = begin(o, ch, ctx, method, req, req_len, cq, &o->tag, &res);
    if (rc != 0) {
        end(o);
        free(o);
        dctx_rpc_result_free(&res);
    }
    return rc;
}
