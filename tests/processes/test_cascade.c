/*
 * test_cascade.c - contexts across processes: rpcd instances in separate
 * processes, chained with --next over ipc, called from this test.
 *   - a cancel at the caller reaches the third hop (caller -> A -> B -> C);
 *   - a deadline set at the caller bounds the third hop;
 *   - one hop fanning out to five next hops: all five are canceled;
 *   - a caller killed with SIGKILL: its calls are canceled at the server
 *     and, through it, downstream;
 *   - a server killed with SIGKILL: the caller's call fails with
 *     UNAVAILABLE at once, not at its deadline.
 * What a hop saw is read from its own Stats and JSON log.
 */
#include "procs.h"
#include "testutil.h"

#ifndef RPCD_PATH
#error "RPCD_PATH must name the rpcd binary"
#endif

static struct procs P;

static int setup(void **state)
{
    (void)state;
    procs_init(&P);
    return 0;
}

/* Every rpcd must stop cleanly on SIGTERM: a sanitizer report or a hang
 * in one of them fails the test. */
static int teardown(void **state)
{
    (void)state;
    return procs_stop_all(&P) == 0 ? 0 : -1;
}

/* Start `rpcd serve` named name, with up to 6 next hops (names). */
static void serve(const char *name, const char *const *next, int n_next)
{
    char bufs[8][160]; /* argv needs them only until the spawn */
    int used = 0;
    const char *argv[32];
    int a = 0;
    argv[a++] = RPCD_PATH;
    argv[a++] = "serve";
    argv[a++] = "--listen";
    procs_url(&P, name, bufs[used], sizeof bufs[0]);
    argv[a++] = bufs[used++];
    argv[a++] = "--name";
    argv[a++] = name;
    argv[a++] = "--log";
    procs_log(&P, name, bufs[used], sizeof bufs[0]);
    argv[a++] = bufs[used++];
    for (int i = 0; i < n_next; i++) {
        argv[a++] = "--next";
        procs_url(&P, next[i], bufs[used], sizeof bufs[0]);
        argv[a++] = bufs[used++];
    }
    argv[a] = NULL;
    procs_spawn(&P, argv);
    char url[160];
    procs_url(&P, name, url, sizeof url);
    assert_true(procs_wait_up(url));
}

static dctx_rpc_channel *channel_to(const char *name)
{
    char url[160];
    procs_url(&P, name, url, sizeof url);
    dctx_rpc_channel *ch = NULL;
    assert_int_equal(dctx_rpc_channel_open(url, NULL, &ch), 0);
    return ch;
}

static long long stat_of(const char *name, const char *key)
{
    char url[160], json[4096];
    procs_url(&P, name, url, sizeof url);
    assert_true(procs_stats(url, json, sizeof json));
    return json_number(json, key);
}

static void three_hops(void)
{
    const char *to_c[] = {"C"}, *to_b[] = {"B"};
    serve("C", NULL, 0);
    serve("B", to_c, 1);
    serve("A", to_b, 1);
}

static void cancel_at_the_caller_reaches_the_third_hop(void **state)
{
    (void)state;
    three_hops();
    dctx_rpc_channel *ch = channel_to("A");
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_cancel(dctx_background(), &ctx), 0);
    dctx_rpc_handle *h = NULL;
    assert_int_equal(
        dctx_rpc_call_start(ch, ctx, "/dctx.demo.Demo/Chain", "30s", 3, NULL, NULL, &h), 0);
    char log[160];
    procs_log(&P, "C", log, sizeof log);
    /* the call reached C */
    assert_true(procs_log_has(log, "\"call_start\",\"method\":\"/dctx.demo.Demo/", 5000));
    /* counted from here: a start-up probe that ran out of its deadline on
     * a slow (sanitizer) build pushed a cancel of its own */
    int64_t cancels_before = stat_of("C", "cancels_received");
    int64_t t0 = dctx_now();
    dctx_cancel_cause(ctx, DCTX_ABORTED, "the user left");
    assert_int_equal(dctx_rpc_handle_result(h, NULL), DCTX_CANCELED);
    /* C's handler saw the cancel, with the caller's cause, hop after hop */
    assert_true(procs_log_has(
        log, "\"cause\":\"ABORTED\",\"cause_message\":\"the user left\",\"outcome\":\"stopped\"",
        5000));
    assert_true(procs_log_has(log, "\"status\":\"ABORTED\"", 5000));
    assert_true(dctx_now() - t0 < SEC(5));
    assert_int_equal(stat_of("C", "cancels_received"), cancels_before + 1);
    assert_int_equal(dctx_rpc_handle_cancel_outcome(h, SEC(5)), DCTX_RPC_CANCEL_STOPPED);
    dctx_rpc_handle_release(h);
    dctx_release(ctx);
    dctx_rpc_channel_close(ch);
}

static void deadline_at_the_caller_bounds_the_third_hop(void **state)
{
    (void)state;
    three_hops();
    dctx_rpc_channel *ch = channel_to("A");
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_timeout(dctx_background(), MS(300), &ctx), 0);
    int64_t t0 = dctx_now();
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/dctx.demo.Demo/Chain", "30s", 3, &res),
                     DCTX_DEADLINE_EXCEEDED);
    int64_t took = dctx_now() - t0;
    /* Each of the three hops keeps the channel's reply reserve back, so C
     * gives up that much before the caller's deadline and its answer comes
     * home in time. */
    assert_true(took >= MS(300) - 3 * DCTX_RPC_DEFAULT_RESERVE_NS);
    assert_true(took < SEC(3));
    dctx_rpc_result_free(&res);
    /* C saw at most the caller's budget and ended on its deadline */
    char log[160];
    procs_log(&P, "C", log, sizeof log);
    assert_true(procs_log_has(log, "\"status\":\"DEADLINE_EXCEEDED\"", 5000));
    char *text = procs_slurp(log);
    long long left =
        json_number(strstr(text, "\"call_start\",\"method\":\"/dctx.demo.Demo/"), "deadline_in_us");
    free(text);
    assert_true(left > 0);
    /* never later than the caller's */
    assert_true(left <= 300000 - 3 * DCTX_RPC_DEFAULT_RESERVE_NS / 1000);
    dctx_release(ctx);
    dctx_rpc_channel_close(ch);
}

static void fan_out_to_five_hops_cancels_all_five(void **state)
{
    (void)state;
    const char *leaves[] = {"L1", "L2", "L3", "L4", "L5"};
    for (int i = 0; i < 5; i++)
        serve(leaves[i], NULL, 0);
    serve("F", leaves, 5);
    dctx_rpc_channel *ch = channel_to("F");
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_cancel(dctx_background(), &ctx), 0);
    dctx_rpc_handle *h = NULL;
    assert_int_equal(
        dctx_rpc_call_start(ch, ctx, "/dctx.demo.Demo/Chain", "30s", 3, NULL, NULL, &h), 0);
    char log[160];
    for (int i = 0; i < 5; i++) {
        procs_log(&P, leaves[i], log, sizeof log);
        assert_true(procs_log_has(log, "\"call_start\",\"method\":\"/dctx.demo.Demo/", 5000));
    }
    dctx_cancel(ctx);
    assert_int_equal(dctx_rpc_handle_result(h, NULL), DCTX_CANCELED);
    for (int i = 0; i < 5; i++) {
        procs_log(&P, leaves[i], log, sizeof log);
        assert_true(procs_log_has(log, "\"status\":\"CANCELLED\"", 5000));
    }
    assert_int_equal(stat_of("F", "cancels_pushed"), 5);
    dctx_rpc_handle_release(h);
    dctx_release(ctx);
    dctx_rpc_channel_close(ch);
}

static void killed_caller_is_a_cancel_downstream(void **state)
{
    (void)state;
    const char *to_b[] = {"B"};
    serve("B", NULL, 0);
    serve("A", to_b, 1);
    char url[160];
    procs_url(&P, "A", url, sizeof url);
    const char *argv[] = {RPCD_PATH, "call", url, "/dctx.demo.Demo/Chain", "--data", "30s", NULL};
    pid_t caller = procs_spawn(&P, argv);
    char log_b[160], log_a[160];
    procs_log(&P, "B", log_b, sizeof log_b);
    procs_log(&P, "A", log_a, sizeof log_a);
    assert_true(procs_log_has(log_b, "\"call_start\",\"method\":\"/dctx.demo.Demo/", 5000));
    kill(caller, SIGKILL);
    /* A loses its caller: the handler's context is canceled, so A pushes a
     * cancel to B, and B's handler ends */
    assert_true(procs_log_has(log_a, "\"cancel_pushed\"", 5000));
    assert_true(procs_log_has(log_b, "\"status\":\"CANCELLED\"", 5000));
    assert_int_equal(stat_of("A", "peers_lost") >= 1, 1);
}

static void killed_server_fails_the_call_at_once(void **state)
{
    (void)state;
    serve("S", NULL, 0);
    dctx_rpc_channel *ch = channel_to("S");
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_timeout(dctx_background(), SEC(20), &ctx), 0);
    dctx_rpc_handle *h = NULL;
    assert_int_equal(
        dctx_rpc_call_start(ch, ctx, "/dctx.demo.Demo/Sleep", "30s", 3, NULL, NULL, &h), 0);
    char log[160];
    procs_log(&P, "S", log, sizeof log);
    assert_true(procs_log_has(log, "\"call_start\",\"method\":\"/dctx.demo.Demo/", 5000));
    int64_t t0 = dctx_now();
    kill(P.pids[P.n - 1], SIGKILL);
    assert_int_equal(dctx_rpc_handle_result(h, NULL), DCTX_UNAVAILABLE);
    assert_true(dctx_now() - t0 < SEC(5)); /* not at the 20 s deadline */
    dctx_rpc_handle_release(h);
    dctx_release(ctx);
    dctx_rpc_channel_close(ch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(cancel_at_the_caller_reaches_the_third_hop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(deadline_at_the_caller_bounds_the_third_hop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(fan_out_to_five_hops_cancels_all_five, setup, teardown),
        cmocka_unit_test_setup_teardown(killed_caller_is_a_cancel_downstream, setup, teardown),
        cmocka_unit_test_setup_teardown(killed_server_fails_the_call_at_once, setup, teardown),
    };
    return cmocka_run_group_tests_name("cascade", tests, NULL, NULL);
}
