/*
 * client.c - calling gRPC servers from a dctx context (grpc.h, "Client"):
 * the channels, one per target and shared, and the call.
 *
 * A call is one batch of six operations on a completion queue of its own,
 * which the caller's thread waits on. The context's cancel reaches it by
 * an after-func holding its own reference to the gRPC call and to gRPC
 * (grpc_init), so a cancel that races with the call's end, and runs after
 * it, finds both alive; stopped in time, the after-func's references are
 * dropped by the caller.
 * Metadata slices point into the context's values: the context is held
 * for the whole call.
 */
#include <dctx/grpc.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "tls.h"

struct dctx_grpc_channel {
    struct dctx_grpc_channel *next;
    char *target;
    /* The options it was made with, their strings copied (NULL kept). */
    bool tls;
    char *tls_ca_file, *tls_server_name, *tls_cert_key_file;
    grpc_channel *channel;
    int refs; /* under channels_mu */
};

static pthread_mutex_t channels_mu = PTHREAD_MUTEX_INITIALIZER;
static struct dctx_grpc_channel *channels;

static bool same_text(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool made_with(const dctx_grpc_channel *ch, const char *target,
                      const dctx_grpc_channel_options *o)
{
    return strcmp(ch->target, target) == 0 && ch->tls == o->tls &&
           same_text(ch->tls_ca_file, o->tls_ca_file) &&
           same_text(ch->tls_server_name, o->tls_server_name) &&
           same_text(ch->tls_cert_key_file, o->tls_cert_key_file);
}

static void channel_free(dctx_grpc_channel *ch)
{
    free(ch->target);
    free(ch->tls_ca_file);
    free(ch->tls_server_name);
    free(ch->tls_cert_key_file);
    free(ch);
}

static char *copy_or_null(const char *s, bool *failed)
{
    char *c = s != NULL ? strdup(s) : NULL;
    if (s != NULL && c == NULL)
        *failed = true;
    return c;
}

/* A new channel (grpc_init held for it), or NULL with *rc set. */
static dctx_grpc_channel *channel_new(const char *target, const dctx_grpc_channel_options *o,
                                      int *rc)
{
    dctx_grpc_channel *ch = calloc(1, sizeof *ch);
    if (ch == NULL) {
        *rc = DCTX_RESOURCE_EXHAUSTED;
        return NULL;
    }
    bool failed = false;
    ch->target = copy_or_null(target, &failed);
    ch->tls = o->tls;
    ch->tls_ca_file = copy_or_null(o->tls_ca_file, &failed);
    ch->tls_server_name = copy_or_null(o->tls_server_name, &failed);
    ch->tls_cert_key_file = copy_or_null(o->tls_cert_key_file, &failed);
    if (failed) {
        channel_free(ch);
        *rc = DCTX_RESOURCE_EXHAUSTED;
        return NULL;
    }
    grpc_init();
    grpc_channel_credentials *creds = NULL;
    *rc = o->tls ? dctx__grpc_channel_tls(o->tls_ca_file, o->tls_cert_key_file, &creds) : 0;
    if (*rc != 0) {
        grpc_shutdown();
        channel_free(ch);
        return NULL;
    }
    if (creds == NULL)
        creds = grpc_insecure_credentials_create();
    grpc_arg name = {.type = GRPC_ARG_STRING,
                     .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                     .value.string = (char *)o->tls_server_name};
    grpc_channel_args args = {.num_args = o->tls_server_name != NULL ? 1 : 0, .args = &name};
    ch->channel = grpc_channel_create(target, creds, &args);
    grpc_channel_credentials_release(creds);
    return ch;
}

int dctx_grpc_channel_get_with(const char *target, const dctx_grpc_channel_options *opts,
                               dctx_grpc_channel **out)
{
    if (out == NULL)
        return DCTX_INVALID_ARGUMENT;
    *out = NULL;
    dctx_grpc_channel_options insecure = {.tls = false};
    const dctx_grpc_channel_options *o = opts != NULL ? opts : &insecure;
    if (target == NULL || target[0] == '\0' ||
        (!o->tls &&
         (o->tls_ca_file != NULL || o->tls_server_name != NULL || o->tls_cert_key_file != NULL)))
        return DCTX_INVALID_ARGUMENT;
    int rc = 0;
    pthread_mutex_lock(&channels_mu);
    dctx_grpc_channel *ch = channels;
    while (ch != NULL && !made_with(ch, target, o))
        ch = ch->next;
    if (ch == NULL && (ch = channel_new(target, o, &rc)) != NULL) {
        ch->next = channels;
        channels = ch;
    }
    if (ch != NULL)
        ch->refs++;
    pthread_mutex_unlock(&channels_mu);
    *out = ch;
    return rc;
}

int dctx_grpc_channel_get(const char *target, dctx_grpc_channel **out)
{
    return dctx_grpc_channel_get_with(target, NULL, out);
}

void dctx_grpc_channel_release(dctx_grpc_channel *ch)
{
    if (ch == NULL)
        return;
    pthread_mutex_lock(&channels_mu);
    bool last = --ch->refs == 0;
    if (last) {
        dctx_grpc_channel **p = &channels;
        while (*p != ch)
            p = &(*p)->next;
        *p = ch->next;
    }
    pthread_mutex_unlock(&channels_mu);
    if (!last)
        return;
    grpc_channel_destroy(ch->channel);
    grpc_shutdown();
    channel_free(ch);
}

/* The metadata a call sends: the context's propagated values that gRPC can
 * carry. */
struct outbound_md {
    grpc_metadata entries[DCTX_WIRE_VALUES_MAX];
    size_t n;
};

static int add_value(void *arg, const char *name, const void *value, size_t len)
{
    struct outbound_md *md = arg;
    if (md->n == DCTX_WIRE_VALUES_MAX || !dctx__grpc_key_sendable(name, value, len))
        return 0;
    grpc_metadata *e = &md->entries[md->n++];
    memset(e, 0, sizeof *e);
    e->key = grpc_slice_from_static_buffer(name, strlen(name));
    e->value = grpc_slice_from_static_buffer(value, len);
    return 0;
}

/* The context's cancel, on an after-func thread: cancels the gRPC call and
 * drops what the after-func held (a reference to the call, and gRPC
 * itself: the cancel may run after the call returned and its channel
 * closed). */
static void cancel_call(void *arg)
{
    grpc_call *call = arg;
    grpc_call_cancel_with_status(call, GRPC_STATUS_CANCELLED, "the dctx context ended", NULL);
    grpc_call_unref(call);
    grpc_shutdown();
}

/* Runs one call on its queue; the outcome in *status, *details, *response. */
static int run_call(grpc_call *call, grpc_completion_queue *cq, struct outbound_md *md,
                    grpc_byte_buffer *request, grpc_status_code *status, grpc_slice *details,
                    grpc_byte_buffer **response)
{
    grpc_metadata_array initial, trailing;
    grpc_metadata_array_init(&initial);
    grpc_metadata_array_init(&trailing);
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = md->n;
    ops[0].data.send_initial_metadata.metadata = md->entries;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = request;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = response;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing;
    ops[5].data.recv_status_on_client.status = status;
    ops[5].data.recv_status_on_client.status_details = details;
    int tag;
    grpc_call_error err = grpc_call_start_batch(call, ops, 6, &tag, NULL);
    if (err == GRPC_CALL_OK)
        grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    grpc_metadata_array_destroy(&initial);
    grpc_metadata_array_destroy(&trailing);
    return err == GRPC_CALL_OK                       ? 0
           : err == GRPC_CALL_ERROR_INVALID_METADATA ? DCTX_INVALID_ARGUMENT
                                                     : DCTX_INTERNAL;
}

/* The result of a call gRPC ran: its status, or the context's end. */
static int finish(dctx *ctx, grpc_status_code status, grpc_slice details,
                  grpc_byte_buffer *response, dctx_rpc_result *res)
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
    /* The result cuts the message to the wire's limit, on a UTF-8 boundary. */
    char *message = grpc_slice_to_c_string(details);
    unsigned char *body = NULL;
    size_t len = 0;
    if (code != DCTX_OK)
        dctx_rpc_result_set(res, code, message, NULL, 0);
    else if (response == NULL || !dctx__grpc_read_bytes(response, &body, &len))
        dctx_rpc_result_set(res, DCTX_INTERNAL, "the gRPC server sent OK and no message", NULL, 0);
    else
        dctx_rpc_result_set(res, DCTX_OK, message, body, len);
    free(body);
    gpr_free(message);
    return res->code;
}

int dctx_grpc_call(dctx_grpc_channel *ch, dctx *ctx, const char *method, const void *req,
                   size_t req_len, dctx_rpc_result *res)
{
    dctx_rpc_result scratch;
    if (res == NULL)
        res = &scratch;
    if (ctx == NULL)
        ctx = dctx_background();
    if (ch == NULL || method == NULL || method[0] != '/' || (req == NULL && req_len > 0)) {
        dctx_rpc_result_set(res, DCTX_INVALID_ARGUMENT, "no channel, method or request", NULL, 0);
        goto out;
    }
    int64_t budget = -1, deadline;
    bool timed = dctx_rpc_deadline(ctx, &deadline); /* a drain's end included */
    if (timed) {
        budget = deadline - dctx_now();
        /* gRPC rounds the timeout it sends up by up to one unit: take it
         * off first, so the server never gets more time than we have. */
        budget -= dctx__grpc_timeout_unit_ns(budget);
    }
    if (dctx_done(ctx) || (timed && budget <= 0)) {
        const char *cause_msg = NULL;
        int code = dctx_done(ctx) ? dctx_cause(ctx, &cause_msg) : DCTX_DEADLINE_EXCEEDED;
        dctx_rpc_result_set(res, code,
                            cause_msg        ? cause_msg
                            : dctx_done(ctx) ? dctx_strerror(dctx_err(ctx))
                                             : "no time left to call",
                            NULL, 0);
        goto out;
    }
    struct outbound_md md = {.n = 0};
    int rc = dctx_wire_each_value(ctx, NULL, add_value, &md);
    if (rc != 0) {
        dctx_rpc_result_set(res, rc, "the context's values break a limit of the dctx wire", NULL,
                            0);
        goto out;
    }
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice method_slice = grpc_slice_from_static_string(method);
    grpc_call *call =
        grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method_slice, NULL,
                                 dctx__grpc_deadline(budget), NULL);
    grpc_init(); /* the after-func's, with a reference to the call */
    grpc_call_ref(call);
    dctx_after *after = NULL;
    if (dctx_after_func(ctx, cancel_call, call, &after) != 0) {
        grpc_call_unref(call);
        grpc_shutdown();
    }

    grpc_slice body = grpc_slice_from_copied_buffer(req, req_len);
    grpc_byte_buffer *request = grpc_raw_byte_buffer_create(&body, 1);
    grpc_slice_unref(body);
    grpc_byte_buffer *response = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    rc = run_call(call, cq, &md, request, &status, &details, &response);
    if (rc != 0)
        dctx_rpc_result_set(res, rc, "gRPC refused the call's metadata or operations", NULL, 0);
    else
        finish(ctx, status, details, response, res);

    if (after != NULL && dctx_after_stop(after)) {
        grpc_call_unref(call); /* the after-func never ran: what it held */
        grpc_shutdown();
    }
    grpc_slice_unref(details);
    grpc_byte_buffer_destroy(request);
    if (response != NULL)
        grpc_byte_buffer_destroy(response);
    grpc_call_unref(call);
    dctx__grpc_queue_destroy(cq);
out:
    if (res == &scratch) {
        int code = scratch.code;
        dctx_rpc_result_free(&scratch);
        return code;
    }
    return res->code;
}
