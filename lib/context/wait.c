/*
 * wait.c - the blocking and pollable forms of Done: dctx_wait and
 * dctx_done_fd.
 *
 * dctx_wait sleeps on the done source's err word with a futex, so a
 * context needs no condition variable of its own; cancel wakes sleepers
 * only when the waiters count says there are some. A sleeper counts
 * itself in under the node's lock (so a cancel either sees it or it sees
 * err) and out without it (a count left high costs one spare wake-up). A waiter sleeps at most
 * until its context's deadline and enacts the deadline itself if it wakes
 * first: its lateness is one wake-up, not a wake-up of the timer thread
 * plus one of the waiter. It sleeps with 1 ns timer slack (restored after),
 * or the kernel may add 50 us to every wait.
 *
 * The done fd is an eventfd made on first request under the node's lock,
 * and written once by the cancel; the node closes it when freed.
 */
#include <errno.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "context_impl.h"

static void sleep_until(int64_t abs_ns)
{
    struct timespec ts = dctx__timespec(abs_ns);
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
}

static bool is_done(const struct dctx__cancel *s)
{
    return s != NULL && atomic_load_explicit(&s->err, memory_order_acquire) != 0;
}

/* Count ourselves as a sleeper on s, unless s is done. Under s's lock, so
 * a cancel (which sets err under it) either sees us and wakes us, or we
 * see err. The futex then sleeps only while err is still 0. */
static bool register_waiter(struct dctx__cancel *s)
{
    dctx__lock_acquire(&s->lock);
    bool live = atomic_load_explicit(&s->err, memory_order_relaxed) == 0;
    if (live)
        atomic_fetch_add_explicit(&s->waiters, 1, memory_order_relaxed);
    dctx__lock_release(&s->lock);
    return live;
}

bool dctx_wait(dctx *ctx, int64_t timeout_ns)
{
    if (ctx == NULL)
        return false;
    struct dctx__cancel *s = ctx->done_src;
    struct dctx__timer *t = ctx->deadline_src;
    if (is_done(s))
        return true;
    int64_t now = dctx_now();
    int64_t give_up = timeout_ns < 0 ? INT64_MAX : dctx__add_sat(now, timeout_ns);
    int64_t deadline = t != NULL ? t->deadline_ns : INT64_MAX;
    int old_slack = -1;
    bool done = false;
    for (;;) {
        if (is_done(s)) {
            done = true;
            break;
        }
        if (deadline <= now) {
            /* Enact it; if another thread is mid-way through the same
             * cascade, it will wake us when it reaches s. */
            dctx__expire(t);
            deadline = INT64_MAX;
            continue;
        }
        if (give_up <= now)
            break;
        if (old_slack < 0) {
            old_slack = prctl(PR_GET_TIMERSLACK);
            if (old_slack > 0)
                prctl(PR_SET_TIMERSLACK, 1UL);
        }
        int64_t until = deadline < give_up ? deadline : give_up;
        if (s != NULL) {
            if (register_waiter(s)) {
                dctx__futex_wait(&s->err, 0, until);
                atomic_fetch_sub_explicit(&s->waiters, 1, memory_order_relaxed);
            }
        } else {
            sleep_until(until); /* never done: only the timeout ends this */
        }
        now = dctx_now();
    }
    if (old_slack > 0)
        prctl(PR_SET_TIMERSLACK, (unsigned long)old_slack);
    return done;
}

int dctx_done_fd(dctx *ctx)
{
    struct dctx__cancel *s = ctx != NULL ? ctx->done_src : NULL;
    if (s == NULL) {
        errno = 0;
        return -1;
    }
    dctx__lock_acquire(&s->lock);
    int fd = s->done_fd;
    int saved_errno = 0;
    if (fd < 0) {
        fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        saved_errno = errno;
        s->done_fd = fd;
        /* A cancel that came first did not see the fd: signal it here. */
        if (fd >= 0 && atomic_load_explicit(&s->err, memory_order_relaxed) != 0) {
            uint64_t one = 1;
            ssize_t n = write(fd, &one, sizeof one);
            (void)n;
        }
    }
    dctx__lock_release(&s->lock);
    if (fd < 0)
        errno = saved_errno;
    return fd;
}
