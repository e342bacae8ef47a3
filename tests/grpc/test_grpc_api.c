/*
 * test_grpc_api.c - <dctx/grpc.h> from C, over real sockets: a dctx
 * server behind a gateway (gRPC on loopback tcp, dctx on inproc), called
 * by dctx_grpc_call, so one call crosses both directions of the edge. The
 * options the gateway refuses; the channel shared per target; values,
 * status and message, budget, cancel and deadline across; an unknown
 * method; health through a drain; the hand-offs counted. Each crossing
 * runs twice: the gateway reaching its server over an inproc channel, and
 * calling it in process (options.local).
 */
#include <dctx/grpc.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "rpc_testutil.h"

static const dctx_key tenant_key = {"x-tenant", DCTX_KEY_PROPAGATE};
static const dctx_key other_key = {"x-other", DCTX_KEY_PROPAGATE};

/* What the Hold handler saw, for the test to wait on. */
static struct {
    atomic_int ended; /* 0 until it returned */
    int err, cause;
    char cause_msg[256];
    int64_t budget_ns;
} held;

static int add_value(void *arg, const char *name, const void *value, size_t len)
{
    char *out = arg;
    size_t n = strlen(out);
    snprintf(out + n, 512 - n, "%s=%.*s;", name, (int)len, (const char *)value);
    return 0;
}

/* The request, then "name=value;" per value received. */
static int echo(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    char out[512];
    snprintf(out, sizeof out, "%.*s|", (int)len, (const char *)req);
    dctx_wire_each_value(ctx, NULL, add_value, out);
    return dctx_rpc_reply_set_payload(reply, out, strlen(out));
}

static int not_found(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg, (void)ctx, (void)req, (void)len;
    dctx_rpc_reply_set_message(reply, "héllo ✓ not here");
    return DCTX_NOT_FOUND;
}

/* Waits for its context's end (10 s at most) and records it. */
static int hold(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg, (void)req, (void)len, (void)reply;
    int64_t deadline = 0;
    held.budget_ns = dctx_deadline(ctx, &deadline) ? deadline - dctx_now() : -1;
    dctx_wait(ctx, SEC(10));
    const char *msg = NULL;
    held.err = dctx_err(ctx);
    held.cause = dctx_cause(ctx, &msg);
    snprintf(held.cause_msg, sizeof held.cause_msg, "%s", msg ? msg : "");
    atomic_store(&held.ended, 1);
    return held.cause;
}

struct edge {
    dctx_rpc_channel *forward;
    dctx_grpc_gateway *gw;
    dctx_grpc_channel *ch;
};

/* A test's state: NULL, the gateway reaches its server over an inproc
 * channel; &in_process, it calls the server in process (options.local). */
static const int in_process = 1;

static void edge_open(struct edge *e, void **state)
{
    bool local = *state == &in_process;
    static const struct rt_method methods[] = {
        {"/t.T/Echo", echo, NULL, NULL},
        {"/t.T/Fail", not_found, NULL, NULL},
        {"/t.T/Hold", hold, NULL, NULL},
    };
    char url[256];
    dctx_rpc_server *srv = rt_server_open(RT_INPROC, NULL, methods, 3, url, sizeof url);
    e->forward = local ? NULL : rt_channel_open(url, NULL);
    static const char *const keys[] = {"x-tenant"};
    dctx_grpc_gateway_options o = {.listen = "127.0.0.1:0",
                                   .forward = e->forward,
                                   .local = local ? srv : NULL,
                                   .forward_keys = keys,
                                   .n_forward_keys = 1};
    assert_int_equal(dctx_grpc_gateway_open(&o, &e->gw), 0);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", dctx_grpc_gateway_port(e->gw));
    assert_true(dctx_grpc_gateway_port(e->gw) > 0);
    assert_int_equal(dctx_grpc_channel_get(target, &e->ch), 0);
    memset(&held, 0, sizeof held);
}

static void edge_close(struct edge *e)
{
    dctx_grpc_channel_release(e->ch);
    dctx_grpc_gateway_close(e->gw);
    if (e->forward != NULL)
        rt_channel_close(e->forward);
}

static void gateway_refuses_bad_options(void **state)
{
    (void)state;
    char url[256];
    rt_url(RT_INPROC, url, sizeof url);
    dctx_rpc_channel *fwd = rt_channel_open(url, NULL);
    dctx_grpc_gateway *gw = (dctx_grpc_gateway *)1;
    assert_int_equal(dctx_grpc_gateway_open(NULL, &gw), DCTX_INVALID_ARGUMENT);
    assert_null(gw);
    dctx_grpc_gateway_options o = {.listen = "127.0.0.1:0"};
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_INVALID_ARGUMENT); /* no forward */
    /* A local server takes unary calls, but streams need forward. */
    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(NULL, &srv), 0);
    rt_track_server(srv);
    static const char *const streams[] = {"/t.T/Stream"};
    o.local = srv;
    o.stream_methods = streams;
    o.n_stream_methods = 1;
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_INVALID_ARGUMENT);
    o.local = NULL;
    o.stream_methods = NULL;
    o.n_stream_methods = 0;
    o.forward = fwd;
    const char *bad[] = {"X-Upper", "grpc-status", "", "a b"};
    for (size_t i = 0; i < 4; i++) {
        o.forward_keys = &bad[i];
        o.n_forward_keys = 1;
        assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_INVALID_ARGUMENT);
    }
    const char *many[DCTX_GRPC_FORWARD_KEYS_MAX + 1];
    for (size_t i = 0; i <= DCTX_GRPC_FORWARD_KEYS_MAX; i++)
        many[i] = "x-k";
    o.forward_keys = many;
    o.n_forward_keys = DCTX_GRPC_FORWARD_KEYS_MAX + 1;
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_INVALID_ARGUMENT);
    o.n_forward_keys = 0;
    o.max_streams = -1;
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_INVALID_ARGUMENT);
    o.max_streams = 0;
    o.keepalive_ns = -1;
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_INVALID_ARGUMENT);
    o.keepalive_ns = 0;
    o.keepalive_timeout_ns = -1;
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_INVALID_ARGUMENT);
    o.keepalive_timeout_ns = 0;
    o.max_concurrent_streams = -1;
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_INVALID_ARGUMENT);
    o.max_concurrent_streams = 0;
    /* TLS files: a client CA without a certificate, files missing or not
     * what they should be. */
    o.tls_client_ca_file = TLS_DIR "/cert.pem";
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_INVALID_ARGUMENT);
    o.tls_cert_key_file = TLS_DIR "/nothing.pem";
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_NOT_FOUND);
    o.tls_cert_key_file = TLS_DIR "/cert.pem"; /* no key */
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_INVALID_ARGUMENT);
    o.tls_cert_key_file = TLS_DIR "/cert_key.pem";
    o.tls_client_ca_file = TLS_DIR "/README.md";
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_INVALID_ARGUMENT);
    assert_null(gw);
    o.tls_client_ca_file = NULL;
    o.tls_cert_key_file = NULL;
    /* A port in use. */
    dctx_grpc_gateway *first = NULL;
    assert_int_equal(dctx_grpc_gateway_open(&o, &first), 0);
    char taken[64];
    snprintf(taken, sizeof taken, "127.0.0.1:%d", dctx_grpc_gateway_port(first));
    o.listen = taken;
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), DCTX_UNAVAILABLE);
    assert_null(gw);
    dctx_grpc_gateway_close(first);
    dctx_grpc_gateway_close(NULL);
    rt_channel_close(fwd);
}

static void channel_is_shared_per_target(void **state)
{
    (void)state;
    dctx_grpc_channel *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(dctx_grpc_channel_get("127.0.0.1:1", &a), 0);
    assert_int_equal(dctx_grpc_channel_get("127.0.0.1:1", &b), 0);
    assert_int_equal(dctx_grpc_channel_get("127.0.0.1:2", &c), 0);
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    assert_int_equal(dctx_grpc_channel_get("", &c), DCTX_INVALID_ARGUMENT);
    assert_null(c);
    dctx_grpc_channel_release(a);
    dctx_grpc_channel_release(b);
    dctx_grpc_channel_release(c);
    /* Options are part of what is shared: TLS is another channel. */
    dctx_grpc_channel_options tls = {.tls = true, .tls_ca_file = TLS_DIR "/cert.pem"};
    assert_int_equal(dctx_grpc_channel_get_with("127.0.0.1:1", &tls, &a), 0);
    assert_int_equal(dctx_grpc_channel_get_with("127.0.0.1:1", &tls, &b), 0);
    assert_int_equal(dctx_grpc_channel_get("127.0.0.1:1", &c), 0);
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    dctx_grpc_channel_release(a);
    dctx_grpc_channel_release(b);
    dctx_grpc_channel_release(c);
    dctx_grpc_channel_options bad = {.tls_ca_file = TLS_DIR "/cert.pem"}; /* without tls */
    assert_int_equal(dctx_grpc_channel_get_with("127.0.0.1:1", &bad, &a), DCTX_INVALID_ARGUMENT);
    bad = (dctx_grpc_channel_options){.tls = true, .tls_ca_file = TLS_DIR "/nothing.pem"};
    assert_int_equal(dctx_grpc_channel_get_with("127.0.0.1:1", &bad, &a), DCTX_NOT_FOUND);
    bad.tls_ca_file = TLS_DIR "/README.md"; /* no certificate in it */
    assert_int_equal(dctx_grpc_channel_get_with("127.0.0.1:1", &bad, &a), DCTX_INVALID_ARGUMENT);
    bad.tls_ca_file = NULL;
    bad.tls_cert_key_file = TLS_DIR "/cert.pem"; /* a certificate without its key */
    assert_int_equal(dctx_grpc_channel_get_with("127.0.0.1:1", &bad, &a), DCTX_INVALID_ARGUMENT);
    assert_null(a);
    /* Nothing listens on port 1: gRPC's UNAVAILABLE comes back. */
    assert_int_equal(dctx_grpc_channel_get("127.0.0.1:1", &a), 0);
    dctx_rpc_result res;
    assert_int_equal(dctx_grpc_call(a, NULL, "/t.T/Echo", "x", 1, &res), DCTX_UNAVAILABLE);
    dctx_rpc_result_free(&res);
    dctx_grpc_channel_release(a);
}

static void values_and_budget_cross_both_ways(void **state)
{
    struct edge e;
    edge_open(&e, state);
    dctx *timed = rt_with_timeout(SEC(5)), *tenant = NULL, *ctx = NULL;
    assert_int_equal(dctx_with_value(timed, &tenant_key, "acme", 4, &tenant), 0);
    assert_int_equal(dctx_with_value(tenant, &other_key, "stays", 5, &ctx), 0);
    dctx_release(tenant);
    dctx_rpc_result res;
    assert_int_equal(dctx_grpc_call(e.ch, ctx, "/t.T/Echo", "hi", 2, &res), DCTX_OK);
    char got[512];
    snprintf(got, sizeof got, "%.*s", (int)res.payload_len, (const char *)res.payload);
    /* Outbound sends both; the gateway forwards only its listed key. */
    assert_contains(got, "hi|");
    assert_contains(got, "x-tenant=acme");
    assert_null(strstr(got, "x-other"));
    dctx_rpc_result_free(&res);
    /* A value gRPC cannot carry (a NUL outside a -bin key) stays behind. */
    dctx *nul = NULL;
    assert_int_equal(dctx_with_value(timed, &tenant_key, "a\0b", 3, &nul), 0);
    assert_int_equal(dctx_grpc_call(e.ch, nul, "/t.T/Echo", "hi", 2, &res), DCTX_OK);
    snprintf(got, sizeof got, "%.*s", (int)res.payload_len, (const char *)res.payload);
    assert_string_equal(got, "hi|");
    dctx_rpc_result_free(&res);
    dctx_release(nul);
    dctx_release(ctx);
    rt_ctx_release(timed);
    dctx_grpc_gateway_stats st;
    dctx_grpc_gateway_stats_get(e.gw, &st);
    assert_int_equal(st.to_dctx, 2);
    assert_int_equal(st.to_grpc, 2);
    assert_int_equal(st.values_carried, 1);
    edge_close(&e);
}

static void status_and_message_cross(void **state)
{
    struct edge e;
    edge_open(&e, state);
    dctx_rpc_result res;
    assert_int_equal(dctx_grpc_call(e.ch, NULL, "/t.T/Fail", NULL, 0, &res), DCTX_NOT_FOUND);
    assert_string_equal(res.message, "héllo ✓ not here");
    dctx_rpc_result_free(&res);
    assert_int_equal(dctx_grpc_call(e.ch, NULL, "/no.Such/Method", NULL, 0, &res),
                     DCTX_UNIMPLEMENTED);
    dctx_rpc_result_free(&res);
    edge_close(&e);
}

/* Nothing in flight at the gateway, and canceled calls counted. */
static bool gateway_settled(dctx_grpc_gateway *gw, uint64_t canceled)
{
    dctx_grpc_gateway_stats st;
    dctx_grpc_gateway_stats_get(gw, &st);
    return st.in_flight == 0 && st.canceled_by_caller == canceled;
}

struct canceler {
    dctx *ctx;
    int64_t after_ns;
};

static void *cancel_later(void *arg)
{
    struct canceler *c = arg;
    struct timespec ts = {0, (long)c->after_ns};
    nanosleep(&ts, NULL);
    dctx_cancel(c->ctx);
    return NULL;
}

static void cancel_crosses_both_ways(void **state)
{
    struct edge e;
    edge_open(&e, state);
    dctx *ctx = rt_with_cancel();
    struct canceler c = {ctx, 100000000};
    pthread_t t;
    pthread_create(&t, NULL, cancel_later, &c);
    dctx_rpc_result res;
    int64_t t0 = dctx_now();
    assert_int_equal(dctx_grpc_call(e.ch, ctx, "/t.T/Hold", NULL, 0, &res), DCTX_CANCELED);
    assert_true(dctx_now() - t0 < SEC(5));
    assert_contains(res.message, "context canceled");
    dctx_rpc_result_free(&res);
    pthread_join(t, NULL);
    /* The dctx handler behind the gateway saw the gRPC caller's cancel. */
    assert_true(WAIT_FOR(atomic_load(&held.ended), SEC(5)));
    assert_int_equal(held.err, DCTX_CANCELED);
    assert_int_equal(held.cause, DCTX_CANCELED);
    assert_string_equal(held.cause_msg, "the gRPC caller canceled the call");
    assert_int_equal(held.budget_ns, -1); /* no deadline was given */
    rt_ctx_release(ctx);
    assert_true(WAIT_FOR(gateway_settled(e.gw, 1), SEC(5)));
    edge_close(&e);
}

static void deadline_crosses_with_less_budget(void **state)
{
    struct edge e;
    edge_open(&e, state);
    dctx *ctx = rt_with_timeout(200000000);
    dctx_rpc_result res;
    assert_int_equal(dctx_grpc_call(e.ch, ctx, "/t.T/Hold", NULL, 0, &res), DCTX_DEADLINE_EXCEEDED);
    dctx_rpc_result_free(&res);
    assert_true(WAIT_FOR(atomic_load(&held.ended), SEC(5)));
    assert_int_equal(held.err, DCTX_DEADLINE_EXCEEDED);
    assert_true(held.budget_ns > 0 && held.budget_ns < 200000000);
    rt_ctx_release(ctx);
    edge_close(&e);
}

static void health_answers_through_a_drain(void **state)
{
    struct edge e;
    edge_open(&e, state);
    dctx_rpc_result res;
    assert_int_equal(dctx_grpc_call(e.ch, NULL, "/grpc.health.v1.Health/Check", NULL, 0, &res),
                     DCTX_OK);
    assert_int_equal(res.payload_len, 2);
    assert_memory_equal(res.payload, "\x08\x01", 2);
    dctx_rpc_result_free(&res);
    dctx_grpc_gateway_drain(e.gw);
    assert_int_equal(dctx_grpc_call(e.ch, NULL, "/grpc.health.v1.Health/Check", NULL, 0, &res),
                     DCTX_OK);
    assert_memory_equal(res.payload, "\x08\x02", 2);
    dctx_rpc_result_free(&res);
    /* Calls are still served while draining. */
    assert_int_equal(dctx_grpc_call(e.ch, NULL, "/t.T/Echo", "x", 1, &res), DCTX_OK);
    dctx_rpc_result_free(&res);
    dctx_grpc_gateway_stats st;
    dctx_grpc_gateway_stats_get(e.gw, &st);
    assert_int_equal(st.health_checks, 2);
    edge_close(&e);
}

static void call_start_ends_once_on_the_channels_thread(void **state)
{
    struct edge e;
    edge_open(&e, state);
    static rt_outcome seen[3];
    memset(seen, 0, sizeof seen);
    /* The method is the caller's only until the start returns. */
    char *method = strdup("/t.T/Echo");
    assert_int_equal(dctx_grpc_call_start(e.ch, NULL, method, "hi", 2, rt_outcome_done, &seen[0]),
                     0);
    memset(method, 'x', strlen(method));
    free(method);
    assert_true(WAIT_FOR(atomic_load(&seen[0].callbacks) == 1, SEC(5)));
    assert_int_equal(seen[0].code, DCTX_OK);
    assert_int_equal(seen[0].payload_len, 3);
    assert_memory_equal(seen[0].payload, "hi|", 3);
    assert_false(pthread_equal(seen[0].thread, pthread_self()));

    /* A cancel ends it as dctx_grpc_call's would. */
    dctx *ctx = rt_with_cancel();
    assert_int_equal(
        dctx_grpc_call_start(e.ch, ctx, "/t.T/Hold", NULL, 0, rt_outcome_done, &seen[1]), 0);
    rt_sleep(MS(50));
    dctx_cancel_cause(ctx, DCTX_ABORTED, "stop there");
    assert_true(WAIT_FOR(atomic_load(&seen[1].callbacks) == 1, SEC(5)));
    assert_int_equal(seen[1].code, DCTX_ABORTED); /* the cause, as a dctx call reports it */
    assert_true(WAIT_FOR(atomic_load(&held.ended), SEC(5)));
    assert_int_equal(held.err, DCTX_CANCELED);

    /* Refused before it starts: a code, and done never runs. */
    assert_int_equal(dctx_grpc_call_start(e.ch, NULL, "/t.T/Echo", "x", 1, NULL, NULL),
                     DCTX_INVALID_ARGUMENT);
    assert_int_equal(
        dctx_grpc_call_start(e.ch, NULL, "t.T/Echo", "x", 1, rt_outcome_done, &seen[2]),
        DCTX_INVALID_ARGUMENT);
    assert_int_equal(
        dctx_grpc_call_start(NULL, NULL, "/t.T/Echo", "x", 1, rt_outcome_done, &seen[2]),
        DCTX_INVALID_ARGUMENT);
    assert_int_equal(
        dctx_grpc_call_start(e.ch, ctx, "/t.T/Echo", "x", 1, rt_outcome_done, &seen[2]),
        DCTX_ABORTED);
    rt_sleep(MS(20));
    assert_int_equal(atomic_load(&seen[2].callbacks), 0);
    assert_int_equal(atomic_load(&seen[0].callbacks), 1); /* once each */
    assert_int_equal(atomic_load(&seen[1].callbacks), 1);
    assert_true(pthread_equal(seen[0].thread, seen[1].thread)); /* the channel's one thread */
    rt_ctx_release(ctx);
    edge_close(&e);
}

/* A gateway that lets one caller's connection have one call open at a
 * time: a second call on the same channel waits (gRPC's client queues a
 * stream past the peer's SETTINGS) until the first ends, then goes. */
static void max_concurrent_streams_holds_a_second_call_until_the_first_ends(void **state)
{
    (void)state;
    static const struct rt_method methods[] = {{"/t.T/Echo", echo, NULL, NULL},
                                               {"/t.T/Hold", hold, NULL, NULL}};
    char url[256], target[64];
    dctx_rpc_server *srv = rt_server_open(RT_INPROC, NULL, methods, 2, url, sizeof url);
    dctx_grpc_gateway_options o = {
        .listen = "127.0.0.1:0", .local = srv, .max_concurrent_streams = 1};
    dctx_grpc_gateway *gw = NULL;
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), 0);
    snprintf(target, sizeof target, "127.0.0.1:%d", dctx_grpc_gateway_port(gw));
    dctx_grpc_channel *ch = NULL;
    assert_int_equal(dctx_grpc_channel_get(target, &ch), 0);
    memset(&held, 0, sizeof held);
    /* The connection up, and its SETTINGS read, before the two calls. */
    dctx_rpc_result res;
    assert_int_equal(dctx_grpc_call(ch, NULL, "/t.T/Echo", "up", 2, &res), DCTX_OK);
    dctx_rpc_result_free(&res);

    static rt_outcome seen[2];
    memset(seen, 0, sizeof seen);
    dctx *first = rt_with_cancel();
    assert_int_equal(
        dctx_grpc_call_start(ch, first, "/t.T/Hold", NULL, 0, rt_outcome_done, &seen[0]), 0);
    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 1, SEC(5)));
    assert_int_equal(
        dctx_grpc_call_start(ch, NULL, "/t.T/Echo", "two", 3, rt_outcome_done, &seen[1]), 0);
    rt_sleep(MS(300));
    assert_int_equal(atomic_load(&seen[1].callbacks), 0); /* waiting for a stream */
    dctx_grpc_gateway_stats gs;
    dctx_grpc_gateway_stats_get(gw, &gs);
    assert_int_equal(gs.calls, 2); /* "up" and the held one */
    dctx_cancel(first);
    assert_true(WAIT_FOR(atomic_load(&seen[0].callbacks) == 1, SEC(5)));
    assert_true(WAIT_FOR(atomic_load(&seen[1].callbacks) == 1, SEC(5)));
    assert_int_equal(seen[1].code, DCTX_OK);
    assert_int_equal(seen[1].payload_len, 4);
    assert_memory_equal(seen[1].payload, "two|", 4);
    rt_ctx_release(first);
    dctx_grpc_channel_release(ch);
    dctx_grpc_gateway_close(gw);
}

/* dctx -> gRPC stream -> gateway -> dctx stream: a bidirectional stream
 * echoed whole, then one canceled mid-way, whose dctx handler sees the
 * cancel. */
static void a_grpc_stream_crosses_the_gateway_both_ways(void **state)
{
    (void)state;
    static const struct rt_method methods[] = {
        {"/t.T/EchoStream", NULL, NULL, rt_echo_stream_handler},
        {"/t.T/Count", NULL, NULL, rt_count_stream_handler},
    };
    char url[256];
    dctx_rpc_server *srv = rt_server_open(RT_INPROC, NULL, methods, 2, url, sizeof url);
    dctx_rpc_channel *forward = rt_channel_open(url, NULL);
    static const char *const streams[] = {"/t.T/EchoStream", "/t.T/Count"};
    dctx_grpc_gateway_options o = {.listen = "127.0.0.1:0",
                                   .forward = forward,
                                   .stream_methods = streams,
                                   .n_stream_methods = 2};
    dctx_grpc_gateway *gw = NULL;
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), 0);
    char target[64];
    snprintf(target, sizeof target, "127.0.0.1:%d", dctx_grpc_gateway_port(gw));
    dctx_grpc_channel *ch = NULL;
    assert_int_equal(dctx_grpc_channel_get(target, &ch), 0);

    dctx *ctx = rt_with_timeout(SEC(10));
    dctx_grpc_stream *st = NULL;
    assert_int_equal(dctx_grpc_stream_open(ch, ctx, "/t.T/EchoStream", &st), 0);
    const char *words[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dctx_grpc_stream_send(st, words[i], strlen(words[i])), 0);
        dctx_rpc_message m;
        assert_true(dctx_grpc_stream_recv(st, &m));
        assert_int_equal(m.len, strlen(words[i]));
        assert_memory_equal(m.data, words[i], m.len);
        assert_true(m.budget_ns > 0 && m.budget_ns <= SEC(10));
        dctx_rpc_message_free(&m);
    }
    assert_int_equal(dctx_grpc_stream_close_send(st), 0);
    assert_int_equal(dctx_grpc_stream_send(st, "x", 1), DCTX_FAILED_PRECONDITION);
    dctx_rpc_message m;
    assert_false(dctx_grpc_stream_recv(st, &m));
    assert_int_equal(dctx_grpc_stream_finish(st, NULL), DCTX_OK);
    dctx_grpc_stream_release(st);

    /* Canceled after three messages of a long count: the dctx handler's
     * stream ends CANCELLED, and so does ours. */
    dctx *cancel = rt_with_cancel();
    assert_int_equal(dctx_grpc_stream_open(ch, cancel, "/t.T/Count", &st), 0);
    assert_int_equal(dctx_grpc_stream_send(st, "1000000", 7), 0);
    assert_int_equal(dctx_grpc_stream_close_send(st), 0);
    for (int i = 0; i < 3; i++) {
        assert_true(dctx_grpc_stream_recv(st, &m));
        dctx_rpc_message_free(&m);
    }
    dctx_cancel_cause(cancel, DCTX_ABORTED, "enough");
    while (dctx_grpc_stream_recv(st, &m))
        dctx_rpc_message_free(&m);
    dctx_rpc_result res;
    assert_int_equal(dctx_grpc_stream_finish(st, &res), DCTX_ABORTED);
    assert_contains(res.message, "enough");
    dctx_rpc_result_free(&res);
    dctx_grpc_stream_release(st);
    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));
    assert_int_equal(rt_server_stats(srv).by_code[DCTX_CANCELED], 1);

    /* A stream released half way is canceled; one on a method nobody
     * serves (the gateway takes it for a unary call) ends UNIMPLEMENTED. */
    assert_int_equal(dctx_grpc_stream_open(ch, ctx, "/t.T/EchoStream", &st), 0);
    assert_int_equal(dctx_grpc_stream_send(st, "a", 1), 0);
    assert_true(dctx_grpc_stream_recv(st, &m)); /* bridged: its handler runs */
    dctx_rpc_message_free(&m);
    dctx_grpc_stream_release(st);
    assert_true(WAIT_FOR(rt_server_stats(srv).by_code[DCTX_CANCELED] == 2, SEC(5)));
    /* finish without reading: the messages left are dropped, the status
     * comes. */
    assert_int_equal(dctx_grpc_stream_open(ch, ctx, "/t.T/Count", &st), 0);
    assert_int_equal(dctx_grpc_stream_send(st, "5", 1), 0);
    assert_int_equal(dctx_grpc_stream_close_send(st), 0);
    assert_int_equal(dctx_grpc_stream_finish(st, NULL), DCTX_OK);
    dctx_grpc_stream_release(st);
    assert_int_equal(dctx_grpc_stream_open(ch, ctx, "/t.T/Nothing", &st), 0);
    assert_int_equal(dctx_grpc_stream_send(st, "x", 1), 0);
    assert_int_equal(dctx_grpc_stream_close_send(st), 0);
    assert_false(dctx_grpc_stream_recv(st, &m));
    assert_int_equal(dctx_grpc_stream_finish(st, NULL), DCTX_UNIMPLEMENTED);
    dctx_grpc_stream_release(st);
    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));

    dctx_grpc_channel_release(ch);
    dctx_grpc_gateway_close(gw);

    /* A gateway bridging at most one stream refuses the second while the
     * first lasts, and takes one again once it ended. */
    o.max_streams = 1;
    assert_int_equal(dctx_grpc_gateway_open(&o, &gw), 0);
    snprintf(target, sizeof target, "127.0.0.1:%d", dctx_grpc_gateway_port(gw));
    assert_int_equal(dctx_grpc_channel_get(target, &ch), 0);
    dctx_grpc_stream *first = NULL, *second = NULL;
    assert_int_equal(dctx_grpc_stream_open(ch, ctx, "/t.T/EchoStream", &first), 0);
    assert_int_equal(dctx_grpc_stream_send(first, "a", 1), 0);
    assert_true(dctx_grpc_stream_recv(first, &m)); /* bridged */
    dctx_rpc_message_free(&m);
    assert_int_equal(dctx_grpc_stream_open(ch, ctx, "/t.T/EchoStream", &second), 0);
    (void)dctx_grpc_stream_send(second, "b", 1);
    assert_false(dctx_grpc_stream_recv(second, &m));
    dctx_rpc_result res2;
    assert_int_equal(dctx_grpc_stream_finish(second, &res2), DCTX_RESOURCE_EXHAUSTED);
    printf("# the second stream: %s\n", res2.message);
    dctx_rpc_result_free(&res2);
    dctx_grpc_stream_release(second);
    assert_int_equal(dctx_grpc_stream_close_send(first), 0);
    assert_false(dctx_grpc_stream_recv(first, &m));
    assert_int_equal(dctx_grpc_stream_finish(first, NULL), DCTX_OK);
    dctx_grpc_stream_release(first);
    /* The bridge's threads let go of the first just after its status. */
    bool again = false;
    for (int i = 0; i < 50 && !again; i++) {
        assert_int_equal(dctx_grpc_stream_open(ch, ctx, "/t.T/EchoStream", &first), 0);
        (void)dctx_grpc_stream_send(first, "c", 1);
        again = dctx_grpc_stream_recv(first, &m);
        if (again)
            dctx_rpc_message_free(&m);
        dctx_grpc_stream_release(first);
        if (!again)
            rt_sleep(MS(10));
    }
    assert_true(again);
    dctx_grpc_channel_release(ch);
    dctx_grpc_gateway_close(gw);
    rt_channel_close(forward);
    rt_ctx_release(cancel);
    rt_ctx_release(ctx);
}

/* The same test with the gateway calling its server in process. */
#define RT_TEST_IN_PROCESS(f)                                                                      \
    {                                                                                              \
#f " (in process)", f, NULL, rt_teardown, (void *)&in_process                              \
    }

int main(int argc, char **argv)
{
    rt_init("grpc_api", RT_PORTS_GRPC);
    int child = rt_child_main(argc, argv);
    if (child >= 0)
        return child;
    const struct CMUnitTest tests[] = {
        RT_TEST(gateway_refuses_bad_options),
        RT_TEST(channel_is_shared_per_target),
        RT_TEST(values_and_budget_cross_both_ways),
        RT_TEST(status_and_message_cross),
        RT_TEST(cancel_crosses_both_ways),
        RT_TEST(deadline_crosses_with_less_budget),
        RT_TEST(health_answers_through_a_drain),
        RT_TEST(call_start_ends_once_on_the_channels_thread),
        RT_TEST(a_grpc_stream_crosses_the_gateway_both_ways),
        RT_TEST(max_concurrent_streams_holds_a_second_call_until_the_first_ends),
        RT_TEST_IN_PROCESS(values_and_budget_cross_both_ways),
        RT_TEST_IN_PROCESS(status_and_message_cross),
        RT_TEST_IN_PROCESS(cancel_crosses_both_ways),
        RT_TEST_IN_PROCESS(deadline_crosses_with_less_budget),
        RT_TEST_IN_PROCESS(health_answers_through_a_drain),
    };
    return cmocka_run_group_tests_name("grpc_api", tests, rt_group_setup, NULL);
}
