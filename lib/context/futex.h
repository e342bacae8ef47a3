/*
 * futex.h - the two blocking primitives of the context core, on Linux
 * futexes: a 4-byte mutex for context nodes and a wait on a status word.
 *
 * Why not pthread_mutex_t: a context node is created and canceled millions
 * of times a second; a 40-byte pthread mutex is a fifth of a node, and the
 * lock is almost never contended. This is the classic three-state futex
 * mutex (0 free, 1 held, 2 held with sleepers), whose uncontended lock and
 * unlock are one atomic each. Acquire/release orders on the lock word give
 * ThreadSanitizer the happens-before edges it needs.
 */
#ifndef DCTX_FUTEX_H
#define DCTX_FUTEX_H

#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"

typedef struct dctx__lock {
    atomic_int state; /* 0 free, 1 held, 2 held and someone may sleep on it */
} dctx__lock;

#define DCTX__LOCK_INIT                                                                            \
    {                                                                                              \
        0                                                                                          \
    }

static inline void dctx__futex_wake(atomic_int *word, int count)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

/* dctx__futex_wait sleeps while *word == expected, until woken or until the
 * absolute CLOCK_MONOTONIC time abs_ns (INT64_MAX: no limit). Spurious
 * returns happen; callers re-check their condition. */
static inline void dctx__futex_wait(atomic_int *word, int expected, int64_t abs_ns)
{
    struct timespec ts = dctx__timespec(abs_ns);
    struct timespec *tp = abs_ns != INT64_MAX ? &ts : NULL;
    /* FUTEX_WAIT_BITSET takes an absolute time on CLOCK_MONOTONIC, so a
     * spurious wake-up never stretches the wait. */
    syscall(SYS_futex, word, FUTEX_WAIT_BITSET_PRIVATE, expected, tp, NULL, FUTEX_BITSET_MATCH_ANY);
}

void dctx__lock_slow(dctx__lock *l);

static inline void dctx__lock_acquire(dctx__lock *l)
{
    int expected = 0;
    if (atomic_compare_exchange_strong_explicit(&l->state, &expected, 1, memory_order_acquire,
                                                memory_order_relaxed))
        return;
    dctx__lock_slow(l);
}

/* Take the lock only if it is free: false when someone holds it. */
static inline bool dctx__lock_try_acquire(dctx__lock *l)
{
    int expected = 0;
    return atomic_compare_exchange_strong_explicit(&l->state, &expected, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}

static inline void dctx__lock_release(dctx__lock *l)
{
    if (atomic_exchange_explicit(&l->state, 0, memory_order_release) == 2)
        dctx__futex_wake(&l->state, 1);
}

#endif /* DCTX_FUTEX_H */
