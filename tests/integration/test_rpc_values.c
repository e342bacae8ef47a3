/*
 * test_rpc_values.c - values across the wire: a value under a propagated,
 * registered key arrives under that key and one under an unpropagated key
 * never leaves; a hop that does not know a key hides its value from its
 * handler but passes it on to the next hop; and the channel's propagation
 * policy (send all, none, or a listed few).
 */
#include <stdio.h>
#include <string.h>

#include "rpc_testutil.h"

static void registered_value_arrives_under_its_key_and_unpropagated_never(void **state)
{
    (void)state;
    static struct rt_seen_values seen;
    memset(&seen, 0, sizeof seen);
    char url[256];
    rt_serve(RT_INPROC, NULL, "/it.Values/Record", rt_values_handler, &seen, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx *ctx = rt_with_value(rt_with_cancel(), &rt_key_tenant, "acme");
    ctx = rt_with_value(ctx, &rt_key_secret, "hunter2");
    ctx = rt_with_value(ctx, &rt_key_trace, "00-abc");
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Values/Record", NULL, 0, NULL), DCTX_OK);
    assert_true(WAIT_FOR(atomic_load(&seen.done), SEC(5)));
    assert_true(seen.tenant);
    assert_string_equal(seen.tenant_v, "acme");
    assert_true(seen.trace);
    assert_string_equal(seen.trace_v, "00-abc");
    assert_false(seen.secret);
    rt_ctx_release(ctx);
}

/* Two processes' registries in one: hop A registers rt_key_pass in the
 * middle of its call, after it rebuilt its context (so A does not know
 * the key) and before it calls B (which rebuilds after, and does). */
static void unregistered_value_is_hidden_but_passes_through_to_the_next_hop(void **state)
{
    (void)state;
    static struct rt_seen_values at_b;
    memset(&at_b, 0, sizeof at_b);
    char url_a[256], url_b[256];
    rt_serve(RT_TCP, NULL, "/it.Values/Record", rt_values_handler, &at_b, url_b);
    static struct rt_hop a;
    memset(&a, 0, sizeof a);
    a.next_method = "/it.Values/Record";
    a.register_pass = true;
    a.next = rt_channel_open(url_b, NULL);
    rt_serve(RT_INPROC, NULL, "/it.Chain/Forward", rt_hop_handler, &a, url_a);
    dctx_rpc_channel *ch = rt_channel_open(url_a, NULL);

    dctx *ctx = rt_with_value(rt_with_timeout(SEC(5)), &rt_key_tenant, "acme");
    ctx = rt_with_value(ctx, &rt_key_pass, "through");
    ctx = rt_with_value(ctx, &rt_key_secret, "hunter2");
    int64_t caller_deadline = 0;
    assert_true(dctx_deadline(ctx, &caller_deadline));
    int64_t t_send = dctx_now();
    dctx_rpc_result res;
    int rc = dctx_rpc_call_raw(ch, ctx, "/it.Chain/Forward", NULL, 0, &res);
    if (rc != DCTX_OK)
        fail_msg("chain call: %s %s", dctx_code_name(rc), res.message);
    dctx_rpc_result_free(&res);
    assert_true(WAIT_FOR(atomic_load(&a.done) && atomic_load(&at_b.done), SEC(5)));
    assert_int_equal(a.register_rc, 0);

    /* A: registered keys only; the unregistered one is not visible */
    assert_true(a.has_tenant);
    assert_false(a.has_pass);
    assert_false(a.has_secret);
    /* B: A passed it on untouched */
    assert_true(at_b.tenant);
    assert_string_equal(at_b.tenant_v, "acme");
    assert_true(at_b.pass);
    assert_string_equal(at_b.pass_v, "through");
    assert_false(at_b.secret);
    /* and the deadline went along, each hop's at most the previous one's
     * less the reserve plus the transit to it */
    assert_true(a.had_deadline && at_b.had_deadline);
    assert_true(a.deadline_ns <=
                caller_deadline - DCTX_RPC_DEFAULT_RESERVE_NS + (a.entered_ns - t_send));
    assert_true(at_b.deadline_ns <=
                a.deadline_ns - DCTX_RPC_DEFAULT_RESERVE_NS + (at_b.entered_ns - a.entered_ns));
    rt_ctx_release(ctx);
}

static void send_none_sends_no_values_and_send_listed_only_the_listed(void **state)
{
    (void)state;
    static struct rt_seen_values seen;
    memset(&seen, 0, sizeof seen);
    char url[256];
    rt_serve(RT_INPROC, NULL, "/it.Values/Record", rt_values_handler, &seen, url);
    dctx_rpc_channel_options none, listed;
    dctx_rpc_channel_options_init(&none);
    none.policy.send = DCTX_WIRE_SEND_NONE;
    static const char *const names[] = {"it-tenant"};
    dctx_rpc_channel_options_init(&listed);
    listed.policy.send = DCTX_WIRE_SEND_LISTED;
    listed.policy.listed = names;
    listed.policy.n_listed = 1;
    dctx_rpc_channel *ch_all = rt_channel_open(url, NULL);
    dctx_rpc_channel *ch_none = rt_channel_open(url, &none);
    dctx_rpc_channel *ch_listed = rt_channel_open(url, &listed);
    dctx *ctx = rt_with_value(rt_with_cancel(), &rt_key_tenant, "acme");
    ctx = rt_with_value(ctx, &rt_key_trace, "00-abc");

    dctx_rpc_channel *chs[] = {ch_all, ch_none, ch_listed};
    bool want_tenant[] = {true, false, true}, want_trace[] = {true, false, false};
    for (int i = 0; i < 3; i++) {
        memset(&seen, 0, sizeof seen);
        assert_int_equal(dctx_rpc_call_raw(chs[i], ctx, "/it.Values/Record", NULL, 0, NULL),
                         DCTX_OK);
        assert_true(WAIT_FOR(atomic_load(&seen.done), SEC(5)));
        assert_int_equal(seen.tenant, want_tenant[i]);
        assert_int_equal(seen.trace, want_trace[i]);
    }
    rt_ctx_release(ctx);
}

int main(int argc, char **argv)
{
    rt_init("rpc_values", RT_PORTS_VALUES);
    int child = rt_child_main(argc, argv);
    if (child >= 0)
        return child;
    const struct CMUnitTest tests[] = {
        RT_TEST(registered_value_arrives_under_its_key_and_unpropagated_never),
        RT_TEST(unregistered_value_is_hidden_but_passes_through_to_the_next_hop),
        RT_TEST(send_none_sends_no_values_and_send_listed_only_the_listed),
    };
    return cmocka_run_group_tests_name("rpc_values", tests, rt_group_setup, NULL);
}
