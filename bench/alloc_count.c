/*
 * alloc_count.c - the malloc interposer of the benchmark (see alloc_count.h).
 */
#include "alloc_count.h"

#ifdef BENCH_NO_ALLOC_COUNT

bool alloc_count_enabled(void)
{
    return false;
}

struct alloc_snap alloc_count_snap(void)
{
    return (struct alloc_snap){0, 0};
}

#else

#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>

/* glibc's own allocator, which its public malloc is an alias of. */
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void __libc_free(void *p);

/* One slot per thread, on its own cache line so that two threads counting
 * never share a line (g runs two allocating threads). Threads past
 * MAX_SLOTS share the last slot, which then needs atomic increments. */
#define MAX_SLOTS 64

struct slot {
    _Alignas(64) atomic_long allocs;
    atomic_long frees;
};

static struct slot slots[MAX_SLOTS];
static atomic_int slots_used;
static _Thread_local struct slot *my_slot;

static struct slot *this_slot(void)
{
    if (my_slot == NULL) {
        int i = atomic_fetch_add_explicit(&slots_used, 1, memory_order_relaxed);
        my_slot = &slots[i < MAX_SLOTS ? i : MAX_SLOTS - 1];
    }
    return my_slot;
}

/* Only the owner writes its slot, so a load and a store suffice (no locked
 * instruction); relaxed, since a snapshot is taken after the counting
 * threads synchronised with the reader (a join, or the benchmark's own
 * handoff). The shared overflow slot needs a real atomic add. */
static void bump(struct slot *s, atomic_long *c)
{
    if (s == &slots[MAX_SLOTS - 1])
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
    else
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                              memory_order_relaxed);
}

void *malloc(size_t size)
{
    void *p = __libc_malloc(size);
    if (p != NULL) {
        struct slot *s = this_slot();
        bump(s, &s->allocs);
    }
    return p;
}

void *calloc(size_t n, size_t size)
{
    void *p = __libc_calloc(n, size);
    if (p != NULL) {
        struct slot *s = this_slot();
        bump(s, &s->allocs);
    }
    return p;
}

/* A realloc counts as an allocation (as Go's allocs/op counts a grown
 * slice), and as a free when it had an old block and let go of it. */
void *realloc(void *old, size_t size)
{
    void *p = __libc_realloc(old, size);
    struct slot *s = this_slot();
    if (p != NULL)
        bump(s, &s->allocs);
    if (old != NULL && (p != NULL || size == 0))
        bump(s, &s->frees);
    return p;
}

void free(void *p)
{
    if (p != NULL) {
        struct slot *s = this_slot();
        bump(s, &s->frees);
    }
    __libc_free(p);
}

bool alloc_count_enabled(void)
{
    return true;
}

struct alloc_snap alloc_count_snap(void)
{
    struct alloc_snap s = {0, 0};
    int used = atomic_load_explicit(&slots_used, memory_order_relaxed);
    for (int i = 0; i < used && i < MAX_SLOTS; i++) {
        s.allocs += atomic_load_explicit(&slots[i].allocs, memory_order_relaxed);
        s.frees += atomic_load_explicit(&slots[i].frees, memory_order_relaxed);
    }
    return s;
}

#endif /* BENCH_NO_ALLOC_COUNT */
