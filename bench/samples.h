/*
 * samples.h - what rpc_bench and oneway_bench share: sleeping, and the
 * percentiles of a set of times, taken as nngbench takes them.
 */
#ifndef BENCH_SAMPLES_H
#define BENCH_SAMPLES_H

#include <stddef.h>
#include <stdint.h>

/* Sleep ns nanoseconds (resumed across signals). */
void samples_sleep_ns(int64_t ns);

/* Sort n nanosecond times ascending. */
void samples_sort(int64_t *xs, size_t n);

/* The p-th percentile (0..1) of n sorted nanosecond times, in
 * microseconds: nearest rank, as nngbench's pct_us; 0 when n is 0. */
double samples_pct_us(const int64_t *sorted, size_t n, double p);

#endif /* BENCH_SAMPLES_H */
