/*
 * test_timer.c - deadlines at scale: 100,000 live timers all fire, none
 * early; removal from anywhere in the heap keeps it a heap; releasing a
 * context with a live timer (no cancel) never lets the timer thread touch
 * freed memory (AddressSanitizer).
 */
#include <stdatomic.h>
#include <time.h>

#include "testutil.h"

enum { MANY = 100000 };

static void sleep_ns(int64_t ns)
{
    struct timespec ts = {ns / 1000000000, ns % 1000000000};
    nanosleep(&ts, NULL);
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Each fires (through the timer thread: nobody waits on them), and only at
 * or after its own deadline, which an after-func checks. */
struct fired {
    dctx *ctx;
    int64_t deadline;
    atomic_int early;
    atomic_int count;
};

static void record_fire(void *arg)
{
    struct fired *f = arg;
    if (dctx_now() < f->deadline || dctx_err(f->ctx) != DCTX_DEADLINE_EXCEEDED)
        atomic_fetch_add(&f->early, 1);
    atomic_fetch_add(&f->count, 1);
}

static void hundred_thousand_live_timers_all_fire(void **state)
{
    (void)state;
    static dctx *ctxs[MANY];
    static struct fired probes[MANY];
    int64_t start = dctx_now();
    int64_t latest = 0;
    for (int i = 0; i < MANY; i++) {
        /* far enough out that all are live at once, even in a slow build */
        int64_t d =
            start + MS(1000) * stress_scale() + (int64_t)(next_random() % (uint64_t)MS(400));
        latest = d > latest ? d : latest;
        assert_int_equal(dctx_with_deadline(dctx_background(), d, &ctxs[i]), 0);
        probes[i].ctx = ctxs[i];
        probes[i].deadline = d;
        atomic_init(&probes[i].early, 0);
        atomic_init(&probes[i].count, 0);
        if (i % 10 == 0) /* a tenth also carry an after-func that checks the time */
            assert_int_equal(dctx_after_func(ctxs[i], record_fire, &probes[i], NULL), 0);
    }
    assert_true(dctx__test_timer_heap_check() >= MANY);
    /* all live now; wait until all are done, bounded */
    int64_t give_up = latest + SEC(20) * stress_scale();
    for (int i = 0; i < MANY; i++) {
        while (!dctx_done(ctxs[i]) && dctx_now() < give_up)
            sleep_ns(MS(1));
        if (dctx_err(ctxs[i]) != DCTX_DEADLINE_EXCEEDED)
            fail_msg("timer %d did not fire", i);
    }
    assert_true(dctx_now() >= latest);
    for (int i = 0; i < MANY; i += 10) {
        while (atomic_load(&probes[i].count) == 0 && dctx_now() < give_up)
            sleep_ns(MS(1));
        assert_int_equal(atomic_load(&probes[i].count), 1);
        assert_int_equal(atomic_load(&probes[i].early), 0);
    }
    for (int i = 0; i < MANY; i++)
        dctx_release(ctxs[i]);
    assert_int_equal(dctx__test_timer_heap_check(), 0);
}

/* Remove timers from random places among 100,000; the heap stays a heap
 * and holds exactly the live ones. */
static void removing_any_timer_leaves_a_valid_heap_of_the_live_ones(void **state)
{
    (void)state;
    static dctx *ctxs[MANY];
    int64_t base = dctx_now() + SEC(3600);
    for (int i = 0; i < MANY; i++)
        assert_int_equal(dctx_with_deadline(dctx_background(),
                                            base + (int64_t)(next_random() % 1000000), &ctxs[i]),
                         0);
    assert_int_equal(dctx__test_timer_heap_check(), MANY);
    long live = MANY;
    for (int i = 0; i < MANY; i++) {
        int j = (int)(next_random() % MANY);
        if (ctxs[j] == NULL)
            continue;
        if (j % 2)
            dctx_cancel(ctxs[j]); /* cancel takes it out at once */
        dctx_release(ctxs[j]);
        ctxs[j] = NULL;
        live--;
        if (i % 5000 == 0)
            assert_int_equal(dctx__test_timer_heap_check(), live);
    }
    assert_int_equal(dctx__test_timer_heap_check(), live);
    for (int i = 0; i < MANY; i++)
        dctx_release(ctxs[i]);
    assert_int_equal(dctx__test_timer_heap_check(), 0);
}

/* Timers due right now, released without cancel while the timer thread
 * fires them: it must skip the dying ones, never touch freed memory. */
static void timers_released_while_they_fire_are_skipped_safely(void **state)
{
    (void)state;
    for (int round = 0; round < 20; round++) {
        enum { N = 2000 };
        dctx *ctxs[N];
        int64_t d = dctx_now() + US(500);
        for (int i = 0; i < N; i++)
            assert_int_equal(dctx_with_deadline(dctx_background(), d + i * 200, &ctxs[i]), 0);
        while (dctx_now() < d)
            ;
        for (int i = 0; i < N; i++)
            dctx_release(ctxs[i]);
    }
    assert_int_equal(dctx__test_timer_heap_check(), 0);
}

/* Nested timers: the child with the later deadline is a plain cancelable
 * child, fires with its parent, and has no timer of its own. */
static void later_child_deadline_adds_no_timer(void **state)
{
    (void)state;
    dctx *parent = NULL, *child = NULL;
    assert_int_equal(dctx_with_timeout(dctx_background(), MS(10), &parent), 0);
    long before = dctx__test_timer_heap_check();
    assert_int_equal(dctx_with_timeout_cause(parent, SEC(10), DCTX_ABORTED, "ignored", &child), 0);
    assert_int_equal(dctx__test_timer_heap_check(), before);
    assert_true(dctx_wait(child, SEC(10)));
    const char *msg = "x";
    assert_int_equal(dctx_err(child), DCTX_DEADLINE_EXCEEDED);
    assert_int_equal(dctx_cause(child, &msg), DCTX_DEADLINE_EXCEEDED);
    assert_null(msg);
    dctx_release(child);
    dctx_release(parent);
}

/* A parent canceled while timer children are being born: no canceled
 * child may be left in the heap (the cancel could reach a child before the
 * child was in it). */
struct births {
    dctx *parent;
    dctx *kids[500];
    atomic_int go;
};

static void *give_birth(void *arg)
{
    struct births *b = arg;
    while (!atomic_load(&b->go))
        ;
    for (int i = 0; i < 500; i++)
        if (dctx_with_timeout(b->parent, SEC(3600), &b->kids[i]) != 0)
            b->kids[i] = NULL;
    return NULL;
}

static void canceled_timer_children_leave_the_heap(void **state)
{
    (void)state;
    for (int round = 0; round < 200; round++) {
        struct births b = {0};
        assert_int_equal(dctx_with_cancel(dctx_background(), &b.parent), 0);
        pthread_t t = start_thread(give_birth, &b);
        atomic_store(&b.go, 1);
        dctx_cancel(b.parent);
        join_thread(t);
        /* every child is canceled and none is left in the heap */
        assert_int_equal(dctx__test_timer_heap_check(), 0);
        for (int i = 0; i < 500; i++) {
            assert_int_equal(dctx_err(b.kids[i]), DCTX_CANCELED);
            dctx_release(b.kids[i]);
        }
        dctx_release(b.parent);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hundred_thousand_live_timers_all_fire),
        cmocka_unit_test(removing_any_timer_leaves_a_valid_heap_of_the_live_ones),
        cmocka_unit_test(timers_released_while_they_fire_are_skipped_safely),
        cmocka_unit_test(later_child_deadline_adds_no_timer),
        cmocka_unit_test(canceled_timer_children_leave_the_heap),
    };
    return cmocka_run_group_tests_name("timer", tests, NULL, NULL);
}
