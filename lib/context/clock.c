/*
 * clock.c - the monotonic clock every deadline is measured on, and
 * condition variables that wait on it.
 */
#include "clock.h"

#include <dctx/dctx.h>

int64_t dctx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * DCTX__NS_PER_S + ts.tv_nsec;
}

int dctx__cond_init_monotonic(pthread_cond_t *cv)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
    return rc;
}

void dctx__cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t abs_ns)
{
    if (abs_ns == INT64_MAX) {
        pthread_cond_wait(cv, mu);
        return;
    }
    struct timespec ts = dctx__timespec(abs_ns);
    pthread_cond_timedwait(cv, mu, &ts);
}
