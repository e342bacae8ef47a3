/*
 * alloc_count.h - counts heap allocations by interposing malloc, calloc,
 * realloc and free in the benchmark executable.
 *
 * The benchmark links the shared libdctx, so the library's calls to malloc
 * resolve to the definitions in alloc_count.c, which count and forward to
 * glibc's __libc_* entry points. Each thread counts in its own slot (no
 * atomic read-modify-write on the hot path); a snapshot sums the slots, so
 * it is exact once the threads that allocated are quiescent.
 *
 * Built with BENCH_NO_ALLOC_COUNT (sanitizer builds, whose runtimes own
 * malloc), nothing is interposed and alloc_count_enabled() is false.
 */
#ifndef BENCH_ALLOC_COUNT_H
#define BENCH_ALLOC_COUNT_H

#include <stdbool.h>

struct alloc_snap {
    long allocs; /* malloc, calloc, realloc that made a new block */
    long frees;  /* free of a non-NULL block, realloc that gave one up */
};

bool alloc_count_enabled(void);

/* The counts of every thread so far. */
struct alloc_snap alloc_count_snap(void);

#endif /* BENCH_ALLOC_COUNT_H */
