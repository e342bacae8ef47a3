/*
 * alloc.c - malloc with a failure injector for tests (see alloc.h).
 */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>

/* Allocations left before failures start; negative: never fail. Relaxed:
 * only tests set it, between operations. */
static atomic_long allocs_left = -1;
static atomic_long allocs_made; /* successful allocations, for tests */

void *dctx__malloc(size_t size)
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

long dctx__test_alloc_count(void)
{
    return atomic_load_explicit(&allocs_made, memory_order_relaxed);
}

void dctx__test_fail_alloc_after(long after)
{
    atomic_store_explicit(&allocs_left, after, memory_order_relaxed);
}
