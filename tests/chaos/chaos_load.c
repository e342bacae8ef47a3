/*
 * chaos_load.c - the load of scripts/chaos, and its verdict on every call.
 *
 *   chaos_load URL [--seconds N] [--callers K] [--seed N] [--faults FILE]
 *              [--calls-out FILE] [--keepalive-ms N] [--keepalive-timeout-ms N]
 *              [--slack-ms N] [--margin-ms N] [--hang-ms N]
 *
 * One channel to URL (keepalive 300 ms / 300 ms unless told), K callers
 * (default 8) for N seconds (default 60), each making one call at a time:
 * /dctx.demo.Demo/Chain with data a sleep of 5-50 ms (the leaf sleeps it).
 * A third of the calls get a deadline of 200-800 ms, a third are canceled
 * (dctx_cancel_cause) 0-100 ms after they start, a third have neither.
 * Calls are started with dctx_rpc_call_start and a done callback that
 * counts its runs. Per call it records start, end, status, deadline, when
 * it was canceled, how often its callback ran.
 *
 * Checked, each breach a violation:
 *   - every call ended exactly once: its callback ran once, or, when
 *     dctx_rpc_call_start returned a code, never;
 *   - a call ended within --hang-ms (10 s) of its start (else: a hang);
 *   - a call with a deadline ended no later than the deadline plus
 *     --slack-ms (50 ms);
 *   - a canceled call ended no later than its cancel plus --slack-ms
 *     (rpc.h: it fails at once);
 *   - a call without a deadline (canceled ones too) lasted no longer than
 *     its sleep + --margin-ms (500 ms) + for each fault that explains it,
 *     the fault's duration + the keepalive bound (2 x keepalive +
 *     keepalive timeout: 900 ms). A fault explains a call when it started
 *     before the call ended and ended less than the keepalive bound +
 *     margin before the call started (a connection broken by it may not be
 *     known dead yet). The margin covers a redial (back-off up to 100 ms,
 *     a call waits 200 ms for a connection) and scheduling on 2 shared
 *     cores.
 *
 * The faults come from --faults FILE, written by scripts/chaos while this
 * runs: one line per fault "KIND TARGET START_NS END_NS" (CLOCK_REALTIME
 * ns, the clock of rpcd's log lines), then a line "end". At the end this
 * waits (at most 30 s) for that line. Without --faults, no call has a
 * fault to explain it.
 *
 * Output: one JSON line on stdout (calls by status and kind, the worst
 * lateness past a deadline and past a cancel, the longest call without a
 * deadline, the violations); each violation on stderr, with its times in
 * CLOCK_REALTIME ns to find in the hops' logs. --calls-out writes every
 * call as a tab-separated line. Exit 0: no violation; 1: violations; 2:
 * usage or setup error.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dctx/dctx.h>
#include <dctx/rpc.h>

#define METHOD "/dctx.demo.Demo/Chain"
#define MS 1000000LL
#define CHUNK 1024
#define MAX_CALLERS 256
#define MAX_FAULTS 4096
#define VIOLATIONS_SHOWN 30

enum kind { KIND_DEADLINE, KIND_CANCEL, KIND_NONE };
static const char *const kind_names[] = {"deadline", "canceled", "none"};

struct caller;

/* One call. Times are CLOCK_MONOTONIC ns (dctx_now); 0: not set. */
struct call {
    struct caller *owner;
    int kind;
    int sleep_ms;
    int64_t start, end;
    int64_t deadline;  /* KIND_DEADLINE */
    int64_t cancel_at; /* when the caller canceled it (still live then) */
    int code;
    bool start_failed; /* dctx_rpc_call_start returned code: done must never run */
    bool hung;         /* the caller gave up waiting for it */
    int done_runs;     /* under owner->mu */
    char message[120];
};

struct chunk {
    struct call calls[CHUNK];
    struct chunk *next;
};

struct caller {
    struct load *load;
    int index;
    unsigned seed;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a callback ran */
    struct chunk *first, *last;
    size_t n; /* calls started (their records are valid) */
    pthread_t thread;
};

struct fault {
    char kind[16], target[16];
    int64_t start, end; /* CLOCK_REALTIME ns */
};

struct load {
    const char *url;
    int seconds, callers;
    unsigned long seed;
    const char *faults_path, *calls_out;
    int64_t keepalive_ns, keepalive_timeout_ns;
    int64_t slack_ns, margin_ns, hang_ns;
    dctx_rpc_channel *ch;
    int64_t end_ns;
    int64_t realtime_off; /* CLOCK_REALTIME - CLOCK_MONOTONIC, ns */
    struct caller w[MAX_CALLERS];
    struct fault faults[MAX_FAULTS];
    int n_faults;
};

static int64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void sleep_until(int64_t mono_ns)
{
    struct timespec ts = {.tv_sec = mono_ns / 1000000000LL, .tv_nsec = mono_ns % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void on_done(void *arg, const dctx_rpc_result *res)
{
    struct call *c = arg;
    int64_t now = dctx_now();
    struct caller *w = c->owner;
    pthread_mutex_lock(&w->mu);
    if (++c->done_runs == 1) {
        c->end = now;
        c->code = res->code;
        snprintf(c->message, sizeof c->message, "%s", res->message);
    }
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* The next record of w; records are never moved or freed before exit, so
 * a callback that comes late still writes into its own. */
static struct call *next_record(struct caller *w)
{
    if (w->last == NULL || w->n % CHUNK == 0) {
        struct chunk *c = calloc(1, sizeof *c);
        if (c == NULL) {
            fprintf(stderr, "chaos_load: out of memory\n");
            exit(2);
        }
        if (w->last != NULL)
            w->last->next = c;
        else
            w->first = c;
        w->last = c;
    }
    return &w->last->calls[w->n % CHUNK];
}

static struct call *record_at(struct caller *w, size_t i)
{
    struct chunk *c = w->first;
    for (size_t k = i / CHUNK; k > 0; k--)
        c = c->next;
    return &c->calls[i % CHUNK];
}

static int rnd(struct caller *w, int lo, int hi)
{
    return lo + (int)(rand_r(&w->seed) % (unsigned)(hi - lo + 1));
}

static void one_call(struct caller *w)
{
    struct load *L = w->load;
    struct call *c = next_record(w);
    c->owner = w;
    c->kind = rnd(w, 0, 2);
    c->sleep_ms = rnd(w, 5, 50);
    int timeout_ms = rnd(w, 200, 800), cancel_ms = rnd(w, 0, 100);
    char data[16];
    snprintf(data, sizeof data, "%dms", c->sleep_ms);

    dctx *ctx = NULL;
    c->start = dctx_now();
    int rc = c->kind == KIND_DEADLINE ? dctx_with_timeout(dctx_background(), timeout_ms * MS, &ctx)
                                      : dctx_with_cancel(dctx_background(), &ctx);
    if (rc != 0) {
        fprintf(stderr, "chaos_load: cannot make a context: %s\n", dctx_strerror(rc));
        exit(2);
    }
    if (c->kind == KIND_DEADLINE)
        dctx_deadline(ctx, &c->deadline);
    pthread_mutex_lock(&w->mu);
    w->n++; /* the record counts from here: a callback may come */
    pthread_mutex_unlock(&w->mu);

    rc = dctx_rpc_call_start(L->ch, ctx, METHOD, data, strlen(data), on_done, c, NULL);
    if (rc != 0) {
        int64_t now = dctx_now();
        pthread_mutex_lock(&w->mu);
        c->start_failed = true;
        c->end = now;
        c->code = rc;
        snprintf(c->message, sizeof c->message, "dctx_rpc_call_start returned %s",
                 dctx_code_name(rc));
        pthread_mutex_unlock(&w->mu);
        dctx_release(ctx);
        return;
    }
    if (c->kind == KIND_CANCEL) {
        sleep_until(c->start + cancel_ms * MS);
        pthread_mutex_lock(&w->mu);
        bool ended = c->done_runs > 0;
        pthread_mutex_unlock(&w->mu);
        if (!ended) {
            c->cancel_at = dctx_now();
            dctx_cancel_cause(ctx, DCTX_CANCELED, "chaos_load: the caller canceled");
        }
    }
    struct timespec until;
    int64_t give_up = c->start + L->hang_ns;
    until.tv_sec = give_up / 1000000000LL;
    until.tv_nsec = give_up % 1000000000LL;
    pthread_mutex_lock(&w->mu);
    while (c->done_runs == 0) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &until) == ETIMEDOUT && c->done_runs == 0) {
            c->hung = true;
            break;
        }
    }
    pthread_mutex_unlock(&w->mu);
    dctx_release(ctx);
}

static void *caller_main(void *arg)
{
    struct caller *w = arg;
    while (dctx_now() < w->load->end_ns)
        one_call(w);
    return NULL;
}

/* ===== Faults ===== */

/* Read the faults file once it ends with "end"; false if it never does
 * within 30 s, or cannot be read. */
static bool read_faults(struct load *L)
{
    int64_t give_up = dctx_now() + 30000 * MS;
    for (;;) {
        FILE *f = fopen(L->faults_path, "r");
        bool complete = false;
        L->n_faults = 0;
        if (f != NULL) {
            char line[256];
            while (fgets(line, sizeof line, f) != NULL) {
                if (strncmp(line, "end", 3) == 0) {
                    complete = true;
                    break;
                }
                struct fault *ft = &L->faults[L->n_faults];
                if (L->n_faults < MAX_FAULTS &&
                    sscanf(line, "%15s %15s %" SCNd64 " %" SCNd64, ft->kind, ft->target, &ft->start,
                           &ft->end) == 4)
                    L->n_faults++;
            }
            fclose(f);
        }
        if (complete)
            return true;
        if (dctx_now() > give_up)
            return false;
        usleep(100000);
    }
}

/* The fault-explained allowance for a call without a deadline over
 * [start, end] (CLOCK_REALTIME ns): sum of duration + bound over the
 * faults that explain it; their count in *n. */
static int64_t explained(const struct load *L, int64_t start, int64_t end, int64_t bound, int *n)
{
    int64_t sum = 0;
    *n = 0;
    for (int i = 0; i < L->n_faults; i++) {
        const struct fault *f = &L->faults[i];
        if (f->start < end && f->end + bound + L->margin_ns > start) {
            sum += (f->end - f->start) + bound;
            (*n)++;
        }
    }
    return sum;
}

/* ===== Verdict ===== */

struct verdict {
    long long calls, by_code[DCTX_CODE_MAX + 1], other_codes, by_kind[3], start_failed;
    long long cancels; /* calls canceled while live */
    long long violations;
    int64_t worst_deadline_late; /* end - deadline, max; INT64_MIN: none */
    int64_t worst_cancel_late;   /* end - cancel_at, max */
    int64_t longest_none;        /* longest call without a deadline */
    int64_t longest_none_allowed;
    int64_t worst_unexplained; /* max (duration - sleep) of calls no fault explains */
};

static void violation(struct verdict *v, const struct load *L, const struct call *c,
                      const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void violation(struct verdict *v, const struct load *L, const struct call *c,
                      const char *fmt, ...)
{
    if (v->violations++ >= VIOLATIONS_SHOWN)
        return;
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    fprintf(stderr,
            "chaos_load: VIOLATION: %s: caller %d, %s call, sleep %d ms, start_ts=%" PRId64
            " end_ts=%" PRId64 " (%.1f ms), status %s \"%s\", callback ran %d time(s)\n",
            what, c->owner->index, kind_names[c->kind], c->sleep_ms, c->start + L->realtime_off,
            c->end ? c->end + L->realtime_off : 0, c->end ? (c->end - c->start) / 1e6 : -1.0,
            c->code >= 0 && c->code <= DCTX_CODE_MAX ? dctx_code_name(c->code) : "?", c->message,
            c->done_runs);
    int64_t s = c->start + L->realtime_off, e = (c->end ? c->end : dctx_now()) + L->realtime_off;
    for (int i = 0; i < L->n_faults; i++) {
        const struct fault *f = &L->faults[i];
        if (f->start < e + 2000 * MS && f->end > s - 2000 * MS)
            fprintf(stderr,
                    "chaos_load:   near it: fault %s %s %" PRId64 "..%" PRId64 " (%.0f ms)\n",
                    f->kind, f->target, f->start, f->end, (f->end - f->start) / 1e6);
    }
}

static void check_call(struct verdict *v, const struct load *L, struct call *c, FILE *out)
{
    int64_t bound = 2 * L->keepalive_ns + L->keepalive_timeout_ns;
    v->calls++;
    v->by_kind[c->kind]++;
    if (c->code >= 0 && c->code <= DCTX_CODE_MAX)
        v->by_code[c->code]++;
    else
        v->other_codes++;
    if (c->start_failed)
        v->start_failed++;

    if (c->start_failed && c->done_runs != 0)
        violation(v, L, c, "dctx_rpc_call_start returned a code, yet its callback ran");
    else if (!c->start_failed && c->done_runs != 1)
        violation(v, L, c, "ended %d times", c->done_runs);
    if (c->hung)
        violation(v, L, c, "not ended %.0f ms after its start", L->hang_ns / 1e6);
    if (c->end == 0)
        return; /* never ended: nothing more to measure */

    if (c->kind == KIND_DEADLINE) {
        int64_t late = c->end - c->deadline;
        if (late > v->worst_deadline_late)
            v->worst_deadline_late = late;
        if (late > L->slack_ns)
            violation(v, L, c, "ended %.1f ms past its deadline (%.0f ms after the start)",
                      late / 1e6, (c->deadline - c->start) / 1e6);
    } else {
        if (c->cancel_at != 0) {
            v->cancels++;
            int64_t late = c->end - c->cancel_at;
            if (late > v->worst_cancel_late)
                v->worst_cancel_late = late;
            if (late > L->slack_ns)
                violation(v, L, c, "ended %.1f ms after its cancel", late / 1e6);
        }
        int n = 0;
        int64_t took = c->end - c->start;
        int64_t allowed =
            c->sleep_ms * MS + L->margin_ns +
            explained(L, c->start + L->realtime_off, c->end + L->realtime_off, bound, &n);
        if (took > v->longest_none) {
            v->longest_none = took;
            v->longest_none_allowed = allowed;
        }
        if (n == 0 && took - c->sleep_ms * MS > v->worst_unexplained)
            v->worst_unexplained = took - c->sleep_ms * MS;
        if (took > allowed)
            violation(v, L, c,
                      "no deadline, lasted %.1f ms, over its bound of %.1f ms (sleep + margin "
                      "%.0f ms + %d fault(s) explaining it, each its duration + %.0f ms)",
                      took / 1e6, allowed / 1e6, L->margin_ns / 1e6, n, bound / 1e6);
    }
    if (out != NULL)
        fprintf(out, "%d\t%s\t%d\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%" PRId64 "\t%s\t%d\t%s\n",
                c->owner->index, kind_names[c->kind], c->sleep_ms, c->start + L->realtime_off,
                c->end + L->realtime_off, c->deadline ? c->deadline + L->realtime_off : 0,
                c->cancel_at ? c->cancel_at + L->realtime_off : 0,
                c->code >= 0 && c->code <= DCTX_CODE_MAX ? dctx_code_name(c->code) : "?",
                c->done_runs, c->message);
}

static void print_summary(const struct load *L, const struct verdict *v)
{
    char dl[32] = "null", cl[32] = "null";
    if (v->worst_deadline_late != INT64_MIN)
        snprintf(dl, sizeof dl, "%.1f", v->worst_deadline_late / 1e6);
    if (v->worst_cancel_late != INT64_MIN)
        snprintf(cl, sizeof cl, "%.1f", v->worst_cancel_late / 1e6);
    printf("{\"seed\":%lu,\"seconds\":%d,\"callers\":%d,\"calls\":%lld,\"by_status\":{", L->seed,
           L->seconds, L->callers, v->calls);
    bool first = true;
    for (int c = 0; c <= DCTX_CODE_MAX; c++) {
        if (v->by_code[c] == 0)
            continue;
        printf("%s\"%s\":%lld", first ? "" : ",", dctx_code_name(c), v->by_code[c]);
        first = false;
    }
    if (v->other_codes != 0)
        printf("%s\"other\":%lld", first ? "" : ",", v->other_codes);
    printf(
        "},\"by_kind\":{\"deadline\":%lld,\"canceled\":%lld,\"none\":%lld},"
        "\"cancels\":%lld,\"start_failed\":%lld,\"faults\":%d,\"worst_deadline_lateness_ms\":%s,"
        "\"worst_cancel_lateness_ms\":%s,\"longest_no_deadline_ms\":%.1f,"
        "\"longest_no_deadline_allowed_ms\":%.1f,\"worst_unexplained_excess_ms\":%.1f,"
        "\"keepalive_bound_ms\":%.0f,\"slack_ms\":%.0f,\"margin_ms\":%.0f,\"violations\":%lld}\n",
        v->by_kind[KIND_DEADLINE], v->by_kind[KIND_CANCEL], v->by_kind[KIND_NONE], v->cancels,
        v->start_failed, L->n_faults, dl, cl, v->longest_none / 1e6, v->longest_none_allowed / 1e6,
        v->worst_unexplained / 1e6, (2 * L->keepalive_ns + L->keepalive_timeout_ns) / 1e6,
        L->slack_ns / 1e6, L->margin_ns / 1e6, v->violations);
    fflush(stdout);
}

/* ===== Main ===== */

static int usage(const char *why)
{
    fprintf(stderr,
            "chaos_load: %s\n"
            "usage: chaos_load URL [--seconds N] [--callers K] [--seed N] [--faults FILE]\n"
            "                  [--calls-out FILE] [--keepalive-ms N] [--keepalive-timeout-ms N]\n"
            "                  [--slack-ms N] [--margin-ms N] [--hang-ms N]\n",
            why);
    return 2;
}

static bool num(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static struct load L;

/* Wait for the head to answer (an Echo), at most 10 s. */
static bool head_answers(void)
{
    int64_t give_up = dctx_now() + 10000 * MS;
    while (dctx_now() < give_up) {
        dctx *ctx;
        if (dctx_with_timeout(dctx_background(), 1000 * MS, &ctx) != 0)
            return false;
        int rc = dctx_rpc_call_raw(L.ch, ctx, "/dctx.demo.Demo/Echo", "hi", 2, NULL);
        dctx_release(ctx);
        if (rc == DCTX_OK)
            return true;
        usleep(100000);
    }
    return false;
}

int main(int argc, char **argv)
{
    long seconds = 60, callers = 8, ka = 300, kat = 300, slack = 50, margin = 500, hang = 10000,
         seed = 1;
    if (argc < 2 || argv[1][0] == '-')
        return usage("URL first");
    L.url = argv[1];
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            return usage("a flag without its value");
        bool ok = true;
        if (strcmp(f, "--seconds") == 0)
            ok = num(v, 1, 86400, &seconds);
        else if (strcmp(f, "--callers") == 0)
            ok = num(v, 1, MAX_CALLERS, &callers);
        else if (strcmp(f, "--seed") == 0)
            ok = num(v, 0, 0x7fffffffL, &seed);
        else if (strcmp(f, "--keepalive-ms") == 0)
            ok = num(v, 1, 3600000, &ka);
        else if (strcmp(f, "--keepalive-timeout-ms") == 0)
            ok = num(v, 1, 3600000, &kat);
        else if (strcmp(f, "--slack-ms") == 0)
            ok = num(v, 0, 3600000, &slack);
        else if (strcmp(f, "--margin-ms") == 0)
            ok = num(v, 0, 3600000, &margin);
        else if (strcmp(f, "--hang-ms") == 0)
            ok = num(v, 1, 3600000, &hang);
        else if (strcmp(f, "--faults") == 0)
            L.faults_path = v;
        else if (strcmp(f, "--calls-out") == 0)
            L.calls_out = v;
        else
            return usage("unknown flag");
        if (!ok)
            return usage("a value out of range");
        i++;
    }
    L.seconds = (int)seconds;
    L.callers = (int)callers;
    L.seed = (unsigned long)seed;
    L.keepalive_ns = ka * MS;
    L.keepalive_timeout_ns = kat * MS;
    L.slack_ns = slack * MS;
    L.margin_ns = margin * MS;
    L.hang_ns = hang * MS;

    dctx_rpc_channel_options o;
    dctx_rpc_channel_options_init(&o);
    o.keepalive_ns = L.keepalive_ns;
    o.keepalive_timeout_ns = L.keepalive_timeout_ns;
    int rc = dctx_rpc_channel_open(L.url, &o, &L.ch);
    if (rc != 0) {
        fprintf(stderr, "chaos_load: cannot open a channel to %s: %s\n", L.url, dctx_strerror(rc));
        return 2;
    }
    if (!head_answers()) {
        fprintf(stderr, "chaos_load: %s does not answer\n", L.url);
        dctx_rpc_channel_close(L.ch);
        return 2;
    }
    L.realtime_off = realtime_ns() - dctx_now();
    L.end_ns = dctx_now() + L.seconds * 1000 * MS;
    for (int i = 0; i < L.callers; i++) {
        struct caller *w = &L.w[i];
        w->load = &L;
        w->index = i;
        w->seed = (unsigned)(L.seed * 7919u + (unsigned)i * 104729u + 1u);
        pthread_mutex_init(&w->mu, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&w->cv, &ca);
        pthread_condattr_destroy(&ca);
        if (pthread_create(&w->thread, NULL, caller_main, w) != 0) {
            fprintf(stderr, "chaos_load: cannot start a caller thread\n");
            return 2;
        }
    }
    for (int i = 0; i < L.callers; i++)
        pthread_join(L.w[i].thread, NULL);
    /* Ends what still runs (a hung call) UNAVAILABLE and waits for every
     * callback: after it, no callback runs. */
    dctx_rpc_channel_close(L.ch);

    if (L.faults_path != NULL && !read_faults(&L)) {
        fprintf(stderr, "chaos_load: %s never ended with \"end\"\n", L.faults_path);
        return 2;
    }
    FILE *out = NULL;
    if (L.calls_out != NULL && (out = fopen(L.calls_out, "w")) == NULL) {
        fprintf(stderr, "chaos_load: cannot write %s: %s\n", L.calls_out, strerror(errno));
        return 2;
    }
    if (out != NULL)
        fputs("caller\tkind\tsleep_ms\tstart_ts\tend_ts\tdeadline_ts\tcancel_ts\tstatus\t"
              "callback_runs\tmessage\n",
              out);
    struct verdict v = {.worst_deadline_late = INT64_MIN, .worst_cancel_late = INT64_MIN};
    for (int i = 0; i < L.callers; i++) {
        struct caller *w = &L.w[i];
        pthread_mutex_lock(&w->mu);
        for (size_t k = 0; k < w->n; k++)
            check_call(&v, &L, record_at(w, k), out);
        pthread_mutex_unlock(&w->mu);
    }
    if (out != NULL)
        fclose(out);
    if (v.violations > VIOLATIONS_SHOWN)
        fprintf(stderr, "chaos_load: ... and %lld more violations\n",
                v.violations - VIOLATIONS_SHOWN);
    print_summary(&L, &v);
    return v.violations == 0 ? 0 : 1;
}
