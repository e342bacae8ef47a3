/*
 * test_rpc_local.c - calls from the server's own process
 * (dctx_rpc_server_call_start): the handler sees what a remote caller's
 * would (budget after the reserve, values under the policy, the caller's
 * key being the server's own), the caller's cancel and deadline reach it
 * with their outcomes, refusals come through the callback at once
 * (unknown method, draining, a loop, a busy server), bad calls return a
 * code and never call back, an INLINE handler runs on the caller's
 * thread, answers come back byte for byte, and every call ends exactly
 * once under churn and through a close.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <dctx/identity.h>

#include "rpc_testutil.h"

#define ECHO "/it.Local/Echo"
#define PROBE "/it.Local/Probe"
#define VALUES "/it.Local/Values"
#define STREAM "/it.Local/Stream"

static int start(dctx_rpc_server *srv, dctx *ctx, const dctx_wire_policy *policy,
                 const char *method, const void *req, size_t len, rt_outcome *o)
{
    memset(o, 0, sizeof *o);
    return dctx_rpc_server_call_start(srv, ctx, policy, method, req, len, rt_outcome_done, o);
}

static void answer_and_context_are_those_a_remote_caller_gets(void **state)
{
    (void)state;
    static struct rt_seen_values seen;
    memset(&seen, 0, sizeof seen);
    char url[256];
    struct rt_method m[] = {{ECHO, rt_echo_handler, NULL, NULL},
                            {VALUES, rt_values_handler, &seen, NULL}};
    dctx_rpc_server *srv = rt_server_open(RT_INPROC, NULL, m, 2, url, sizeof url);

    dctx *ctx = rt_with_value(rt_with_timeout(SEC(5)), &rt_key_tenant, "acme");
    ctx = rt_with_value(ctx, &rt_key_secret, "hunter2");
    ctx = rt_with_value(ctx, &rt_key_trace, "00-abc");
    static rt_outcome o;
    assert_int_equal(start(srv, ctx, NULL, ECHO, "hello", 5, &o), 0);
    assert_true(WAIT_FOR(atomic_load(&o.callbacks) == 1, SEC(5)));
    assert_int_equal(o.code, DCTX_OK);
    assert_int_equal(o.payload_len, 5);

    /* The reserve comes off the budget, as on a channel. */
    static const char *const names[] = {"it-tenant"};
    dctx_wire_policy listed = {
        .reserve_ns = MS(30), .send = DCTX_WIRE_SEND_LISTED, .listed = names, .n_listed = 1};
    int64_t caller_deadline = 0;
    assert_true(dctx_deadline(ctx, &caller_deadline));
    assert_int_equal(start(srv, ctx, &listed, VALUES, NULL, 0, &o), 0);
    assert_true(WAIT_FOR(atomic_load(&o.callbacks) == 1, SEC(5)));
    assert_int_equal(o.code, DCTX_OK);
    assert_true(seen.tenant);
    assert_string_equal(seen.tenant_v, "acme");
    assert_false(seen.trace);  /* not listed */
    assert_false(seen.secret); /* never propagated */
    assert_true(seen.had_deadline);
    assert_true(seen.deadline_ns <= caller_deadline - MS(30));
    assert_true(seen.deadline_ns > caller_deadline - SEC(1));

    /* No policy: every propagated value. */
    memset(&seen, 0, sizeof seen);
    assert_int_equal(start(srv, ctx, NULL, VALUES, NULL, 0, &o), 0);
    assert_true(WAIT_FOR(atomic_load(&o.callbacks) == 1, SEC(5)));
    assert_true(seen.tenant && seen.trace && !seen.secret);
    assert_string_equal(seen.trace_v, "00-abc");

    dctx_rpc_server_stats ss = rt_server_stats(srv);
    assert_int_equal(ss.calls, 3);
    assert_int_equal(ss.by_code[DCTX_OK], 3);
    assert_int_equal(ss.connections_accepted, 0); /* no socket */
    rt_ctx_release(ctx);
}

static void refusals_come_through_the_callback_before_the_return(void **state)
{
    (void)state;
    char url[256];
    struct rt_method m[] = {{ECHO, rt_echo_handler, NULL, NULL},
                            {STREAM, NULL, NULL, rt_echo_stream_handler}};
    dctx_rpc_server *srv = rt_server_open(RT_INPROC, NULL, m, 2, url, sizeof url);
    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    assert_int_equal(start(srv, ctx, NULL, "/it.Local/Nothing", NULL, 0, &o), 0);
    assert_int_equal(atomic_load(&o.callbacks), 1);
    assert_int_equal(o.code, DCTX_UNIMPLEMENTED);
    assert_contains(o.message, "unknown method /it.Local/Nothing");

    assert_int_equal(start(srv, ctx, NULL, STREAM, NULL, 0, &o), 0);
    assert_int_equal(atomic_load(&o.callbacks), 1);
    assert_int_equal(o.code, DCTX_UNIMPLEMENTED);
    assert_contains(o.message, "stream method");

    /* A server that drains takes no new call. */
    rt_untrack_server(srv);
    assert_int_equal(dctx_rpc_server_shutdown(srv), 0);
    assert_int_equal(start(srv, ctx, NULL, ECHO, "x", 1, &o), 0);
    assert_int_equal(atomic_load(&o.callbacks), 1);
    assert_int_equal(o.code, DCTX_UNAVAILABLE);
    assert_contains(o.message, "draining");
    dctx_rpc_server_stats ss = rt_server_stats(srv);
    assert_int_equal(ss.calls, 3);
    assert_int_equal(ss.by_code[DCTX_UNIMPLEMENTED], 2);
    assert_int_equal(ss.by_code[DCTX_UNAVAILABLE], 1);
    assert_int_equal(dctx_rpc_server_close(srv), 0);
    rt_ctx_release(ctx);
}

static void bad_calls_return_a_code_and_never_call_back(void **state)
{
    (void)state;
    char url[256];
    dctx_rpc_server_options opts = rt_server_options(2);
    opts.recv_max_bytes = 16;
    dctx_rpc_server *srv = rt_serve(RT_INPROC, &opts, ECHO, rt_echo_handler, NULL, url);
    static rt_outcome o;
    memset(&o, 0, sizeof o);
    dctx *ctx = rt_with_cancel();
    char big[17] = {0};

    assert_int_equal(
        dctx_rpc_server_call_start(NULL, ctx, NULL, ECHO, NULL, 0, rt_outcome_done, &o),
        DCTX_INVALID_ARGUMENT);
    assert_int_equal(
        dctx_rpc_server_call_start(srv, NULL, NULL, ECHO, NULL, 0, rt_outcome_done, &o),
        DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_rpc_server_call_start(srv, ctx, NULL, ECHO, NULL, 0, NULL, &o),
                     DCTX_INVALID_ARGUMENT);
    assert_int_equal(start(srv, ctx, NULL, "Echo", NULL, 0, &o), DCTX_INVALID_ARGUMENT);
    assert_int_equal(start(srv, ctx, NULL, ECHO, NULL, 3, &o), DCTX_INVALID_ARGUMENT);
    assert_int_equal(start(srv, ctx, NULL, ECHO, big, sizeof big, &o), DCTX_RESOURCE_EXHAUSTED);

    /* A budget the reserve eats: not sent, as from a channel. */
    dctx *soon = rt_with_timeout(MS(2));
    dctx_wire_policy reserve = {.reserve_ns = MS(50)};
    assert_int_equal(start(srv, soon, &reserve, ECHO, NULL, 0, &o), DCTX_DEADLINE_EXCEEDED);
    dctx_cancel(ctx);
    assert_int_equal(start(srv, ctx, NULL, ECHO, NULL, 0, &o), DCTX_CANCELED);

    /* A server not started yet. */
    dctx_rpc_server *idle = NULL;
    assert_int_equal(dctx_rpc_server_open(NULL, &idle), 0);
    rt_track_server(idle);
    dctx *live = rt_with_cancel();
    assert_int_equal(start(idle, live, NULL, ECHO, NULL, 0, &o), DCTX_UNAVAILABLE);

    assert_int_equal(atomic_load(&o.callbacks), 0);
    assert_int_equal(rt_server_stats(srv).calls, 0);
    rt_ctx_release(live);
    rt_ctx_release(soon);
    rt_ctx_release(ctx);
}

/* Echo that notes the thread it ran on. */
static pthread_t echo_thread;

static int noting_echo(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)ctx;
    echo_thread = pthread_self();
    return dctx_rpc_reply_set_payload(reply, req, len);
}

/* An INLINE handler runs on the caller's thread and done before the
 * return; a worker's handler on another thread. Either way the request's
 * bytes (NULs and 0xff among them) come back whole. */
static void inline_handler_runs_on_the_callers_thread_and_bytes_come_back_whole(void **state)
{
    (void)state;
    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(NULL, &srv), 0);
    rt_track_server(srv);
    assert_int_equal(dctx_rpc_server_register_flags(srv, ECHO, noting_echo, NULL, DCTX_RPC_INLINE),
                     0);
    assert_int_equal(dctx_rpc_server_register(srv, PROBE, noting_echo, NULL), 0);
    char url[256];
    rt_server_listen(srv, RT_INPROC, url, sizeof url);
    assert_int_equal(dctx_rpc_server_start(srv), 0);
    const unsigned char req[] = {0, 1, 0, 0xff, 'x', 0, 0x80, 0x7f};
    dctx *ctx = rt_with_cancel();

    static rt_outcome a;
    assert_int_equal(start(srv, ctx, NULL, ECHO, req, sizeof req, &a), 0);
    assert_int_equal(atomic_load(&a.callbacks), 1); /* before the return */
    assert_true(pthread_equal(echo_thread, pthread_self()));
    assert_true(pthread_equal(a.thread, pthread_self()));
    assert_int_equal(a.code, DCTX_OK);
    assert_int_equal(a.payload_len, sizeof req);
    assert_memory_equal(a.payload, req, sizeof req);

    assert_int_equal(start(srv, ctx, NULL, PROBE, req, sizeof req, &a), 0);
    assert_true(WAIT_FOR(atomic_load(&a.callbacks) == 1, SEC(5)));
    assert_false(pthread_equal(echo_thread, pthread_self()));
    assert_int_equal(a.code, DCTX_OK);
    assert_int_equal(a.payload_len, sizeof req);
    assert_memory_equal(a.payload, req, sizeof req);
    assert_int_equal(rt_server_stats(srv).by_code[DCTX_OK], 2);
    rt_ctx_release(ctx);
}

/* A handler that calls its own server with its own context: the call has
 * passed through this server already, so it is a loop, refused through
 * done before the return (as over a socket). */
struct loop_probe {
    dctx_rpc_server *srv;
    int rc;
    rt_outcome a;
};

static int calls_itself(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)req;
    (void)len;
    (void)reply;
    struct loop_probe *p = arg;
    p->rc = start(p->srv, ctx, NULL, ECHO, "x", 1, &p->a);
    return DCTX_OK;
}

static void a_handlers_own_context_is_refused_as_a_loop(void **state)
{
    (void)state;
    static struct loop_probe p;
    memset(&p, 0, sizeof p);
    p.rc = -1;
    char url[256];
    struct rt_method m[] = {{ECHO, rt_echo_handler, NULL, NULL}, {PROBE, calls_itself, &p, NULL}};
    p.srv = rt_server_open(RT_INPROC, NULL, m, 2, url, sizeof url);
    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    assert_int_equal(start(p.srv, ctx, NULL, PROBE, NULL, 0, &o), 0);
    assert_true(WAIT_FOR(atomic_load(&o.callbacks) == 1, SEC(5)));
    assert_int_equal(o.code, DCTX_OK);
    assert_int_equal(p.rc, 0);
    assert_int_equal(atomic_load(&p.a.callbacks), 1); /* before the handler went on */
    assert_int_equal(p.a.code, DCTX_FAILED_PRECONDITION);
    assert_contains(p.a.message, "call loop");
    rt_ctx_release(ctx);
}

/* A server with max_in_flight calls in flight refuses the next local call
 * RESOURCE_EXHAUSTED through done before the return; the one running goes
 * on whole. */
static void a_busy_server_refuses_through_the_callback(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_HOLD, SEC(10));
    char url[256];
    dctx_rpc_server_options opts = rt_server_options(1);
    opts.max_in_flight = 1;
    dctx_rpc_server *srv = rt_serve(RT_INPROC, &opts, PROBE, rt_probe_handler, &p, url);
    dctx *ctx = rt_with_cancel();
    static rt_outcome first, second;
    assert_int_equal(start(srv, ctx, NULL, PROBE, NULL, 0, &first), 0);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));
    assert_int_equal(start(srv, ctx, NULL, PROBE, NULL, 0, &second), 0);
    assert_int_equal(atomic_load(&second.callbacks), 1);
    assert_int_equal(second.code, DCTX_RESOURCE_EXHAUSTED);
    assert_contains(second.message, "server busy");
    assert_int_equal(atomic_load(&first.callbacks), 0);
    atomic_store(&p.release, 1);
    assert_true(WAIT_FOR(atomic_load(&first.callbacks) == 1, SEC(5)));
    assert_int_equal(first.code, DCTX_OK);
    assert_int_equal(atomic_load(&p.runs), 1);
    dctx_rpc_server_stats ss = rt_server_stats(srv);
    assert_int_equal(ss.by_code[DCTX_RESOURCE_EXHAUSTED], 1);
    assert_int_equal(ss.by_code[DCTX_OK], 1);
    rt_ctx_release(ctx);
}

/* A server whose PROBE handler waits on its context (10 s at most). */
static dctx_rpc_server *serve_waiting_probe(rt_probe *p)
{
    rt_probe_init(p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    return rt_serve(RT_INPROC, NULL, PROBE, rt_probe_handler, p, url);
}

static void caller_cancel_stops_the_running_handler_with_its_cause(void **state)
{
    (void)state;
    static rt_probe p;
    dctx_rpc_server *srv = serve_waiting_probe(&p);
    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    assert_int_equal(start(srv, ctx, NULL, PROBE, NULL, 0, &o), 0);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));
    int64_t t_cancel = dctx_now();
    dctx_cancel_cause(ctx, DCTX_ABORTED, "user pressed stop");

    /* Decided by the cancel (done runs on the library's reaper thread). */
    assert_true(WAIT_FOR(atomic_load(&o.callbacks) == 1, SEC(5)));
    assert_int_equal(o.code, DCTX_CANCELED);
    assert_contains(o.message, "user pressed stop");
    assert_int_equal(o.cancel_outcome, DCTX_RPC_CANCEL_STOPPED);
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_int_equal(p.cause, DCTX_ABORTED);
    assert_string_equal(p.cause_msg, "user pressed stop");
    assert_ns_in(p.returned_ns - t_cancel, 0, SEC(1));

    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));
    dctx_rpc_server_stats ss = rt_server_stats(srv);
    assert_int_equal(ss.cancels_received, 1);
    assert_int_equal(ss.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED], 1);
    assert_int_equal(ss.by_code[DCTX_ABORTED], 1); /* what the handler returned */
    assert_int_equal(atomic_load(&o.callbacks), 1);
    rt_ctx_release(ctx);
}

static void caller_cancel_prevents_a_queued_call(void **state)
{
    (void)state;
    static rt_probe p[2];
    rt_probe_init(&p[0], RT_PROBE_HOLD, SEC(10));
    rt_probe_init(&p[1], RT_PROBE_RETURN, 0);
    char url[256];
    dctx_rpc_server_options opts = rt_server_options(1);
    dctx_rpc_server *srv = rt_serve(RT_INPROC, &opts, PROBE, rt_probes_handler, p, url);
    dctx *hold = rt_with_cancel(), *queued = rt_with_cancel();
    static rt_outcome o0, o1;
    uint8_t which[2] = {0, 1};
    assert_int_equal(start(srv, hold, NULL, PROBE, &which[0], 1, &o0), 0);
    assert_true(WAIT_FOR(atomic_load(&p[0].started), SEC(5)));
    assert_int_equal(start(srv, queued, NULL, PROBE, &which[1], 1, &o1), 0);
    dctx_cancel_cause(queued, DCTX_CANCELED, "changed my mind");
    assert_true(WAIT_FOR(atomic_load(&o1.callbacks) == 1, SEC(5)));
    assert_int_equal(o1.code, DCTX_CANCELED);
    assert_int_equal(o1.cancel_outcome, DCTX_RPC_CANCEL_PREVENTED);

    atomic_store(&p[0].release, 1);
    assert_true(WAIT_FOR(atomic_load(&o0.callbacks) == 1, SEC(5)));
    assert_int_equal(o0.code, DCTX_OK);
    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));
    assert_int_equal(atomic_load(&p[1].runs), 0); /* never ran */
    assert_int_equal(rt_server_stats(srv).cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED], 1);
    rt_ctx_release(hold);
    rt_ctx_release(queued);
}

static void caller_deadline_ends_the_handler_as_a_deadline(void **state)
{
    (void)state;
    static rt_probe p;
    dctx_rpc_server *srv = serve_waiting_probe(&p);
    dctx *ctx = rt_with_timeout(MS(100));
    static rt_outcome o;
    int64_t t0 = dctx_now();
    assert_int_equal(start(srv, ctx, NULL, PROBE, NULL, 0, &o), 0);
    assert_true(WAIT_FOR(atomic_load(&o.callbacks) == 1, SEC(5)));
    assert_int_equal(o.code, DCTX_DEADLINE_EXCEEDED);
    assert_ns_in(o.ended_ns - t0, MS(90), SEC(2));
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_DEADLINE_EXCEEDED);
    assert_true(p.had_deadline);
    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));
    rt_ctx_release(ctx);
}

static struct {
    atomic_int calls;
    atomic_bool has_key;
    unsigned char key[DCTX_PUBLIC_KEY_BYTES];
} keyed_seen;

static int keyed_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)req;
    (void)len;
    (void)reply;
    unsigned char key[DCTX_PUBLIC_KEY_BYTES];
    if (dctx_rpc_caller(ctx, key)) {
        memcpy(keyed_seen.key, key, sizeof key);
        atomic_store(&keyed_seen.has_key, true);
    }
    atomic_fetch_add(&keyed_seen.calls, 1);
    return DCTX_OK;
}

static void a_server_with_keys_sees_its_own_key_and_applies_its_allow_list(void **state)
{
    (void)state;
    memset(&keyed_seen, 0, sizeof keyed_seen);
    char path[512], err[256], text[DCTX_PUBLIC_KEY_TEXT_BYTES], allow_text[512];
    rt_path("self", path, sizeof path);
    assert_int_equal(dctx_identity_generate(path, text, err, sizeof err), 0);
    dctx_identity *id = NULL;
    assert_int_equal(dctx_identity_load(path, &id, err, sizeof err), 0);
    unsigned char pub[DCTX_PUBLIC_KEY_BYTES];
    dctx_identity_public_key(id, pub);
    snprintf(allow_text, sizeof allow_text, "%s " ECHO "\n", text);
    dctx_allow *allow = NULL;
    assert_int_equal(dctx_allow_parse(allow_text, strlen(allow_text), &allow, err, sizeof err), 0);

    dctx_rpc_server_options opts = rt_server_options(2);
    opts.identity = id;
    opts.allow = allow;
    char url[256];
    struct rt_method m[] = {{ECHO, keyed_handler, NULL, NULL}, {PROBE, keyed_handler, NULL, NULL}};
    dctx_rpc_server *srv = rt_server_open(RT_INPROC, &opts, m, 2, url, sizeof url);
    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    assert_int_equal(start(srv, ctx, NULL, ECHO, NULL, 0, &o), 0);
    assert_true(WAIT_FOR(atomic_load(&o.callbacks) == 1, SEC(5)));
    assert_int_equal(o.code, DCTX_OK);
    assert_true(atomic_load(&keyed_seen.has_key));
    assert_memory_equal(keyed_seen.key, pub, sizeof pub);

    assert_int_equal(start(srv, ctx, NULL, PROBE, NULL, 0, &o), 0);
    assert_int_equal(atomic_load(&o.callbacks), 1);
    assert_int_equal(o.code, DCTX_PERMISSION_DENIED);
    assert_int_equal(atomic_load(&keyed_seen.calls), 1);
    assert_int_equal(rt_server_stats(srv).denied, 1);

    rt_server_close(srv);
    dctx_allow_free(allow);
    dctx_identity_free(id);
    rt_ctx_release(ctx);
}

/* ===== Churn ===== */

enum { CHURN_THREADS = 4, CHURN_CALLS = 500 };

static rt_probe churn_probe[CHURN_THREADS * CHURN_CALLS];
static rt_outcome churn_out[CHURN_THREADS * CHURN_CALLS];

static int churn_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)reply;
    uint32_t i;
    if (len != sizeof i)
        return DCTX_INVALID_ARGUMENT;
    memcpy(&i, req, sizeof i);
    return rt_probe_run(&churn_probe[i], ctx);
}

struct churn_arg {
    dctx_rpc_server *srv;
    int first;
    int failures;
};

static void *churn_main(void *p)
{
    struct churn_arg *a = p;
    uint64_t seed = rt_random64() | 1;
    for (int k = 0; k < CHURN_CALLS; k++) {
        uint32_t i = (uint32_t)(a->first + k);
        uint64_t r = rt_next(&seed);
        rt_probe_init(&churn_probe[i], RT_PROBE_WAIT_CTX, (int64_t)(r % 3) * MS(1));
        dctx *ctx = NULL;
        int kind = (int)(r / 3 % 3); /* answered, timing out, canceled */
        if (kind == 1)
            (void)dctx_with_timeout(dctx_background(), (int64_t)(r / 9 % 2000) * 1000, &ctx);
        else
            (void)dctx_with_cancel(dctx_background(), &ctx);
        if (ctx == NULL) {
            a->failures++;
            continue;
        }
        int rc = start(a->srv, ctx, NULL, PROBE, &i, sizeof i, &churn_out[i]);
        if (rc == DCTX_DEADLINE_EXCEEDED) { /* a timeout too short to send */
            churn_out[i].code = rc;
            atomic_fetch_add(&churn_out[i].callbacks, 1);
        } else if (rc != 0)
            a->failures++;
        if (kind == 2) {
            rt_sleep((int64_t)(r / 9 % 1500) * 1000);
            dctx_cancel(ctx);
        }
        dctx_release(ctx);
    }
    return NULL;
}

static void many_calls_with_a_third_canceled_each_end_exactly_once(void **state)
{
    (void)state;
    char url[256];
    dctx_rpc_server_options opts = rt_server_options(4);
    opts.max_in_flight = CHURN_THREADS * CHURN_CALLS;
    dctx_rpc_server *srv = rt_serve(RT_INPROC, &opts, PROBE, churn_handler, NULL, url);
    pthread_t t[CHURN_THREADS];
    static struct churn_arg args[CHURN_THREADS];
    for (int k = 0; k < CHURN_THREADS; k++) {
        args[k] = (struct churn_arg){.srv = srv, .first = k * CHURN_CALLS};
        assert_int_equal(pthread_create(&t[k], NULL, churn_main, &args[k]), 0);
    }
    for (int k = 0; k < CHURN_THREADS; k++) {
        pthread_join(t[k], NULL);
        assert_int_equal(args[k].failures, 0);
    }
    /* Every call's end comes (a cancel's on the reaper, after the server
     * counted the call out), then no other. */
    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(20)));
    for (int i = 0; i < CHURN_THREADS * CHURN_CALLS; i++)
        if (!WAIT_FOR(atomic_load(&churn_out[i].callbacks) >= 1, SEC(5)))
            fail_msg("call %d never ended", i);
    rt_sleep(MS(50));
    int codes[DCTX_CODE_MAX + 1] = {0};
    for (int i = 0; i < CHURN_THREADS * CHURN_CALLS; i++) {
        if (atomic_load(&churn_out[i].callbacks) != 1)
            fail_msg("call %d ended %d times", i, atomic_load(&churn_out[i].callbacks));
        codes[churn_out[i].code]++;
    }
    printf("churn: OK %d, CANCELED %d, DEADLINE_EXCEEDED %d\n", codes[DCTX_OK],
           codes[DCTX_CANCELED], codes[DCTX_DEADLINE_EXCEEDED]);
    assert_true(codes[DCTX_OK] > 0 && codes[DCTX_CANCELED] > 0 &&
                codes[DCTX_DEADLINE_EXCEEDED] > 0);
    assert_int_equal(codes[DCTX_OK] + codes[DCTX_CANCELED] + codes[DCTX_DEADLINE_EXCEEDED],
                     CHURN_THREADS * CHURN_CALLS);
    dctx_rpc_server_stats ss = rt_server_stats(srv);
    uint64_t answered = 0;
    for (int c = 0; c <= DCTX_CODE_MAX; c++)
        answered += ss.by_code[c];
    assert_int_equal(answered, ss.calls); /* every call the server took, answered once */
}

/* n calls that wait on their contexts (10 s at most), started on a server
 * of its own (untracked: the test closes it) with workers and a close's
 * grace; ctx[i] from make(i). A call whose budget is gone before it
 * starts counts as ended. */
static dctx_rpc_server *start_waiting(int n, int workers, int64_t grace_ns, rt_probe *p,
                                      rt_outcome *o, dctx **ctx, dctx *(*make)(int))
{
    for (int i = 0; i < n; i++)
        rt_probe_init(&p[i], RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    dctx_rpc_server_options opts = rt_server_options(workers);
    opts.shutdown_grace_ns = grace_ns;
    dctx_rpc_server *srv = rt_serve(RT_INPROC, &opts, PROBE, rt_probes_handler, p, url);
    for (int i = 0; i < n; i++) {
        ctx[i] = make(i);
        uint8_t which = (uint8_t)i;
        int rc = start(srv, ctx[i], NULL, PROBE, &which, 1, &o[i]);
        if (rc == DCTX_DEADLINE_EXCEEDED)
            atomic_fetch_add(&o[i].callbacks, 1);
        else
            assert_int_equal(rc, 0);
    }
    rt_untrack_server(srv);
    return srv;
}

static dctx *cancelable(int i)
{
    (void)i;
    return rt_with_cancel();
}

static dctx *soon(int i)
{
    return rt_with_timeout(MS(2) + (i % 16) * MS(1));
}

static void close_ends_local_calls_and_a_later_cancel_touches_nothing(void **state)
{
    (void)state;
    enum { N = 16 };
    static rt_probe p[N];
    static rt_outcome o[N];
    dctx *ctx[N];
    dctx_rpc_server *srv = start_waiting(N, 4, MS(50), p, o, ctx, cancelable);
    assert_true(WAIT_FOR(atomic_load(&p[0].started), SEC(5)));
    int64_t t0 = dctx_now();
    assert_int_equal(dctx_rpc_server_close(srv), DCTX_DEADLINE_EXCEEDED);
    assert_ns_in(dctx_now() - t0, 0, SEC(5));
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&o[i].callbacks), 1);
        if (o[i].code != DCTX_DEADLINE_EXCEEDED && o[i].code != DCTX_UNAVAILABLE)
            fail_msg("call %d ended %s: %s", i, dctx_code_name(o[i].code), o[i].message);
    }
    /* The server is gone: its calls' after-funcs on these contexts were
     * stopped or have run. */
    for (int i = 0; i < N; i++) {
        dctx_cancel(ctx[i]);
        assert_int_equal(atomic_load(&o[i].callbacks), 1);
        rt_ctx_release(ctx[i]);
    }
}

/* Callers' deadlines fire while the server closes: close waits for what
 * their after-funcs and deferred cancels still do (ASan sees any touch of
 * the freed server), and each call ends once. */
static void close_while_callers_deadlines_fire(void **state)
{
    (void)state;
    enum { N = 64 };
    static rt_probe p[N];
    static rt_outcome o[N];
    dctx *ctx[N];
    dctx_rpc_server *srv = start_waiting(N, 8, MS(5), p, o, ctx, soon);
    rt_sleep(MS(8));
    (void)dctx_rpc_server_close(srv);
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&o[i].callbacks), 1);
        rt_ctx_release(ctx[i]);
    }
}

struct thread_seen {
    atomic_int calls;
    pthread_t thread;
};

static void record_thread(void *arg, const dctx_rpc_result *res)
{
    (void)res;
    struct thread_seen *t = arg;
    t->thread = pthread_self();
    atomic_fetch_add(&t->calls, 1);
}

/* done never runs inside the caller's dctx_cancel: it may take locks the
 * canceling thread holds. */
static void done_after_a_cancel_runs_off_the_canceling_thread(void **state)
{
    (void)state;
    static rt_probe p;
    dctx_rpc_server *srv = serve_waiting_probe(&p);
    dctx *ctx = rt_with_cancel();
    static struct thread_seen seen;
    memset(&seen, 0, sizeof seen);
    assert_int_equal(
        dctx_rpc_server_call_start(srv, ctx, NULL, PROBE, NULL, 0, record_thread, &seen), 0);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));
    dctx_cancel(ctx);
    assert_true(WAIT_FOR(atomic_load(&seen.calls) == 1, SEC(5)));
    assert_false(pthread_equal(seen.thread, pthread_self()));
    rt_ctx_release(ctx);
}

int main(int argc, char **argv)
{
    rt_init("rpc_local", RT_PORTS_LOCAL);
    int child = rt_child_main(argc, argv);
    if (child >= 0)
        return child;
    const struct CMUnitTest tests[] = {
        RT_TEST(answer_and_context_are_those_a_remote_caller_gets),
        RT_TEST(refusals_come_through_the_callback_before_the_return),
        RT_TEST(bad_calls_return_a_code_and_never_call_back),
        RT_TEST(inline_handler_runs_on_the_callers_thread_and_bytes_come_back_whole),
        RT_TEST(a_handlers_own_context_is_refused_as_a_loop),
        RT_TEST(a_busy_server_refuses_through_the_callback),
        RT_TEST(caller_cancel_stops_the_running_handler_with_its_cause),
        RT_TEST(caller_cancel_prevents_a_queued_call),
        RT_TEST(caller_deadline_ends_the_handler_as_a_deadline),
        RT_TEST(a_server_with_keys_sees_its_own_key_and_applies_its_allow_list),
        RT_TEST(many_calls_with_a_third_canceled_each_end_exactly_once),
        RT_TEST(close_ends_local_calls_and_a_later_cancel_touches_nothing),
        RT_TEST(close_while_callers_deadlines_fire),
        RT_TEST(done_after_a_cancel_runs_off_the_canceling_thread),
    };
    return cmocka_run_group_tests_name("rpc_local", tests, rt_group_setup, NULL);
}
