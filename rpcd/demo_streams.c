/*
 * demo_streams.c - the stream methods every rpcd instance serves (fixed:
 * programs outside the repo call them):
 *   /dctx.demo.Demo/Count       server streaming: the request is "N INTERVAL"
 *                               (e.g. "100 10ms"); sends "1" .. "N", one every
 *                               INTERVAL, then OK. With --next, relays the
 *                               stream of its first next hop instead (a
 *                               dctx hop, else a gRPC one).
 *   /dctx.demo.Demo/Sum         client streaming: each message an integer in
 *                               text; the reply's message is their sum
 *   /dctx.demo.Demo/EchoStream  bidirectional: each message back as it comes
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/stream.h>

#include "duration.h"
#include "grpc_edge.h"
#include "log.h"
#include "rpcd.h"

#define COUNT_MAX 10000000

/* The message as text (cut to len - 1 bytes). */
static void message_text(const dctx_rpc_message *m, char *out, size_t len)
{
    snprintf(out, len, "%.*s", (int)(m->len < len ? m->len : len - 1), (const char *)m->data);
}

/* Why the stream stopped early, as a status with its cause in reply's
 * message: the context's end, or else rc (a send that failed on its own:
 * a lost connection, say). */
static int stopped(dctx *ctx, int rc, dctx_rpc_reply *reply, long sent)
{
    if (dctx_err(ctx) == 0) {
        dctx_rpc_reply_set_message(reply, "stopped after %ld messages: %s", sent,
                                   dctx_strerror(rc));
        return rc;
    }
    const char *msg = NULL;
    int cause = dctx_cause(ctx, &msg);
    dctx_rpc_reply_set_message(reply, "stopped after %ld messages: %s%s%s", sent,
                               dctx_strerror(dctx_err(ctx)), msg ? ": " : "", msg ? msg : "");
    return cause != 0 ? cause : dctx_err(ctx);
}

/* Count on the first next hop, each of its messages sent on to ours. */
static int count_relay(struct rpcd *r, dctx *ctx, dctx_rpc_stream *st, const dctx_rpc_message *req,
                       dctx_rpc_reply *reply)
{
    dctx_rpc_stream *up = NULL;
    int rc = dctx_rpc_stream_open(r->next[0], ctx, "/dctx.demo.Demo/Count", &up);
    if (rc != 0) {
        dctx_rpc_reply_set_message(reply, "%s: %s", r->next_url[0], dctx_strerror(rc));
        return rc;
    }
    long relayed = 0;
    rc = dctx_rpc_stream_send(up, req->data, req->len);
    if (rc == 0)
        rc = dctx_rpc_stream_close_send(up);
    dctx_rpc_message m;
    while (rc == 0 && dctx_rpc_stream_recv(up, &m)) {
        rc = dctx_rpc_stream_send(st, m.data, m.len);
        dctx_rpc_message_free(&m);
        relayed += rc == 0;
    }
    dctx_rpc_result res;
    int code = dctx_rpc_stream_finish(up, &res);
    if (rc == 0 || code != DCTX_OK) /* the next hop's end, or ours */
        rc = code;
    rpcd_log_message("stream_relayed", "Count: %ld messages from %s, %s", relayed, r->next_url[0],
                     dctx_code_name(rc));
    if (rc != DCTX_OK)
        dctx_rpc_reply_set_message(reply, "%s", res.message[0] ? res.message : dctx_strerror(rc));
    dctx_rpc_result_free(&res);
    dctx_rpc_stream_release(up);
    return rc;
}

static int count(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    struct rpcd *r = arg;
    dctx_rpc_message req;
    if (!dctx_rpc_stream_recv(st, &req)) {
        if (dctx_err(ctx) != 0)
            return stopped(ctx, DCTX_CANCELED, reply, 0);
        dctx_rpc_reply_set_message(reply, "Count needs a request: \"N INTERVAL\" (100 10ms)");
        return DCTX_INVALID_ARGUMENT;
    }
    if (r->n_next > 0 || r->n_grpc_next > 0) {
        int rc = r->n_next > 0 ? count_relay(r, ctx, st, &req, reply)
                               : rpcd_grpc_count_relay(r, ctx, st, req.data, req.len, reply);
        dctx_rpc_message_free(&req);
        return rc;
    }
    char text[96], interval[64] = "";
    message_text(&req, text, sizeof text);
    dctx_rpc_message_free(&req);
    long n = 0;
    int64_t every = 0;
    char extra;
    if (sscanf(text, "%ld %63s %c", &n, interval, &extra) != 2 || n < 0 || n > COUNT_MAX ||
        !rpcd_parse_duration(interval, &every)) {
        dctx_rpc_reply_set_message(reply,
                                   "Count takes \"N INTERVAL\" (N 0..%d, INTERVAL a duration such "
                                   "as 10ms), not \"%s\"",
                                   COUNT_MAX, text);
        return DCTX_INVALID_ARGUMENT;
    }
    for (long i = 1; i <= n; i++) {
        if (i > 1 && every > 0 && dctx_wait(ctx, every))
            return stopped(ctx, DCTX_CANCELED, reply, i - 1);
        char msg[24];
        int len = snprintf(msg, sizeof msg, "%ld", i);
        int rc = dctx_rpc_stream_send(st, msg, (size_t)len);
        if (rc != 0)
            return stopped(ctx, rc, reply, i - 1);
    }
    return DCTX_OK;
}

static int sum(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    long long total = 0;
    long seen = 0;
    dctx_rpc_message m;
    while (dctx_rpc_stream_recv(st, &m)) {
        char text[32], *end = NULL;
        message_text(&m, text, sizeof text);
        bool whole = m.len < sizeof text;
        dctx_rpc_message_free(&m);
        seen++;
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (!whole || end == text || *end != '\0' || errno != 0) {
            dctx_rpc_reply_set_message(reply, "message %ld is not an integer: \"%s\"", seen, text);
            return DCTX_INVALID_ARGUMENT;
        }
        if ((v > 0 && total > LLONG_MAX - v) || (v < 0 && total < LLONG_MIN - v)) {
            dctx_rpc_reply_set_message(reply, "the sum overflows at message %ld", seen);
            return DCTX_OUT_OF_RANGE;
        }
        total += v;
    }
    if (dctx_err(ctx) != 0)
        return stopped(ctx, DCTX_CANCELED, reply, 0);
    dctx_rpc_reply_set_message(reply, "%lld", total);
    return DCTX_OK;
}

static int echo_stream(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    long echoed = 0;
    dctx_rpc_message m;
    while (dctx_rpc_stream_recv(st, &m)) {
        int rc = dctx_rpc_stream_send(st, m.data, m.len);
        dctx_rpc_message_free(&m);
        if (rc != 0)
            return stopped(ctx, rc, reply, echoed);
        echoed++;
    }
    return dctx_err(ctx) != 0 ? stopped(ctx, DCTX_CANCELED, reply, echoed) : DCTX_OK;
}

int rpcd_demo_streams_register(struct rpcd *r)
{
    static const struct {
        const char *method;
        dctx_rpc_stream_handler_fn fn;
    } methods[] = {
        {"/dctx.demo.Demo/Count", count},
        {"/dctx.demo.Demo/Sum", sum},
        {"/dctx.demo.Demo/EchoStream", echo_stream},
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        int rc = dctx_rpc_server_register_stream(r->server, methods[i].method, methods[i].fn, r);
        if (rc != 0)
            return rc;
    }
    return 0;
}
