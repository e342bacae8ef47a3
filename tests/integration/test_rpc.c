/*
 * test_rpc.c - the RPC layer end to end, over real nng sockets (inproc,
 * ipc, loopback tcp): deadlines and cancels crossing the wire, at most once
 * across a lost connection, values and their limits, status codes and
 * malformed input, load and churn, the deadline and propagation policies,
 * cancel outcomes on both sides, transports and protobuf-c services, and
 * graceful shutdown. Raw nng sockets stand in for peers that misbehave or
 * that a test must order; a relay stands in for a network hop whose timing
 * the test decides; a re-executed copy of this program is a server to kill.
 *
 * Tests whose comment starts "Regression" pin a bug this suite found and
 * the library has since fixed (dc7c0e7): the comment says what went wrong
 * and what keeps it from coming back. One test, marked "nng 1.5.2 BUG",
 * checks a bug of nng itself and is skipped unless asked for.
 *
 * What handlers and callbacks write (probes, outcomes, recorders) is
 * static, never on a test's stack: a failing test leaves before the
 * teardown has ended its calls.
 */
#include <stdio.h>
#include <string.h>

#include <dctx/rpc_pb.h>

#include "echo.pb-c.h"
#include "rpc_testutil.h"

/* Keys. The process-wide registry files values received under a name as
 * the key registered for it. tenant and trace are registered in the group
 * setup; pass is registered only by hop A in the pass-through test, in the
 * middle of the call, so that A (which rebuilt its context before) does
 * not know it and B (which rebuilds after) does: two processes' registries
 * in one. */
static const dctx_key k_tenant = {"it-tenant", DCTX_KEY_PROPAGATE};
static const dctx_key k_trace = {"it-trace", DCTX_KEY_PROPAGATE};
static const dctx_key k_secret = {"it-secret", 0};
static const dctx_key k_pass = {"it-pass", DCTX_KEY_PROPAGATE};

/* gRPC's special_status_message (test/core/end2end/tests/...):
 * whitespace, CR/LF, U+263A and U+1F608. */
static const char special_message[] =
    "\t\ntest with whitespace\r\nand Unicode BMP \xe2\x98\xba and non-BMP \xf0\x9f\x98\x88\t\n";

#define assert_contains(hay, needle)                                                   \
    do {                                                                               \
        const char *h_ = (hay), *n_ = (needle);                                        \
        if (h_ == NULL || strstr(h_, n_) == NULL)                                      \
            fail_msg("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_);        \
    } while (0)

/* lo <= v <= hi, in ns, reported in ms */
#define assert_ns_in(v, lo, hi)                                                        \
    do {                                                                               \
        int64_t v_ = (v), lo_ = (lo), hi_ = (hi);                                      \
        if (v_ < lo_ || v_ > hi_)                                                      \
            fail_msg("%s = %.3f ms, expected %.3f..%.3f ms", #v, v_ / 1e6, lo_ / 1e6,    \
                     hi_ / 1e6);                                                       \
    } while (0)

static dctx *with_value(dctx *parent, const dctx_key *key, const char *s)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_value(parent, key, s, strlen(s) + 1, &c), 0);
    rt_ctx_release(parent); /* the child holds it */
    return rt_track_ctx(c);
}

/* A server with one method. */
static dctx_rpc_server *serve1(enum rt_transport t, const dctx_rpc_server_options *opts,
                               const char *method, dctx_rpc_handler_fn fn, void *arg, char *url)
{
    struct rt_method m[] = {{method, fn, arg}};
    return rt_server_open(t, opts, m, 1, url, 256);
}

static dctx_rpc_server_options server_options(int workers)
{
    dctx_rpc_server_options o;
    dctx_rpc_server_options_init(&o);
    o.workers = workers;
    return o;
}

/* ===== 1. Deadline propagation ===== */

/* The budget is the time left when the call is packed less the channel's
 * reserve (DCTX_RPC_DEFAULT_RESERVE_NS), re-anchored when it arrives: the
 * callee's deadline is the caller's less the reserve plus the transit. */
static void callee_sees_a_100_ms_timeout_as_a_deadline_at_most_100_ms_away(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    serve1(RT_INPROC, NULL, "/it.Deadline/Probe", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    dctx *ctx = rt_with_timeout(MS(100));
    int64_t caller_deadline = 0;
    assert_true(dctx_deadline(ctx, &caller_deadline));
    int64_t t_send = dctx_now();
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Deadline/Probe", NULL, 0, NULL), DCTX_OK);
    assert_true(RT_WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(atomic_load(&p.runs), 1);
    assert_true(p.had_deadline);
    /* measured at the handler: no more than 100 ms away, and still ahead */
    assert_ns_in(p.deadline_ns - p.entered_ns, 1, MS(100));
    /* one process, one clock: what was left when sent, less the reserve */
    assert_ns_in(p.deadline_ns, caller_deadline - MS(100),
                 caller_deadline - DCTX_RPC_DEFAULT_RESERVE_NS + (p.entered_ns - t_send));
    rt_ctx_release(ctx);
}

/* A blocking call made on a thread of its own. */
struct thread_call {
    dctx_rpc_channel *ch;
    dctx *ctx;
    const char *method;
    int rc;
    dctx_rpc_result res;
    int64_t returned_ns;
};

static void *thread_call_main(void *arg)
{
    struct thread_call *c = arg;
    c->rc = dctx_rpc_call_raw(c->ch, c->ctx, c->method, NULL, 0, &c->res);
    c->returned_ns = dctx_now();
    return NULL;
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
    static struct thread_call c;
    c.method = "/it.Deadline/Probe";
    c.ch = rt_channel_open(url, &co); /* nothing listens yet */
    c.ctx = rt_with_timeout(SEC(3));
    int64_t caller_deadline = 0;
    assert_true(dctx_deadline(c.ctx, &caller_deadline));
    pthread_t t = start_thread(thread_call_main, &c);
    rt_sleep(MS(300)); /* the call waits for a pipe meanwhile */

    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(NULL, &srv), 0);
    RT_TRACK(servers, srv);
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

/* The channel was opened a while before its server came up: nng's dialer
 * has backed off meanwhile, yet the first call, waiting the default
 * connect_wait (200 ms), reaches the server. */
static void first_call_to_a_server_that_came_up_late_gets_through(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    rt_url(RT_IPC, url, sizeof url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL); /* nothing listens yet */
    rt_sleep(MS(1500)); /* the back-off grows to its maximum */
    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(NULL, &srv), 0);
    RT_TRACK(servers, srv);
    assert_int_equal(dctx_rpc_server_register(srv, "/it.Late/Probe", rt_probe_handler, &p), 0);
    assert_int_equal(dctx_rpc_server_listen(srv, url), 0);
    assert_int_equal(dctx_rpc_server_start(srv), 0);
    dctx_rpc_result res;
    int rc = dctx_rpc_call_raw(ch, NULL, "/it.Late/Probe", NULL, 0, &res);
    if (rc != DCTX_OK)
        fail_msg("the first call failed: %s: %s", dctx_code_name(rc), res.message);
    dctx_rpc_result_free(&res);
    assert_int_equal(atomic_load(&p.runs), 1);
}

static void handler_waiting_on_its_context_ends_with_deadline_exceeded(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    serve1(RT_IPC, NULL, "/it.Deadline/Wait", rt_probe_handler, &p, url);
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
    assert_ns_in(dctx_now() - t0, MS(100) - DCTX_RPC_DEFAULT_RESERVE_NS - US(1),
                 MS(100) + SEC(1));
    dctx_rpc_result_free(&res);

    assert_true(RT_WAIT_FOR(atomic_load(&p.finished), SEC(5)));
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

struct delayed_leg {
    rt_relay *relay;
    nng_msg *call;
    int64_t delay_ns;
    atomic_int done;
};

/* Forward the held Call after a delay, then its answer back. */
static void *delayed_leg_thread(void *arg)
{
    struct delayed_leg *d = arg;
    rt_sleep(d->delay_ns);
    nng_msg *reply = rt_relay_forward(d->relay, 0, d->call);
    if (reply != NULL)
        rt_relay_answer(d->relay, 0, reply);
    atomic_store(&d->done, 1);
    return NULL;
}

/* Regression: the budget is re-anchored when the call arrives, so the
 * callee's deadline is the caller's plus the transit less the reserve
 * (500 us by default). On a link slower than the reserve (50 ms here) the
 * caller's own deadline fires first and pushes a Cancel with cause
 * DEADLINE_EXCEEDED. The handler's context must still end with
 * DEADLINE_EXCEEDED, not DCTX_CANCELED: rpc_server.c call_cancel ends it
 * as a deadline when that is the cause. (On a direct link the same race
 * happens whenever the transit exceeds the reserve, e.g. under load.) */
static void handler_behind_a_slow_link_ends_with_deadline_exceeded(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    serve1(RT_INPROC, NULL, "/it.Deadline/Wait", rt_probe_handler, &p, url);
    rt_relay *r = rt_relay_open(url);
    dctx_rpc_channel *ch = rt_channel_open(r->url, NULL);

    dctx *ctx = rt_with_timeout(MS(100));
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Deadline/Wait", NULL, 0, &o);
    static struct delayed_leg leg;
    memset(&leg, 0, sizeof leg);
    leg.relay = r;
    leg.delay_ns = MS(50);
    leg.call = rt_relay_take(r, 0);
    assert_non_null(leg.call);
    pthread_t t = start_thread(delayed_leg_thread, &leg);
    /* the caller's deadline passes; its cancel goes straight through */
    nng_msg *cancel = rt_relay_take(r, 1);
    if (cancel != NULL) {
        nng_msg *ack = rt_relay_forward(r, 1, cancel);
        if (ack != NULL)
            rt_relay_answer(r, 1, ack);
    }
    join_thread(t);
    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_DEADLINE_EXCEEDED);
    assert_true(RT_WAIT_FOR(atomic_load(&p.finished), SEC(5)));
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
    serve1(RT_TCP, NULL, "/it.Deadline/Sleep", rt_probe_handler, &p, url);
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

/* ===== 2. Cancel push ===== */

static void cancel_cause_reaches_the_running_handler_which_reports_stopped(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    dctx_rpc_server *srv = serve1(RT_IPC, NULL, "/it.Cancel/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Cancel/Wait", NULL, 0, &o);
    assert_true(RT_WAIT_FOR(atomic_load(&p.started), SEC(5)));
    int64_t t_cancel = dctx_now();
    dctx_cancel_cause(ctx, DCTX_ABORTED, "user pressed stop");

    rt_finish(h, SEC(5));
    assert_int_equal(atomic_load(&o.callbacks), 1);
    assert_int_equal(o.code, DCTX_CANCELED);
    assert_contains(o.message, "user pressed stop");
    assert_int_equal(dctx_rpc_handle_cancel_outcome(h, SEC(5)), DCTX_RPC_CANCEL_STOPPED);

    /* what the handler saw, measured there */
    assert_true(RT_WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_int_equal(p.cause, DCTX_ABORTED);
    assert_true(p.has_cause_msg);
    assert_string_equal(p.cause_msg, "user pressed stop");
    assert_ns_in(p.returned_ns - t_cancel, 0, SEC(1));

    dctx_rpc_server_stats ss = rt_server_stats(srv);
    assert_int_equal(ss.cancels_received, 1);
    assert_int_equal(ss.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED], 1);
    dctx_rpc_channel_stats cs = rt_channel_stats(ch);
    assert_int_equal(cs.cancels_pushed, 1);
    assert_int_equal(cs.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED], 1);
    assert_int_equal(cs.by_code[DCTX_CANCELED], 1);

    rt_handle_release(h);
    rt_ctx_release(ctx);
}

/* The push is the canceling thread's own work, done inside dctx_cancel:
 * no hand-off to another thread stands between a cancel and its frame. */
struct push_seen {
    atomic_int pushes;
    pthread_t thread;
};

static void record_push(void *arg, const dctx_rpc_event *ev)
{
    struct push_seen *s = arg;
    if (ev->kind == DCTX_RPC_EVENT_CANCEL_PUSHED) {
        s->thread = pthread_self();
        atomic_fetch_add(&s->pushes, 1);
    }
}

static void cancel_is_pushed_by_the_canceling_thread_before_cancel_returns(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    dctx_rpc_server *srv = serve1(RT_IPC, NULL, "/it.Cancel/Wait", rt_probe_handler, &p, url);
    static struct push_seen seen;
    atomic_store(&seen.pushes, 0);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.on_event = record_push;
    co.event_arg = &seen;
    dctx_rpc_channel *ch = rt_channel_open(url, &co);

    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Cancel/Wait", NULL, 0, &o);
    assert_true(RT_WAIT_FOR(atomic_load(&p.started), SEC(5)));
    dctx_cancel(ctx);
    /* no wait: the frame is on its way when dctx_cancel returns */
    assert_int_equal(atomic_load(&seen.pushes), 1);
    assert_true(pthread_equal(seen.thread, pthread_self()));
    assert_int_equal(rt_channel_stats(ch).cancels_pushed, 1);

    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_CANCELED);
    assert_int_equal(dctx_rpc_handle_cancel_outcome(h, SEC(5)), DCTX_RPC_CANCEL_STOPPED);
    assert_true(RT_WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_int_equal(rt_server_stats(srv).cancel_outcomes[DCTX_RPC_CANCEL_STOPPED], 1);
    rt_handle_release(h);
    rt_ctx_release(ctx);
}

/* Regression: dctx_rpc_handle_cancel_outcome asked right after
 * dctx_cancel must wait for the cancel's answer, not answer NONE ("no
 * cancel was pushed"). The push once ran on a library thread after
 * dctx_cancel returned, with the outcome word still NONE; it now runs on
 * the canceling thread inside dctx_cancel, which sets the word PENDING
 * before the frame goes (rpc_client.c context_done). */
static void cancel_outcome_asked_right_after_the_cancel_waits_for_the_answer(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    serve1(RT_IPC, NULL, "/it.Cancel/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    enum { ROUNDS = 20 };
    int answered_none = 0;
    for (int i = 0; i < ROUNDS; i++) {
        rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10)); /* the last call's handler is done */
        dctx *ctx = rt_with_cancel();
        static rt_outcome o;
        dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Cancel/Wait", NULL, 0, &o);
        assert_true(RT_WAIT_FOR(atomic_load(&p.started), SEC(5)));
        dctx_cancel(ctx);
        int outcome = dctx_rpc_handle_cancel_outcome(h, SEC(5));
        if (outcome == DCTX_RPC_CANCEL_NONE)
            answered_none++;
        else
            assert_int_equal(outcome, DCTX_RPC_CANCEL_STOPPED);
        rt_finish(h, SEC(5));
        assert_int_equal(o.code, DCTX_CANCELED);
        /* asked again once the call has ended, the answer is there */
        assert_int_equal(dctx_rpc_handle_cancel_outcome(h, SEC(5)), DCTX_RPC_CANCEL_STOPPED);
        assert_true(RT_WAIT_FOR(atomic_load(&p.finished), SEC(5)));
        rt_handle_release(h);
        rt_ctx_release(ctx);
    }
    if (answered_none > 0)
        fail_msg("%d of %d times the outcome asked right after dctx_cancel was \"none\" "
                 "(no cancel pushed) although the handler was then stopped",
                 answered_none, ROUNDS);
}

/* A handler that calls onward with the context it was given. */
struct hop {
    dctx_rpc_channel *next;
    const char *next_method;
    bool register_pass; /* register k_pass between rebuilding and calling on */
    int register_rc;
    int onward_rc;
    char onward_msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
    /* what this hop saw */
    atomic_int done;
    bool has_tenant, has_secret, has_pass, had_deadline;
    int64_t deadline_ns, entered_ns;
};

static int hop_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    struct hop *a = arg;
    a->entered_ns = dctx_now();
    a->has_tenant = dctx_value(ctx, &k_tenant, NULL) != NULL;
    a->has_secret = dctx_value(ctx, &k_secret, NULL) != NULL;
    a->has_pass = dctx_value(ctx, &k_pass, NULL) != NULL;
    a->had_deadline = dctx_deadline(ctx, &a->deadline_ns);
    if (a->register_pass)
        a->register_rc = dctx_wire_register_key(&k_pass);
    dctx_rpc_result res;
    a->onward_rc = dctx_rpc_call_raw(a->next, ctx, a->next_method, req, len, &res);
    snprintf(a->onward_msg, sizeof a->onward_msg, "%s", res.message);
    dctx_rpc_reply_set_message(reply, "%s", res.message);
    dctx_rpc_result_free(&res);
    int rc = a->onward_rc;
    atomic_store(&a->done, 1); /* the test may be gone after this */
    return rc;
}

static void cancel_crosses_two_hops_with_its_cause(void **state)
{
    (void)state;
    static rt_probe at_b;
    rt_probe_init(&at_b, RT_PROBE_WAIT_CTX, SEC(10));
    char url_a[256], url_b[256];
    serve1(RT_INPROC, NULL, "/it.B/Wait", rt_probe_handler, &at_b, url_b);
    static struct hop a;
    memset(&a, 0, sizeof a);
    a.next_method = "/it.B/Wait";
    a.next = rt_channel_open(url_b, NULL);
    serve1(RT_IPC, NULL, "/it.A/Forward", hop_handler, &a, url_a);
    dctx_rpc_channel *ch = rt_channel_open(url_a, NULL);

    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.A/Forward", NULL, 0, &o);
    assert_true(RT_WAIT_FOR(atomic_load(&at_b.started), SEC(5)));
    dctx_cancel_cause(ctx, DCTX_ABORTED, "stop the chain");
    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_CANCELED);

    assert_true(RT_WAIT_FOR(atomic_load(&at_b.finished), SEC(5)));
    assert_int_equal(at_b.err, DCTX_CANCELED);
    assert_int_equal(at_b.cause, DCTX_ABORTED);
    assert_string_equal(at_b.cause_msg, "stop the chain");
    assert_true(RT_WAIT_FOR(atomic_load(&a.done), SEC(5)));
    assert_int_equal(a.onward_rc, DCTX_CANCELED);
    rt_handle_release(h);
    rt_ctx_release(ctx);
}

/* ===== 3. A cancel that overtakes its call (raw frames) ===== */

static void cancel_that_overtakes_its_call_refuses_the_call_unrun(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    dctx_rpc_server *srv = serve1(RT_INPROC, NULL, "/it.Raw/Probe", rt_probe_handler, &p, url);
    nng_socket s = rt_raw_req(url);

    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t len;
    uint8_t *buf = rt_pack_cancel(token, DCTX_ABORTED, "overtaking", 5000000, &len);
    rt_send_bytes(s, buf, len);
    assert_int_equal(rt_recv_cancel_ack(s), DCTX_RPC_CANCEL_PREVENTED);

    buf = rt_pack_call("/it.Raw/Probe", token, 0, "x", 1, &len);
    int64_t t0 = dctx_now();
    rt_send_bytes(s, buf, len);
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
    assert_int_equal(rt_recv_reply(s, msg, sizeof msg), DCTX_CANCELED);
    assert_ns_in(dctx_now() - t0, 0, SEC(1)); /* at once: nothing waited for */
    assert_int_equal(atomic_load(&p.runs), 0);

    dctx_rpc_server_stats st = rt_server_stats(srv);
    assert_int_equal(st.cancels_received, 1);
    assert_int_equal(st.cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED], 1);
    assert_int_equal(st.calls, 1);
    assert_int_equal(st.by_code[DCTX_CANCELED], 1);
    assert_true(RT_WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));

    /* and it still serves a call of its own */
    rt_token(token);
    buf = rt_pack_call("/it.Raw/Probe", token, 0, "x", 1, &len);
    rt_send_bytes(s, buf, len);
    assert_int_equal(rt_recv_reply(s, NULL, 0), DCTX_OK);
    assert_int_equal(atomic_load(&p.runs), 1);
}

static void cancel_of_a_finished_call_is_too_late(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    dctx_rpc_server *srv = serve1(RT_INPROC, NULL, "/it.Raw/Probe", rt_probe_handler, &p, url);
    nng_socket s = rt_raw_req(url);
    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t len;
    uint8_t *buf = rt_pack_call("/it.Raw/Probe", token, 0, NULL, 0, &len);
    rt_send_bytes(s, buf, len);
    assert_int_equal(rt_recv_reply(s, NULL, 0), DCTX_OK);
    assert_true(RT_WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));

    buf = rt_pack_cancel(token, DCTX_CANCELED, "", 1000000, &len);
    rt_send_bytes(s, buf, len);
    assert_int_equal(rt_recv_cancel_ack(s), DCTX_RPC_CANCEL_TOO_LATE);
    assert_int_equal(rt_server_stats(srv).cancel_outcomes[DCTX_RPC_CANCEL_TOO_LATE], 1);
    assert_int_equal(atomic_load(&p.runs), 1);
}

static void replayed_call_is_refused_and_runs_once(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    serve1(RT_TCP, NULL, "/it.Raw/Probe", rt_probe_handler, &p, url);
    nng_socket s = rt_raw_req(url);
    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t len;
    uint8_t *buf = rt_pack_call("/it.Raw/Probe", token, 0, NULL, 0, &len);
    assert_int_equal(nng_send(s, buf, len, 0), 0);
    assert_int_equal(rt_recv_reply(s, NULL, 0), DCTX_OK);
    rt_send_bytes(s, buf, len); /* the same bytes again: a replay */
    int code = rt_recv_reply(s, NULL, 0);
    assert_int_not_equal(code, DCTX_OK);
    assert_int_equal(code, DCTX_ALREADY_EXISTS);
    assert_int_equal(atomic_load(&p.runs), 1);
}

/* ===== 4. Peer loss ===== */

static void lost_caller_cancels_the_handler_and_is_counted(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    dctx_rpc_server *srv = serve1(RT_TCP, NULL, "/it.Loss/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, NULL, "/it.Loss/Wait", NULL, 0, &o);
    assert_true(RT_WAIT_FOR(atomic_load(&p.started), SEC(5)));

    rt_channel_close(ch); /* ends the call and waits for its callback */
    assert_int_equal(atomic_load(&o.callbacks), 1);
    assert_int_equal(o.code, DCTX_UNAVAILABLE);
    assert_true(dctx_rpc_handle_wait(h, 0));
    rt_handle_release(h);

    assert_true(RT_WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_contains(p.cause_msg, "caller lost");
    assert_true(RT_WAIT_FOR(rt_server_stats(srv).calls_canceled_by_peer_loss == 1, SEC(5)));
    dctx_rpc_server_stats st = rt_server_stats(srv);
    assert_int_equal(st.peers_lost, 1);
    assert_int_equal(st.calls_canceled_by_peer_loss, 1);
    assert_true(RT_WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));
}

/* A server in a child process, on a fresh tcp address. */
static pid_t child_server(char *url, char *shared_path, rt_child_shared **sh)
{
    snprintf(shared_path, 256, "%s/child-%d", rt_tmpdir(), atomic_fetch_add(&rt_seq, 1));
    *sh = rt_child_shared_map(shared_path, true);
    assert_non_null(*sh);
    pid_t pid = 0;
    for (int tries = 0; tries < 20; tries++) {
        rt_url(RT_TCP, url, 256);
        if (rt_child_start(url, shared_path, *sh, &pid))
            return pid;
    }
    fail_msg("no child server could start");
    return 0;
}

static void server_killed_mid_call_fails_the_call_unavailable_at_once(void **state)
{
    (void)state;
    char url[256], shared[256];
    rt_child_shared *sh = NULL;
    pid_t pid = child_server(url, shared, &sh);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    dctx *ctx = rt_with_timeout(SEC(10));
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/rt.Child/Block", NULL, 0, &o);
    assert_true(RT_WAIT_FOR(atomic_load(&sh->block_runs) == 1, SEC(10)));
    int64_t t_kill = dctx_now();
    rt_child_kill(pid);

    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_UNAVAILABLE);
    assert_ns_in(o.ended_ns - t_kill, 0, SEC(2)); /* well before the 10 s deadline */
    rt_handle_release(h);
    rt_ctx_release(ctx);
    munmap(sh, sizeof *sh);
}

/* ===== 5. At most once ===== */

static void call_runs_at_most_once_when_its_connection_drops_and_returns(void **state)
{
    (void)state;
    char url[256], shared[256];
    rt_child_shared *sh = NULL;
    pid_t pid = child_server(url, shared, &sh);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    dctx *ctx = rt_with_timeout(SEC(10));
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/rt.Child/Block", NULL, 0, &o);
    assert_true(RT_WAIT_FOR(atomic_load(&sh->block_runs) == 1, SEC(10)));
    rt_child_kill(pid);

    /* the server comes back on the same address, the channel redials */
    bool up = false;
    for (int tries = 0; tries < 50 && !up; tries++)
        if (!(up = rt_child_start(url, shared, sh, &pid)))
            rt_sleep(MS(100));
    assert_true(up);
    int rc = DCTX_UNAVAILABLE;
    int64_t until = dctx_now() + SEC(10);
    while (rc != DCTX_OK && dctx_now() < until) {
        dctx *ping = rt_with_timeout(SEC(1));
        rc = dctx_rpc_call_raw(ch, ping, "/rt.Child/Ping", NULL, 0, NULL);
        rt_ctx_release(ping);
    }
    assert_int_equal(rc, DCTX_OK); /* the connection is back */

    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_UNAVAILABLE);
    rt_sleep(MS(200)); /* room for a resend to land, were there one */
    assert_int_equal(atomic_load(&sh->block_runs), 1);
    rt_handle_release(h);
    rt_ctx_release(ctx);
    rt_child_kill(pid);
    munmap(sh, sizeof *sh);
}

/* ===== 6. Values ===== */

struct seen_values {
    atomic_int done;
    bool tenant, trace, secret, pass, had_deadline;
    char tenant_v[64], trace_v[64], pass_v[64];
    int64_t deadline_ns, entered_ns;
};

static void copy_value(dctx *ctx, const dctx_key *key, bool *has, char *out, size_t n)
{
    size_t len = 0;
    const char *v = dctx_value(ctx, key, &len);
    *has = v != NULL;
    if (v != NULL && out != NULL)
        snprintf(out, n, "%.*s", (int)(len < n ? len : n - 1), v);
}

static int values_handler(void *arg, dctx *ctx, const void *req, size_t len,
                          dctx_rpc_reply *reply)
{
    (void)req;
    (void)len;
    (void)reply;
    struct seen_values *s = arg;
    s->entered_ns = dctx_now();
    copy_value(ctx, &k_tenant, &s->tenant, s->tenant_v, sizeof s->tenant_v);
    copy_value(ctx, &k_trace, &s->trace, s->trace_v, sizeof s->trace_v);
    copy_value(ctx, &k_secret, &s->secret, NULL, 0);
    copy_value(ctx, &k_pass, &s->pass, s->pass_v, sizeof s->pass_v);
    s->had_deadline = dctx_deadline(ctx, &s->deadline_ns);
    atomic_store(&s->done, 1);
    return DCTX_OK;
}

static void registered_value_arrives_under_its_key_and_unpropagated_never(void **state)
{
    (void)state;
    static struct seen_values seen;
    memset(&seen, 0, sizeof seen);
    char url[256];
    serve1(RT_INPROC, NULL, "/it.Values/Record", values_handler, &seen, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx *ctx = with_value(rt_with_cancel(), &k_tenant, "acme");
    ctx = with_value(ctx, &k_secret, "hunter2");
    ctx = with_value(ctx, &k_trace, "00-abc");
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Values/Record", NULL, 0, NULL), DCTX_OK);
    assert_true(RT_WAIT_FOR(atomic_load(&seen.done), SEC(5)));
    assert_true(seen.tenant);
    assert_string_equal(seen.tenant_v, "acme");
    assert_true(seen.trace);
    assert_string_equal(seen.trace_v, "00-abc");
    assert_false(seen.secret);
    rt_ctx_release(ctx);
}

static void unregistered_value_is_hidden_but_passes_through_to_the_next_hop(void **state)
{
    (void)state;
    static struct seen_values at_b;
    memset(&at_b, 0, sizeof at_b);
    char url_a[256], url_b[256];
    serve1(RT_TCP, NULL, "/it.Values/Record", values_handler, &at_b, url_b);
    static struct hop a;
    memset(&a, 0, sizeof a);
    a.next_method = "/it.Values/Record";
    a.register_pass = true;
    a.next = rt_channel_open(url_b, NULL);
    serve1(RT_INPROC, NULL, "/it.Chain/Forward", hop_handler, &a, url_a);
    dctx_rpc_channel *ch = rt_channel_open(url_a, NULL);

    dctx *ctx = with_value(rt_with_timeout(SEC(5)), &k_tenant, "acme");
    ctx = with_value(ctx, &k_pass, "through");
    ctx = with_value(ctx, &k_secret, "hunter2");
    int64_t caller_deadline = 0;
    assert_true(dctx_deadline(ctx, &caller_deadline));
    int64_t t_send = dctx_now();
    dctx_rpc_result res;
    int rc = dctx_rpc_call_raw(ch, ctx, "/it.Chain/Forward", NULL, 0, &res);
    if (rc != DCTX_OK)
        fail_msg("chain call: %s %s", dctx_code_name(rc), res.message);
    dctx_rpc_result_free(&res);
    assert_true(RT_WAIT_FOR(atomic_load(&a.done) && atomic_load(&at_b.done), SEC(5)));
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

static void values_over_the_limits_are_refused_before_sending(void **state)
{
    (void)state;
    static dctx_key many[DCTX_WIRE_VALUES_MAX + 1];
    static char names[DCTX_WIRE_VALUES_MAX + 1][16];
    for (int i = 0; i <= DCTX_WIRE_VALUES_MAX; i++) {
        snprintf(names[i], sizeof names[i], "it-v%02d", i);
        many[i].name = names[i];
        many[i].flags = DCTX_KEY_PROPAGATE;
    }
    static struct seen_values seen;
    memset(&seen, 0, sizeof seen);
    char url[256];
    dctx_rpc_server *srv = serve1(RT_INPROC, NULL, "/it.Values/Record", values_handler, &seen, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_result res;

    /* 64 values: the limit itself is fine */
    dctx *ctx = rt_with_cancel();
    for (int i = 0; i < DCTX_WIRE_VALUES_MAX; i++)
        ctx = with_value(ctx, &many[i], "");
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Values/Record", NULL, 0, NULL), DCTX_OK);
    /* 65: refused, naming the limit */
    ctx = with_value(ctx, &many[DCTX_WIRE_VALUES_MAX], "");
    int rc = dctx_rpc_call_raw(ch, ctx, "/it.Values/Record", NULL, 0, &res);
    assert_true(rc == DCTX_RESOURCE_EXHAUSTED || rc == DCTX_INVALID_ARGUMENT);
    assert_contains(res.message, "64");
    dctx_rpc_result_free(&res);
    rt_ctx_release(ctx);

    /* bytes: key and value together, 8192 at most */
    size_t room = DCTX_WIRE_VALUE_BYTES_MAX - strlen(k_tenant.name);
    char *big = malloc(9000);
    assert_non_null(big);
    memset(big, 'v', 9000);
    dctx *fits = NULL, *over = NULL, *huge = NULL;
    assert_int_equal(dctx_with_value(dctx_background(), &k_tenant, big, room, &fits), 0);
    assert_int_equal(dctx_with_value(dctx_background(), &k_tenant, big, room + 1, &over), 0);
    assert_int_equal(dctx_with_value(dctx_background(), &k_tenant, big, 9000, &huge), 0);
    rt_track_ctx(fits);
    rt_track_ctx(over);
    rt_track_ctx(huge);
    free(big);
    assert_int_equal(dctx_rpc_call_raw(ch, fits, "/it.Values/Record", NULL, 0, NULL), DCTX_OK);
    dctx *refused[] = {over, huge};
    for (int i = 0; i < 2; i++) {
        rc = dctx_rpc_call_raw(ch, refused[i], "/it.Values/Record", NULL, 0, &res);
        assert_true(rc == DCTX_RESOURCE_EXHAUSTED || rc == DCTX_INVALID_ARGUMENT);
        assert_contains(res.message, "8192");
        dctx_rpc_result_free(&res);
    }
    rt_ctx_release(fits);
    rt_ctx_release(over);
    rt_ctx_release(huge);

    /* refused before sending: the server saw only the two that fit */
    assert_int_equal(rt_server_stats(srv).calls, 2);
    assert_int_equal(rt_channel_stats(ch).calls, 2);
}

/* ===== 7. Status codes and malformed input ===== */

static int status_handler(void *arg, dctx *ctx, const void *req, size_t len,
                          dctx_rpc_reply *reply)
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
    return r[0] == 0xff ? 99 : r[0]; /* 99: out of range */
}

static void unknown_method_is_unimplemented(void **state)
{
    (void)state;
    char url[256];
    serve1(RT_INPROC, NULL, "/it.Status/Code", status_handler, NULL, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Nope/Missing", NULL, 0, &res),
                     DCTX_UNIMPLEMENTED);
    assert_contains(res.message, "/it.Nope/Missing");
    dctx_rpc_result_free(&res);
}

static void handler_code_and_utf8_message_arrive_intact(void **state)
{
    (void)state;
    char url[256];
    serve1(RT_TCP, NULL, "/it.Status/Code", status_handler, NULL, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    uint8_t req[sizeof special_message];
    req[0] = DCTX_FAILED_PRECONDITION;
    memcpy(req + 1, special_message, sizeof special_message - 1);
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Status/Code", req, sizeof req, &res),
                     DCTX_FAILED_PRECONDITION);
    assert_string_equal(res.message, special_message);
    assert_int_equal(res.payload_len, 0);
    dctx_rpc_result_free(&res);

    /* every code arrives as itself; one out of range as UNKNOWN */
    for (int code = 0; code <= DCTX_CODE_MAX + 1; code++) {
        uint8_t c = code <= DCTX_CODE_MAX ? (uint8_t)code : 0xff;
        int want = code <= DCTX_CODE_MAX ? code : DCTX_UNKNOWN;
        assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Status/Code", &c, 1, &res), want);
        assert_int_equal(res.payload_len, code == DCTX_OK ? 17 : 0);
        dctx_rpc_result_free(&res);
    }
}

static bool utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = p[i] < 0x80 ? 1 : (p[i] >> 5) == 6 ? 2 : (p[i] >> 4) == 14 ? 3 : (p[i] >> 3) == 30 ? 4 : 0;
        if (k == 0 || i + k > n)
            return false;
        for (size_t j = 1; j < k; j++)
            if ((p[i + j] >> 6) != 2)
                return false;
        i += k;
    }
    return true;
}

/* Regression: a status message over DCTX_WIRE_MESSAGE_BYTES_MAX was cut
 * at a byte count, inside a multi-byte character, so the Reply's string
 * field (UTF-8 by dctx.proto) arrived as invalid UTF-8. It is now cut on a
 * character boundary (dctx__utf8_cut in dctx_rpc_reply_set_message). */
static void long_status_message_is_cut_to_valid_utf8(void **state)
{
    (void)state;
    char url[256];
    serve1(RT_INPROC, NULL, "/it.Status/Code", status_handler, NULL, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    enum { N = 300 };
    uint8_t req[1 + 4 * N];
    req[0] = DCTX_ABORTED;
    for (int i = 0; i < N; i++)
        memcpy(req + 1 + 4 * i, "\xf0\x9f\x98\x88", 4); /* U+1F608, 1200 bytes in all */
    dctx_rpc_result res;
    int rc = dctx_rpc_call_raw(ch, NULL, "/it.Status/Code", req, sizeof req, &res);
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 2];
    snprintf(msg, sizeof msg, "%s", res.message);
    dctx_rpc_result_free(&res);
    assert_int_equal(rc, DCTX_ABORTED);
    size_t n = strlen(msg);
    assert_true(n > 0 && n <= DCTX_WIRE_MESSAGE_BYTES_MAX);
    assert_memory_equal(msg, req + 1, n); /* a prefix */
    if (!utf8_valid(msg, n))
        fail_msg("the %zu-byte message cut from 1200 bytes is not valid UTF-8 (ends inside "
                 "a character)",
                 n);
}

/* Regression: the same for a cancel cause, which both the client
 * (rpc_client.c context_done) and the server (rpc_server.c on_cancel) cut
 * to the wire's limit: on a character boundary, not inside a 4-byte one. */
static void long_cancel_cause_is_cut_to_valid_utf8_at_the_handler(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    serve1(RT_INPROC, NULL, "/it.Cancel/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    char cause[4 * 300 + 1];
    for (int i = 0; i < 300; i++)
        memcpy(cause + 4 * i, "\xf0\x9f\x98\x88", 4);
    cause[sizeof cause - 1] = '\0';
    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Cancel/Wait", NULL, 0, &o);
    assert_true(RT_WAIT_FOR(atomic_load(&p.started), SEC(5)));
    dctx_cancel_cause(ctx, DCTX_ABORTED, cause);
    rt_finish(h, SEC(5));
    rt_handle_release(h);
    rt_ctx_release(ctx);
    assert_true(RT_WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.cause, DCTX_ABORTED);
    size_t n = strlen(p.cause_msg);
    assert_true(n > 0 && n <= DCTX_WIRE_MESSAGE_BYTES_MAX);
    assert_memory_equal(p.cause_msg, cause, n);
    if (!utf8_valid(p.cause_msg, n))
        fail_msg("the %zu-byte cause cut from 1200 bytes is not valid UTF-8", n);
}

static void malformed_frames_are_refused_counted_and_the_server_keeps_serving(void **state)
{
    (void)state;
    char url[256];
    dctx_rpc_server *srv = serve1(RT_IPC, NULL, "/it.Echo/Echo", rt_echo_handler, NULL, url);
    nng_socket s = rt_raw_req(url);

    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    uint8_t payload[100];
    memset(payload, 'p', sizeof payload);
    size_t call_len;
    uint8_t *call = rt_pack_call("/it.Echo/Echo", token, 0, payload, sizeof payload, &call_len);

    uint8_t random_bytes[200];
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < sizeof random_bytes; i++)
        random_bytes[i] = (uint8_t)rt_next(&seed);
    /* Frame.call (field 1) as a varint; Frame.cancel (3) as fixed32;
     * Call.context (2) as a varint inside a well-formed Frame.call */
    static const uint8_t wrong_types_1[] = {0x08, 0x01};
    static const uint8_t wrong_types_2[] = {0x1d, 1, 2, 3, 4};
    static const uint8_t wrong_types_3[] = {0x0a, 0x02, 0x10, 0x05};
    /* Frame.call claiming 2^32-1 bytes; a Call whose method claims 2^31-1 */
    static const uint8_t huge_1[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a', 'b', 'c'};
    static const uint8_t huge_2[] = {0x0a, 0x08, 0x0a, 0xff, 0xff, 0xff, 0xff, 0x07, 'a', 'b'};

    /* well-formed protobuf, bad dctx: a Call without a context, a token of
     * 8 bytes, a value under a key name with a space */
    size_t no_ctx_len, short_tok_len, bad_key_len;
    uint8_t *no_ctx, *short_tok, *bad_key;
    {
        Dctx__Wire__Call c = DCTX__WIRE__CALL__INIT;
        c.method = (char *)"/it.Echo/Echo";
        Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
        f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
        f.call = &c;
        no_ctx = rt_pack(&f, &no_ctx_len);
        Dctx__Wire__ContextHeader h = DCTX__WIRE__CONTEXT_HEADER__INIT;
        h.has_cancel_token = 1;
        h.cancel_token.data = token;
        h.cancel_token.len = 8;
        c.context = &h;
        short_tok = rt_pack(&f, &short_tok_len);
        h.cancel_token.len = DCTX_TOKEN_BYTES;
        Dctx__Wire__Value v = DCTX__WIRE__VALUE__INIT, *vp = &v;
        v.key = (char *)"bad key";
        h.values = &vp;
        h.n_values = 1;
        bad_key = rt_pack(&f, &bad_key_len);
    }

    struct {
        const char *name;
        const uint8_t *bytes;
        size_t len;
    } bad[] = {
        {"empty", (const uint8_t *)"", 0},
        {"random bytes", random_bytes, sizeof random_bytes},
        {"truncated Call", call, call_len / 2},
        {"Frame.call as varint", wrong_types_1, sizeof wrong_types_1},
        {"Frame.cancel as fixed32", wrong_types_2, sizeof wrong_types_2},
        {"Call.context as varint", wrong_types_3, sizeof wrong_types_3},
        {"Frame.call of 4 GiB", huge_1, sizeof huge_1},
        {"Call.method of 2 GiB", huge_2, sizeof huge_2},
        {"Call without context", no_ctx, no_ctx_len},
        {"8-byte token", short_tok, short_tok_len},
        {"key name with a space", bad_key, bad_key_len},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t before = rt_server_stats(srv).bad_frames;
        assert_int_equal(nng_send(s, (void *)bad[i].bytes, bad[i].len, 0), 0);
        int code = rt_recv_reply(s, NULL, 0); /* -1: dropped (no answer in 2 s) */
        if (code != DCTX_INVALID_ARGUMENT && code != -1)
            fail_msg("%s: answered %s", bad[i].name, dctx_code_name(code));
        if (!RT_WAIT_FOR(rt_server_stats(srv).bad_frames == before + 1, SEC(2)))
            fail_msg("%s: bad_frames went from %llu to %llu", bad[i].name,
                     (unsigned long long)before,
                     (unsigned long long)rt_server_stats(srv).bad_frames);
    }
    free(no_ctx);
    free(short_tok);
    free(bad_key);

    /* the whole Call still works on the same socket, and a channel too */
    rt_send_bytes(s, call, call_len);
    assert_int_equal(rt_recv_reply(s, NULL, 0), DCTX_OK);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Echo/Echo", "hi", 2, &res), DCTX_OK);
    assert_int_equal(res.payload_len, 2);
    assert_memory_equal(res.payload, "hi", 2);
    dctx_rpc_result_free(&res);
}

struct flood {
    nng_socket sock;
    int frames;
    atomic_int sent;
    atomic_int failed;
};

static void *flood_thread(void *arg)
{
    struct flood *f = arg;
    static const uint8_t garbage[] = {0xde, 0xad, 0xbe, 0xef, 0x0f, 0x1e, 0x2d, 0x3c,
                                      0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4};
    for (int i = 0; i < f->frames; i++) {
        nng_msg *m = NULL;
        /* raw REQ: we write the request id ourselves; replies are never read */
        if (nng_msg_alloc(&m, 0) != 0 ||
            nng_msg_header_append_u32(m, 0x80000000u | (uint32_t)(i + 1)) != 0 ||
            nng_msg_append(m, garbage, sizeof garbage) != 0 || nng_sendmsg(f->sock, m, 0) != 0) {
            if (m != NULL)
                nng_msg_free(m);
            atomic_fetch_add(&f->failed, 1);
            break;
        }
        atomic_fetch_add(&f->sent, 1);
    }
    return NULL;
}

/* Regression: replies to a peer that never reads pile up, each holding a
 * pooled nng context until REPLY_SEND_TIMEOUT_MS (5 s) ends its send; the
 * pool is one for all peers and capped, and once it was empty on_receive
 * (rpc_server.c) dropped every incoming message, from anyone. Malformed
 * frames are now dropped unanswered, so a peer flooding garbage holds no
 * context, and other channels' calls keep being answered. */
static void peer_flooding_garbage_without_reading_does_not_stall_the_server(void **state)
{
    (void)state;
    char url[256];
    /* ipc: a local peer; the kernel buffers about 200 KiB of replies for
     * it, then its connection pushes back. (Over loopback tcp the buffers
     * grow to several MiB and swallow these 30,000 replies.) */
    dctx_rpc_server *srv = serve1(RT_IPC, NULL, "/it.Echo/Echo", rt_echo_handler, NULL, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Echo/Echo", "warm", 4, NULL), DCTX_OK);

    static struct flood f;
    memset(&f, 0, sizeof f);
    f.frames = 30000;
    assert_int_equal(nng_req0_open_raw(&f.sock), 0);
    rt_track_sock(f.sock);
    assert_int_equal(nng_socket_set_ms(f.sock, NNG_OPT_SENDTIMEO, 5000), 0);
    assert_int_equal(nng_dial(f.sock, url, NULL, 0), 0);
    pthread_t t = start_thread(flood_thread, &f);

    /* normal calls while the flood runs and right after it */
    int slow = 0, failed = 0;
    int64_t worst = 0;
    char first_failure[DCTX_WIRE_MESSAGE_BYTES_MAX + 64] = "";
    for (int i = 0; i < 40; i++) {
        dctx *ctx = rt_with_timeout(SEC(3));
        dctx_rpc_result res;
        int64_t t0 = dctx_now();
        int rc = dctx_rpc_call_raw(ch, ctx, "/it.Echo/Echo", "hi", 2, &res);
        int64_t took = dctx_now() - t0;
        if (took > worst)
            worst = took;
        if (rc != DCTX_OK && failed++ == 0)
            snprintf(first_failure, sizeof first_failure, "call %d: %s %s", i,
                     dctx_code_name(rc), res.message);
        if (took > SEC(1))
            slow++;
        dctx_rpc_result_free(&res);
        rt_ctx_release(ctx);
        rt_sleep(MS(25));
    }
    join_thread(t);
    int sent = atomic_load(&f.sent);
    dctx_rpc_server_stats st = rt_server_stats(srv);
    print_message("flood: %d garbage frames sent, %llu counted bad; normal calls: %d failed, "
                  "%d over 1 s, worst %.1f ms\n",
                  sent, (unsigned long long)st.bad_frames, failed, slow, worst / 1e6);
    assert_true(sent >= 1000);
    if (failed > 0 || slow > 0)
        fail_msg("the flood stalled other callers: %d of 40 calls failed, %d took over 1 s "
                 "(first: %s)",
                 failed, slow, first_failure);
}

/* ===== 8. Load: 10,000 calls in flight, half canceled ===== */

enum { LOAD_CALLS = 10000 };

struct load_call {
    dctx *ctx;
    bool cancel;
    atomic_int callbacks;
    atomic_int code;
};

static atomic_int load_ended;

static void load_done(void *arg, const dctx_rpc_result *res)
{
    struct load_call *c = arg;
    atomic_store(&c->code, res->code);
    atomic_fetch_add(&c->callbacks, 1);
    atomic_fetch_add(&load_ended, 1);
}

/* 'c': wait until canceled (10 s at most); 'o' + 2 bytes: wait that many
 * us on the context (which never ends for these) and answer OK. */
static int load_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    const uint8_t *r = req;
    if (len != 3)
        return DCTX_INVALID_ARGUMENT;
    if (r[0] == 'c') {
        if (!dctx_wait(ctx, SEC(10))) {
            dctx_rpc_reply_set_message(reply, "never canceled");
            return DCTX_INTERNAL;
        }
        return dctx_err(ctx);
    }
    if (dctx_wait(ctx, US(r[1] << 8 | r[2])))
        return DCTX_INTERNAL;
    return DCTX_OK;
}

static void ten_thousand_calls_in_flight_half_canceled_each_end_once_with_its_status(void **state)
{
    (void)state;
    dctx_rpc_server_options so = server_options(2); /* max_in_flight: the default, 10000 */
    char url[256];
    dctx_rpc_server *srv = serve1(RT_INPROC, &so, "/it.Load/Call", load_handler, NULL, url);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.cancel_ack_timeout_ns = SEC(20);
    dctx_rpc_channel *ch = rt_channel_open(url, &co);

    struct load_call *calls = calloc(LOAD_CALLS, sizeof *calls);
    int *order = malloc(LOAD_CALLS * sizeof *order);
    assert_non_null(calls);
    assert_non_null(order);
    uint64_t seed = 0x5eed1234abcdull;
    for (int i = 0; i < LOAD_CALLS; i++)
        order[i] = i;
    for (int i = LOAD_CALLS - 1; i > 0; i--) { /* Fisher-Yates */
        int j = (int)(rt_next(&seed) % (uint64_t)(i + 1));
        int x = order[i];
        order[i] = order[j];
        order[j] = x;
    }
    for (int i = 0; i < LOAD_CALLS / 2; i++)
        calls[order[i]].cancel = true; /* a random half */
    atomic_store(&load_ended, 0);

    for (int i = 0; i < LOAD_CALLS; i++) {
        uint8_t req[3] = {'o', 0, 0};
        if (calls[i].cancel) {
            req[0] = 'c';
        } else {
            unsigned us = (unsigned)(rt_next(&seed) % 1000); /* up to 1 ms */
            req[1] = (uint8_t)(us >> 8);
            req[2] = (uint8_t)us;
        }
        assert_int_equal(dctx_with_cancel(dctx_background(), &calls[i].ctx), 0);
        int rc = dctx_rpc_call_start(ch, calls[i].ctx, "/it.Load/Call", req, sizeof req, load_done,
                                     &calls[i], NULL);
        if (rc != 0)
            fail_msg("call %d not started: %s", i, dctx_code_name(rc));
    }
    /* all arrived; both workers sit on calls that wait for their cancel,
     * so nearly all 10,000 are in flight at the server at once */
    if (!RT_WAIT_FOR(rt_server_stats(srv).calls == LOAD_CALLS, SEC(60)))
        fail_msg("only %llu of %d calls reached the server",
                 (unsigned long long)rt_server_stats(srv).calls, LOAD_CALLS);
    uint64_t peak = rt_server_stats(srv).in_flight;
    print_message("in flight at the server: %llu\n", (unsigned long long)peak);
    assert_true(peak >= LOAD_CALLS - 100);

    /* cancel the chosen half, in random order, spread out */
    for (int i = LOAD_CALLS / 2 - 1, n = 0; i >= 0; i--, n++) {
        dctx_cancel(calls[order[i]].ctx);
        if (n % 100 == 99)
            rt_sleep(MS(1));
    }
    if (!RT_WAIT_FOR(atomic_load(&load_ended) == LOAD_CALLS, SEC(120)))
        fail_msg("only %d of %d calls ended", atomic_load(&load_ended), LOAD_CALLS);
    int wrong = 0;
    for (int i = 0; i < LOAD_CALLS; i++) {
        int want = calls[i].cancel ? DCTX_CANCELED : DCTX_OK;
        if (atomic_load(&calls[i].callbacks) != 1 || atomic_load(&calls[i].code) != want) {
            if (wrong++ < 5)
                print_message("call %d: %d callbacks, %s, expected %s\n", i,
                              atomic_load(&calls[i].callbacks),
                              dctx_code_name(atomic_load(&calls[i].code)), dctx_code_name(want));
        }
    }
    assert_int_equal(wrong, 0);

    bool idle = RT_WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(30));
    bool answered = RT_WAIT_FOR(rt_acks_pending(ch) == 0, SEC(30));
    dctx_rpc_server_stats ss = rt_server_stats(srv);
    dctx_rpc_channel_stats cs = rt_channel_stats(ch);
    print_message("server: %llu calls, %llu in flight, %llu OK, %llu INTERNAL, %llu cancels "
                  "(stopped %llu, prevented %llu, too late %llu); channel: %llu calls, %llu OK, "
                  "%llu CANCELLED, %llu cancels pushed (stopped %llu, prevented %llu, too late "
                  "%llu, unreached %llu)\n",
                  (unsigned long long)ss.calls, (unsigned long long)ss.in_flight,
                  (unsigned long long)ss.by_code[DCTX_OK],
                  (unsigned long long)ss.by_code[DCTX_INTERNAL],
                  (unsigned long long)ss.cancels_received,
                  (unsigned long long)ss.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED],
                  (unsigned long long)ss.cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED],
                  (unsigned long long)ss.cancel_outcomes[DCTX_RPC_CANCEL_TOO_LATE],
                  (unsigned long long)cs.calls, (unsigned long long)cs.by_code[DCTX_OK],
                  (unsigned long long)cs.by_code[DCTX_CANCELED],
                  (unsigned long long)cs.cancels_pushed,
                  (unsigned long long)cs.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED],
                  (unsigned long long)cs.cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED],
                  (unsigned long long)cs.cancel_outcomes[DCTX_RPC_CANCEL_TOO_LATE],
                  (unsigned long long)cs.cancel_outcomes[DCTX_RPC_CANCEL_UNREACHED]);
    assert_true(idle);
    assert_true(answered);
    assert_int_equal(ss.calls, LOAD_CALLS);
    assert_int_equal(ss.by_code[DCTX_OK], LOAD_CALLS / 2);
    assert_int_equal(ss.by_code[DCTX_INTERNAL], 0);
    assert_int_equal(ss.cancels_received, LOAD_CALLS / 2);
    assert_int_equal(ss.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED] +
                         ss.cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED],
                     LOAD_CALLS / 2);
    assert_true(ss.cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED] > 0);
    assert_int_equal(cs.calls, LOAD_CALLS);
    assert_int_equal(cs.by_code[DCTX_OK], LOAD_CALLS / 2);
    assert_int_equal(cs.by_code[DCTX_CANCELED], LOAD_CALLS / 2);
    assert_int_equal(cs.cancels_pushed, LOAD_CALLS / 2);
    assert_int_equal(cs.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED] +
                         cs.cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED],
                     LOAD_CALLS / 2);

    rt_channel_close(ch);
    assert_int_equal(rt_server_close(srv), 0);
    for (int i = 0; i < LOAD_CALLS; i++) {
        assert_int_equal(atomic_load(&calls[i].callbacks), 1); /* still once, after close */
        dctx_release(calls[i].ctx);
    }
    free(order);
    free(calls);
}

/* ===== 9. Churn ===== */

enum { CHURN_CALLERS = 32, CHURN_WINDOW = 4 };
enum churn_kind { CHURN_OK, CHURN_CANCEL, CHURN_TIMEOUT };

struct churn_call {
    atomic_int callbacks;
    atomic_int code;
    int start_rc;
};

struct churn {
    dctx_rpc_channel *ch;
    struct churn_call *calls;
    int n;
    atomic_int lost;
    atomic_int next_caller;
};

static void churn_done(void *arg, const dctx_rpc_result *res)
{
    struct churn_call *c = arg;
    atomic_store(&c->code, res->message != NULL ? res->code : -1);
    atomic_fetch_add(&c->callbacks, 1);
}

static int churn_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)reply;
    if (len != 1)
        return DCTX_INVALID_ARGUMENT;
    if (((const uint8_t *)req)[0] == CHURN_OK)
        return DCTX_OK;
    if (!dctx_wait(ctx, SEC(10)))
        return DCTX_INTERNAL;
    return dctx_cause(ctx, NULL);
}

static void *churn_caller(void *arg)
{
    struct churn *c = arg;
    int me = atomic_fetch_add(&c->next_caller, 1);
    uint64_t seed = 0x1234567ull + (uint64_t)me * 7919;
    for (int base = me * CHURN_WINDOW; base < c->n; base += CHURN_CALLERS * CHURN_WINDOW) {
        dctx *ctx[CHURN_WINDOW] = {0};
        dctx_rpc_handle *h[CHURN_WINDOW] = {0};
        bool cancel_some = false;
        for (int j = 0; j < CHURN_WINDOW && base + j < c->n; j++) {
            int i = base + j;
            uint8_t kind = (uint8_t)(i % 3);
            int rc = kind == CHURN_OK       ? dctx_with_timeout(dctx_background(), SEC(60), &ctx[j])
                     : kind == CHURN_CANCEL ? dctx_with_cancel(dctx_background(), &ctx[j])
                                            : dctx_with_timeout(dctx_background(),
                                                                US(500 + rt_next(&seed) % 3500),
                                                                &ctx[j]);
            if (rc == 0)
                rc = dctx_rpc_call_start(c->ch, ctx[j], "/it.Churn/Call", &kind, 1, churn_done,
                                         &c->calls[i], &h[j]);
            c->calls[i].start_rc = rc;
            cancel_some |= kind == CHURN_CANCEL;
        }
        if (cancel_some) { /* mid-way: the calls are on their way or running */
            rt_sleep(US(rt_next(&seed) % 300));
            for (int j = 0; j < CHURN_WINDOW && base + j < c->n; j++)
                if ((base + j) % 3 == CHURN_CANCEL)
                    dctx_cancel(ctx[j]);
        }
        for (int j = 0; j < CHURN_WINDOW && base + j < c->n; j++) {
            if (h[j] != NULL && !dctx_rpc_handle_wait(h[j], SEC(30)))
                atomic_fetch_add(&c->lost, 1);
            dctx_rpc_handle_release(h[j]);
            dctx_release(ctx[j]);
        }
    }
    return NULL;
}

static void churn_of_ok_canceled_and_timed_out_calls_loses_nothing(void **state)
{
    (void)state;
    /* 100,000 calls; under TSan 50,000 (the floor is 20,000) */
    const int n = rt_under_tsan() ? 50000 : 100000;
    dctx_rpc_server_options so = server_options(16);
    char url[256];
    /* ipc, not inproc: with the system's uninstrumented nng, inproc's
     * hand-over of a request (a copy of a refcounted message, then a free
     * on the canceling thread) is synchronized only by nng's atomics,
     * which ThreadSanitizer cannot see: it reported that as a race, and
     * stayed silent with nng built with -fsanitize=thread. */
    dctx_rpc_server *srv = serve1(RT_IPC, &so, "/it.Churn/Call", churn_handler, NULL, url);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.cancel_ack_timeout_ns = SEC(20);
    static struct churn c;
    memset(&c, 0, sizeof c);
    c.n = n;
    c.ch = rt_channel_open(url, &co);
    c.calls = calloc((size_t)n, sizeof *c.calls);
    assert_non_null(c.calls);
    /* connected first: a call waiting for the connection past its short
     * deadline fails UNAVAILABLE, as rpc.h says */
    assert_int_equal(dctx_rpc_call_raw(c.ch, NULL, "/it.Churn/Call", "\0", 1, NULL), DCTX_OK);

    int64_t t0 = dctx_now();
    pthread_t threads[CHURN_CALLERS];
    for (int i = 0; i < CHURN_CALLERS; i++)
        threads[i] = start_thread(churn_caller, &c);
    for (int i = 0; i < CHURN_CALLERS; i++)
        join_thread(threads[i]);
    int64_t took = dctx_now() - t0;

    assert_int_equal(atomic_load(&c.lost), 0);
    int started = 0, wrong = 0, by_kind[3] = {0};
    for (int i = 0; i < n; i++) {
        struct churn_call *k = &c.calls[i];
        int kind = i % 3;
        int want = kind == CHURN_OK ? DCTX_OK : kind == CHURN_CANCEL ? DCTX_CANCELED
                                                                       : DCTX_DEADLINE_EXCEEDED;
        bool ok;
        if (k->start_rc == 0) {
            started++;
            by_kind[kind]++;
            ok = atomic_load(&k->callbacks) == 1 && atomic_load(&k->code) == want;
        } else { /* refused before sending: only a timeout whose budget was gone */
            ok = kind == CHURN_TIMEOUT && k->start_rc == DCTX_DEADLINE_EXCEEDED &&
                 atomic_load(&k->callbacks) == 0;
        }
        if (!ok && wrong++ < 5)
            print_message("call %d (kind %d): start %s, %d callbacks, %s\n", i, kind,
                          dctx_code_name(k->start_rc), atomic_load(&k->callbacks),
                          dctx_code_name(atomic_load(&k->code)));
    }
    print_message("churn: %d calls (%d started: %d ok, %d canceled, %d timing out) in %.2f s\n",
                  n, started, by_kind[0], by_kind[1], by_kind[2], took / 1e9);
    assert_int_equal(wrong, 0);
    assert_int_equal(by_kind[CHURN_OK], (n + 2) / 3);
    assert_int_equal(by_kind[CHURN_CANCEL], (n + 1) / 3);

    dctx_rpc_channel_stats cs = rt_channel_stats(c.ch);
    assert_int_equal(cs.calls, started + 1); /* and the warm-up call */
    uint64_t ended = 0;
    for (int i = 0; i <= DCTX_CODE_MAX; i++)
        ended += cs.by_code[i];
    assert_int_equal(ended, started + 1);
    assert_true(RT_WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(30)));
    assert_int_equal(rt_server_stats(srv).by_code[DCTX_INTERNAL], 0);
    assert_true(RT_WAIT_FOR(rt_acks_pending(c.ch) == 0, SEC(30)));
    assert_int_equal(rt_channel_stats(c.ch).cancel_outcomes[DCTX_RPC_CANCEL_UNREACHED], 0);

    rt_channel_close(c.ch);
    assert_int_equal(rt_server_close(srv), 0);
    for (int i = 0; i < n; i++)
        assert_true(atomic_load(&c.calls[i].callbacks) == (c.calls[i].start_rc == 0 ? 1 : 0));
    free(c.calls);
}

/* ===== 10a. Deadline policy ===== */

static void reserve_is_taken_off_the_callees_budget(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    serve1(RT_INPROC, NULL, "/it.Policy/Probe", rt_probe_handler, &p, url);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.policy.reserve_ns = MS(40);
    dctx_rpc_channel *ch = rt_channel_open(url, &co);

    dctx *ctx = rt_with_timeout(MS(300));
    int64_t caller_deadline = 0;
    assert_true(dctx_deadline(ctx, &caller_deadline));
    int64_t t_send = dctx_now();
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Policy/Probe", NULL, 0, NULL), DCTX_OK);
    assert_true(RT_WAIT_FOR(atomic_load(&p.finished), SEC(5)));
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
    dctx_rpc_server *srv = serve1(RT_INPROC, NULL, "/it.Policy/Probe", rt_probe_handler, &p, url);
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
    dctx_rpc_server_options so = server_options(1);
    char url[256];
    dctx_rpc_server *srv = serve1(RT_INPROC, &so, "/it.Queue/Probe", rt_probes_handler, probes, url);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.policy.reserve_ns = SEC(1); /* the callee's budget ends 1 s before ours */
    dctx_rpc_channel *ch = rt_channel_open(url, &co);

    static rt_outcome o0, o1;
    uint8_t r0 = 0, r1 = 1;
    dctx_rpc_handle *h0 = rt_start(ch, NULL, "/it.Queue/Probe", &r0, 1, &o0);
    assert_true(RT_WAIT_FOR(atomic_load(&probes[0].started), SEC(5))); /* the one worker is busy */
    dctx *ctx = rt_with_timeout(SEC(1) + MS(100));                     /* budget: 100 ms */
    dctx_rpc_handle *h1 = rt_start(ch, ctx, "/it.Queue/Probe", &r1, 1, &o1);
    assert_true(RT_WAIT_FOR(rt_server_stats(srv).calls == 2, SEC(5)));
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

/* ===== 10b. Propagation policy ===== */

static void send_none_sends_no_values_and_send_listed_only_the_listed(void **state)
{
    (void)state;
    static struct seen_values seen;
    memset(&seen, 0, sizeof seen);
    char url[256];
    serve1(RT_INPROC, NULL, "/it.Values/Record", values_handler, &seen, url);
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
    dctx *ctx = with_value(rt_with_cancel(), &k_tenant, "acme");
    ctx = with_value(ctx, &k_trace, "00-abc");

    dctx_rpc_channel *chs[] = {ch_all, ch_none, ch_listed};
    bool want_tenant[] = {true, false, true}, want_trace[] = {true, false, false};
    for (int i = 0; i < 3; i++) {
        memset(&seen, 0, sizeof seen);
        assert_int_equal(dctx_rpc_call_raw(chs[i], ctx, "/it.Values/Record", NULL, 0, NULL),
                         DCTX_OK);
        assert_true(RT_WAIT_FOR(atomic_load(&seen.done), SEC(5)));
        assert_int_equal(seen.tenant, want_tenant[i]);
        assert_int_equal(seen.trace, want_trace[i]);
    }
    rt_ctx_release(ctx);
}

/* ===== 10c. Cancel outcomes, on both sides ===== */

static void cancel_of_a_queued_call_is_prevented_and_counted_on_both_sides(void **state)
{
    (void)state;
    static rt_probe probes[2];
    rt_probe_init(&probes[0], RT_PROBE_HOLD, SEC(10));
    rt_probe_init(&probes[1], RT_PROBE_RETURN, 0);
    dctx_rpc_server_options so = server_options(1);
    char url[256];
    dctx_rpc_server *srv = serve1(RT_IPC, &so, "/it.Queue/Probe", rt_probes_handler, probes, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    static rt_outcome o0, o1;
    uint8_t r0 = 0, r1 = 1;
    dctx_rpc_handle *h0 = rt_start(ch, NULL, "/it.Queue/Probe", &r0, 1, &o0);
    assert_true(RT_WAIT_FOR(atomic_load(&probes[0].started), SEC(5)));
    dctx *ctx = rt_with_cancel();
    dctx_rpc_handle *h1 = rt_start(ch, ctx, "/it.Queue/Probe", &r1, 1, &o1);
    assert_true(RT_WAIT_FOR(rt_server_stats(srv).calls == 2, SEC(5)));
    dctx_cancel(ctx);
    rt_finish(h1, SEC(5));
    assert_int_equal(o1.code, DCTX_CANCELED);
    assert_int_equal(dctx_rpc_handle_cancel_outcome(h1, SEC(5)), DCTX_RPC_CANCEL_PREVENTED);

    atomic_store(&probes[0].release, 1);
    rt_finish(h0, SEC(5));
    assert_int_equal(o0.code, DCTX_OK);
    assert_true(RT_WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));
    assert_int_equal(atomic_load(&probes[1].runs), 0);
    assert_int_equal(rt_server_stats(srv).cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED], 1);
    assert_int_equal(rt_channel_stats(ch).cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED], 1);
    rt_handle_release(h0);
    rt_handle_release(h1);
    rt_ctx_release(ctx);
}

static int frame_reply_code(nng_msg *m)
{
    Dctx__Wire__Frame *f = rt_msg_frame(m);
    int code = f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_REPLY ? (int)f->reply->code : -1;
    if (f != NULL)
        dctx__wire__frame__free_unpacked(f, NULL);
    return code;
}

static int frame_ack_outcome(nng_msg *m)
{
    Dctx__Wire__Frame *f = rt_msg_frame(m);
    int o = f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_CANCEL_ACK
                ? (int)f->cancel_ack->outcome
                : -1;
    if (f != NULL)
        dctx__wire__frame__free_unpacked(f, NULL);
    return o;
}

/* A probe server behind a relay, a channel through the relay, and a call
 * under a cancelable context whose Call frame the relay holds (c->call). */
struct relayed_call {
    rt_probe p;
    rt_outcome o;
    dctx_rpc_server *srv;
    rt_relay *r;
    dctx_rpc_channel *ch;
    dctx *ctx;
    dctx_rpc_handle *h;
    nng_msg *call;
};

static void relayed_call_start(struct relayed_call *c)
{
    memset(c, 0, sizeof *c);
    rt_probe_init(&c->p, RT_PROBE_RETURN, 0);
    char url[256];
    c->srv = serve1(RT_INPROC, NULL, "/it.Relay/Probe", rt_probe_handler, &c->p, url);
    c->r = rt_relay_open(url);
    c->ch = rt_channel_open(c->r->url, NULL);
    c->ctx = rt_with_cancel();
    c->h = rt_start(c->ch, c->ctx, "/it.Relay/Probe", NULL, 0, &c->o);
    c->call = rt_relay_take(c->r, 0);
    assert_non_null(c->call);
}

/* Through a relay that holds the Call and lets the Cancel by first: the
 * network reordered them. */
static void cancel_that_reaches_the_server_before_its_call_is_prevented_on_both_sides(void **state)
{
    (void)state;
    static struct relayed_call c; /* static: the server may use it after a failed assert */
    relayed_call_start(&c);
    dctx_rpc_server *srv = c.srv;
    rt_relay *r = c.r;
    dctx_rpc_channel *ch = c.ch;
    dctx *ctx = c.ctx;
    dctx_rpc_handle *h = c.h;
    nng_msg *call = c.call;
    dctx_cancel_cause(ctx, DCTX_ABORTED, "changed my mind");
    nng_msg *cancel = rt_relay_take(r, 1);
    assert_non_null(cancel);
    Dctx__Wire__Frame *f = rt_msg_frame(cancel);
    assert_non_null(f);
    assert_int_equal(f->body_case, DCTX__WIRE__FRAME__BODY_CANCEL);
    assert_int_equal(f->cancel->code, DCTX_ABORTED);
    assert_string_equal(f->cancel->message, "changed my mind");
    dctx__wire__frame__free_unpacked(f, NULL);

    nng_msg *ack = rt_relay_forward(r, 1, cancel);
    assert_non_null(ack);
    assert_int_equal(frame_ack_outcome(ack), DCTX_RPC_CANCEL_PREVENTED);
    rt_relay_answer(r, 1, ack);
    nng_msg *reply = rt_relay_forward(r, 0, call); /* the call, late */
    assert_non_null(reply);
    assert_int_equal(frame_reply_code(reply), DCTX_CANCELED);
    rt_relay_answer(r, 0, reply);

    assert_int_equal(dctx_rpc_handle_cancel_outcome(h, SEC(5)), DCTX_RPC_CANCEL_PREVENTED);
    rt_finish(h, SEC(5));
    assert_int_equal(c.o.code, DCTX_CANCELED);
    assert_int_equal(atomic_load(&c.p.runs), 0);
    assert_int_equal(rt_server_stats(srv).cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED], 1);
    assert_int_equal(rt_channel_stats(ch).cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED], 1);
    rt_handle_release(h);
    rt_ctx_release(ctx);
}

/* Through a relay that holds the reply: the server finished, the caller
 * cancels before the answer reaches it. */
static void cancel_after_the_server_finished_is_too_late_on_both_sides(void **state)
{
    (void)state;
    static struct relayed_call c; /* static: the server may use it after a failed assert */
    relayed_call_start(&c);
    dctx_rpc_server *srv = c.srv;
    rt_relay *r = c.r;
    dctx_rpc_channel *ch = c.ch;
    dctx *ctx = c.ctx;
    dctx_rpc_handle *h = c.h;
    nng_msg *call = c.call;
    nng_msg *reply = rt_relay_forward(r, 0, call);
    assert_non_null(reply);
    assert_int_equal(frame_reply_code(reply), DCTX_OK);
    assert_true(RT_WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));

    dctx_cancel_cause(ctx, DCTX_ABORTED, "too slow");
    nng_msg *cancel = rt_relay_take(r, 1);
    assert_non_null(cancel);
    nng_msg *ack = rt_relay_forward(r, 1, cancel);
    assert_non_null(ack);
    assert_int_equal(frame_ack_outcome(ack), DCTX_RPC_CANCEL_TOO_LATE);
    rt_relay_answer(r, 1, ack);
    assert_int_equal(dctx_rpc_handle_cancel_outcome(h, SEC(5)), DCTX_RPC_CANCEL_TOO_LATE);
    rt_finish(h, SEC(5));
    assert_int_equal(c.o.code, DCTX_CANCELED);
    rt_relay_answer(r, 0, reply); /* the answer, after the caller gave up: dropped */

    assert_int_equal(atomic_load(&c.p.runs), 1);
    assert_int_equal(rt_server_stats(srv).cancel_outcomes[DCTX_RPC_CANCEL_TOO_LATE], 1);
    assert_int_equal(rt_channel_stats(ch).cancel_outcomes[DCTX_RPC_CANCEL_TOO_LATE], 1);
    assert_int_equal(atomic_load(&c.o.callbacks), 1);
    rt_handle_release(h);
    rt_ctx_release(ctx);
}

/* ===== 11. Transports and protobuf-c services ===== */

static void round_trip(enum rt_transport t)
{
    char url[256];
    dctx_rpc_server *srv = serve1(t, NULL, "/it.Echo/Echo", rt_echo_handler, NULL, url);
    assert_non_null(strstr(url, rt_transport_name(t)));
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    size_t sizes[] = {0, 5, 100 * 1024};
    uint8_t *buf = malloc(100 * 1024);
    assert_non_null(buf);
    for (size_t i = 0; i < 100 * 1024; i++)
        buf[i] = (uint8_t)(i * 31 + 7);
    for (int rep = 0; rep < 10; rep++)
        for (size_t k = 0; k < 3; k++) {
            dctx_rpc_result res;
            dctx *ctx = rt_with_timeout(SEC(10));
            assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Echo/Echo", buf, sizes[k], &res),
                             DCTX_OK);
            assert_int_equal(res.payload_len, sizes[k]);
            if (sizes[k] > 0)
                assert_memory_equal(res.payload, buf, sizes[k]);
            assert_string_equal(res.message, "");
            assert_int_equal(res.cancel_outcome, DCTX_RPC_CANCEL_NONE);
            dctx_rpc_result_free(&res);
            rt_ctx_release(ctx);
        }
    free(buf);
    assert_int_equal(rt_channel_stats(ch).by_code[DCTX_OK], 30);
    assert_int_equal(rt_server_stats(srv).by_code[DCTX_OK], 30);
}

static void round_trip_over_inproc(void **state)
{
    (void)state;
    round_trip(RT_INPROC);
}

static void round_trip_over_ipc(void **state)
{
    (void)state;
    round_trip(RT_IPC);
}

static void round_trip_over_tcp(void **state)
{
    (void)state;
    round_trip(RT_TCP);
}

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
    const char *t = ctx != NULL ? dctx_value(ctx, &k_tenant, &len) : NULL;
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

static void protobuf_service_reads_its_context_and_fails_with_a_status(void **state)
{
    (void)state;
    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(NULL, &srv), 0);
    RT_TRACK(servers, srv);
    assert_int_equal(dctx_rpc_server_register_service(srv, (ProtobufCService *)&echo_service), 0);
    char url[256];
    rt_server_listen(srv, RT_IPC, url, sizeof url);
    assert_int_equal(dctx_rpc_server_start(srv), 0);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    assert_null(dctx_rpc_service_context()); /* not inside a call here */

    dctx *ctx = with_value(rt_with_timeout(SEC(5)), &k_tenant, "acme");
    Dctx__Itest__EchoRequest req = DCTX__ITEST__ECHO_REQUEST__INIT;
    req.text = (char *)"hello";
    Dctx__Itest__EchoReply *resp = NULL;
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call(ch, ctx, "/dctx.itest.Echo/Echo", &req.base,
                                   &dctx__itest__echo_reply__descriptor,
                                   (ProtobufCMessage **)&resp, &res),
                     DCTX_OK);
    assert_non_null(resp);
    assert_string_equal(resp->text, "hello");
    assert_true(resp->saw_context);
    assert_true(resp->saw_deadline);
    assert_true(resp->budget_us > 0 && resp->budget_us <= 5000000);
    assert_non_null(resp->tenant);
    assert_string_equal(resp->tenant, "acme");
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    dctx_rpc_result_free(&res);

    req.has_fail_code = 1;
    req.fail_code = DCTX_PERMISSION_DENIED;
    req.fail_message = (char *)"not for you";
    resp = NULL;
    assert_int_equal(dctx_rpc_call(ch, ctx, "/dctx.itest.Echo/Fail", &req.base,
                                   &dctx__itest__echo_reply__descriptor,
                                   (ProtobufCMessage **)&resp, &res),
                     DCTX_PERMISSION_DENIED);
    assert_null(resp);
    assert_string_equal(res.message, "not for you");
    dctx_rpc_result_free(&res);

    /* bytes that are not an EchoRequest */
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/dctx.itest.Echo/Echo", "\xff\xff\xff", 3, &res),
                     DCTX_INVALID_ARGUMENT);
    assert_contains(res.message, "EchoRequest");
    dctx_rpc_result_free(&res);
    rt_ctx_release(ctx);
}

/* ===== 12. Graceful shutdown ===== */

static void close_cancels_running_handlers_and_waits_for_them(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    dctx_rpc_server_options so = server_options(2);
    so.shutdown_grace_ns = SEC(3);
    char url[256];
    dctx_rpc_server *srv = serve1(RT_TCP, &so, "/it.Close/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, NULL, "/it.Close/Wait", NULL, 0, &o);
    assert_true(RT_WAIT_FOR(atomic_load(&p.started), SEC(5)));

    int64_t t0 = dctx_now();
    assert_int_equal(rt_server_close(srv), 0);
    assert_ns_in(dctx_now() - t0, 0, SEC(2)); /* the handler returned: no need for the grace */
    assert_int_equal(atomic_load(&p.finished), 1); /* it waited for it */
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_int_equal(p.cause, DCTX_UNAVAILABLE);
    assert_string_equal(p.cause_msg, "server shutting down");

    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_UNAVAILABLE);
    rt_handle_release(h);
}

static void close_reports_a_handler_that_outlives_the_grace(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_SLEEP, MS(400)); /* ignores its context */
    dctx_rpc_server_options so = server_options(2);
    so.shutdown_grace_ns = MS(50);
    char url[256];
    dctx_rpc_server *srv = serve1(RT_INPROC, &so, "/it.Close/Sleep", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, NULL, "/it.Close/Sleep", NULL, 0, &o);
    assert_true(RT_WAIT_FOR(atomic_load(&p.started), SEC(5)));

    int64_t t0 = dctx_now();
    assert_int_equal(rt_server_close(srv), DCTX_DEADLINE_EXCEEDED);
    assert_true(dctx_now() - t0 >= MS(50));
    assert_int_equal(atomic_load(&p.finished), 1); /* it still waited for the handler */
    assert_true(dctx_now() >= p.entered_ns + MS(400));
    rt_finish(h, SEC(5));
    rt_handle_release(h);
}

struct closer {
    dctx_rpc_server *srv;
    atomic_int started;
    int rc;
};

static void *close_thread(void *arg)
{
    struct closer *c = arg;
    atomic_store(&c->started, 1);
    c->rc = dctx_rpc_server_close(c->srv);
    return NULL;
}

static void close_refuses_new_calls_while_it_waits(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_SLEEP, MS(600)); /* ignores its context */
    dctx_rpc_server_options so = server_options(2);
    so.shutdown_grace_ns = SEC(3);
    char url[256];
    dctx_rpc_server *srv = serve1(RT_IPC, &so, "/it.Close/Sleep", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, NULL, "/it.Close/Sleep", NULL, 0, &o);
    assert_true(RT_WAIT_FOR(atomic_load(&p.started), SEC(5)));

    static struct closer c;
    memset(&c, 0, sizeof c);
    c.srv = srv;
    RT_UNTRACK(servers, srv); /* the thread closes it */
    pthread_t t = start_thread(close_thread, &c);
    assert_true(RT_WAIT_FOR(atomic_load(&c.started), SEC(5)));
    rt_sleep(MS(50));
    dctx_rpc_result res;
    int64_t t0 = dctx_now();
    int rc = dctx_rpc_call_raw(ch, NULL, "/it.Close/Sleep", NULL, 0, &res);
    int64_t took = dctx_now() - t0;
    assert_int_equal(rc, DCTX_UNAVAILABLE);
    assert_contains(res.message, "shutting down");
    assert_int_equal(atomic_load(&p.finished), 0); /* refused while the first still ran */
    assert_ns_in(took, 0, MS(400));
    dctx_rpc_result_free(&res);
    join_thread(t);
    assert_int_equal(c.rc, 0);
    assert_int_equal(atomic_load(&p.runs), 1);
    rt_finish(h, SEC(5));
    rt_handle_release(h);
}

/* A blocking call waits on its own thread (no callback steps it): closing
 * its channel must still end it at once, and the server, losing its
 * caller, cancels the handler. */
static void closing_a_channel_ends_a_blocking_call_in_flight_unavailable(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    dctx_rpc_server *srv = serve1(RT_IPC, NULL, "/it.Close/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    static struct thread_call c;
    memset(&c, 0, sizeof c);
    c.ch = ch;
    c.method = "/it.Close/Wait";
    pthread_t t = start_thread(thread_call_main, &c);
    assert_true(RT_WAIT_FOR(atomic_load(&p.started), SEC(5)));
    RT_UNTRACK(channels, ch);
    int64_t t_close = dctx_now();
    dctx_rpc_channel_close(ch);
    join_thread(t);
    assert_int_equal(c.rc, DCTX_UNAVAILABLE);
    assert_contains(c.res.message, "closed");
    assert_ns_in(c.returned_ns - t_close, 0, SEC(1)); /* not the handler's 10 s */
    dctx_rpc_result_free(&c.res);
    /* the handler saw its caller go */
    assert_true(RT_WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_true(RT_WAIT_FOR(rt_server_stats(srv).calls_canceled_by_peer_loss == 1, SEC(5)));
}

/* ===== Closing under traffic ===== */

static int close_race_echo(void *arg, dctx *ctx, const void *req, size_t len,
                           dctx_rpc_reply *reply)
{
    (void)arg;
    (void)ctx;
    (void)req;
    (void)len;
    (void)reply;
    return DCTX_OK;
}

static void close_race_done(void *arg, const dctx_rpc_result *res)
{
    (void)arg;
    (void)res;
}

/* What the close-race child reports. */
struct close_race_shared {
    atomic_int ready, failed;
    atomic_int rounds;       /* rounds whose channel close returned */
    atomic_int gave_up;      /* closes that took the library's 500 ms give-up */
    atomic_int first_gave_up; /* round of the first, + 1 */
    atomic_int server_closed; /* 1 once dctx_rpc_server_close returned */
};

/* The child of closing_a_channel_while_replies_arrive_returns: rounds of
 * open a channel, start 4 calls, close the channel as the replies arrive;
 * after two closes that gave up (or all rounds), close the server. */
static int close_race_child(const char *url, const char *shared_path, int rounds)
{
    alarm(120);
    struct close_race_shared *sh = rt_shared_map(shared_path, sizeof *sh, false);
    dctx_rpc_server *s = NULL;
    if (sh == NULL || dctx_rpc_server_open(NULL, &s) != 0 ||
        dctx_rpc_server_register(s, "/it.Close/Echo", close_race_echo, NULL) != 0 ||
        dctx_rpc_server_listen(s, url) != 0 || dctx_rpc_server_start(s) != 0) {
        if (sh != NULL)
            atomic_store(&sh->failed, 1);
        return 3;
    }
    atomic_store(&sh->ready, 1);
    for (int i = 0; i < rounds && atomic_load(&sh->gave_up) < 2; i++) {
        dctx_rpc_channel *ch = NULL;
        if (dctx_rpc_channel_open(url, NULL, &ch) != 0 ||
            dctx_rpc_call_raw(ch, NULL, "/it.Close/Echo", NULL, 0, NULL) != 0) /* connected */
            return 4;
        for (int k = 0; k < 4; k++)
            if (dctx_rpc_call_start(ch, NULL, "/it.Close/Echo", NULL, 0, close_race_done, NULL,
                                    NULL) != 0)
                return 5;
        int64_t t0 = dctx_now();
        dctx_rpc_channel_close(ch); /* their replies are on the way */
        if (dctx_now() - t0 >= MS(450) && atomic_fetch_add(&sh->gave_up, 1) == 0)
            atomic_store(&sh->first_gave_up, i + 1);
        atomic_fetch_add(&sh->rounds, 1);
    }
    int rc = dctx_rpc_server_close(s);
    atomic_store(&sh->server_closed, 1);
    return rc == 0 ? 0 : 6;
}

/* nng 1.5.2 BUG (the nng the library is built on): closing a
 * REQ socket while a message arrives on its ipc or tcp pipe can leave the
 * protocol's receive queued in the transport after the transport stopped
 * reading (nng #1636, fixed for tcp in 1.6.0; more close deadlocks fixed
 * up to 1.9.0). nng's only reaper thread then waits for it forever.
 * dctx_rpc_channel_close (rpc_client.c) now gives up after 500 ms and
 * leaves the channel and a thread behind, but the reaper stays stuck: every
 * later channel close gives up too, and dctx_rpc_server_close (nng_close
 * of the server's socket) never returns. Run in a child, declared stuck
 * when it makes no progress for 3 s. */
static void closing_a_channel_while_replies_arrive_returns(void **state)
{
    (void)state;
    /* Debian's nng 1.5.2 fails this (nng #1636: its close race wedges the
     * reaper for good; fixed in nng 1.6.0 and later). The product is bound
     * to Debian's nng, so the test runs only when asked to:
     * DCTX_TEST_NNG_CLOSE_RACE=1 (a newer nng must pass it). */
    if (getenv("DCTX_TEST_NNG_CLOSE_RACE") == NULL) {
        print_message("skipped: nng 1.5.2's close race (#1636); set DCTX_TEST_NNG_CLOSE_RACE=1\n");
        skip();
    }
    enum { ROUNDS = 500 }; /* it happened within 130 rounds in 8 tries of 8 */
    enum rt_transport ts[] = {RT_IPC, RT_TCP};
    char report[512] = "";
    for (int k = 0; k < 2; k++) {
        const char *tname = rt_transport_name(ts[k]);
        char url[256], shared[256];
        snprintf(shared, sizeof shared, "%s/close-%d", rt_tmpdir(), atomic_fetch_add(&rt_seq, 1));
        struct close_race_shared *sh = rt_shared_map(shared, sizeof *sh, true);
        assert_non_null(sh);
        pid_t pid = 0;
        for (int tries = 0; tries < 20 && pid == 0; tries++) {
            rt_url(ts[k], url, sizeof url);
            char rounds[16];
            snprintf(rounds, sizeof rounds, "%d", ROUNDS);
            const char *args[] = {"--close-race", url, shared, rounds, NULL};
            atomic_store(&sh->ready, 0);
            atomic_store(&sh->failed, 0);
            pid = rt_spawn_self(args);
            if (!RT_WAIT_FOR(atomic_load(&sh->ready), SEC(30))) {
                rt_child_kill(pid);
                pid = 0;
            }
        }
        assert_true(pid != 0);
        int status = 0, last = -1;
        bool stuck = false;
        int64_t progress_at = dctx_now();
        for (;;) {
            if (waitpid(pid, &status, WNOHANG) == pid) {
                RT_UNTRACK(children, pid);
                break;
            }
            int progress = atomic_load(&sh->rounds) + atomic_load(&sh->server_closed);
            if (progress != last) {
                last = progress;
                progress_at = dctx_now();
            } else if (dctx_now() - progress_at > SEC(3)) {
                stuck = true;
                rt_child_kill(pid);
                break;
            }
            rt_sleep(MS(10));
        }
        int gave_up = atomic_load(&sh->gave_up);
        size_t used = strlen(report);
        if (gave_up > 0 || stuck)
            snprintf(report + used, sizeof report - used,
                     "%s%s: %d channel closes gave up on nng (the first in round %d of %d)%s",
                     used ? "; " : "", tname, gave_up, atomic_load(&sh->first_gave_up),
                     atomic_load(&sh->rounds),
                     stuck && !atomic_load(&sh->server_closed)
                         ? ", then dctx_rpc_server_close never returned"
                         : "");
        else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("the %s child failed: status %#x", tname, status);
        munmap(sh, sizeof *sh);
    }
    if (report[0] != '\0')
        fail_msg("closing a channel as its reply arrives wedges nng: %s", report);
}

/* ===== main ===== */


static int group_setup(void **state)
{
    (void)state;
    assert_int_equal(dctx_wire_register_key(&k_tenant), 0);
    assert_int_equal(dctx_wire_register_key(&k_trace), 0);
    return 0;
}

#define T(f) cmocka_unit_test_teardown(f, rt_teardown)

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0); /* a hang still shows where it happened */
    if (argc == 5 && strcmp(argv[1], "--close-race") == 0)
        return close_race_child(argv[2], argv[3], atoi(argv[4]));
    int child = rt_child_main(argc, argv);
    if (child >= 0)
        return child;
    /* RT_TEST_FILTER=pattern runs only the matching tests (cmocka's glob) */
    if (getenv("RT_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("RT_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        /* 1 */
        T(callee_sees_a_100_ms_timeout_as_a_deadline_at_most_100_ms_away),
        T(budget_sent_after_waiting_for_a_connection_excludes_the_wait),
        T(first_call_to_a_server_that_came_up_late_gets_through),
        T(handler_waiting_on_its_context_ends_with_deadline_exceeded),
        T(handler_behind_a_slow_link_ends_with_deadline_exceeded),
        T(caller_gets_deadline_exceeded_on_time_from_a_handler_that_never_answers),
        /* 2 */
        T(cancel_cause_reaches_the_running_handler_which_reports_stopped),
    T(cancel_is_pushed_by_the_canceling_thread_before_cancel_returns),
        T(cancel_outcome_asked_right_after_the_cancel_waits_for_the_answer),
        T(cancel_crosses_two_hops_with_its_cause),
        /* 3 */
        T(cancel_that_overtakes_its_call_refuses_the_call_unrun),
        T(cancel_of_a_finished_call_is_too_late),
        T(replayed_call_is_refused_and_runs_once),
        /* 4 */
        T(lost_caller_cancels_the_handler_and_is_counted),
        T(server_killed_mid_call_fails_the_call_unavailable_at_once),
        /* 5 */
        T(call_runs_at_most_once_when_its_connection_drops_and_returns),
        /* 6 */
        T(registered_value_arrives_under_its_key_and_unpropagated_never),
        T(unregistered_value_is_hidden_but_passes_through_to_the_next_hop),
        T(values_over_the_limits_are_refused_before_sending),
        /* 7 */
        T(unknown_method_is_unimplemented),
        T(handler_code_and_utf8_message_arrive_intact),
        T(long_status_message_is_cut_to_valid_utf8),
        T(long_cancel_cause_is_cut_to_valid_utf8_at_the_handler),
        T(malformed_frames_are_refused_counted_and_the_server_keeps_serving),
        T(peer_flooding_garbage_without_reading_does_not_stall_the_server),
        /* 8, 9 */
        T(ten_thousand_calls_in_flight_half_canceled_each_end_once_with_its_status),
        T(churn_of_ok_canceled_and_timed_out_calls_loses_nothing),
        /* 10 */
        T(reserve_is_taken_off_the_callees_budget),
        T(budget_under_the_channel_minimum_is_not_sent),
        T(call_whose_budget_ran_out_in_the_queue_is_refused_unrun),
        T(send_none_sends_no_values_and_send_listed_only_the_listed),
        T(cancel_of_a_queued_call_is_prevented_and_counted_on_both_sides),
        T(cancel_that_reaches_the_server_before_its_call_is_prevented_on_both_sides),
        T(cancel_after_the_server_finished_is_too_late_on_both_sides),
        /* 11 */
        T(round_trip_over_inproc),
        T(round_trip_over_ipc),
        T(round_trip_over_tcp),
        T(protobuf_service_reads_its_context_and_fails_with_a_status),
        /* 12 */
        T(close_cancels_running_handlers_and_waits_for_them),
        T(close_reports_a_handler_that_outlives_the_grace),
        T(close_refuses_new_calls_while_it_waits),
        T(closing_a_channel_ends_a_blocking_call_in_flight_unavailable),
        T(closing_a_channel_while_replies_arrive_returns),
    };
    return cmocka_run_group_tests_name("rpc", tests, group_setup, NULL);
}
