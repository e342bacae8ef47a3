/*
 * rpc_testutil_handlers.c - the handlers of rpc_testutil.h: echo, status,
 * probes, the values recorder, a hop that calls onward, and the protobuf-c
 * Echo service (echo.proto).
 */
#include "rpc_testutil.h"

#include <stdio.h>
#include <string.h>

#include <dctx/rpc_pb.h>
#include <dctx/stream.h>

#include "echo.pb-c.h"

int rt_echo_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)ctx;
    if (len > 0 && dctx_rpc_reply_set_payload(reply, req, len) != 0)
        return DCTX_RESOURCE_EXHAUSTED;
    return DCTX_OK;
}

int rt_echo_stream_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)reply;
    dctx_rpc_message m;
    while (dctx_rpc_stream_recv(st, &m)) {
        int rc = dctx_rpc_stream_send(st, m.data, m.len);
        dctx_rpc_message_free(&m);
        if (rc != 0)
            return rc;
    }
    return dctx_err(ctx) != 0 ? dctx_err(ctx) : DCTX_OK;
}

int rt_count_stream_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)ctx;
    dctx_rpc_message m;
    if (!dctx_rpc_stream_recv(st, &m))
        return DCTX_INVALID_ARGUMENT;
    char text[32];
    snprintf(text, sizeof text, "%.*s", (int)m.len, (const char *)m.data);
    dctx_rpc_message_free(&m);
    int n = atoi(text);
    for (int i = 1; i <= n; i++) {
        snprintf(text, sizeof text, "%d", i);
        int rc = dctx_rpc_stream_send(st, text, strlen(text));
        if (rc != 0) {
            dctx_rpc_reply_set_message(reply, "send failed at %d", i);
            return rc;
        }
    }
    return DCTX_OK;
}

int rt_status_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)ctx;
    const uint8_t *r = req;
    if (len < 1)
        return DCTX_INVALID_ARGUMENT;
    /* a payload set on a failure must not travel */
    dctx_rpc_reply_set_payload(reply, "should not arrive", 17);
    if (len > 1)
        dctx_rpc_reply_set_message(reply, "%.*s", (int)(len - 1), (const char *)r + 1);
    return r[0] == 0xff ? 99 : r[0];
}

/* ===== Probes ===== */

void rt_probe_init(rt_probe *p, enum rt_probe_mode mode, int64_t wait_ns)
{
    memset(p, 0, sizeof *p);
    p->mode = mode;
    p->wait_ns = wait_ns;
    p->code = DCTX_OK;
}

int rt_probe_run(rt_probe *p, dctx *ctx)
{
    p->entered_ns = dctx_now();
    p->had_deadline = dctx_deadline(ctx, &p->deadline_ns);
    atomic_fetch_add(&p->runs, 1);
    atomic_store(&p->started, 1);
    switch (p->mode) {
    case RT_PROBE_RETURN:
        break;
    case RT_PROBE_WAIT_CTX:
        dctx_wait(ctx, p->wait_ns);
        break;
    case RT_PROBE_SLEEP:
        rt_sleep(p->wait_ns);
        break;
    case RT_PROBE_HOLD: {
        int64_t until = dctx_now() + p->wait_ns;
        while (!atomic_load(&p->release) && dctx_now() < until)
            rt_sleep(US(200));
        break;
    }
    }
    p->err = dctx_err(ctx);
    const char *msg = NULL;
    p->cause = dctx_cause(ctx, &msg);
    p->has_cause_msg = msg != NULL;
    p->cause_msg_len = msg != NULL ? strlen(msg) : 0;
    snprintf(p->cause_msg, sizeof p->cause_msg, "%s", msg != NULL ? msg : "");
    p->returned_ns = dctx_now();
    int rc = p->err != 0 ? p->cause : p->code;
    atomic_store(&p->finished, 1); /* the test may be gone after this */
    return rc;
}

int rt_probe_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)req;
    (void)len;
    (void)reply;
    return rt_probe_run(arg, ctx);
}

int rt_probes_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)reply;
    rt_probe *probes = arg;
    if (len < 1)
        return DCTX_INVALID_ARGUMENT;
    return rt_probe_run(&probes[((const uint8_t *)req)[0]], ctx);
}

/* ===== Values and hops ===== */

static void copy_value(dctx *ctx, const dctx_key *key, bool *has, char *out, size_t n)
{
    size_t len = 0;
    const char *v = dctx_value(ctx, key, &len);
    *has = v != NULL;
    if (v != NULL && out != NULL)
        snprintf(out, n, "%.*s", (int)(len < n ? len : n - 1), v);
}

int rt_values_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)req;
    (void)len;
    (void)reply;
    struct rt_seen_values *s = arg;
    s->entered_ns = dctx_now();
    copy_value(ctx, &rt_key_tenant, &s->tenant, s->tenant_v, sizeof s->tenant_v);
    copy_value(ctx, &rt_key_trace, &s->trace, s->trace_v, sizeof s->trace_v);
    copy_value(ctx, &rt_key_secret, &s->secret, NULL, 0);
    copy_value(ctx, &rt_key_pass, &s->pass, s->pass_v, sizeof s->pass_v);
    s->had_deadline = dctx_deadline(ctx, &s->deadline_ns);
    atomic_store(&s->done, 1);
    return DCTX_OK;
}

int rt_hop_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    struct rt_hop *a = arg;
    a->entered_ns = dctx_now();
    a->has_tenant = dctx_value(ctx, &rt_key_tenant, NULL) != NULL;
    a->has_secret = dctx_value(ctx, &rt_key_secret, NULL) != NULL;
    a->has_pass = dctx_value(ctx, &rt_key_pass, NULL) != NULL;
    a->had_deadline = dctx_deadline(ctx, &a->deadline_ns);
    if (a->register_pass)
        a->register_rc = dctx_wire_register_key(&rt_key_pass);
    dctx_rpc_result res;
    a->onward_rc = dctx_rpc_call_raw(a->next, ctx, a->next_method, req, len, &res);
    snprintf(a->onward_msg, sizeof a->onward_msg, "%s", res.message);
    dctx_rpc_reply_set_message(reply, "%s", res.message);
    dctx_rpc_result_free(&res);
    int rc = a->onward_rc;
    atomic_store(&a->done, 1); /* the test may be gone after this */
    return rc;
}

/* ===== The protobuf-c Echo service ===== */

static void echo__echo(Dctx__Itest__Echo_Service *service, const Dctx__Itest__EchoRequest *in,
                       Dctx__Itest__EchoReply_Closure closure, void *closure_data)
{
    (void)service;
    Dctx__Itest__EchoReply out = DCTX__ITEST__ECHO_REPLY__INIT;
    dctx *ctx = dctx_rpc_service_context();
    out.has_saw_context = 1;
    out.saw_context = ctx != NULL;
    int64_t d = 0;
    if (ctx != NULL && dctx_deadline(ctx, &d)) {
        out.has_saw_deadline = 1;
        out.saw_deadline = 1;
        out.has_budget_us = 1;
        out.budget_us = (d - dctx_now()) / 1000;
    }
    char tenant[64];
    size_t len = 0;
    const char *t = ctx != NULL ? dctx_value(ctx, &rt_key_tenant, &len) : NULL;
    if (t != NULL) {
        snprintf(tenant, sizeof tenant, "%.*s", (int)len, t);
        out.tenant = tenant;
    }
    out.text = in->text;
    closure(&out, closure_data);
}

static void echo__fail(Dctx__Itest__Echo_Service *service, const Dctx__Itest__EchoRequest *in,
                       Dctx__Itest__EchoReply_Closure closure, void *closure_data)
{
    (void)service;
    dctx_rpc_service_fail((int)in->fail_code, in->fail_message);
    closure(NULL, closure_data);
}

static Dctx__Itest__Echo_Service echo_service = DCTX__ITEST__ECHO__INIT(echo__);

ProtobufCService *rt_echo_service(void)
{
    return (ProtobufCService *)&echo_service;
}
