/*
 * alloc.c - malloc with a failure injector for tests (see alloc.h).
 */
#include "alloc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

/* Test hooks cost nothing until a test turns them on: one relaxed load of
 * a flag that production code never writes. */
static atomic_bool hooks_on;
static atomic_long allocs_left = -1; /* before failures start; negative: never */
static atomic_long allocs_made;      /* successful allocations while hooks_on */

static void *hooked_malloc(size_t size)
{
    if (atomic_load_explicit(&allocs_left, memory_order_relaxed) >= 0 &&
        atomic_fetch_sub_explicit(&allocs_left, 1, memory_order_relaxed) <= 0) {
        atomic_store_explicit(&allocs_left, 0, memory_order_relaxed);
        return NULL;
    }
    void *p = malloc(size);
    if (p != NULL)
        atomic_fetch_add_explicit(&allocs_made, 1, memory_order_relaxed);
    return p;
}

void *dctx__malloc(size_t size)
{
    if (__builtin_expect(atomic_load_explicit(&hooks_on, memory_order_relaxed), 0))
        return hooked_malloc(size);
    return malloc(size);
}

int dctx__thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    if (__builtin_expect(atomic_load_explicit(&hooks_on, memory_order_relaxed), 0) &&
        atomic_load_explicit(&allocs_left, memory_order_relaxed) >= 0 &&
        atomic_fetch_sub_explicit(&allocs_left, 1, memory_order_relaxed) <= 0) {
        atomic_store_explicit(&allocs_left, 0, memory_order_relaxed);
        return EAGAIN;
    }
    return pthread_create(t, NULL, fn, arg);
}

void dctx__test_fail_alloc_after(long after)
{
    atomic_store_explicit(&hooks_on, true, memory_order_relaxed);
    atomic_store_explicit(&allocs_left, after, memory_order_relaxed);
}

long dctx__test_alloc_count(void)
{
    atomic_store_explicit(&hooks_on, true, memory_order_relaxed);
    return atomic_load_explicit(&allocs_made, memory_order_relaxed);
}
