/*
 * harness.c - clock, iteration count and statistics (see harness.h).
 */
#include "harness.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int64_t bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void bench_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fputs("context_bench: FAIL ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

struct bench_run bench_timed(bench_fn fn, void *env, int64_t n)
{
    struct alloc_snap a0 = alloc_count_snap();
    int64_t t0 = bench_now();
    fn(env, n);
    int64_t t1 = bench_now();
    struct alloc_snap a1 = alloc_count_snap();
    return (struct bench_run){
        .n = n,
        .elapsed_ns = t1 - t0,
        .allocs = {a1.allocs - a0.allocs, a1.frees - a0.frees},
    };
}

static int64_t min_i64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int64_t max_i64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

/* Go 1.19 testing.B.launch's prediction, step for step. */
static int64_t predict_n(int64_t goal_ns, const struct bench_run *prev, int64_t last)
{
    int64_t prev_ns = prev->elapsed_ns > 0 ? prev->elapsed_ns : 1;
    /* Multiply first, as Go does; in double, as goal * n may pass 2^63. */
    int64_t n = (int64_t)((double)goal_ns * (double)prev->n / (double)prev_ns);
    n += n / 5;
    n = min_i64(n, 100 * last);
    n = max_i64(n, last + 1);
    return min_i64(n, 1000000000);
}

struct bench_run bench_launch(bench_fn fn, void *env, int64_t goal_ns)
{
    struct bench_run r = bench_timed(fn, env, 1);
    for (int64_t n = 1; r.elapsed_ns < goal_ns && n < 1000000000;) {
        n = predict_n(goal_ns, &r, n);
        r = bench_timed(fn, env, n);
    }
    return r;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct stat3 stat3_of(double *xs, int n)
{
    qsort(xs, (size_t)n, sizeof *xs, cmp_double);
    double med = n % 2 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
    return (struct stat3){.med = med, .min = xs[0], .max = xs[n - 1]};
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void sort_i64(int64_t *xs, int n)
{
    qsort(xs, (size_t)n, sizeof *xs, cmp_i64);
}
