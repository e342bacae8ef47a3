/*
 * test_rpc_lifecycle.c - starting and closing: a server start that runs
 * out of memory or threads at each of its steps undoes itself and can be
 * tried again; a server's graceful close (handlers canceled and waited
 * for, a handler past the grace reported, new calls refused meanwhile);
 * and closing a channel under a blocking call, or as replies arrive (an
 * nng 1.5.2 bug, run in a re-executed child and only when asked for).
 * Opening and listening fail with the status that names why (nng's errors
 * map to status codes one way).
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "alloc.h"
#include "rpc_testutil.h"

/* The threads of this process: the entries of /proc/self/task. */
static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* dctx_rpc_server_start allocates its worker array through dctx__malloc
 * and starts each worker and the listener guard through
 * dctx__thread_start; with the failure injector letting the first k of
 * those succeed, start fails one step further in for each k, up to the
 * first k at which it succeeds. Each failure must undo every step before
 * it (no thread left over; under LeakSanitizer, no memory) and leave a
 * server that starts and serves a call over tcp. */
static void a_failed_server_start_leaves_the_server_as_it_was(void **state)
{
    (void)state;
    enum { WORKERS = 3, MAX_STEPS = 64 };
    dctx_rpc_server_options so = rt_server_options(WORKERS);
    int failures = 0;
    bool started = false;
    for (long k = 0; k < MAX_STEPS && !started; k++) {
        dctx_rpc_server *srv = NULL;
        assert_int_equal(dctx_rpc_server_open(&so, &srv), 0);
        rt_track_server(srv);
        assert_int_equal(dctx_rpc_server_register(srv, "/it.Start/Echo", rt_echo_handler, NULL), 0);
        char url[256];
        rt_server_listen(srv, RT_TCP, url, sizeof url);
        int threads = thread_count();
        dctx__test_fail_alloc_after(k);
        int rc = dctx_rpc_server_start(srv);
        dctx__test_fail_alloc_after(-1);
        if (rc == 0) {
            started = true;
        } else {
            failures++;
            if (rc != DCTX_RESOURCE_EXHAUSTED)
                fail_msg("start with %ld steps allowed: %s", k, dctx_code_name(rc));
            /* a joined thread leaves /proc/self/task a moment after its join */
            if (!WAIT_FOR(thread_count() == threads, SEC(5)))
                fail_msg("start with %ld steps allowed left %d threads behind", k,
                         thread_count() - threads);
            assert_int_equal(dctx_rpc_server_start(srv), 0);
        }
        dctx_rpc_channel *ch = rt_channel_open(url, NULL);
        dctx *ctx = rt_with_timeout(SEC(5));
        dctx_rpc_result res;
        assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Start/Echo", "hi", 2, &res), DCTX_OK);
        assert_int_equal(res.payload_len, 2);
        assert_memory_equal(res.payload, "hi", 2);
        dctx_rpc_result_free(&res);
        rt_ctx_release(ctx);
        rt_channel_close(ch);
        assert_int_equal(rt_server_close(srv), 0);
    }
    assert_true(started);
    print_message("start failed at %d steps, then succeeded\n", failures);
    /* one failing k at least for the worker array and each worker */
    if (failures < WORKERS + 1)
        fail_msg("start failed at %d steps only; it has at least %d", failures, WORKERS + 1);
}

/* Close drains: a handler that waits on its context is left running for
 * the grace, then its context ends as by a deadline, with a cause saying
 * the drain's grace ran out; close waits for it and says it outlived the
 * grace. */
static void close_stops_handlers_that_outlive_the_drains_grace(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    dctx_rpc_server_options so = rt_server_options(2);
    so.shutdown_grace_ns = MS(300);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_TCP, &so, "/it.Close/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, NULL, "/it.Close/Wait", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));

    int64_t t0 = dctx_now();
    assert_int_equal(rt_server_close(srv), DCTX_DEADLINE_EXCEEDED);
    assert_ns_in(dctx_now() - t0, MS(300), SEC(5)); /* the grace, whole, then the handler */
    assert_int_equal(atomic_load(&p.finished), 1);  /* it waited for it */
    assert_true(p.returned_ns - p.entered_ns >= MS(300));
    assert_int_equal(p.err, DCTX_DEADLINE_EXCEEDED);
    assert_int_equal(p.cause, DCTX_UNAVAILABLE);
    assert_contains(p.cause_msg, "grace");

    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_UNAVAILABLE);
    rt_handle_release(h);
}

static void close_reports_a_handler_that_outlives_the_grace(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_SLEEP, MS(400)); /* ignores its context */
    dctx_rpc_server_options so = rt_server_options(2);
    so.shutdown_grace_ns = MS(50);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_INPROC, &so, "/it.Close/Sleep", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, NULL, "/it.Close/Sleep", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));

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
    dctx_rpc_server_options so = rt_server_options(2);
    so.shutdown_grace_ns = SEC(3);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_IPC, &so, "/it.Close/Sleep", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, NULL, "/it.Close/Sleep", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));

    static struct closer c;
    memset(&c, 0, sizeof c);
    c.srv = srv;
    rt_untrack_server(srv); /* the thread closes it */
    pthread_t t = start_thread(close_thread, &c);
    assert_true(WAIT_FOR(atomic_load(&c.started), SEC(5)));
    rt_sleep(MS(50));
    dctx_rpc_result res;
    int64_t t0 = dctx_now();
    int rc = dctx_rpc_call_raw(ch, NULL, "/it.Close/Sleep", NULL, 0, &res);
    int64_t took = dctx_now() - t0;
    assert_int_equal(rc, DCTX_UNAVAILABLE);
    assert_contains(res.message, "draining");
    assert_int_equal(atomic_load(&p.finished), 0); /* refused while the first still ran */
    assert_ns_in(took, 0, MS(400));
    dctx_rpc_result_free(&res);
    join_thread(t);
    assert_int_equal(c.rc, 0); /* the call in flight finished within the grace */
    assert_int_equal(atomic_load(&p.runs), 1);
    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_OK); /* the drain let it finish */
    rt_handle_release(h);
}

/* Shutdown drains and stops as close does but frees nothing: the stats
 * stay readable with the calls counted, the method names listed; the
 * server takes no listener, start or call any more, and a second shutdown
 * answers at once with the first one's result. */
static void shutdown_leaves_the_stats_readable_until_close(void **state)
{
    (void)state;
    const struct rt_method methods[] = {{"/it.Shut/Echo", rt_echo_handler, NULL, NULL},
                                        {"/it.Shut/Other", rt_echo_handler, NULL, NULL}};
    char url[256];
    dctx_rpc_server *srv = rt_server_open(RT_IPC, NULL, methods, 2, url, sizeof url);
    const char *names[4] = {NULL};
    assert_int_equal(dctx_rpc_server_methods(srv, names, 4), 2);
    assert_int_equal(dctx_rpc_server_methods(srv, names, 1), 2); /* counts past max */
    assert_true(strcmp(names[0], "/it.Shut/Echo") == 0 || strcmp(names[0], "/it.Shut/Other") == 0);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Shut/Echo", "x", 1, &res), DCTX_OK);
    dctx_rpc_result_free(&res);

    assert_int_equal(dctx_rpc_server_shutdown(srv), 0);
    dctx_rpc_server_stats st = rt_server_stats(srv);
    assert_int_equal(st.calls, 1);
    assert_int_equal(st.by_code[DCTX_OK], 1);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(dctx_rpc_server_shutdown(srv), 0);
    char url2[256];
    rt_url(RT_IPC, url2, sizeof url2);
    assert_int_equal(dctx_rpc_server_listen(srv, url2), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_rpc_server_start(srv), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Shut/Echo", "x", 1, &res), DCTX_UNAVAILABLE);
    dctx_rpc_result_free(&res);
    assert_int_equal(rt_server_close(srv), 0);
}

/* ===== A channel over several URLs ===== */

static char name_a[] = "A", name_b[] = "B";

/* Answers with its arg, a server's name. */
static int name_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)ctx;
    (void)req;
    (void)len;
    return dctx_rpc_reply_set_payload(reply, arg, strlen(arg));
}

/* Which server answered n Name calls on ch: counts into *a and *b; fails
 * on any call not OK. */
static void count_names(dctx_rpc_channel *ch, int n, int *a, int *b)
{
    *a = *b = 0;
    for (int i = 0; i < n; i++) {
        dctx_rpc_result res;
        int rc = dctx_rpc_call_raw(ch, NULL, "/it.Set/Name", NULL, 0, &res);
        if (rc != DCTX_OK)
            fail_msg("call %d: %s %s", i, dctx_code_name(rc), res.message);
        if (res.payload_len == 1 && ((const char *)res.payload)[0] == 'A')
            (*a)++;
        else if (res.payload_len == 1 && ((const char *)res.payload)[0] == 'B')
            (*b)++;
        dctx_rpc_result_free(&res);
    }
}

struct shutter {
    dctx_rpc_server *srv;
    int rc;
};

static void *shutdown_thread(void *arg)
{
    struct shutter *sh = arg;
    sh->rc = dctx_rpc_server_shutdown(sh->srv);
    return NULL;
}

/* Calls on a channel over two servers go round robin to both; while one
 * drains (a call of its own in flight), every new call goes to the other
 * and succeeds, and the call in flight finishes where it was. */
static void channel_over_two_urls_shares_calls_and_goes_around_a_drain(void **state)
{
    (void)state;
    static rt_probe hold[2];
    dctx_rpc_server *srv[2];
    char url[2][256];
    for (int i = 0; i < 2; i++) {
        rt_probe_init(&hold[i], RT_PROBE_HOLD, SEC(10));
        const struct rt_method m[] = {
            {"/it.Set/Name", name_handler, i == 0 ? name_a : name_b, NULL},
            {"/it.Set/Hold", rt_probe_handler, &hold[i], NULL}};
        srv[i] = rt_server_open(RT_IPC, NULL, m, 2, url[i], sizeof url[i]);
    }
    const char *urls[] = {url[0], url[1]};
    dctx_rpc_channel *ch = NULL;
    assert_int_equal(dctx_rpc_channel_open_urls(urls, 2, NULL, &ch), 0);
    assert_true(WAIT_FOR(rt_channel_stats(ch).connections == 2, SEC(5)));
    int a, b;
    count_names(ch, 20, &a, &b);
    assert_int_equal(a, 10); /* round robin: each in turn */
    assert_int_equal(b, 10);

    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, NULL, "/it.Set/Hold", NULL, 0, &o);
    assert_true(
        WAIT_FOR(atomic_load(&hold[0].started) + atomic_load(&hold[1].started) == 1, SEC(5)));
    int holder = atomic_load(&hold[0].started) ? 0 : 1;
    rt_untrack_server(srv[holder]);
    static struct shutter sh;
    sh = (struct shutter){.srv = srv[holder]};
    pthread_t t = start_thread(shutdown_thread, &sh);
    assert_true(WAIT_FOR(rt_channel_stats(ch).draining == 1, SEC(5)));
    count_names(ch, 10, &a, &b);
    assert_int_equal(holder == 0 ? a : b, 0); /* none to the one draining */
    assert_int_equal(holder == 0 ? b : a, 10);
    assert_int_equal(atomic_load(&hold[holder].finished), 0); /* it drained all along */

    atomic_store(&hold[holder].release, 1);
    join_thread(t);
    assert_int_equal(sh.rc, 0);
    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_OK); /* finished where it was */
    rt_handle_release(h);
    assert_true(WAIT_FOR(rt_channel_stats(ch).connections == 1, SEC(5)));
    count_names(ch, 5, &a, &b);
    assert_int_equal(holder == 0 ? b : a, 5);
    dctx_rpc_channel_stats st = rt_channel_stats(ch);
    assert_int_equal(st.calls, 36); /* the stats add up both URLs' */
    assert_int_equal(st.by_code[DCTX_OK], 36);
    dctx_rpc_channel_close(ch);
    assert_int_equal(dctx_rpc_server_close(srv[holder]), 0);
}

/* A URL nobody listens on is passed over while another is up; bad lists
 * are refused with nothing left open. */
static void channel_over_urls_passes_over_one_that_is_down(void **state)
{
    (void)state;
    const struct rt_method m[] = {{"/it.Set/Name", name_handler, name_b, NULL}};
    char up[256], down[256];
    rt_server_open(RT_IPC, NULL, m, 1, up, sizeof up);
    rt_url(RT_IPC, down, sizeof down); /* nobody listens there */
    const char *urls[] = {down, up};
    dctx_rpc_channel *ch = NULL;
    assert_int_equal(dctx_rpc_channel_open_urls(urls, 2, NULL, &ch), 0);
    assert_true(WAIT_FOR(rt_channel_stats(ch).connections == 1, SEC(5)));
    int a, b;
    count_names(ch, 10, &a, &b);
    assert_int_equal(b, 10);
    dctx_rpc_channel_close(ch);

    assert_int_equal(dctx_rpc_channel_open_urls(urls, 0, NULL, &ch), DCTX_INVALID_ARGUMENT);
    assert_null(ch);
    const char *bad[] = {up, "bogus://nowhere"};
    assert_int_equal(dctx_rpc_channel_open_urls(bad, 2, NULL, &ch), DCTX_INVALID_ARGUMENT);
    assert_null(ch);
    const char *one[] = {up};
    assert_int_equal(dctx_rpc_channel_open_urls(one, 1, NULL, &ch), 0);
    count_names(ch, 2, &a, &b);
    assert_int_equal(b, 2);
    dctx_rpc_channel_close(ch);
}

/* ===== A drain's deadline ===== */

/* The relay's view of its call, once the test lets it go on. */
static struct {
    dctx_rpc_channel *onward;
    atomic_int started, go;
    bool had_own, had_seen;
    int64_t own, seen;  /* dctx_deadline; dctx_rpc_deadline */
    int64_t calling_ns; /* just before its call onward */
} relay;

/* Waits (10 s at most) for the test's go, reads its deadlines, and calls
 * onward with its context. */
static int relay_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)req;
    (void)len;
    (void)reply;
    atomic_store(&relay.started, 1);
    for (int i = 0; i < 10000 && !atomic_load(&relay.go); i++)
        dctx_wait(ctx, MS(1));
    relay.had_own = dctx_deadline(ctx, &relay.own);
    relay.had_seen = dctx_rpc_deadline(ctx, &relay.seen);
    relay.calling_ns = dctx_now();
    return dctx_rpc_call_raw(relay.onward, ctx, "/it.Drain/Probe", NULL, 0, NULL);
}

/* A handler of a server that drains sees the drain's end as its deadline
 * through dctx_rpc_deadline (dctx_deadline keeps the call's own 60 s),
 * and its call onward carries what is left of it as its budget. */
static void drain_is_the_deadline_handlers_and_their_calls_onward_see(void **state)
{
    (void)state;
    static rt_probe leaf;
    rt_probe_init(&leaf, RT_PROBE_RETURN, 0);
    char leaf_url[256], url[256];
    rt_serve(RT_IPC, NULL, "/it.Drain/Probe", rt_probe_handler, &leaf, leaf_url);
    memset(&relay, 0, sizeof relay);
    relay.onward = rt_channel_open(leaf_url, NULL);
    dctx_rpc_server_options so = rt_server_options(2);
    so.shutdown_grace_ns = SEC(3);
    dctx_rpc_server *srv = rt_serve(RT_IPC, &so, "/it.Drain/Relay", relay_handler, NULL, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx *ctx;
    assert_int_equal(dctx_with_timeout(dctx_background(), SEC(60), &ctx), 0);
    rt_track_ctx(ctx);
    int64_t own = 0, seen = 0;
    assert_true(dctx_rpc_deadline(ctx, &seen)); /* under no server: its own */
    assert_true(dctx_deadline(ctx, &own));
    assert_int_equal(seen, own);

    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Drain/Relay", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&relay.started), SEC(5)));
    rt_untrack_server(srv);
    static struct shutter sh;
    sh = (struct shutter){.srv = srv};
    int64_t before = dctx_now();
    pthread_t t = start_thread(shutdown_thread, &sh);
    assert_true(WAIT_FOR(rt_channel_stats(ch).draining == 1, SEC(5)));
    int64_t after = dctx_now(); /* the drain began between before and after */
    atomic_store(&relay.go, 1);
    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_OK);
    rt_handle_release(h);
    join_thread(t);
    assert_int_equal(sh.rc, 0);

    assert_true(relay.had_own);
    assert_true(relay.own > after + SEC(50)); /* the call's own deadline, unchanged */
    assert_true(relay.had_seen);
    assert_ns_in(relay.seen - before, SEC(3), SEC(3) + (after - before));
    assert_true(leaf.had_deadline); /* the budget onward: what was left of the drain */
    /* A budget is re-anchored where it is read: the leaf's deadline is at
     * most the drain's end plus the way there (from the call onward to the
     * leaf's handler), never the call's own 60 s. */
    assert_true(leaf.deadline_ns <= relay.seen + (leaf.entered_ns - relay.calling_ns));
    assert_true(leaf.deadline_ns > before);
    assert_int_equal(dctx_rpc_server_close(srv), 0);
    rt_ctx_release(ctx);
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
    dctx_rpc_server *srv = rt_serve(RT_IPC, NULL, "/it.Close/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    static struct rt_thread_call c;
    memset(&c, 0, sizeof c);
    c.ch = ch;
    c.method = "/it.Close/Wait";
    pthread_t t = start_thread(rt_thread_call_main, &c);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));
    rt_untrack_channel(ch);
    int64_t t_close = dctx_now();
    dctx_rpc_channel_close(ch);
    join_thread(t);
    assert_int_equal(c.rc, DCTX_UNAVAILABLE);
    assert_contains(c.res.message, "closed");
    assert_ns_in(c.returned_ns - t_close, 0, SEC(1)); /* not the handler's 10 s */
    dctx_rpc_result_free(&c.res);
    /* the handler saw its caller go */
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_true(WAIT_FOR(rt_server_stats(srv).calls_canceled_by_peer_loss == 1, SEC(5)));
}

static int close_race_echo(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
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
    atomic_int rounds;        /* rounds whose channel close returned */
    atomic_int gave_up;       /* closes that took 450 ms or more (a hang) */
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
        if (dctx_rpc_channel_open(url, NULL, &ch) != 0)
            return 4;
        dctx_rpc_result res;
        int rc = dctx_rpc_call_raw(ch, NULL, "/it.Close/Echo", NULL, 0, &res); /* connected */
        if (rc != 0) {
            fprintf(stderr, "round %d: the first call: %s: %s\n", i, dctx_code_name(rc),
                    res.message);
            return 4;
        }
        dctx_rpc_result_free(&res);
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

/* A file of the test's own with text that is no certificate. */
static void write_garbage_pem(char *path, size_t len)
{
    rt_path("garbage.pem", path, len);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n", f);
    fclose(f);
}

/* Each way a listen can fail gets the status that says why, and the
 * server keeps the listeners it has. */
static void listen_failures_name_their_cause(void **state)
{
    (void)state;
    char pem[256];
    write_garbage_pem(pem, sizeof pem);
    dctx_rpc_server_options so = rt_server_options(1);
    so.tls_cert_key_file = pem;
    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(&so, &srv), 0);
    rt_track_server(srv);
    assert_int_equal(dctx_rpc_server_register(srv, "/it.Listen/Echo", rt_echo_handler, NULL), 0);
    char url[256];
    rt_server_listen(srv, RT_TCP, url, sizeof url);
    assert_int_equal(dctx_rpc_server_listen(srv, url), DCTX_UNAVAILABLE); /* in use */
    assert_int_equal(dctx_rpc_server_listen(srv, "ipc:///nonexistent-dctx-dir/x.ipc"),
                     DCTX_NOT_FOUND);
    assert_int_equal(dctx_rpc_server_listen(srv, "bogus://x"), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_rpc_server_listen(srv, "tcp://256.1.1.1:5"), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_rpc_server_listen(srv, "tls+tcp://127.0.0.1:0"), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_rpc_server_listen(srv, NULL), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_rpc_server_start(srv), 0);

    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx *ctx = rt_with_timeout(SEC(5));
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Listen/Echo", "hi", 2, NULL), DCTX_OK);
    rt_ctx_release(ctx);
    rt_channel_close(ch);
    assert_int_equal(rt_server_close(srv), 0);
}

/* A channel that cannot be opened says why and leaves *out NULL. */
static void channel_open_failures_name_their_cause(void **state)
{
    (void)state;
    dctx_rpc_channel *ch = (dctx_rpc_channel *)&ch; /* not NULL: open must clear it */
    assert_int_equal(dctx_rpc_channel_open("bogus://x", NULL, &ch), DCTX_INVALID_ARGUMENT);
    assert_null(ch);
    assert_int_equal(dctx_rpc_channel_open(NULL, NULL, &ch), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_rpc_channel_open("tcp://127.0.0.1:5", NULL, NULL), DCTX_INVALID_ARGUMENT);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.tls_ca_file = "/nonexistent-dctx-dir/ca.pem";
    assert_int_equal(dctx_rpc_channel_open("tls+tcp://127.0.0.1:5", &co, &ch), DCTX_NOT_FOUND);
    assert_null(ch);
    char pem[256];
    write_garbage_pem(pem, sizeof pem);
    co.tls_ca_file = pem;
    assert_int_equal(dctx_rpc_channel_open("tls+tcp://127.0.0.1:5", &co, &ch),
                     DCTX_INVALID_ARGUMENT);
    assert_null(ch);
}

/* Closing a channel while replies arrive on its connection returns at
 * once, every round, and the server closes after it (nng 1.5.2's REQ
 * socket had a close race here, nng #1636, that wedged its reaper: the
 * session transport closes its own streams). Run in a child, declared
 * stuck when it makes no progress for 3 s. */
static void closing_a_channel_while_replies_arrive_returns(void **state)
{
    (void)state;
    enum { ROUNDS = 500 }; /* nng #1636 showed within 130 rounds */
    enum rt_transport ts[] = {RT_IPC, RT_TCP};
    char report[512] = "";
    for (int k = 0; k < 2; k++) {
        const char *tname = rt_transport_name(ts[k]);
        char url[256], shared[256];
        rt_path("close", shared, sizeof shared);
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
            if (!WAIT_FOR(atomic_load(&sh->ready), SEC(30))) {
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
                rt_untrack_child(pid);
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

int main(int argc, char **argv)
{
    rt_init("rpc_lifecycle", RT_PORTS_LIFECYCLE);
    if (argc == 5 && strcmp(argv[1], "--close-race") == 0)
        return close_race_child(argv[2], argv[3], atoi(argv[4]));
    int child = rt_child_main(argc, argv);
    if (child >= 0)
        return child;
    const struct CMUnitTest tests[] = {
        RT_TEST(a_failed_server_start_leaves_the_server_as_it_was),
        RT_TEST(listen_failures_name_their_cause),
        RT_TEST(channel_open_failures_name_their_cause),
        RT_TEST(close_stops_handlers_that_outlive_the_drains_grace),
        RT_TEST(close_reports_a_handler_that_outlives_the_grace),
        RT_TEST(close_refuses_new_calls_while_it_waits),
        RT_TEST(shutdown_leaves_the_stats_readable_until_close),
        RT_TEST(channel_over_two_urls_shares_calls_and_goes_around_a_drain),
        RT_TEST(channel_over_urls_passes_over_one_that_is_down),
        RT_TEST(drain_is_the_deadline_handlers_and_their_calls_onward_see),
        RT_TEST(closing_a_channel_ends_a_blocking_call_in_flight_unavailable),
        RT_TEST(closing_a_channel_while_replies_arrive_returns),
    };
    return cmocka_run_group_tests_name("rpc_lifecycle", tests, rt_group_setup, NULL);
}
