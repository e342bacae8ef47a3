/*
 * alloc.h - the library's allocator and thread starter: malloc and
 * pthread_create, with a failure injector so tests can prove that every
 * out-of-memory path returns DCTX_RESOURCE_EXHAUSTED and leaks nothing.
 */
#ifndef DCTX_ALLOC_H
#define DCTX_ALLOC_H

#include <pthread.h>
#include <stddef.h>

void *dctx__malloc(size_t size);

/* dctx__thread_start is pthread_create with default attributes; the
 * failure injector counts it as an allocation. Returns 0 or an errno. */
int dctx__thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

/* Test hook: the next `after` allocations succeed, then every one fails,
 * until called again with a negative count (the default: never fail). */
void dctx__test_fail_alloc_after(long after);

/* Test hook: the number of successful allocations since the first call
 * of a test hook (the first call turns counting on and returns 0 or more). */
long dctx__test_alloc_count(void);

#endif /* DCTX_ALLOC_H */
