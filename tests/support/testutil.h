/*
 * testutil.h - small helpers shared by the unit tests: time units, a look
 * inside a node's children list, and thread start/join that fail the test
 * loudly. Header-only; each test program includes it once.
 */
#ifndef DCTX_TESTUTIL_H
#define DCTX_TESTUTIL_H

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

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

/* Sanitizer builds run several times slower; loops that only add
 * confidence scale down with this (never below what a test promises). */
static inline int stress_scale(void)
{
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    return 4;
#else
    return 1;
#endif
}

#endif /* DCTX_TESTUTIL_H */
