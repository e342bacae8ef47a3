/*
 * demo_services.c - the methods every rpcd instance serves:
 *   /dctx.demo.Demo/Echo   the data, then "key=value" per received value, sorted
 *   /dctx.demo.Demo/Sleep  data is a duration; OK after it, or the context's cause
 *   /dctx.demo.Demo/Chain  Chain on every --next in parallel; at a leaf: Sleep, then
 *                          Echo with the instance name first
 *   /dctx.demo.Demo/Fail   data is "CODE message"; answers that status
 *   /dctx.Admin/Stats      the server's counters as one JSON object
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"
#include "rpcd.h"

#define TEXT_MAX 65536

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

static void text_addf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void text_addf(struct text *t, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        text_add(t, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ===== Echo ===== */

static int collect_value(void *arg, const char *name, const void *value, size_t len)
{
    struct text *lines = arg; /* NUL-separated "key=value" entries */
    text_add(lines, name, strlen(name));
    text_add(lines, "=", 1);
    text_add(lines, value, len);
    text_add(lines, "", 1);
    return 0;
}

static int by_string(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The Echo answer: first line (if any), the data, then sorted values. */
static void echo_text(struct text *out, const char *first, dctx *ctx, const void *req, size_t len)
{
    if (first != NULL)
        text_addf(out, "%s\n", first);
    text_add(out, req, len);
    struct text lines = {0};
    dctx_wire_each_value(ctx, NULL, collect_value, &lines);
    char *entries[DCTX_WIRE_VALUES_MAX];
    size_t n = 0;
    for (size_t pos = 0; lines.buf != NULL && pos < lines.len && n < DCTX_WIRE_VALUES_MAX;
         pos += strlen(lines.buf + pos) + 1)
        entries[n++] = lines.buf + pos;
    qsort(entries, n, sizeof entries[0], by_string);
    for (size_t i = 0; i < n; i++)
        text_addf(out, "\n%s", entries[i]);
    free(lines.buf);
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
    if (!parse_duration(text, &ns)) {
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
    if (r->n_next == 0) { /* a leaf */
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
    int code = DCTX_OK;
    for (int i = 0; i < r->n_next; i++) {
        fans[i].handle = NULL;
        int rc = dctx_rpc_call_start(r->next[i], ctx, "/dctx.demo.Demo/Chain", req, len, NULL, NULL,
                                     &fans[i].handle);
        if (rc != 0 && code == DCTX_OK) {
            code = rc;
            dctx_rpc_reply_set_message(reply, "%s: %s", r->next_url[i], dctx_strerror(rc));
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

static int stats(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)ctx;
    (void)req;
    (void)len;
    struct rpcd *r = arg;
    dctx_rpc_server_stats s;
    dctx_rpc_server_stats_get(r->server, &s);
    uint64_t pushed = 0;
    struct text hops = {0}; /* each next hop: is it reached, how did calls to it end */
    for (int i = 0; i < r->n_next; i++) {
        dctx_rpc_channel_stats cs;
        dctx_rpc_channel_stats_get(r->next[i], &cs);
        pushed += cs.cancels_pushed;
        uint64_t failed = 0;
        for (int c = 1; c <= DCTX_CODE_MAX; c++)
            failed += cs.by_code[c];
        text_addf(&hops, "%s{\"url\":\"%s\",\"connected\":%s,\"calls\":%llu,\"ok\":%llu,"
                  "\"failed\":%llu,\"unavailable\":%llu}",
                  i ? "," : "", r->next_url[i], cs.connections > 0 ? "true" : "false",
                  (unsigned long long)cs.calls, (unsigned long long)cs.by_code[DCTX_OK],
                  (unsigned long long)failed, (unsigned long long)cs.by_code[DCTX_UNAVAILABLE]);
    }
    struct text out = {0};
    text_addf(&out, "{\"name\":\"%s\",\"calls\":{", r->name);
    bool first = true;
    for (int c = 0; c <= DCTX_CODE_MAX; c++) {
        if (s.by_code[c] == 0)
            continue;
        text_addf(&out, "%s\"%s\":%llu", first ? "" : ",", dctx_code_name(c),
                  (unsigned long long)s.by_code[c]);
        first = false;
    }
    text_addf(&out,
              "},\"in_flight\":%llu,\"cancels_received\":%llu,\"cancels_pushed\":%llu,"
              "\"peers_lost\":%llu,\"bad_frames\":%llu,\"uptime_s\":%.3f,"
              "\"calls_received\":%llu,\"expired_in_queue\":%llu,"
              "\"cancel_outcomes\":{\"stopped\":%llu,\"prevented\":%llu,\"too_late\":%llu},"
              "\"next\":[",
              (unsigned long long)s.in_flight, (unsigned long long)s.cancels_received,
              (unsigned long long)pushed, (unsigned long long)s.peers_lost,
              (unsigned long long)s.bad_frames, (dctx_now() - r->started_ns) / 1e9,
              (unsigned long long)s.calls, (unsigned long long)s.expired_in_queue,
              (unsigned long long)s.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED],
              (unsigned long long)s.cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED],
              (unsigned long long)s.cancel_outcomes[DCTX_RPC_CANCEL_TOO_LATE]);
    text_add(&out, hops.buf, hops.len); /* whole: text_addf cuts at 1 KiB */
    text_add(&out, "]}", 2);
    free(hops.buf);
    return reply_text(reply, &out);
}

int demo_services_register(struct rpcd *r)
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
    return 0;
}
