/*
 * test_after.c - after-funcs: Go's AfterFunc tests (x_test.go) and what C
 * adds: where fn runs, what it keeps alive, and stop racing cancel.
 */
#include <semaphore.h>
#include <stdatomic.h>
#include <time.h>

#include "testutil.h"

struct probe {
    sem_t ran; /* posted once per run of fn */
    atomic_int runs;
    pthread_t thread;   /* the thread fn ran on */
    dctx *ctx;          /* inspected by fn, if set */
    atomic_int ctx_err; /* dctx_err(ctx) as fn saw it */
    sem_t release;      /* fn waits on it, if block is set */
    bool block;
};

static void probe_init(struct probe *p)
{
    sem_init(&p->ran, 0, 0);
    sem_init(&p->release, 0, 0);
    atomic_init(&p->runs, 0);
    atomic_init(&p->ctx_err, -1);
    p->ctx = NULL;
    p->block = false;
}

static void probe_fini(struct probe *p)
{
    sem_destroy(&p->ran);
    sem_destroy(&p->release);
}

static void probe_fn(void *arg)
{
    struct probe *p = arg;
    bool block = p->block; /* p may be gone once ran is posted, unless block */
    p->thread = pthread_self();
    if (p->ctx != NULL)
        atomic_store(&p->ctx_err, dctx_err(p->ctx));
    atomic_fetch_add(&p->runs, 1);
    sem_post(&p->ran);
    if (block)
        sem_wait(&p->release);
}

/* Wait up to timeout for fn to have run once. */
static bool ran_within(struct probe *p, int64_t timeout)
{
    struct timespec now; /* sem_timedwait takes CLOCK_REALTIME */
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t at = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec + timeout;
    struct timespec ts = {at / 1000000000, at % 1000000000};
    return sem_timedwait(&p->ran, &ts) == 0;
}

static dctx *cancelable(void)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_cancel(dctx_background(), &c), 0);
    return c;
}

/* TestAfterFuncCalledAfterCancel */
static void after_func_runs_on_cancel_and_then_cannot_be_stopped(void **state)
{
    (void)state;
    struct probe p;
    probe_init(&p);
    dctx *ctx = cancelable();
    dctx_after *h = NULL;
    assert_int_equal(dctx_after_func(ctx, probe_fn, &p, &h), 0);
    assert_false(ran_within(&p, MS(20)));
    dctx_cancel(ctx);
    assert_true(ran_within(&p, SEC(10)));
    assert_false(dctx_after_stop(h));
    assert_int_equal(atomic_load(&p.runs), 1);
    dctx_release(ctx);
    probe_fini(&p);
}

/* TestAfterFuncCalledAfterTimeout */
static void after_func_runs_when_the_timeout_fires(void **state)
{
    (void)state;
    struct probe p;
    probe_init(&p);
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_timeout(dctx_background(), MS(5), &ctx), 0);
    assert_int_equal(dctx_after_func(ctx, probe_fn, &p, NULL), 0);
    assert_true(ran_within(&p, SEC(10)));
    assert_int_equal(dctx_err(ctx), DCTX_DEADLINE_EXCEEDED);
    dctx_release(ctx);
    probe_fini(&p);
}

/* TestAfterFuncCalledImmediately */
static void after_func_on_a_done_context_runs_at_once(void **state)
{
    (void)state;
    struct probe p;
    probe_init(&p);
    dctx *ctx = cancelable();
    dctx_cancel(ctx);
    dctx_after *h = NULL;
    assert_int_equal(dctx_after_func(ctx, probe_fn, &p, &h), 0);
    assert_true(ran_within(&p, SEC(10)));
    assert_false(dctx_after_stop(h));
    dctx_release(ctx);
    probe_fini(&p);
}

/* TestAfterFuncNotCalledAfterStop */
static void stopped_after_func_never_runs(void **state)
{
    (void)state;
    struct probe p;
    probe_init(&p);
    dctx *ctx = cancelable();
    dctx_after *h = NULL;
    assert_int_equal(dctx_after_func(ctx, probe_fn, &p, &h), 0);
    assert_true(dctx_after_stop(h));
    dctx_cancel(ctx);
    assert_false(ran_within(&p, MS(50)));
    assert_int_equal(children_of(ctx), 0);
    dctx_release(ctx);
    probe_fini(&p);
}

/* TestAfterFuncCalledAsynchronously: cancel returns while fn blocks, and
 * fn runs on a library thread, not the canceler's. */
static void cancel_never_waits_for_a_running_after_func(void **state)
{
    (void)state;
    struct probe p;
    probe_init(&p);
    p.block = true;
    dctx *ctx = cancelable();
    assert_int_equal(dctx_after_func(ctx, probe_fn, &p, NULL), 0);
    dctx_cancel(ctx); /* would hang here if it ran fn */
    assert_true(ran_within(&p, SEC(10)));
    assert_false(pthread_equal(p.thread, pthread_self()));
    /* a second after-func runs although the first still blocks */
    struct probe q;
    probe_init(&q);
    assert_int_equal(dctx_after_func(ctx, probe_fn, &q, NULL), 0);
    assert_true(ran_within(&q, SEC(10)));
    sem_post(&p.release);
    dctx_release(ctx);
    /* let fn leave before its probe goes away */
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL);
    probe_fini(&p);
    probe_fini(&q);
}

/* Registrations are independent; each runs once. */
static void several_after_funcs_each_run_once(void **state)
{
    (void)state;
    enum { N = 50 };
    struct probe p[N];
    dctx *ctx = cancelable();
    static const dctx_key key = {"k", 0};
    dctx *v = NULL;
    assert_int_equal(dctx_with_value(ctx, &key, "v", 2, &v), 0);
    for (int i = 0; i < N; i++) {
        probe_init(&p[i]);
        /* half on the value child: they hang on ctx's list */
        assert_int_equal(dctx_after_func(i % 2 ? v : ctx, probe_fn, &p[i], NULL), 0);
    }
    assert_int_equal(children_of(ctx), N);
    dctx_cancel(ctx);
    for (int i = 0; i < N; i++)
        assert_true(ran_within(&p[i], SEC(10)));
    assert_false(ran_within(&p[0], MS(20)));
    for (int i = 0; i < N; i++) {
        assert_int_equal(atomic_load(&p[i].runs), 1);
        probe_fini(&p[i]);
    }
    dctx_release(v);
    dctx_release(ctx);
}

/* A pending after-func keeps its context alive after the caller's last
 * release; fn can still read it (AddressSanitizer would catch a
 * use-after-free). */
static void pending_after_func_keeps_context_alive(void **state)
{
    (void)state;
    struct probe p;
    probe_init(&p);
    dctx *parent = cancelable();
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_cancel(parent, &ctx), 0);
    p.ctx = ctx;
    assert_int_equal(dctx_after_func(ctx, probe_fn, &p, NULL), 0);
    dctx_release(ctx);
    dctx_cancel(parent);
    assert_true(ran_within(&p, SEC(10)));
    assert_int_equal(atomic_load(&p.ctx_err), DCTX_CANCELED);
    dctx_release(parent);
    probe_fini(&p);
}

/* On a context that can never be done, fn never runs; stop says so. */
static void after_func_on_a_never_done_context_never_runs(void **state)
{
    (void)state;
    struct probe p;
    probe_init(&p);
    dctx *wc = NULL;
    dctx *parent = cancelable();
    assert_int_equal(dctx_without_cancel(parent, &wc), 0);
    dctx_after *h = NULL;
    assert_int_equal(dctx_after_func(dctx_background(), probe_fn, &p, NULL), 0);
    assert_int_equal(dctx_after_func(wc, probe_fn, &p, &h), 0);
    dctx_cancel(parent);
    assert_false(ran_within(&p, MS(20)));
    assert_true(dctx_after_stop(h));
    dctx_release(wc);
    dctx_release(parent);
    probe_fini(&p);
}

/* Two after-funcs of one cancel, the first waiting for the second: both
 * run (each gets a thread; Go runs each in its own goroutine). */
struct pair {
    sem_t second_ran;
    sem_t both_done;
    atomic_int first_saw_second;
};

static void first_waits_for_second(void *arg)
{
    struct pair *p = arg;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    now.tv_sec += 10;
    if (sem_timedwait(&p->second_ran, &now) == 0)
        atomic_store(&p->first_saw_second, 1);
    sem_post(&p->both_done);
}

static void second_signals(void *arg)
{
    struct pair *p = arg;
    sem_post(&p->second_ran);
    sem_post(&p->both_done);
}

static void after_funcs_do_not_wait_behind_each_other(void **state)
{
    (void)state;
    for (int round = 0; round < 20; round++) {
        struct pair p;
        sem_init(&p.second_ran, 0, 0);
        sem_init(&p.both_done, 0, 0);
        atomic_init(&p.first_saw_second, 0);
        dctx *ctx = cancelable();
        assert_int_equal(dctx_after_func(ctx, first_waits_for_second, &p, NULL), 0);
        assert_int_equal(dctx_after_func(ctx, second_signals, &p, NULL), 0);
        dctx_cancel(ctx);
        sem_wait(&p.both_done);
        sem_wait(&p.both_done);
        assert_int_equal(atomic_load(&p.first_saw_second), 1);
        sem_destroy(&p.second_ran);
        sem_destroy(&p.both_done);
        dctx_release(ctx);
    }
}

/* Go: once the cancel has returned, f has been started, so stop returns
 * false and f runs. */
static void stop_after_cancel_returned_is_false(void **state)
{
    (void)state;
    for (int round = 0; round < 100; round++) {
        struct probe p;
        probe_init(&p);
        dctx *ctx = cancelable();
        dctx_after *h = NULL;
        assert_int_equal(dctx_after_func(ctx, probe_fn, &p, &h), 0);
        dctx_cancel(ctx);
        assert_false(dctx_after_stop(h));
        assert_true(ran_within(&p, SEC(10)));
        dctx_release(ctx);
        probe_fini(&p);
    }
}

struct race {
    dctx *ctx;
    dctx_after *h;
    sem_t go;
    atomic_bool stopped;
};

static void *stop_thread(void *arg)
{
    struct race *r = arg;
    sem_wait(&r->go);
    atomic_store(&r->stopped, dctx_after_stop(r->h));
    return NULL;
}

/* Stop racing cancel, 10,000 times: exactly one of "fn ran" and "stop
 * returned true" holds each time. */
static void stop_racing_cancel_decides_exactly_once(void **state)
{
    (void)state;
    int ran_count = 0, stopped_count = 0;
    for (int i = 0; i < 10000; i++) {
        struct probe p;
        probe_init(&p);
        struct race r;
        r.ctx = cancelable();
        sem_init(&r.go, 0, 0);
        atomic_init(&r.stopped, false);
        assert_int_equal(dctx_after_func(r.ctx, probe_fn, &p, &r.h), 0);
        pthread_t t = start_thread(stop_thread, &r);
        sem_post(&r.go);
        dctx_cancel(r.ctx);
        join_thread(t);
        bool stopped = atomic_load(&r.stopped);
        /* if it was not stopped it must run: wait for it; if it was, give it
         * no chance to have run */
        bool ran = stopped ? atomic_load(&p.runs) > 0 : ran_within(&p, SEC(10));
        if (stopped == ran)
            fail_msg("round %d: stopped=%d ran=%d", i, stopped, ran);
        ran_count += ran;
        stopped_count += stopped;
        dctx_release(r.ctx);
        sem_destroy(&r.go);
        if (stopped) {
            /* fn must still not run later */
            assert_int_equal(atomic_load(&p.runs), 0);
        }
        probe_fini(&p);
    }
    print_message("stop won %d times, fn ran %d times\n", stopped_count, ran_count);
    assert_int_equal(ran_count + stopped_count, 10000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(after_func_runs_on_cancel_and_then_cannot_be_stopped),
        cmocka_unit_test(after_func_runs_when_the_timeout_fires),
        cmocka_unit_test(after_func_on_a_done_context_runs_at_once),
        cmocka_unit_test(stopped_after_func_never_runs),
        cmocka_unit_test(cancel_never_waits_for_a_running_after_func),
        cmocka_unit_test(several_after_funcs_each_run_once),
        cmocka_unit_test(pending_after_func_keeps_context_alive),
        cmocka_unit_test(after_func_on_a_never_done_context_never_runs),
        cmocka_unit_test(after_funcs_do_not_wait_behind_each_other),
        cmocka_unit_test(stop_after_cancel_returned_is_false),
        cmocka_unit_test(stop_racing_cancel_decides_exactly_once),
    };
    return cmocka_run_group_tests_name("after", tests, NULL, NULL);
}
