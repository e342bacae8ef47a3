/*
 * testutil.h - small helpers shared by the tests: time units, a look
 * inside a node's children list, thread start/join that fail the test
 * loudly, which sanitizer the build has, polling for a condition, and the
 * process's open descriptors. Header-only; each test program includes it
 * once.
 */
#ifndef DCTX_TESTUTIL_H
#define DCTX_TESTUTIL_H

#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include <cmocka.h>

#include <dctx/dctx.h>

#include "context_impl.h"

#define US(n) ((int64_t)(n)*1000)
#define MS(n) ((int64_t)(n)*1000000)
#define SEC(n) ((int64_t)(n)*1000000000)

/* The number of entries (child nodes and after-funcs) in the list of the
 * cancelable node ctx takes its done state from: Go's len(c.children). */
static inline size_t children_of(dctx *ctx)
{
    struct dctx__cancel *c = ctx->done_src;
    if (c == NULL)
        return 0;
    size_t n = 0;
    dctx__lock_acquire(&c->lock);
    for (struct dctx__link *l = c->children.next; l != &c->children; l = l->next)
        n++;
    struct dctx__shard *shards = atomic_load(&c->shards);
    for (int i = 0; shards != NULL && i < DCTX__SHARDS; i++) {
        dctx__lock_acquire(&shards[i].lock);
        for (struct dctx__link *l = shards[i].children.next; l != &shards[i].children; l = l->next)
            n++;
        dctx__lock_release(&shards[i].lock);
    }
    dctx__lock_release(&c->lock);
    return n;
}

/* Whether ctx's children list has been split into shards (cancel.c). */
static inline bool has_shards(dctx *ctx)
{
    return ctx->done_src != NULL && atomic_load(&ctx->done_src->shards) != NULL;
}

static inline pthread_t start_thread(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    if (pthread_create(&t, NULL, fn, arg) != 0)
        fail_msg("pthread_create failed");
    return t;
}

static inline void join_thread(pthread_t t)
{
    if (pthread_join(t, NULL) != 0)
        fail_msg("pthread_join failed");
}

/* Which sanitizer the build has (GCC's and clang's spellings):
 * THREAD_SANITIZED under ThreadSanitizer, SANITIZED under it or
 * AddressSanitizer. */
#if defined(__SANITIZE_THREAD__)
#define THREAD_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define THREAD_SANITIZED 1
#endif
#endif
#ifndef THREAD_SANITIZED
#define THREAD_SANITIZED 0
#endif
#if THREAD_SANITIZED || defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* Sanitizer builds run several times slower; loops that only add
 * confidence scale down with this (never below what a test promises). */
static inline int stress_scale(void)
{
    return SANITIZED ? 4 : 1;
}

/* Poll cond every 200 us until it holds (true) or timeout_ns pass (false). */
#define WAIT_FOR(cond, timeout_ns)                                                                 \
    __extension__({                                                                                \
        int64_t wait_until_ = dctx_now() + (timeout_ns);                                           \
        bool wait_ok_;                                                                             \
        while (!(wait_ok_ = (cond)) && dctx_now() < wait_until_)                                   \
            nanosleep(&(struct timespec){.tv_nsec = 200000}, NULL);                                \
        wait_ok_;                                                                                  \
    })

/* The descriptors this process has open. */
static inline int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.';
    closedir(d);
    return n - 1; /* not opendir's own */
}

#endif /* DCTX_TESTUTIL_H */
