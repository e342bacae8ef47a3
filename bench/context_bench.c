/*
 * context_bench.c - benchmarks of the context core, workload for workload
 * those of Go's context anchors (anchors/go-context, letters as in its
 * RESULTS.md), so that bench/context-compare can set the two side by side.
 *
 * Output: one line per workload, "NAME key=value ...", and comment lines
 * starting with '#'. bench/README.md describes every line and key.
 *
 *   micro (a..e, g)  NAME ns_per_op= min= max= allocs_per_op= runs= iters=
 *   tree (f)         the same keys, one op being one node of the tree
 *   lateness (h)     NAME p50_ns= p50_min= p50_max= p99_ns= p99_min=
 *                    p99_max= max_ns= max_all= min_ns= allocs_per_op= ...
 *
 * Every value is the median over the runs, min..max beside it. A failed
 * check (a wrong error, a leak, a parent that died) exits 1.
 */
#include <dctx/dctx.h>

#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>

#include "alloc_count.h"
#include "harness.h"

#define MAX_REPS 32
#define HOUR_NS (3600 * INT64_C(1000000000))
#define MS_NS INT64_C(1000000)

/* A run may leave this many allocations unfreed without being a leak: the
 * first timer starts the timer thread and its heap, a thread's TLS. */
#define LEAK_SLACK 16

struct opts {
    int reps;           /* runs of each workload */
    double benchtime_s; /* goal of one micro run, as go test -benchtime */
    int tree_iters;     /* trees per f run, as -benchtime=10x */
    int h_samples;      /* deadlines per h run */
    int h_timers;       /* live 1h timers under h-100k */
    const char *only;   /* comma-separated name patterns, or NULL for all */
};

static void must(int rc, const char *what)
{
    if (rc != 0)
        bench_fail("%s returned %d (%s)", what, rc, dctx_strerror(rc));
}

/* --only takes comma-separated shell patterns: "a,e*,h-*". */
static bool selected(const struct opts *o, const char *name)
{
    if (o->only == NULL)
        return true;
    char pat[64];
    for (const char *p = o->only; *p != '\0';) {
        size_t n = strcspn(p, ",");
        if (n > 0 && n < sizeof pat) {
            memcpy(pat, p, n);
            pat[n] = '\0';
            if (fnmatch(pat, name, 0) == 0)
                return true;
        }
        p += n + (p[n] == ',');
    }
    return false;
}

/* "allocs_per_op=1.000", or "allocs_per_op=na" when nothing is counted. */
static void print_allocs(double per_op)
{
    if (alloc_count_enabled())
        printf(" allocs_per_op=%.3f", per_op);
    else
        printf(" allocs_per_op=na");
}

/* ===== Micro workloads (a, a', b, c, c', d1, d2, e, g) ===== */

/* What a micro workload works on, made before its runs (untimed). */
struct fixture {
    dctx *ctx; /* the parent (a..c, g), the live ctx (d) or the value leaf (e) */
    int depth; /* e: the length of the value chain */
    int sink;  /* results the checks look at, so no loop is dead code */
    const void *value;
};

static void fix_background(struct fixture *f)
{
    f->ctx = dctx_background();
}

static void fix_live(struct fixture *f)
{
    must(dctx_with_cancel(dctx_background(), &f->ctx), "dctx_with_cancel");
}

/* Distinct keys: a key is its address. */
static const dctx_key value_keys[100] = {[0] = {"k0", 0}};

/* A chain of depth WithValue nodes; key 0 sits in the root-most one. */
static void fix_chain(struct fixture *f)
{
    dctx *ctx = dctx_background();
    for (int i = 0; i < f->depth; i++) {
        dctx *next;
        must(dctx_with_value(ctx, &value_keys[i], &i, sizeof i, &next), "dctx_with_value");
        dctx_release(ctx); /* the child holds it now */
        ctx = next;
    }
    f->ctx = ctx;
}

static void fix_chain10(struct fixture *f)
{
    f->depth = 10;
    fix_chain(f);
}

static void fix_chain100(struct fixture *f)
{
    f->depth = 100;
    fix_chain(f);
}

static void check_live(const struct fixture *f)
{
    if (dctx_err(f->ctx) != 0)
        bench_fail("the parent must stay live");
}

static void check_sink_zero(const struct fixture *f)
{
    check_live(f);
    if (f->sink != 0)
        bench_fail("a live context reported done");
}

static void check_value(const struct fixture *f)
{
    if (f->value == NULL || *(const int *)f->value != 0)
        bench_fail("dctx_value found the wrong value");
}

/* a, b: a cancelable child of env's ctx, canceled and released. */
static void wl_cancel(void *env, int64_t n)
{
    dctx *parent = ((struct fixture *)env)->ctx;
    for (int64_t i = 0; i < n; i++) {
        dctx *c;
        must(dctx_with_cancel(parent, &c), "dctx_with_cancel");
        dctx_cancel(c);
        dctx_release(c);
    }
}

/* a': the same, with the done fd made before the cancel. */
static void wl_cancel_fd(void *env, int64_t n)
{
    dctx *parent = ((struct fixture *)env)->ctx;
    for (int64_t i = 0; i < n; i++) {
        dctx *c;
        must(dctx_with_cancel(parent, &c), "dctx_with_cancel");
        if (dctx_done_fd(c) < 0)
            bench_fail("dctx_done_fd: %s", strerror(errno));
        dctx_cancel(c);
        dctx_release(c);
    }
}

/* c, c': a 1h timeout (its timer added and removed), canceled, released. */
static void wl_timeout(void *env, int64_t n)
{
    dctx *parent = ((struct fixture *)env)->ctx;
    for (int64_t i = 0; i < n; i++) {
        dctx *c;
        must(dctx_with_timeout(parent, HOUR_NS, &c), "dctx_with_timeout");
        dctx_cancel(c);
        dctx_release(c);
    }
}

/* d1: dctx_err on a live context. */
static void wl_err(void *env, int64_t n)
{
    struct fixture *f = env;
    int err = 0;
    for (int64_t i = 0; i < n; i++)
        err |= dctx_err(f->ctx);
    f->sink |= err;
}

/* d2: dctx_done on a live context (Go: select on Done with a default). */
static void wl_done(void *env, int64_t n)
{
    struct fixture *f = env;
    int done = 0;
    for (int64_t i = 0; i < n; i++)
        done += dctx_done(f->ctx);
    f->sink |= done;
}

/* e: look up the root-most key from the leaf of a value chain. */
static void wl_value(void *env, int64_t n)
{
    struct fixture *f = env;
    const void *v = NULL;
    for (int64_t i = 0; i < n; i++)
        v = dctx_value(f->ctx, &value_keys[0], NULL);
    f->value = v;
}

/* g: G_THREADS threads each do their share of wl_cancel on one parent. Like
 * Go's RunParallel, the time includes starting and joining them. */
#define G_THREADS 2

struct g_worker {
    pthread_t thread;
    pthread_barrier_t *start;
    struct fixture *fix;
    int64_t n;
};

static void *g_worker_main(void *arg)
{
    struct g_worker *w = arg;
    pthread_barrier_wait(w->start);
    wl_cancel(w->fix, w->n);
    return NULL;
}

static void wl_parallel(void *env, int64_t n)
{
    struct g_worker w[G_THREADS];
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, G_THREADS);
    for (int i = 0; i < G_THREADS; i++) {
        /* Split n exactly: ns/op is wall time over all ops. */
        w[i] = (struct g_worker){
            .start = &start, .fix = env, .n = n / G_THREADS + (i < n % G_THREADS)};
        if (pthread_create(&w[i].thread, NULL, g_worker_main, &w[i]) != 0)
            bench_fail("pthread_create");
    }
    for (int i = 0; i < G_THREADS; i++)
        pthread_join(w[i].thread, NULL);
    pthread_barrier_destroy(&start);
}

struct micro {
    const char *name;
    bench_fn fn;
    void (*setup)(struct fixture *);
    void (*check)(const struct fixture *); /* after every run; may be NULL */
};

static const struct micro micros[] = {
    {"a", wl_cancel, fix_background, NULL},        {"a2", wl_cancel_fd, fix_background, NULL},
    {"b", wl_cancel, fix_live, check_live},        {"c", wl_timeout, fix_live, check_live},
    {"c2", wl_timeout, fix_background, NULL},      {"d1", wl_err, fix_live, check_sink_zero},
    {"d2", wl_done, fix_live, check_sink_zero},    {"e10", wl_value, fix_chain10, check_value},
    {"e100", wl_value, fix_chain100, check_value}, {"g", wl_parallel, fix_live, check_live},
};

static void check_leak(const char *name, const struct alloc_snap *a)
{
    if (a->allocs - a->frees > LEAK_SLACK)
        bench_fail("%s: %ld allocations not freed in one run", name, a->allocs - a->frees);
}

static void run_micro(const struct micro *m, const struct opts *o)
{
    struct fixture fix = {0};
    m->setup(&fix);
    double ns[MAX_REPS], allocs[MAX_REPS];
    int64_t iters = 0;
    for (int r = 0; r < o->reps; r++) {
        struct bench_run run = bench_launch(m->fn, &fix, (int64_t)(o->benchtime_s * 1e9));
        if (m->check != NULL)
            m->check(&fix);
        check_leak(m->name, &run.allocs);
        ns[r] = (double)run.elapsed_ns / (double)run.n;
        allocs[r] = (double)run.allocs.allocs / (double)run.n;
        iters = run.n;
    }
    dctx_release(fix.ctx);
    struct stat3 t = stat3_of(ns, o->reps), a = stat3_of(allocs, o->reps);
    printf("%s ns_per_op=%.2f min=%.2f max=%.2f", m->name, t.med, t.min, t.max);
    print_allocs(a.med);
    printf(" runs=%d iters=%lld\n", o->reps, (long long)iters);
}

/* ===== f: the cancel cascade over a tree ===== */

#define TREE_FAN 10
#define TREE_DEPTH 5
#define TREE_NODES 111110 /* 10 + 100 + 1,000 + 10,000 + 100,000 */
#define TREE_LEAVES 100000

/* node[0] is the root; below it, level by level, the TREE_NODES
 * descendants; the leaves are the last TREE_LEAVES. */
struct tree {
    dctx **node;
};

#define LEAF0 (1 + TREE_NODES - TREE_LEAVES)

/* Build the tree as Go's buildTree does: breadth first, every node a
 * dctx_with_cancel of its parent. The array is reused across trees
 * (Go's timed part also makes its slices: about 1% of its build). */
static void tree_build(struct tree *t)
{
    must(dctx_with_cancel(dctx_background(), &t->node[0]), "dctx_with_cancel");
    size_t first = 0, end = 1, k = 1;
    for (int d = 0; d < TREE_DEPTH; d++) {
        for (size_t p = first; p < end; p++)
            for (int j = 0; j < TREE_FAN; j++)
                must(dctx_with_cancel(t->node[p], &t->node[k++]), "dctx_with_cancel");
        first = end;
        end = k;
    }
}

/* Release every node (the tree is canceled or not: either frees it all). */
static void tree_free(struct tree *t)
{
    for (size_t i = 1 + TREE_NODES; i-- > 0;)
        dctx_release(t->node[i]);
}

/* Make the done fd of every stride-th leaf, as Go's variant calls Done()
 * on every leaf; returns how many. */
static int tree_make_fds(struct tree *t, int stride)
{
    int fds = 0;
    for (size_t i = LEAF0; i < 1 + TREE_NODES; i += (size_t)stride, fds++)
        if (dctx_done_fd(t->node[i]) < 0)
            bench_fail("dctx_done_fd: %s", strerror(errno));
    return fds;
}

/* After cancel(root) returned: every node done with DCTX_CANCELED, and every
 * done fd readable. */
static void tree_verify(struct tree *t, int stride)
{
    for (size_t i = 1; i < 1 + TREE_NODES; i++)
        if (!dctx_done(t->node[i]) || dctx_err(t->node[i]) != DCTX_CANCELED)
            bench_fail("node %zu not done with DCTX_CANCELED after cancel(root)", i);
    for (size_t i = LEAF0; stride > 0 && i < 1 + TREE_NODES; i += (size_t)stride) {
        struct pollfd p = {.fd = dctx_done_fd(t->node[i]), .events = POLLIN};
        if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN))
            bench_fail("the done fd of leaf %zu is not readable after cancel(root)", i);
    }
}

/* Print a tree line but its end (f-cancel-fd adds to it); returns the
 * median ns per node. */
static double print_tree(const char *name, double *ns, double *allocs, const struct opts *o)
{
    struct stat3 t = stat3_of(ns, o->reps), a = stat3_of(allocs, o->reps);
    printf("%s ns_per_op=%.2f min=%.2f max=%.2f", name, t.med, t.min, t.max);
    print_allocs(a.med);
    printf(" runs=%d iters=%d nodes=%d", o->reps, o->tree_iters, TREE_NODES);
    return t.med;
}

/* f-build: the time to build a tree, per node. */
static void run_tree_build(struct tree *t, const struct opts *o)
{
    double ns[MAX_REPS], allocs[MAX_REPS];
    for (int r = 0; r < o->reps; r++) {
        int64_t total = 0;
        long nallocs = 0;
        for (int i = 0; i < o->tree_iters; i++) {
            struct alloc_snap a0 = alloc_count_snap();
            int64_t t0 = bench_now();
            tree_build(t);
            total += bench_now() - t0;
            nallocs += alloc_count_snap().allocs - a0.allocs;
            dctx_cancel(t->node[0]);
            tree_free(t);
        }
        ns[r] = (double)total / o->tree_iters / TREE_NODES;
        allocs[r] = (double)nallocs / o->tree_iters / TREE_NODES;
    }
    print_tree("f-build", ns, allocs, o);
    printf("\n");
}

/* f-cancel (stride 0: no done fds) and f-cancel-fd: the time of
 * cancel(root), per node. Prints the line but its end; returns the median. */
static double run_tree_cancel(struct tree *t, const char *name, int stride, const struct opts *o,
                              int *fds)
{
    double ns[MAX_REPS], allocs[MAX_REPS];
    for (int r = 0; r < o->reps; r++) {
        int64_t total = 0;
        long nallocs = 0;
        for (int i = 0; i < o->tree_iters; i++) {
            tree_build(t);
            *fds = stride > 0 ? tree_make_fds(t, stride) : 0;
            struct alloc_snap a0 = alloc_count_snap();
            int64_t t0 = bench_now();
            dctx_cancel(t->node[0]);
            total += bench_now() - t0;
            nallocs += alloc_count_snap().allocs - a0.allocs;
            tree_verify(t, stride);
            tree_free(t);
        }
        ns[r] = (double)total / o->tree_iters / TREE_NODES;
        allocs[r] = (double)nallocs / o->tree_iters / TREE_NODES;
    }
    return print_tree(name, ns, allocs, o);
}

/* Raise the soft fd limit toward want; returns the limit we have. */
static long fd_limit(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 1024;
    if (rl.rlim_cur != RLIM_INFINITY && (long)rl.rlim_cur < want) {
        rl.rlim_cur =
            rl.rlim_max == RLIM_INFINITY || (long)rl.rlim_max > want ? (rlim_t)want : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? want : (long)rl.rlim_cur;
}

/* Every leaf's done fd needs 100,000 fds. Under a lower limit, every
 * stride-th leaf gets one, and the line adds proj_ns_per_op: the lazy
 * cascade plus the measured cost per fd times 100,000. */
static void run_tree_cancel_fd(struct tree *t, double lazy_ns, const struct opts *o)
{
    const long spare = 256; /* stdio, the timer thread, whatever else is open */
    long budget = fd_limit(TREE_LEAVES + spare) - spare;
    if (budget < 100) {
        printf("f-cancel-fd skipped=fd_limit\n");
        return;
    }
    int stride = (int)((TREE_LEAVES + budget - 1) / budget);
    int fds = 0;
    double ns = run_tree_cancel(t, "f-cancel-fd", stride, o, &fds);
    printf(" fd_leaves=%d leaves=%d", fds, TREE_LEAVES);
    if (fds < TREE_LEAVES && !isnan(lazy_ns))
        printf(" proj_ns_per_op=%.2f", lazy_ns + (ns - lazy_ns) * TREE_LEAVES / fds);
    else if (fds == TREE_LEAVES)
        printf(" proj_ns_per_op=%.2f", ns);
    printf("\n");
}

static void run_trees(const struct opts *o)
{
    bool build = selected(o, "f-build"), lazy = selected(o, "f-cancel"),
         fd = selected(o, "f-cancel-fd");
    if (!build && !lazy && !fd)
        return;
    struct tree t = {malloc((1 + TREE_NODES) * sizeof *t.node)};
    if (t.node == NULL)
        bench_fail("out of memory");
    /* One untimed tree first: the first run would otherwise also pay for
     * faulting in the heap the later ones reuse (Go's warm-up run1 too). */
    tree_build(&t);
    tree_free(&t);
    if (build)
        run_tree_build(&t, o);
    double lazy_ns = NAN;
    int fds;
    if (lazy) {
        lazy_ns = run_tree_cancel(&t, "f-cancel", 0, o, &fds);
        printf("\n");
    }
    if (fd)
        run_tree_cancel_fd(&t, lazy_ns, o);
    free(t.node);
}

/* ===== h: how late a 1 ms deadline is seen ===== */

static dctx *h_start(int64_t *deadline)
{
    dctx *ctx;
    must(dctx_with_timeout(dctx_background(), MS_NS, &ctx), "dctx_with_timeout");
    if (!dctx_deadline(ctx, deadline))
        bench_fail("a timeout context has no deadline");
    return ctx;
}

/* Called as soon as ctx is seen done: the lateness, then Go's cancel and
 * its check of the error. */
static int64_t h_finish(dctx *ctx, int64_t deadline)
{
    int64_t late = dctx_now() - deadline;
    dctx_cancel(ctx);
    if (dctx_err(ctx) != DCTX_DEADLINE_EXCEEDED)
        bench_fail("expected DCTX_DEADLINE_EXCEEDED, got %d", dctx_err(ctx));
    dctx_release(ctx);
    return late;
}

/* h-wait: dctx_wait, which sleeps to the deadline and enacts it itself. */
static void collect_wait(int64_t *late, int samples)
{
    for (int s = 0; s < samples; s++) {
        int64_t deadline;
        dctx *ctx = h_start(&deadline);
        if (!dctx_wait(ctx, -1))
            bench_fail("dctx_wait returned false without a timeout");
        late[s] = h_finish(ctx, deadline);
    }
}

/* h-fd: poll on the done fd, written by the timer thread's cancel. */
static void collect_fd(int64_t *late, int samples)
{
    for (int s = 0; s < samples; s++) {
        int64_t deadline;
        dctx *ctx = h_start(&deadline);
        struct pollfd p = {.fd = dctx_done_fd(ctx), .events = POLLIN};
        if (p.fd < 0)
            bench_fail("dctx_done_fd: %s", strerror(errno));
        int rc;
        while ((rc = poll(&p, 1, -1)) < 0 && errno == EINTR)
            ;
        if (rc != 1)
            bench_fail("poll on the done fd: %s", strerror(errno));
        late[s] = h_finish(ctx, deadline);
    }
}

/* h-floor: no context at all; a thread with 1 ns timer slack sleeps to
 * each deadline itself. What the machine can do at best. Its own thread,
 * so the slack of the main thread stays as it was. */
struct floor_job {
    int64_t *late;
    int samples;
};

static void *floor_main(void *arg)
{
    struct floor_job *j = arg;
    prctl(PR_SET_TIMERSLACK, 1UL);
    for (int s = 0; s < j->samples; s++) {
        int64_t deadline = bench_now() + MS_NS;
        struct timespec ts = {.tv_sec = deadline / 1000000000, .tv_nsec = deadline % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        j->late[s] = bench_now() - deadline;
    }
    return NULL;
}

static void collect_floor(int64_t *late, int samples)
{
    struct floor_job job = {late, samples};
    pthread_t th;
    if (pthread_create(&th, NULL, floor_main, &job) != 0)
        bench_fail("pthread_create");
    pthread_join(th, NULL);
}

/* h-100k-*: the same with this many 1h timers live in the timer heap. */
static dctx **make_timers(int n)
{
    dctx **t = malloc((size_t)n * sizeof *t);
    if (t == NULL)
        bench_fail("out of memory");
    for (int i = 0; i < n; i++)
        must(dctx_with_timeout(dctx_background(), HOUR_NS, &t[i]), "dctx_with_timeout");
    return t;
}

static void free_timers(dctx **t, int n)
{
    for (int i = 0; i < n; i++)
        dctx_release(t[i]);
    free(t);
}

struct lateness {
    const char *name;
    void (*collect)(int64_t *late, int samples);
    bool many_timers;
};

static const struct lateness latenesses[] = {
    {"h-wait", collect_wait, false},     {"h-fd", collect_fd, false},
    {"h-100k-wait", collect_wait, true}, {"h-100k-fd", collect_fd, true},
    {"h-floor", collect_floor, false},
};

/* Per run, as Go's BenchmarkH: sort the samples, take [n/2], [n*99/100],
 * the last and the first. */
static void run_lateness(const struct lateness *l, const struct opts *o)
{
    int64_t *late = malloc((size_t)o->h_samples * sizeof *late);
    if (late == NULL)
        bench_fail("out of memory");
    dctx **timers = l->many_timers ? make_timers(o->h_timers) : NULL;
    double p50[MAX_REPS], p99[MAX_REPS], max[MAX_REPS], min[MAX_REPS], allocs[MAX_REPS];
    double max_all = 0;
    for (int r = 0; r < o->reps; r++) {
        struct alloc_snap a0 = alloc_count_snap();
        l->collect(late, o->h_samples);
        struct alloc_snap a1 = alloc_count_snap();
        allocs[r] = (double)(a1.allocs - a0.allocs) / o->h_samples;
        sort_i64(late, o->h_samples);
        p50[r] = (double)late[o->h_samples / 2];
        p99[r] = (double)late[o->h_samples * 99 / 100];
        max[r] = (double)late[o->h_samples - 1];
        min[r] = (double)late[0];
        max_all = max[r] > max_all ? max[r] : max_all;
    }
    if (timers != NULL)
        free_timers(timers, o->h_timers);
    free(late);
    struct stat3 s50 = stat3_of(p50, o->reps), s99 = stat3_of(p99, o->reps);
    printf("%s p50_ns=%.0f p50_min=%.0f p50_max=%.0f p99_ns=%.0f p99_min=%.0f p99_max=%.0f",
           l->name, s50.med, s50.min, s50.max, s99.med, s99.min, s99.max);
    printf(" max_ns=%.0f max_all=%.0f min_ns=%.0f", stat3_of(max, o->reps).med, max_all,
           stat3_of(min, o->reps).med);
    print_allocs(stat3_of(allocs, o->reps).med);
    printf(" runs=%d samples=%d timers=%d\n", o->reps, o->h_samples,
           l->many_timers ? o->h_timers : 0);
}

/* ===== main ===== */

static void usage(FILE *to)
{
    fputs("usage: context_bench [--quick | --smoke] [--reps N] [--benchtime SECONDS]\n"
          "                     [--only PATTERN[,PATTERN...]]\n"
          "  --quick   1 run of 0.2 s per workload, 2 trees, 300 deadlines: a smoke run\n"
          "  --smoke   the least that runs every workload once (the ctest entry)\n"
          "  --only    run the workloads whose names match one of the shell patterns\n"
          "            (a, a2, b, c, c2, d1, d2, e10, e100, g, f-build, f-cancel,\n"
          "            f-cancel-fd, h-wait, h-fd, h-100k-wait, h-100k-fd, h-floor)\n"
          "Defaults: 5 runs of 1 s (Go's -count=5), 10 trees per run, 1000 deadlines.\n",
          to);
}

static double parse_num(const char *s, const char *flag)
{
    char *end;
    double v = s != NULL ? strtod(s, &end) : 0;
    if (s == NULL || *end != '\0' || !(v > 0))
        bench_fail("%s needs a positive number", flag);
    return v;
}

static struct opts parse_args(int argc, char **argv)
{
    struct opts o = {5, 1.0, 10, 1000, 100000, NULL};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *next = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--quick") == 0) {
            o = (struct opts){1, 0.2, 2, 300, 100000, o.only};
        } else if (strcmp(a, "--smoke") == 0) {
            o = (struct opts){1, 0.001, 1, 10, 1000, o.only};
        } else if (strcmp(a, "--reps") == 0) {
            o.reps = (int)parse_num(next, a);
            i++;
        } else if (strcmp(a, "--benchtime") == 0) {
            o.benchtime_s = parse_num(next, a);
            i++;
        } else if (strcmp(a, "--only") == 0 && next != NULL) {
            o.only = next;
            i++;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else {
            usage(stderr);
            exit(2);
        }
    }
    if (o.reps > MAX_REPS)
        bench_fail("--reps is at most %d", MAX_REPS);
    return o;
}

int main(int argc, char **argv)
{
    struct opts o = parse_args(argc, argv);
    setvbuf(stdout, NULL, _IOLBF, 0); /* a line as soon as it is measured */
    printf("# context_bench dctx %s: runs=%d benchtime=%gs trees=%d deadlines=%d "
           "alloc_count=%s\n",
           DCTX_VERSION_STRING, o.reps, o.benchtime_s, o.tree_iters, o.h_samples,
           alloc_count_enabled() ? "on" : "off");
    for (size_t i = 0; i < sizeof micros / sizeof micros[0]; i++)
        if (selected(&o, micros[i].name))
            run_micro(&micros[i], &o);
    run_trees(&o);
    for (size_t i = 0; i < sizeof latenesses / sizeof latenesses[0]; i++)
        if (selected(&o, latenesses[i].name))
            run_lateness(&latenesses[i], &o);
    return 0;
}
