/*
 * test_wait.c - the blocking and pollable forms of Done: dctx_wait and
 * dctx_done_fd.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <time.h>

#include "testutil.h"

static dctx *cancelable(dctx *parent)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_cancel(parent, &c), 0);
    return c;
}

static bool readable(int fd, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

static void wait_times_out_no_sooner_than_asked(void **state)
{
    (void)state;
    dctx *c = cancelable(dctx_background());
    assert_false(dctx_wait(c, 0));
    int64_t t0 = dctx_now();
    assert_false(dctx_wait(c, MS(30)));
    int64_t waited = dctx_now() - t0;
    assert_true(waited >= MS(30));
    assert_true(waited < SEC(10));
    /* a never-done context times out too */
    t0 = dctx_now();
    assert_false(dctx_wait(dctx_background(), MS(10)));
    assert_true(dctx_now() - t0 >= MS(10));
    dctx_release(c);
}

struct canceler {
    dctx *ctx;
    int64_t after;
    int64_t canceled_at;
};

static void *cancel_later(void *arg)
{
    struct canceler *c = arg;
    struct timespec ts = {c->after / 1000000000, c->after % 1000000000};
    nanosleep(&ts, NULL);
    c->canceled_at = dctx_now();
    dctx_cancel(c->ctx);
    return NULL;
}

static void wait_wakes_on_cancel_from_another_thread(void **state)
{
    (void)state;
    static const dctx_key key = {"k", 0};
    struct canceler c = {.ctx = cancelable(dctx_background()), .after = MS(20)};
    dctx *v = NULL;
    assert_int_equal(dctx_with_value(c.ctx, &key, "v", 2, &v), 0);
    pthread_t t = start_thread(cancel_later, &c);
    assert_true(dctx_wait(v, -1)); /* through a value child */
    assert_int_equal(dctx_err(v), DCTX_CANCELED);
    join_thread(t);
    dctx_release(v);
    dctx_release(c.ctx);
}

struct waiter {
    dctx *ctx;
    atomic_int woke;
};

static void *wait_forever(void *arg)
{
    struct waiter *w = arg;
    if (dctx_wait(w->ctx, -1))
        atomic_fetch_add(&w->woke, 1);
    return NULL;
}

static void many_waiters_all_wake(void **state)
{
    (void)state;
    enum { N = 16 };
    struct waiter w = {.ctx = cancelable(dctx_background())};
    dctx *child = cancelable(w.ctx);
    struct waiter wc = {.ctx = child};
    pthread_t t[N];
    for (int i = 0; i < N; i++)
        t[i] = start_thread(wait_forever, i % 2 ? (void *)&w : (void *)&wc);
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL);
    dctx_cancel(w.ctx);
    for (int i = 0; i < N; i++)
        join_thread(t[i]);
    assert_int_equal(atomic_load(&w.woke) + atomic_load(&wc.woke), N);
    dctx_release(child);
    dctx_release(w.ctx);
}

/* A waiter on a deadline context returns true, at or after the deadline,
 * with DEADLINE_EXCEEDED and the deadline's cause. */
static void wait_returns_at_the_deadline(void **state)
{
    (void)state;
    for (int i = 0; i < 20; i++) {
        dctx *c = NULL, *child = NULL;
        assert_int_equal(
            dctx_with_timeout_cause(dctx_background(), MS(2), DCTX_ABORTED, "slow", &c), 0);
        child = cancelable(c);
        int64_t d = 0;
        assert_true(dctx_deadline(child, &d));
        assert_true(dctx_wait(child, SEC(10)));
        assert_true(dctx_now() >= d);
        assert_int_equal(dctx_err(child), DCTX_DEADLINE_EXCEEDED);
        assert_int_equal(dctx_err(c), DCTX_DEADLINE_EXCEEDED);
        const char *msg = NULL;
        assert_int_equal(dctx_cause(child, &msg), DCTX_ABORTED);
        assert_string_equal(msg, "slow");
        dctx_release(child);
        dctx_release(c);
    }
    /* a timeout shorter than the deadline still times out */
    dctx *c = NULL;
    assert_int_equal(dctx_with_timeout(dctx_background(), SEC(3600), &c), 0);
    assert_false(dctx_wait(c, MS(5)));
    assert_false(dctx_done(c));
    dctx_release(c);
}

static void done_fd_polls_readable_once_done(void **state)
{
    (void)state;
    static const dctx_key key = {"k", 0};
    dctx *c = cancelable(dctx_background());
    dctx *v = NULL;
    assert_int_equal(dctx_with_value(c, &key, "v", 2, &v), 0);
    int fd = dctx_done_fd(c);
    assert_true(fd >= 0);
    assert_int_equal(dctx_done_fd(c), fd);
    assert_int_equal(dctx_done_fd(v), fd); /* the value child shares it */
    assert_false(readable(fd, 0));
    dctx_cancel(c);
    assert_true(readable(fd, 0));
    assert_true(readable(fd, 0)); /* stays readable */
    dctx_release(v);
    dctx_release(c);
    /* closed with the context */
    errno = 0;
    assert_int_equal(fcntl(fd, F_GETFD), -1);
    assert_int_equal(errno, EBADF);

    /* made after the cancel: readable at once */
    c = cancelable(dctx_background());
    dctx_cancel(c);
    fd = dctx_done_fd(c);
    assert_true(fd >= 0);
    assert_true(readable(fd, 0));
    dctx_release(c);

    /* a deadline makes it readable through the timer thread */
    assert_int_equal(dctx_with_timeout(dctx_background(), MS(10), &c), 0);
    fd = dctx_done_fd(c);
    assert_false(readable(fd, 0));
    assert_true(readable(fd, 10000));
    assert_int_equal(dctx_err(c), DCTX_DEADLINE_EXCEEDED);
    dctx_release(c);

    /* never done: -1 with errno 0 */
    dctx *wc = NULL;
    assert_int_equal(dctx_without_cancel(v = cancelable(dctx_background()), &wc), 0);
    errno = EINVAL;
    assert_int_equal(dctx_done_fd(wc), -1);
    assert_int_equal(errno, 0);
    dctx_release(wc);
    dctx_release(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(wait_times_out_no_sooner_than_asked),
        cmocka_unit_test(wait_wakes_on_cancel_from_another_thread),
        cmocka_unit_test(many_waiters_all_wake),
        cmocka_unit_test(wait_returns_at_the_deadline),
        cmocka_unit_test(done_fd_polls_readable_once_done),
    };
    return cmocka_run_group_tests_name("wait", tests, NULL, NULL);
}
