/*
 * futex.c - the contended path of dctx__lock (see futex.h).
 */
#include "futex.h"

/* Spin first, with plain loads between attempts: the lock guards a few
 * pointer updates, so its holder (on another core) is about to let go.
 * Marking the lock contended (2) costs more than the spin: every unlock
 * of a lock marked 2 makes a futex_wake system call, even when nobody
 * sleeps. Only a long hold (a cancel walking a large subtree holds its
 * node until the subtree is done) gets us to sleep. */
#define SPIN_ROUNDS 400 /* about 25k pauses in all */

void dctx__lock_slow(dctx__lock *l)
{
    /* Exponential backoff: a spinner that reads the lock word pulls its
     * cache line away from the holder, who must win it back to unlock. */
    unsigned pause = 1;
    for (int i = 0; i < SPIN_ROUNDS; i++) {
        int expected = 0;
        if (atomic_load_explicit(&l->state, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&l->state, &expected, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
        for (unsigned p = 0; p < pause; p++) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
        }
        if (pause < 64)
            pause *= 2;
    }
    /* Mark the lock contended (2) whenever we take it from here on: we cannot
     * know whether others sleep, so the unlocker must wake one. */
    while (atomic_exchange_explicit(&l->state, 2, memory_order_acquire) != 0)
        dctx__futex_wait(&l->state, 2, INT64_MAX);
}
