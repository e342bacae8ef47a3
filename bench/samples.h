/*
 * samples.h - what the RPC benchmarks share: sleeping, the percentiles of
 * a set of times, taken as nngbench takes them, number arguments and
 * /proc's counters.
 */
#ifndef BENCH_SAMPLES_H
#define BENCH_SAMPLES_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

/* Sleep ns nanoseconds (resumed across signals). */
void samples_sleep_ns(int64_t ns);

/* Sort n nanosecond times ascending. */
void samples_sort(int64_t *xs, size_t n);

/* The p-th percentile (0..1) of n sorted nanosecond times, in
 * microseconds: nearest rank, as nngbench's pct_us; 0 when n is 0. */
double samples_pct_us(const int64_t *sorted, size_t n, double p);

/* A field of a /proc status file (path: /proc/self/status,
 * /proc/PID/status) as its number (kB for VmRSS); -1 if absent. */
long samples_proc_status(const char *path, const char *field);

/* A number argument in [lo, hi]; otherwise prog reports what is bad,
 * calls usage(stderr) and exits with 2. */
double samples_num_arg(const char *prog, const char *s, double lo, double hi, const char *what,
                       void (*usage)(FILE *to));

#endif /* BENCH_SAMPLES_H */
