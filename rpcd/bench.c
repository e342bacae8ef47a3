/*
 * bench.c - `rpcd bench`: the load generator. N callers share one channel;
 * each starts its next call from the completion of the last (no thread per
 * caller). A fraction of the calls is canceled mid-way by one canceler
 * thread. A progress line goes to stderr every second; at the end one JSON
 * object goes to stdout.
 */
#include <errno.h>
#include <stdatomic.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "duration.h"
#include "keepalive.h"
#include "key_flags.h"
#include "tls_flags.h"
#include "json.h"
#include "rpcd.h"

static const char bench_usage[] =
    "usage: rpcd bench URL METHOD [--data TEXT] [--concurrency N] "
    "[--duration DURATION | --calls N]\n"
    "                  [--timeout DURATION] [--cancel-fraction F]\n"
    "                  [--keepalive DURATION] [--keepalive-timeout DURATION]\n"
    "                  [--tls-ca FILE] [--tls-server-name NAME] [--tls-cert FILE]\n"
    "                  [--key FILE --server-key PUB]\n"
    "\n"
    "Call METHOD from N concurrent callers on one channel (default 16) for a duration (default\n"
    "10s) or a number of calls. --timeout gives each call a deadline; --cancel-fraction cancels\n"
    "that fraction of the calls (0..1) a random 0-1 ms after they start. Progress on stderr; at\n"
    "the end one JSON object on stdout: calls, calls_per_s, p50_us, p90_us, p99_us, max_us,\n"
    "by_status (counts per status name). --keepalive, --keepalive-timeout, the --tls-* flags,\n"
    "--key and --server-key: as for rpcd call.\n";

#define MAX_CONCURRENCY 100000
/* The probe, the first call on the channel, waits for its connection:
 * longer than the default, for a server that is slow to accept. */
#define CONNECT_WAIT_NS 1000000000LL
#define CANCEL_WINDOW_NS 1000000 /* a canceled call is canceled within 1 ms of its start */

struct bench;

/* One caller: its calls follow one another (the next starts in the
 * completion of the last), so what it records needs no lock. */
struct caller {
    struct bench *b;
    int64_t started;
    dctx *ctx;
    unsigned seed;
    uint32_t *lat_us; /* its latencies */
    size_t n_lat, cap_lat;
    long long by_code[DCTX_CODE_MAX + 1];
};

/* A call to cancel, at a time. */
struct pending_cancel {
    int64_t at;
    dctx *ctx; /* retained */
};

struct bench {
    dctx_rpc_channel *ch;
    const char *method, *data;
    size_t len;
    int64_t timeout_ns; /* < 0: none */
    double cancel_fraction;
    int64_t end_ns; /* stop starting calls then (duration mode) */
    bool by_calls;  /* --calls mode: calls_left counts down; immutable */

    pthread_mutex_t mu;
    pthread_cond_t cv; /* the last caller stopped; a cancel was queued */
    atomic_llong started, ended;
    atomic_llong calls_left;              /* calls still to start (calls mode) */
    int active;                           /* callers still calling; protected by mu */
    long long by_code[DCTX_CODE_MAX + 1]; /* merged at the end */
    uint32_t *lat_us;                     /* merged at the end */
    size_t n_lat;
    struct pending_cancel *cancels; /* a ring; protected by mu */
    size_t c_head, c_len, c_cap;
    bool stopping;
};

/* ===== Recording ===== */

static void record(struct caller *c, int code, int64_t latency_ns)
{
    c->by_code[code >= 0 && code <= DCTX_CODE_MAX ? code : DCTX_UNKNOWN]++;
    if (c->n_lat == c->cap_lat) {
        size_t cap = c->cap_lat ? c->cap_lat * 2 : 1 << 12;
        uint32_t *grown = realloc(c->lat_us, cap * sizeof *grown);
        if (grown != NULL) {
            c->lat_us = grown;
            c->cap_lat = cap;
        }
    }
    if (c->n_lat < c->cap_lat)
        c->lat_us[c->n_lat++] =
            (uint32_t)(latency_ns / 1000 > UINT32_MAX ? UINT32_MAX : latency_ns / 1000);
    atomic_fetch_add_explicit(&c->b->ended, 1, memory_order_relaxed);
}

static void caller_stops(struct bench *b)
{
    pthread_mutex_lock(&b->mu);
    if (--b->active == 0)
        pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

static void queue_cancel(struct bench *b, dctx *ctx, int64_t at)
{
    pthread_mutex_lock(&b->mu);
    if (b->c_len == b->c_cap) {
        size_t cap = b->c_cap ? b->c_cap * 2 : 1024;
        struct pending_cancel *grown = malloc(cap * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&b->mu);
            return; /* this call simply is not canceled */
        }
        for (size_t i = 0; i < b->c_len; i++)
            grown[i] = b->cancels[(b->c_head + i) % b->c_cap];
        free(b->cancels);
        b->cancels = grown;
        b->c_head = 0;
        b->c_cap = cap;
    }
    b->cancels[(b->c_head + b->c_len++) % b->c_cap] = (struct pending_cancel){at, dctx_retain(ctx)};
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

/* ===== Calls ===== */

static void call_done(void *arg, const dctx_rpc_result *res);

/* Start the caller's next call, unless the run is over. */
static void next_call(struct caller *c)
{
    struct bench *b = c->b;
    bool go = b->by_calls ? atomic_fetch_sub_explicit(&b->calls_left, 1, memory_order_relaxed) > 0
                          : dctx_now() < b->end_ns;
    if (!go) {
        caller_stops(b);
        return;
    }
    atomic_fetch_add_explicit(&b->started, 1, memory_order_relaxed);
    bool cancel = b->cancel_fraction > 0 && rand_r(&c->seed) < b->cancel_fraction * RAND_MAX;
    int rc = b->timeout_ns >= 0 ? dctx_with_timeout(dctx_background(), b->timeout_ns, &c->ctx)
                                : dctx_with_cancel(dctx_background(), &c->ctx);
    c->started = dctx_now();
    if (rc == 0)
        rc = dctx_rpc_call_start(b->ch, c->ctx, b->method, b->data, b->len, call_done, c, NULL);
    if (rc != 0) { /* failed before sending: counts as ended, and this caller
                      * stops (against a target that is down it would only spin) */
        dctx_release(c->ctx);
        c->ctx = NULL;
        record(c, rc, dctx_now() - c->started);
        caller_stops(b);
        return;
    }
    if (cancel)
        queue_cancel(b, c->ctx, c->started + rand_r(&c->seed) % CANCEL_WINDOW_NS);
}

static void call_done(void *arg, const dctx_rpc_result *res)
{
    struct caller *c = arg;
    record(c, res->code, dctx_now() - c->started);
    dctx_release(c->ctx);
    c->ctx = NULL;
    next_call(c);
}

/* The canceler: cancels queued contexts when their time comes. */
static void *canceler_main(void *arg)
{
    struct bench *b = arg;
    pthread_mutex_lock(&b->mu);
    while (!b->stopping || b->c_len > 0) {
        if (b->c_len == 0) {
            pthread_cond_wait(&b->cv, &b->mu);
            continue;
        }
        struct pending_cancel p = b->cancels[b->c_head];
        int64_t now = dctx_now();
        if (p.at > now && !b->stopping) {
            pthread_mutex_unlock(&b->mu);
            int64_t wait = p.at - now < CANCEL_WINDOW_NS ? p.at - now : CANCEL_WINDOW_NS;
            struct timespec ts = {0, wait};
            nanosleep(&ts, NULL);
            pthread_mutex_lock(&b->mu);
            continue;
        }
        b->c_head = (b->c_head + 1) % b->c_cap;
        b->c_len--;
        pthread_mutex_unlock(&b->mu);
        dctx_cancel(p.ctx);
        dctx_release(p.ctx);
        pthread_mutex_lock(&b->mu);
    }
    pthread_mutex_unlock(&b->mu);
    return NULL;
}

/* ===== Report ===== */

static int by_value(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static uint32_t percentile(const uint32_t *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)ceil(p * (double)n) - 1;
    return sorted[i < n ? i : n - 1];
}

/* Every caller has stopped: gather what they recorded. */
static void merge(struct bench *b, struct caller *callers, int n)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += callers[i].n_lat;
    b->lat_us = malloc(total ? total * sizeof *b->lat_us : 1);
    for (int i = 0; i < n; i++) {
        if (b->lat_us != NULL && callers[i].n_lat > 0)
            memcpy(b->lat_us + b->n_lat, callers[i].lat_us, callers[i].n_lat * sizeof *b->lat_us);
        b->n_lat += b->lat_us != NULL ? callers[i].n_lat : 0;
        for (int c = 0; c <= DCTX_CODE_MAX; c++)
            b->by_code[c] += callers[i].by_code[c];
    }
}

static void report(struct bench *b, double seconds, int concurrency)
{
    qsort(b->lat_us, b->n_lat, sizeof b->lat_us[0], by_value);
    long long ended = atomic_load(&b->ended);
    char buf[2048]; /* the numbers and 17 status names fit well within */
    struct rpcd_json j;
    rpcd_json_init(&j, buf, sizeof buf);
    rpcd_json_object(&j, NULL);
    rpcd_json_int(&j, "calls", ended);
    rpcd_json_fixed(&j, "calls_per_s", seconds > 0 ? (double)ended / seconds : 0.0, 1);
    rpcd_json_uint(&j, "p50_us", percentile(b->lat_us, b->n_lat, 0.50));
    rpcd_json_uint(&j, "p90_us", percentile(b->lat_us, b->n_lat, 0.90));
    rpcd_json_uint(&j, "p99_us", percentile(b->lat_us, b->n_lat, 0.99));
    rpcd_json_uint(&j, "max_us", b->n_lat ? b->lat_us[b->n_lat - 1] : 0);
    rpcd_json_int(&j, "concurrency", concurrency);
    rpcd_json_fixed(&j, "duration_s", seconds, 3);
    rpcd_json_object(&j, "by_status");
    for (int c = 0; c <= DCTX_CODE_MAX; c++)
        if (b->by_code[c] != 0)
            rpcd_json_int(&j, dctx_code_name(c), b->by_code[c]);
    rpcd_json_end(&j);
    rpcd_json_end(&j);
    size_t len = rpcd_json_finish(&j);
    printf("%.*s\n", (int)len, buf);
}

/* ===== Command ===== */

struct bench_args {
    const char *url, *method, *data;
    int concurrency;
    int64_t duration_ns, timeout_ns;
    long long calls;
    double cancel_fraction;
    struct rpcd_keepalive keepalive;
    struct rpcd_tls tls;
    struct rpcd_keys *ident; /* --key, --server-key */
};

static int parse(int argc, char **argv, struct bench_args *a)
{
    a->data = "";
    a->concurrency = 16;
    a->duration_ns = 10LL * 1000000000;
    rpcd_keepalive_init(&a->keepalive);
    a->timeout_ns = -1;
    a->calls = -1;
    int positional = 0;
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0) {
            fputs(bench_usage, stdout);
            return -1;
        }
        if (strncmp(flag, "--", 2) != 0) {
            if (positional > 1)
                return rpcd_usage_error("bench", "unexpected argument \"%s\"", flag);
            *(positional++ == 0 ? &a->url : &a->method) = flag;
            continue;
        }
        if (val == NULL)
            return rpcd_usage_error("bench", "%s needs a value", flag);
        i++;
        errno = 0;
        int k = rpcd_keepalive_flag("bench", flag, val, &a->keepalive);
        if (k == 0)
            k = rpcd_keys_flag("bench", flag, val, 0, a->ident);
        if (k > 1)
            return k;
        if (k == 1 || rpcd_tls_flag(flag, val, false, &a->tls))
            continue;
        if (strcmp(flag, "--data") == 0) {
            a->data = val;
        } else if (strcmp(flag, "--concurrency") == 0) {
            long n = strtol(val, &end, 10);
            if (*end || n < 1 || n > MAX_CONCURRENCY)
                return rpcd_usage_error("bench", "--concurrency takes 1..%d, not \"%s\"",
                                        MAX_CONCURRENCY, val);
            a->concurrency = (int)n;
        } else if (strcmp(flag, "--calls") == 0) {
            a->calls = strtoll(val, &end, 10);
            if (*end || a->calls < 1 || errno)
                return rpcd_usage_error("bench", "--calls takes a positive number, not \"%s\"",
                                        val);
        } else if (strcmp(flag, "--duration") == 0) {
            if (!rpcd_parse_duration(val, &a->duration_ns) || a->duration_ns <= 0)
                return rpcd_usage_error("bench",
                                        "--duration takes a duration (10s, 1m), not \"%s\"", val);
        } else if (strcmp(flag, "--timeout") == 0) {
            if (!rpcd_parse_duration(val, &a->timeout_ns))
                return rpcd_usage_error("bench", "--timeout takes a duration, not \"%s\"", val);
        } else if (strcmp(flag, "--cancel-fraction") == 0) {
            a->cancel_fraction = strtod(val, &end);
            if (*end || a->cancel_fraction < 0 || a->cancel_fraction > 1)
                return rpcd_usage_error("bench", "--cancel-fraction takes 0..1, not \"%s\"", val);
        } else {
            return rpcd_usage_error("bench", "unknown flag %s", flag);
        }
    }
    if (a->url == NULL || a->method == NULL)
        return rpcd_usage_error("bench", "%s", "URL and METHOD are required");
    return rpcd_keys_load("bench", a->ident, 0);
}

static int bench_command(int argc, char **argv, struct rpcd_keys *ident)
{
    struct bench_args a = {.ident = ident};
    int rc = parse(argc, argv, &a);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    struct bench b = {.method = a.method,
                      .data = a.data,
                      .len = strlen(a.data),
                      .timeout_ns = a.timeout_ns,
                      .cancel_fraction = a.cancel_fraction};
    atomic_init(&b.calls_left, a.calls);
    b.by_calls = a.calls > 0;
    atomic_init(&b.started, 0);
    atomic_init(&b.ended, 0);
    dctx_rpc_channel_options o;
    dctx_rpc_channel_options_init(&o);
    o.connect_wait_ns = CONNECT_WAIT_NS;
    o.keepalive_ns = a.keepalive.interval_ns;
    o.keepalive_timeout_ns = a.keepalive.timeout_ns;
    rpcd_tls_channel(&a.tls, &o);
    rpcd_keys_channel(a.ident, &o);
    if ((rc = dctx_rpc_channel_open(a.url, &o, &b.ch)) != 0) {
        fprintf(stderr, "rpcd bench: bad URL \"%s\"\n", a.url);
        return rc;
    }
    /* One call first: a target that is down or a method that does not
     * exist is reported at once, not after every caller has waited. */
    dctx *probe = NULL;
    dctx_rpc_result res;
    dctx_with_timeout(dctx_background(), 5000000000LL, &probe);
    rc = dctx_rpc_call_raw(b.ch, probe, a.method, a.data, b.len, &res);
    dctx_release(probe);
    if (rc == DCTX_UNAVAILABLE || rc == DCTX_UNIMPLEMENTED || rc == DCTX_INVALID_ARGUMENT) {
        fprintf(stderr, "rpcd bench: %s %s: %s: %s\n", a.url, a.method, dctx_code_name(rc),
                res.message);
        dctx_rpc_result_free(&res);
        dctx_rpc_channel_close(b.ch);
        return rc;
    }
    dctx_rpc_result_free(&res);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    struct caller *callers = calloc((size_t)a.concurrency, sizeof *callers);
    pthread_t canceler;
    if (callers == NULL || pthread_create(&canceler, NULL, canceler_main, &b) != 0) {
        fprintf(stderr, "rpcd bench: out of memory\n");
        return DCTX_RESOURCE_EXHAUSTED;
    }
    int64_t t0 = dctx_now();
    b.end_ns = t0 + a.duration_ns;
    b.active = a.concurrency;
    for (int i = 0; i < a.concurrency; i++) {
        callers[i] = (struct caller){.b = &b, .seed = (unsigned)(t0 + i)};
        next_call(&callers[i]);
    }
    /* Progress once a second, until every started call has ended. */
    int64_t next_report = t0 + 1000000000;
    pthread_mutex_lock(&b.mu);
    while (b.active > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000;
        ts.tv_sec += ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&b.cv, &b.mu, &ts);
        if (dctx_now() >= next_report) {
            double s = (dctx_now() - t0) / 1e9;
            long long ended = atomic_load(&b.ended), started = atomic_load(&b.started);
            fprintf(stderr, "rpcd bench: %.0f s, %lld calls, %.0f calls/s, %lld in flight\n", s,
                    ended, ended / s, started - ended);
            next_report += 1000000000;
        }
    }
    b.stopping = true;
    pthread_cond_broadcast(&b.cv);
    pthread_mutex_unlock(&b.mu);
    double seconds = (dctx_now() - t0) / 1e9;
    pthread_join(canceler, NULL);
    merge(&b, callers, a.concurrency);
    report(&b, seconds, a.concurrency);
    dctx_rpc_channel_close(b.ch);
    for (int i = 0; i < a.concurrency; i++)
        free(callers[i].lat_us);
    free(callers);
    free(b.lat_us);
    free(b.cancels);
    pthread_cond_destroy(&b.cv);
    pthread_mutex_destroy(&b.mu);
    long long ended = atomic_load(&b.ended);
    return ended > 0 && b.by_code[DCTX_UNAVAILABLE] == ended ? DCTX_UNAVAILABLE : 0;
}

int rpcd_bench(int argc, char **argv)
{
    struct rpcd_keys ident = {0};
    int rc = bench_command(argc, argv, &ident);
    rpcd_keys_free(&ident);
    return rc;
}
