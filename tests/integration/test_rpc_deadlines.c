/*
 * test_rpc_deadlines.c - deadlines across the wire: the budget a call
 * carries (the time left less the channel's reserve, re-anchored on
 * arrival, without the time spent waiting for a connection); a handler
 * ending with DEADLINE_EXCEEDED on a direct link and behind a slow one; a
 * caller that stops waiting at its deadline; and the deadline policy: a
 * reserve, a minimum budget, and a budget that runs out in the queue.
 */
#include <stdio.h>
#include <string.h>

#include "rpc_testutil.h"

/* The budget is the time left when the call is packed less the channel's
 * reserve (DCTX_RPC_DEFAULT_RESERVE_NS), re-anchored when it arrives: the
 * callee's deadline is the caller's less the reserve plus the transit. */
static void callee_sees_a_100_ms_timeout_as_a_deadline_at_most_100_ms_away(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    rt_serve(RT_INPROC, NULL, "/it.Deadline/Probe", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    dctx *ctx = rt_with_timeout(MS(100));
    int64_t caller_deadline = 0;
    assert_true(dctx_deadline(ctx, &caller_deadline));
    int64_t t_send = dctx_now();
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Deadline/Probe", NULL, 0, NULL), DCTX_OK);
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(atomic_load(&p.runs), 1);
    assert_true(p.had_deadline);
    /* measured at the handler: no more than 100 ms away, and still ahead */
    assert_ns_in(p.deadline_ns - p.entered_ns, 1, MS(100));
    /* one process, one clock: what was left when sent, less the reserve */
    assert_ns_in(p.deadline_ns, caller_deadline - MS(100),
                 caller_deadline - DCTX_RPC_DEFAULT_RESERVE_NS + (p.entered_ns - t_send));
    rt_ctx_release(ctx);
}

/* A call that first waits for its connection sends what is left of its
 * budget after the wait: the callee's deadline does not fall the wait
 * later than the caller's. */
static void budget_sent_after_waiting_for_a_connection_excludes_the_wait(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    rt_url(RT_IPC, url, sizeof url);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.connect_wait_ns = SEC(5);
    static struct rt_thread_call c;
    c.method = "/it.Deadline/Probe";
    c.ch = rt_channel_open(url, &co); /* nothing listens yet */
    c.ctx = rt_with_timeout(SEC(3));
    int64_t caller_deadline = 0;
    assert_true(dctx_deadline(c.ctx, &caller_deadline));
    pthread_t t = start_thread(rt_thread_call_main, &c);
    rt_sleep(MS(300)); /* the call waits for a pipe meanwhile */

    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(NULL, &srv), 0);
    rt_track_server(srv);
    assert_int_equal(dctx_rpc_server_register(srv, "/it.Deadline/Probe", rt_probe_handler, &p), 0);
    int64_t t_listen = dctx_now();
    assert_int_equal(dctx_rpc_server_listen(srv, url), 0);
    assert_int_equal(dctx_rpc_server_start(srv), 0);
    join_thread(t);
    assert_int_equal(c.rc, DCTX_OK);
    dctx_rpc_result_free(&c.res);
    assert_true(p.had_deadline);
    /* The call was packed after the pipe came up (after t_listen) and
     * arrived before the handler ran: its transit is at most
     * entered - t_listen. Packed before the wait, the deadline would be
     * some 300 ms later than this bound. */
    int64_t bound = caller_deadline - DCTX_RPC_DEFAULT_RESERVE_NS + (p.entered_ns - t_listen);
    if (p.deadline_ns > bound)
        fail_msg("the callee's deadline is %.1f ms past the bound: the budget included the wait",
                 (double)(p.deadline_ns - bound) / 1e6);
    rt_ctx_release(c.ctx);
}

static void handler_waiting_on_its_context_ends_with_deadline_exceeded(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    rt_serve(RT_IPC, NULL, "/it.Deadline/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    int64_t t0 = dctx_now();
    dctx *ctx = rt_with_timeout(MS(100));
    int64_t caller_deadline = 0;
    assert_true(dctx_deadline(ctx, &caller_deadline));
    int64_t t_send = dctx_now();
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Deadline/Wait", NULL, 0, &res),
                     DCTX_DEADLINE_EXCEEDED);
    /* the callee's answer may come a reserve (and 1 us of rounding) before
     * the caller's own deadline, never earlier */
    assert_ns_in(dctx_now() - t0, MS(100) - DCTX_RPC_DEFAULT_RESERVE_NS - US(1), MS(100) + SEC(1));
    dctx_rpc_result_free(&res);

    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    /* Its context ended because of the deadline, and it answers so. Its
     * error (dctx_err) is asserted on a slow link in the next test: here
     * the caller's own deadline and the callee's race (see there). */
    assert_true(p.err != 0);
    assert_int_equal(p.cause, DCTX_DEADLINE_EXCEEDED);
    /* its deadline was the caller's less the reserve plus the transit, and
     * it did not wake before that */
    assert_true(p.deadline_ns <=
                caller_deadline - DCTX_RPC_DEFAULT_RESERVE_NS + (p.entered_ns - t_send));
    assert_true(p.returned_ns >= caller_deadline - DCTX_RPC_DEFAULT_RESERVE_NS - US(1));
    rt_ctx_release(ctx);
}

/* The budget is re-anchored when the call arrives, so the callee's
 * deadline is the caller's plus the transit less the reserve (500 us by
 * default). On a link slower than the reserve (50 ms here: a relay holds
 * the Call) the caller's own deadline fires first and pushes a Cancel with
 * cause DEADLINE_EXCEEDED, which follows the Call on the connection. The
 * handler's context still ends with DEADLINE_EXCEEDED, not DCTX_CANCELED:
 * the server ends it as a deadline when that is the cause. (On a direct
 * link the same race happens whenever the transit exceeds the reserve,
 * e.g. under load.) */
static void handler_behind_a_slow_link_ends_with_deadline_exceeded(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    rt_serve(RT_INPROC, NULL, "/it.Deadline/Wait", rt_probe_handler, &p, url);
    rt_relay *r = rt_relay_open(url);
    dctx_rpc_channel *ch = rt_channel_open(r->url, NULL);

    dctx *ctx = rt_with_timeout(MS(100));
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Deadline/Wait", NULL, 0, &o);
    rt_frame *call = rt_relay_from_channel(r);
    assert_non_null(call);
    assert_non_null(call->f);
    assert_int_equal(call->f->body_case, DCTX__WIRE__FRAME__BODY_CALL);
    rt_sleep(MS(50)); /* the slow link: the Call is 50 ms on its way */
    rt_relay_to_server(r, call);
    /* the caller's deadline passes; its Cancel goes straight through */
    int answers = 1;
    rt_frame *cancel = rt_relay_from_channel(r);
    if (cancel != NULL) {
        assert_non_null(cancel->f);
        assert_int_equal(cancel->f->body_case, DCTX__WIRE__FRAME__BODY_CANCEL);
        assert_int_equal(cancel->f->cancel->code, DCTX_DEADLINE_EXCEEDED);
        rt_relay_to_server(r, cancel);
        answers = 2;
    }
    /* the Reply, and the CancelAck if a Cancel went, in the order they come */
    for (int i = 0; i < answers; i++) {
        rt_frame *answer = rt_relay_from_server(r);
        assert_non_null(answer);
        rt_relay_to_channel(r, answer);
    }
    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_DEADLINE_EXCEEDED);
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.cause, DCTX_DEADLINE_EXCEEDED);
    if (p.err != DCTX_DEADLINE_EXCEEDED)
        fail_msg("the handler's context ended with %s (cause %s: \"%s\"), not DEADLINE_EXCEEDED",
                 dctx_code_name(p.err), dctx_code_name(p.cause), p.cause_msg);
    rt_handle_release(h);
    rt_ctx_release(ctx);
}

static void caller_gets_deadline_exceeded_on_time_from_a_handler_that_never_answers(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_SLEEP, SEC(1)); /* ignores its context */
    char url[256];
    rt_serve(RT_TCP, NULL, "/it.Deadline/Sleep", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    int64_t t0 = dctx_now();
    dctx *ctx = rt_with_timeout(MS(100));
    dctx_rpc_result res;
    int rc = dctx_rpc_call_raw(ch, ctx, "/it.Deadline/Sleep", NULL, 0, &res);
    int64_t elapsed = dctx_now() - t0;
    assert_int_equal(rc, DCTX_DEADLINE_EXCEEDED);
    assert_contains(res.message, "deadline exceeded");
    /* at the deadline, not when the handler would have answered (1 s) */
    assert_ns_in(elapsed, MS(100), MS(100) + MS(400));
    assert_int_equal(atomic_load(&p.finished), 0);
    dctx_rpc_result_free(&res);
    rt_ctx_release(ctx);
}

static void reserve_is_taken_off_the_callees_budget(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    rt_serve(RT_INPROC, NULL, "/it.Policy/Probe", rt_probe_handler, &p, url);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.policy.reserve_ns = MS(40);
    dctx_rpc_channel *ch = rt_channel_open(url, &co);

    dctx *ctx = rt_with_timeout(MS(300));
    int64_t caller_deadline = 0;
    assert_true(dctx_deadline(ctx, &caller_deadline));
    int64_t t_send = dctx_now();
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Policy/Probe", NULL, 0, NULL), DCTX_OK);
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_true(p.had_deadline);
    /* the callee's deadline is the caller's minus the reserve (budgets are
     * whole us, rounded down), re-anchored on arrival: plus the transit */
    assert_ns_in(p.deadline_ns, caller_deadline - MS(40) - US(1),
                 caller_deadline - MS(40) + (p.entered_ns - t_send));
    /* measured at the handler */
    assert_ns_in(p.deadline_ns - p.entered_ns, 1, MS(300) - MS(40));
    rt_ctx_release(ctx);
}

static void budget_under_the_channel_minimum_is_not_sent(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_INPROC, NULL, "/it.Policy/Probe", rt_probe_handler, &p, url);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.policy.min_budget_ns = SEC(5);
    dctx_rpc_channel *ch = rt_channel_open(url, &co);

    dctx *ctx = rt_with_timeout(SEC(2));
    dctx_rpc_result res;
    int64_t t0 = dctx_now();
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Policy/Probe", NULL, 0, &res),
                     DCTX_DEADLINE_EXCEEDED);
    assert_ns_in(dctx_now() - t0, 0, SEC(1)); /* at once, not at the 2 s deadline */
    assert_contains(res.message, "minimum");
    dctx_rpc_result_free(&res);
    rt_ctx_release(ctx);

    /* a budget above the minimum goes */
    ctx = rt_with_timeout(SEC(10));
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Policy/Probe", NULL, 0, NULL), DCTX_OK);
    rt_ctx_release(ctx);

    dctx_rpc_channel_stats cs = rt_channel_stats(ch);
    assert_int_equal(cs.not_sent_budget, 1);
    assert_int_equal(cs.calls, 1);
    assert_int_equal(rt_server_stats(srv).calls, 1);
    assert_int_equal(atomic_load(&p.runs), 1);
}

static void call_whose_budget_ran_out_in_the_queue_is_refused_unrun(void **state)
{
    (void)state;
    static rt_probe probes[2];
    rt_probe_init(&probes[0], RT_PROBE_HOLD, SEC(10));
    rt_probe_init(&probes[1], RT_PROBE_RETURN, 0);
    dctx_rpc_server_options so = rt_server_options(1);
    char url[256];
    dctx_rpc_server *srv =
        rt_serve(RT_INPROC, &so, "/it.Queue/Probe", rt_probes_handler, probes, url);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.policy.reserve_ns = SEC(1); /* the callee's budget ends 1 s before ours */
    dctx_rpc_channel *ch = rt_channel_open(url, &co);

    static rt_outcome o0, o1;
    uint8_t r0 = 0, r1 = 1;
    dctx_rpc_handle *h0 = rt_start(ch, NULL, "/it.Queue/Probe", &r0, 1, &o0);
    assert_true(WAIT_FOR(atomic_load(&probes[0].started), SEC(5))); /* the one worker is busy */
    dctx *ctx = rt_with_timeout(SEC(1) + MS(100));                  /* budget: 100 ms */
    dctx_rpc_handle *h1 = rt_start(ch, ctx, "/it.Queue/Probe", &r1, 1, &o1);
    assert_true(WAIT_FOR(rt_server_stats(srv).calls == 2, SEC(5)));
    rt_sleep(MS(150)); /* its budget runs out in the queue */
    atomic_store(&probes[0].release, 1);

    rt_finish(h1, SEC(5));
    assert_int_equal(o1.code, DCTX_DEADLINE_EXCEEDED);
    assert_contains(o1.message, "queued"); /* the callee's answer, not our own deadline */
    assert_int_equal(o1.cancel_outcome, DCTX_RPC_CANCEL_NONE);
    assert_int_equal(atomic_load(&probes[1].runs), 0);
    assert_int_equal(rt_server_stats(srv).expired_in_queue, 1);
    rt_finish(h0, SEC(5));
    assert_int_equal(o0.code, DCTX_OK);
    rt_handle_release(h0);
    rt_handle_release(h1);
    rt_ctx_release(ctx);
}

int main(int argc, char **argv)
{
    rt_init("rpc_deadlines", RT_PORTS_DEADLINES);
    int child = rt_child_main(argc, argv);
    if (child >= 0)
        return child;
    const struct CMUnitTest tests[] = {
        RT_TEST(callee_sees_a_100_ms_timeout_as_a_deadline_at_most_100_ms_away),
        RT_TEST(budget_sent_after_waiting_for_a_connection_excludes_the_wait),
        RT_TEST(handler_waiting_on_its_context_ends_with_deadline_exceeded),
        RT_TEST(handler_behind_a_slow_link_ends_with_deadline_exceeded),
        RT_TEST(caller_gets_deadline_exceeded_on_time_from_a_handler_that_never_answers),
        RT_TEST(reserve_is_taken_off_the_callees_budget),
        RT_TEST(budget_under_the_channel_minimum_is_not_sent),
        RT_TEST(call_whose_budget_ran_out_in_the_queue_is_refused_unrun),
    };
    return cmocka_run_group_tests_name("rpc_deadlines", tests, rt_group_setup, NULL);
}
