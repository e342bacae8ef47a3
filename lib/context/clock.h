/*
 * clock.h - the library's one clock: every deadline and timeout here is
 * CLOCK_MONOTONIC nanoseconds (dctx_now), with INT64_MAX (DCTX_DEADLINE_NONE)
 * for none. Conversions and waits on that clock. Never installed.
 */
#ifndef DCTX_CONTEXT_CLOCK_H
#define DCTX_CONTEXT_CLOCK_H

#include <pthread.h>
#include <stdint.h>
#include <time.h>

#define DCTX__NS_PER_S 1000000000LL

/* A time in nanoseconds (absolute or relative, >= 0) as a timespec. */
static inline struct timespec dctx__timespec(int64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / DCTX__NS_PER_S),
                          .tv_nsec = (long)(ns % DCTX__NS_PER_S)};
    return ts;
}

/* a + b for b >= 0, INT64_MAX where it would overflow: "now plus a long
 * timeout" stays "no deadline". */
static inline int64_t dctx__add_sat(int64_t a, int64_t b)
{
    if (b > 0 && a > INT64_MAX - b)
        return INT64_MAX;
    return a + b;
}

/* dctx__cond_init_monotonic makes cv's timed waits use CLOCK_MONOTONIC, the
 * clock of every deadline here. Returns pthread_cond_init's result. */
int dctx__cond_init_monotonic(pthread_cond_t *cv);

/* dctx__cond_wait_until waits on cv (made by dctx__cond_init_monotonic,
 * mu held) until signaled or until the absolute time abs_ns (INT64_MAX: no
 * limit). Spurious returns happen; callers re-check their condition. */
void dctx__cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t abs_ns);

#endif /* DCTX_CONTEXT_CLOCK_H */
