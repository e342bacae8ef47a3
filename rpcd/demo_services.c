/*
 * demo_services.c - the methods every rpcd instance serves:
 *   /dctx.demo.Demo/Echo   the data, then "key=value" per received value, sorted
 *   /dctx.demo.Demo/Sleep  data is a duration; OK after it, or the context's cause
 *   /dctx.demo.Demo/Chain  Chain on every --next in parallel (gRPC hops after, in
 *                          turn); at a leaf: Sleep, then
 *                          Echo with the instance name first
 *   /dctx.demo.Demo/Fail   data is "CODE message"; answers that status
 *   /dctx.Admin/Stats      the server's and its next hops' counters as one JSON object
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"
#include "grpc_edge.h"
#include "json.h"
#include "log.h"
#include "rpcd.h"

/* A growing text buffer for replies. */
struct text {
    char *buf;
    size_t len, cap;
};

static void text_add(struct text *t, const void *s, size_t n)
{
    if (n == 0)
        return; /* s may be NULL then (an empty request) */
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        while (cap < t->len + n + 1)
            cap *= 2;
        char *grown = realloc(t->buf, cap);
        if (grown == NULL)
            return;
        t->buf = grown;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

/* ===== Echo ===== */

/* The received values as "key=value" entries, each bytes with a length:
 * a value may hold NULs. Kept as offsets while text grows. */
struct values {
    struct text text;
    struct {
        size_t at, len;
    } entries[DCTX_WIRE_VALUES_MAX];
    size_t n;
};

struct entry {
    const char *bytes;
    size_t len;
};

static int collect_value(void *arg, const char *name, const void *value, size_t len)
{
    struct values *v = arg;
    if (v->n == DCTX_WIRE_VALUES_MAX)
        return 0;
    size_t at = v->text.len;
    text_add(&v->text, name, strlen(name));
    text_add(&v->text, "=", 1);
    text_add(&v->text, value, len);
    v->entries[v->n].at = at;
    v->entries[v->n++].len = v->text.len - at;
    return 0;
}

static int by_bytes(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    int c = memcmp(x->bytes, y->bytes, x->len < y->len ? x->len : y->len);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* The Echo answer: first line (if any), the data, then sorted values. */
static void echo_text(struct text *out, const char *first, dctx *ctx, const void *req, size_t len)
{
    if (first != NULL) {
        text_add(out, first, strlen(first));
        text_add(out, "\n", 1);
    }
    text_add(out, req, len);
    struct values v = {0};
    dctx_wire_each_value(ctx, NULL, collect_value, &v);
    size_t n = v.text.buf != NULL ? v.n : 0; /* none if the text could not grow */
    struct entry sorted[DCTX_WIRE_VALUES_MAX];
    for (size_t i = 0; i < n; i++)
        sorted[i] = (struct entry){v.text.buf + v.entries[i].at, v.entries[i].len};
    qsort(sorted, n, sizeof sorted[0], by_bytes);
    for (size_t i = 0; i < n; i++) {
        text_add(out, "\n", 1);
        text_add(out, sorted[i].bytes, sorted[i].len);
    }
    free(v.text.buf);
}

static int reply_text(dctx_rpc_reply *reply, struct text *t)
{
    int rc = dctx_rpc_reply_set_payload(reply, t->buf ? t->buf : "", t->len);
    free(t->buf);
    return rc;
}

static int echo(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    struct text out = {0};
    echo_text(&out, NULL, ctx, req, len);
    return reply_text(reply, &out);
}

/* ===== Sleep ===== */

/* Sleep for the duration in req, or until ctx is done: then its cause. */
static int sleep_on(dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    char text[64];
    int64_t ns = 0;
    snprintf(text, sizeof text, "%.*s", (int)(len < sizeof text ? len : sizeof text - 1),
             (const char *)req);
    if (!rpcd_parse_duration(text, &ns)) {
        dctx_rpc_reply_set_message(reply, "data must be a duration such as 250ms, not \"%s\"",
                                   text);
        return DCTX_INVALID_ARGUMENT;
    }
    if (!dctx_wait(ctx, ns))
        return DCTX_OK;
    const char *msg = NULL;
    int cause = dctx_cause(ctx, &msg);
    dctx_rpc_reply_set_message(reply, "stopped: %s%s%s", dctx_strerror(dctx_err(ctx)),
                               msg ? ": " : "", msg ? msg : "");
    return cause;
}

static int sleep_method(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    return sleep_on(ctx, req, len, reply);
}

/* ===== Chain ===== */

struct fan {
    dctx_rpc_result res;
    dctx_rpc_handle *handle;
};

static int chain(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    struct rpcd *r = arg;
    if (r->n_next == 0 && r->n_grpc_next == 0) { /* a leaf */
        int code = sleep_on(ctx, req, len, reply);
        if (code != DCTX_OK)
            return code;
        struct text out = {0};
        echo_text(&out, r->name, ctx, req, len);
        return reply_text(reply, &out);
    }
    /* Fan out with the context we were given: its deadline, values and
     * cancel go on to every next hop. */
    struct fan fans[RPCD_MAX_NEXT];
    struct rpcd_grpc_hop grpc_hops[RPCD_MAX_NEXT];
    int code = DCTX_OK;
    for (int i = 0; i < r->n_grpc_next; i++)
        rpcd_grpc_chain_start(r, i, ctx, req, len, &grpc_hops[i]);
    for (int i = 0; i < r->n_next; i++) {
        fans[i].handle = NULL;
        int rc = dctx_rpc_call_start(r->next[i], ctx, "/dctx.demo.Demo/Chain", req, len, NULL, NULL,
                                     &fans[i].handle);
        if (rc != 0 && code == DCTX_OK) {
            code = rc;
            /* Not sent for want of a connection: why the last one failed. */
            dctx_rpc_channel_stats cs = {.last_error = ""};
            if (rc == DCTX_UNAVAILABLE || rc == DCTX_UNAUTHENTICATED)
                dctx_rpc_channel_stats_get(r->next[i], &cs);
            dctx_rpc_reply_set_message(reply, "%s: %s%s%s%s", r->next_url[i], dctx_strerror(rc),
                                       cs.last_error[0] ? " (" : "", cs.last_error,
                                       cs.last_error[0] ? ")" : "");
        }
    }
    struct text out = {0};
    for (int i = 0; i < r->n_next; i++) {
        if (fans[i].handle == NULL)
            continue;
        int rc = dctx_rpc_handle_result(fans[i].handle, &fans[i].res);
        if (rc == DCTX_OK) {
            if (out.len > 0)
                text_add(&out, "\n", 1);
            text_add(&out, fans[i].res.payload, fans[i].res.payload_len);
        } else if (code == DCTX_OK) {
            code = rc;
            dctx_rpc_reply_set_message(reply, "%s: %s", r->next_url[i], fans[i].res.message);
        }
        dctx_rpc_result_free(&fans[i].res);
        dctx_rpc_handle_release(fans[i].handle);
    }
    for (int i = 0; i < r->n_grpc_next; i++) {
        dctx_rpc_result res;
        int rc = rpcd_grpc_chain_wait(&grpc_hops[i], &res);
        if (rc == DCTX_OK) {
            if (out.len > 0)
                text_add(&out, "\n", 1);
            text_add(&out, res.payload, res.payload_len);
        } else if (code == DCTX_OK) {
            code = rc;
            dctx_rpc_reply_set_message(reply, "%s: %s", r->grpc_next_url[i], res.message);
        }
        dctx_rpc_result_free(&res);
    }
    if (code != DCTX_OK) {
        free(out.buf);
        return code;
    }
    return reply_text(reply, &out);
}

/* ===== Fail ===== */

static int fail(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)ctx;
    char text[1024];
    snprintf(text, sizeof text, "%.*s", (int)(len < sizeof text ? len : sizeof text - 1),
             (const char *)req);
    char *space = strchr(text, ' ');
    const char *message = "";
    if (space != NULL) {
        *space = '\0';
        message = space + 1;
    }
    int code = dctx_code_from_name(text);
    if (code < 0 && isdigit((unsigned char)text[0]))
        code = atoi(text);
    if (code < 0 || code > DCTX_CODE_MAX) {
        dctx_rpc_reply_set_message(reply, "data must be \"CODE message\", CODE a status name");
        return DCTX_INVALID_ARGUMENT;
    }
    dctx_rpc_reply_set_message(reply, "%s", message);
    return code;
}

/* ===== Stats ===== */

/* Stats with 16 next hops and every counter at 20 digits is under 20 KiB;
 * the rest is room for long names and URLs. */
#define STATS_BYTES 65536

/* The status codes seen (nonzero counts only), by name. */
static void code_counts(struct rpcd_json *j, const char *key, const uint64_t *by_code)
{
    rpcd_json_object(j, key);
    for (int c = 0; c <= DCTX_CODE_MAX; c++)
        if (by_code[c] != 0)
            rpcd_json_uint(j, dctx_code_name(c), by_code[c]);
    rpcd_json_end(j);
}

/* Every cancel outcome, by name. */
static void outcome_counts(struct rpcd_json *j, const uint64_t *outcomes)
{
    rpcd_json_object(j, "cancel_outcomes");
    for (int o = 0; o < DCTX_RPC_CANCEL_OUTCOMES; o++)
        rpcd_json_uint(j, dctx_rpc_cancel_outcome_name(o), outcomes[o]);
    rpcd_json_end(j);
}

/* A next hop: is it reached, how did calls to it end; then the rest of its
 * channel's counters. */
static void hop_stats(struct rpcd_json *j, const char *url, const dctx_rpc_channel_stats *cs)
{
    uint64_t failed = 0;
    for (int c = 1; c <= DCTX_CODE_MAX; c++)
        failed += cs->by_code[c];
    rpcd_json_object(j, NULL);
    rpcd_json_str(j, "url", url);
    rpcd_json_bool(j, "connected", cs->connections > 0);
    rpcd_json_uint(j, "calls", cs->calls);
    rpcd_json_uint(j, "ok", cs->by_code[DCTX_OK]);
    rpcd_json_uint(j, "failed", failed);
    rpcd_json_uint(j, "unavailable", cs->by_code[DCTX_UNAVAILABLE]);
    rpcd_json_uint(j, "connections", cs->connections);
    rpcd_json_uint(j, "draining", cs->draining);
    code_counts(j, "by_status", cs->by_code);
    rpcd_json_uint(j, "not_sent_budget", cs->not_sent_budget);
    rpcd_json_uint(j, "cancels_pushed", cs->cancels_pushed);
    outcome_counts(j, cs->cancel_outcomes);
    rpcd_json_end(j);
}

/* The server's counters, then the next hops'. "next" comes last: readers
 * that take the first "key": of a name get the server's own counter. */
static void write_stats(struct rpcd_json *j, struct rpcd *r)
{
    struct rpcd_stats st;
    rpcd_stats_get(r, &st);
    const dctx_rpc_server_stats *s = &st.server;
    rpcd_json_object(j, NULL);
    rpcd_json_str(j, "name", r->name);
    code_counts(j, "calls", s->by_code);
    rpcd_json_uint(j, "in_flight", s->in_flight);
    rpcd_json_uint(j, "cancels_received", s->cancels_received);
    rpcd_json_uint(j, "cancels_pushed", st.cancels_pushed);
    rpcd_json_uint(j, "peers_lost", s->peers_lost);
    rpcd_json_uint(j, "bad_frames", s->bad_frames);
    rpcd_json_fixed(j, "uptime_s", (dctx_now() - r->started_ns) / 1e9, 3);
    rpcd_json_uint(j, "calls_received", s->calls);
    rpcd_json_uint(j, "expired_in_queue", s->expired_in_queue);
    outcome_counts(j, s->cancel_outcomes);
    rpcd_json_uint(j, "calls_canceled_by_peer_loss", s->calls_canceled_by_peer_loss);
    rpcd_json_uint(j, "connections_accepted", s->connections_accepted);
    rpcd_json_uint(j, "accept_failures", s->accept_failures);
    rpcd_json_uint(j, "traces_dropped", s->traces_dropped);
    rpcd_json_uint(j, "log_lines_dropped", rpcd_log_dropped());
    rpcd_grpc_write_stats(j);
    rpcd_json_array(j, "next");
    for (int i = 0; i < r->n_next; i++)
        hop_stats(j, r->next_url[i], &st.hops[i]);
    rpcd_json_end(j);
    rpcd_json_end(j);
}

static int stats(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)ctx;
    (void)req;
    (void)len;
    char *buf = malloc(STATS_BYTES);
    if (buf == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    struct rpcd_json j;
    rpcd_json_init(&j, buf, STATS_BYTES);
    write_stats(&j, arg);
    int rc = dctx_rpc_reply_set_payload(reply, buf, rpcd_json_finish(&j));
    free(buf);
    return rc;
}

void rpcd_stats_get(const struct rpcd *r, struct rpcd_stats *out)
{
    dctx_rpc_server_stats_get(r->server, &out->server);
    out->cancels_pushed = 0;
    for (int i = 0; i < r->n_next; i++) {
        dctx_rpc_channel_stats_get(r->next[i], &out->hops[i]);
        out->cancels_pushed += out->hops[i].cancels_pushed;
    }
}

int rpcd_demo_services_register(struct rpcd *r)
{
    /* Echo, Fail and Stats never block: they run on the receiving thread. */
    static const struct {
        const char *method;
        dctx_rpc_handler_fn fn;
        unsigned flags;
    } methods[] = {
        {"/dctx.demo.Demo/Echo", echo, DCTX_RPC_INLINE},
        {"/dctx.demo.Demo/Sleep", sleep_method, 0},
        {"/dctx.demo.Demo/Chain", chain, 0},
        {"/dctx.demo.Demo/Fail", fail, DCTX_RPC_INLINE},
        {"/dctx.Admin/Stats", stats, DCTX_RPC_INLINE},
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        int rc = dctx_rpc_server_register_flags(r->server, methods[i].method, methods[i].fn, r,
                                                methods[i].flags);
        if (rc != 0)
            return rc;
    }
    return rpcd_demo_streams_register(r);
}
