/*
 * alloc.c - malloc with a failure injector for tests (see alloc.h).
 */
#include "alloc.h"

#include <stdatomic.h>
#include <stdlib.h>

/* Allocations left before failures start; negative: never fail. Relaxed:
 * only tests set it, between operations. */
static atomic_long allocs_left = -1;

void *dctx__malloc(size_t size)
{
    if (atomic_load_explicit(&allocs_left, memory_order_relaxed) >= 0 &&
        atomic_fetch_sub_explicit(&allocs_left, 1, memory_order_relaxed) <= 0) {
        atomic_store_explicit(&allocs_left, 0, memory_order_relaxed);
        return NULL;
    }
    return malloc(size);
}

void dctx__test_fail_alloc_after(long after)
{
    atomic_store_explicit(&allocs_left, after, memory_order_relaxed);
}
