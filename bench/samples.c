/*
 * samples.c - see samples.h.
 */
#include "samples.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void samples_sleep_ns(int64_t ns)
{
    struct timespec ts = {ns / 1000000000, ns % 1000000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

void samples_sort(int64_t *xs, size_t n)
{
    qsort(xs, n, sizeof *xs, cmp_i64);
}

double samples_pct_us(const int64_t *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)n + 0.999999999);
    if (i > 0)
        i--;
    if (i >= n)
        i = n - 1;
    return (double)sorted[i] / 1e3;
}

double samples_num_arg(const char *prog, const char *s, double lo, double hi, const char *what,
                       void (*usage)(FILE *to))
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi) {
        fprintf(stderr, "%s: bad %s \"%s\"\n", prog, what, s);
        usage(stderr);
        exit(2);
    }
    return v;
}

long samples_proc_status(const char *path, const char *field)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char line[256];
    size_t flen = strlen(field);
    long v = -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            v = strtol(line + flen + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}
