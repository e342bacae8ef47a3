/*
 * harness.h - the measuring part of context_bench: a clock, Go testing.B's
 * way of picking an iteration count, and median/min/max over repeated runs.
 */
#ifndef BENCH_HARNESS_H
#define BENCH_HARNESS_H

#include <stdint.h>

#include "alloc_count.h"

/* CLOCK_MONOTONIC in ns: the clock of dctx_now(), read without the library. */
int64_t bench_now(void);

/* Print "context_bench: FAIL <message>" on stderr and exit 1. */
void bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* A micro workload: do the operation n times. env is its fixture. */
typedef void (*bench_fn)(void *env, int64_t n);

/* One timed call of a workload. */
struct bench_run {
    int64_t n;                /* operations */
    int64_t elapsed_ns;       /* wall time of the call */
    struct alloc_snap allocs; /* heap activity during the call, all threads */
};

/* bench_timed runs fn(env, n) once and measures it. */
struct bench_run bench_timed(bench_fn fn, void *env, int64_t n);

/* bench_launch picks n as Go 1.19's testing.B does: one run of 1, then
 * each run predicts from the last one the n that takes goal_ns, plus 20%,
 * at most 100x the last n; it stops at the first run that took goal_ns (or
 * n = 1e9) and returns that run. */
struct bench_run bench_launch(bench_fn fn, void *env, int64_t goal_ns);

/* Median, min and max of n >= 1 values (the values are reordered). */
struct stat3 {
    double med, min, max;
};
struct stat3 stat3_of(double *xs, int n);

/* Sort n int64 values ascending. */
void sort_i64(int64_t *xs, int n);

#endif /* BENCH_HARNESS_H */
