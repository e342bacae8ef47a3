/*
 * metrics.c - rpcd's Prometheus metrics (see metrics.h).
 *
 * Counting is on the call path, so it is a lookup in a table built once
 * before the server starts (read-only after: no lock) and three relaxed
 * atomic adds: the status, the latency bucket and the latency sum. A
 * scrape reads those without stopping anyone, so a histogram's count is
 * taken from the same bucket reads it prints (its +Inf bucket and _count
 * always agree); its _sum may lag them by the calls ending meanwhile.
 */
#include "metrics.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dctx/rpc.h>

#include "log.h"
#include "rpcd.h"

/* Latency buckets from 25 us to 10 s: a call that stays in the process
 * takes tens of microseconds, one that waits on others up to seconds. */
static const struct bucket {
    int64_t le_ns;
    const char *le;
} buckets[] = {
    {25000, "2.5e-05"},  {50000, "5e-05"},      {100000, "0.0001"},  {250000, "0.00025"},
    {500000, "0.0005"},  {1000000, "0.001"},    {2500000, "0.0025"}, {5000000, "0.005"},
    {10000000, "0.01"},  {25000000, "0.025"},   {50000000, "0.05"},  {100000000, "0.1"},
    {250000000, "0.25"}, {500000000, "0.5"},    {1000000000, "1"},   {2500000000LL, "2.5"},
    {5000000000LL, "5"}, {10000000000LL, "10"},
};
#define N_BUCKETS (sizeof buckets / sizeof buckets[0])

struct method_metrics {
    char *name;
    atomic_uint_fast64_t by_code[DCTX_CODE_MAX + 1];
    atomic_uint_fast64_t in_bucket[N_BUCKETS + 1]; /* the last: above every bucket */
    atomic_uint_fast64_t sum_ns;
};

static struct {
    struct method_metrics *methods; /* the server's, sorted by name, then "unknown" */
    size_t n_methods;               /* with "unknown" */
    struct method_metrics **slots;  /* open addressing by name; NULL: empty */
    size_t n_slots;                 /* a power of two, over twice the methods */
    atomic_bool draining;
    double started_unix_s;
} m;

static size_t name_hash(const char *s)
{
    size_t h = 14695981039346656037u; /* FNV-1a */
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

static struct method_metrics *find(const char *name)
{
    if (m.slots == NULL)
        return NULL;
    for (size_t i = name_hash(name) & (m.n_slots - 1);; i = (i + 1) & (m.n_slots - 1)) {
        struct method_metrics *mm = m.slots[i];
        if (mm == NULL)
            return &m.methods[m.n_methods - 1]; /* unknown */
        if (strcmp(mm->name, name) == 0)
            return mm;
    }
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int rpcd_metrics_init(const struct rpcd *r)
{
    size_t n = dctx_rpc_server_methods(r->server, NULL, 0);
    const char **names = calloc(n + 1, sizeof *names);
    m.methods = calloc(n + 1, sizeof *m.methods);
    m.n_slots = 4;
    while (m.n_slots < 2 * (n + 1))
        m.n_slots *= 2;
    m.slots = calloc(m.n_slots, sizeof *m.slots);
    if (names == NULL || m.methods == NULL || m.slots == NULL) {
        free(names);
        rpcd_metrics_free();
        return -1;
    }
    dctx_rpc_server_methods(r->server, names, n);
    qsort(names, n, sizeof *names, by_name);
    names[n] = "unknown";
    for (size_t i = 0; i <= n; i++) {
        if ((m.methods[i].name = strdup(names[i])) == NULL) {
            free(names);
            rpcd_metrics_free();
            return -1;
        }
        m.n_methods++;
    }
    for (size_t i = 0; i < n; i++) { /* "unknown" is what a miss finds */
        size_t s = name_hash(m.methods[i].name) & (m.n_slots - 1);
        while (m.slots[s] != NULL)
            s = (s + 1) & (m.n_slots - 1);
        m.slots[s] = &m.methods[i];
    }
    free(names);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    m.started_unix_s = (double)now.tv_sec + now.tv_nsec / 1e9;
    return 0;
}

void rpcd_metrics_free(void)
{
    for (size_t i = 0; i < m.n_methods; i++)
        free(m.methods[i].name);
    free(m.methods);
    free(m.slots);
    m.methods = NULL;
    m.slots = NULL;
    m.n_methods = m.n_slots = 0;
}

void rpcd_metrics_call_end(const char *method, int code, int64_t elapsed_ns)
{
    struct method_metrics *mm = find(method);
    if (mm == NULL)
        return;
    if (code < 0 || code > DCTX_CODE_MAX)
        code = DCTX_UNKNOWN;
    size_t b = 0;
    while (b < N_BUCKETS && elapsed_ns > buckets[b].le_ns)
        b++;
    atomic_fetch_add_explicit(&mm->by_code[code], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&mm->in_bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&mm->sum_ns, elapsed_ns > 0 ? (uint64_t)elapsed_ns : 0,
                              memory_order_relaxed);
}

void rpcd_metrics_set_draining(void)
{
    atomic_store(&m.draining, true);
}

int rpcd_metrics_draining(void)
{
    return atomic_load(&m.draining);
}

/* ===== The text format ===== */

static uint64_t get(atomic_uint_fast64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* A label value between quotes: backslash, quote and newline escaped, as
 * the format asks; any other byte as it is. */
static void label_value(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A metric without labels, with its HELP and TYPE. */
static void single(FILE *f, const char *name, const char *type, const char *help, uint64_t v)
{
    family(f, name, type, help);
    fprintf(f, "%s %llu\n", name, (unsigned long long)v);
}

static void method_calls(FILE *f)
{
    family(f, "dctx_server_calls_total", "counter",
           "Calls answered, by method and status code (method \"unknown\": a name the server does "
           "not serve).");
    for (size_t i = 0; i < m.n_methods; i++) {
        for (int c = 0; c <= DCTX_CODE_MAX; c++) {
            uint64_t v = get(&m.methods[i].by_code[c]);
            if (v == 0 && c != DCTX_OK) /* OK always: every method has a series from start */
                continue;
            fputs("dctx_server_calls_total{method=", f);
            label_value(f, m.methods[i].name);
            fprintf(f, ",code=\"%s\"} %llu\n", dctx_code_name(c), (unsigned long long)v);
        }
    }
}

static void method_latency(FILE *f)
{
    family(f, "dctx_server_call_duration_seconds", "histogram",
           "Time from a call's arrival to its answer, by method.");
    for (size_t i = 0; i < m.n_methods; i++) {
        struct method_metrics *mm = &m.methods[i];
        uint64_t count = 0;
        for (size_t b = 0; b <= N_BUCKETS; b++) {
            count += get(&mm->in_bucket[b]);
            fputs("dctx_server_call_duration_seconds_bucket{method=", f);
            label_value(f, mm->name);
            fprintf(f, ",le=\"%s\"} %llu\n", b < N_BUCKETS ? buckets[b].le : "+Inf",
                    (unsigned long long)count);
        }
        fputs("dctx_server_call_duration_seconds_sum{method=", f);
        label_value(f, mm->name);
        fprintf(f, "} %.9f\n", (double)get(&mm->sum_ns) / 1e9);
        fputs("dctx_server_call_duration_seconds_count{method=", f);
        label_value(f, mm->name);
        fprintf(f, "} %llu\n", (unsigned long long)count);
    }
}

static void server_metrics(FILE *f, const dctx_rpc_server_stats *s)
{
    single(f, "dctx_server_calls_received_total", "counter", "Calls received, answered or not yet.",
           s->calls);
    single(f, "dctx_server_calls_in_flight", "gauge", "Calls received and not yet answered.",
           s->in_flight);
    family(f, "dctx_server_cancels_received_total", "counter",
           "Cancels received from callers, by what they did here.");
    for (int o = DCTX_RPC_CANCEL_STOPPED; o <= DCTX_RPC_CANCEL_TOO_LATE; o++)
        fprintf(f, "dctx_server_cancels_received_total{outcome=\"%s\"} %llu\n",
                dctx_rpc_cancel_outcome_name(o), (unsigned long long)s->cancel_outcomes[o]);
    single(f, "dctx_server_peers_lost_total", "counter",
           "Caller connections that went away (closed, reset or silent past keepalive).",
           s->peers_lost);
    single(f, "dctx_server_calls_canceled_by_peer_loss_total", "counter",
           "Calls canceled because their caller's connection was lost.",
           s->calls_canceled_by_peer_loss);
    single(f, "dctx_server_bad_frames_total", "counter",
           "Malformed input from callers, dropped or refused.", s->bad_frames);
    single(f, "dctx_server_expired_in_queue_total", "counter",
           "Calls refused because their budget ran out while they waited for a worker.",
           s->expired_in_queue);
    single(f, "dctx_server_connections_accepted_total", "counter", "Caller connections accepted.",
           s->connections_accepted);
    single(f, "dctx_server_accept_retries_total", "counter",
           "Accepts that failed (out of file descriptors, say) and were retried after a pause; "
           "a listener is never closed and restarted.",
           s->accept_failures);
    single(f, "dctx_server_traces_dropped_total", "counter",
           "Malformed traceparent values dropped from calls.", s->traces_dropped);
    single(f, "dctx_server_unauthenticated_total", "counter",
           "Connections refused in the handshake: no keys, a failed proof, a frame that did "
           "not open.",
           s->unauthenticated);
    single(f, "dctx_server_calls_denied_total", "counter",
           "Calls refused by the allow list or the authorize hook.", s->denied);
    family(f, "dctx_server_connections_sealed_total", "counter",
           "Caller connections with keys, by the AEAD their frames are sealed with.");
    fprintf(f, "dctx_server_connections_sealed_total{aead=\"aes256gcm\"} %llu\n",
            (unsigned long long)s->sealed_aes256gcm);
    fprintf(f, "dctx_server_connections_sealed_total{aead=\"chacha20poly1305\"} %llu\n",
            (unsigned long long)s->sealed_chacha20poly1305);
    single(f, "dctx_server_draining", "gauge",
           "1 while the server drains (it refuses new calls), else 0.", rpcd_metrics_draining());
}

/* One series of a next hop: NAME{next="URL"} V, or with one more label
 * NAME{next="URL",LABEL="VALUE"} V when label is not NULL. */
static void hop_line(FILE *f, const char *name, const char *url, const char *label,
                     const char *value, uint64_t v)
{
    fprintf(f, "%s{next=", name);
    label_value(f, url);
    if (label != NULL)
        fprintf(f, ",%s=\"%s\"", label, value);
    fprintf(f, "} %llu\n", (unsigned long long)v);
}

/* A field of the channel stats (a uint64_t at offset) per next hop. */
static void per_hop(FILE *f, const struct rpcd *r, const dctx_rpc_channel_stats *hops,
                    const char *name, const char *help, size_t offset)
{
    family(f, name, "counter", help);
    for (int i = 0; i < r->n_next; i++)
        hop_line(f, name, r->next_url[i], NULL, NULL,
                 *(const uint64_t *)((const char *)&hops[i] + offset));
}

static void next_hop_metrics(FILE *f, const struct rpcd *r, const dctx_rpc_channel_stats *hops)
{
    family(f, "dctx_next_up", "gauge",
           "1 while at least one connection to the next hop is up, else 0.");
    for (int i = 0; i < r->n_next; i++)
        hop_line(f, "dctx_next_up", r->next_url[i], NULL, NULL, hops[i].connections > 0);
    family(f, "dctx_next_draining", "gauge",
           "Connections to the next hop whose server drains (it takes no new calls).");
    for (int i = 0; i < r->n_next; i++)
        hop_line(f, "dctx_next_draining", r->next_url[i], NULL, NULL, hops[i].draining);
    family(f, "dctx_next_connections", "gauge", "Connections up to the next hop.");
    for (int i = 0; i < r->n_next; i++)
        hop_line(f, "dctx_next_connections", r->next_url[i], NULL, NULL, hops[i].connections);
    per_hop(f, r, hops, "dctx_next_calls_started_total", "Calls started toward the next hop.",
            offsetof(dctx_rpc_channel_stats, calls));
    family(f, "dctx_next_calls_total", "counter",
           "Calls to the next hop that ended, by status code.");
    for (int i = 0; i < r->n_next; i++)
        for (int c = 0; c <= DCTX_CODE_MAX; c++)
            if (hops[i].by_code[c] != 0 || c == DCTX_OK) /* OK always, as for the server */
                hop_line(f, "dctx_next_calls_total", r->next_url[i], "code", dctx_code_name(c),
                         hops[i].by_code[c]);
    per_hop(f, r, hops, "dctx_next_calls_not_sent_total",
            "Calls refused before sending: their budget was under the minimum.",
            offsetof(dctx_rpc_channel_stats, not_sent_budget));
    per_hop(f, r, hops, "dctx_next_cancels_pushed_total", "Cancels pushed to the next hop.",
            offsetof(dctx_rpc_channel_stats, cancels_pushed));
    family(f, "dctx_next_cancel_outcomes_total", "counter",
           "Cancels pushed to the next hop, by what they did there.");
    for (int i = 0; i < r->n_next; i++)
        for (int o = DCTX_RPC_CANCEL_STOPPED; o < DCTX_RPC_CANCEL_OUTCOMES; o++)
            if (o != DCTX_RPC_CANCEL_PENDING) /* a state on the way, not an outcome */
                hop_line(f, "dctx_next_cancel_outcomes_total", r->next_url[i], "outcome",
                         dctx_rpc_cancel_outcome_name(o), hops[i].cancel_outcomes[o]);
    per_hop(f, r, hops, "dctx_next_bad_frames_total",
            "Protocol errors of the next hop (each ended its connection).",
            offsetof(dctx_rpc_channel_stats, bad_frames));
}

char *rpcd_metrics_render(const struct rpcd *r, size_t *len)
{
    char *text = NULL;
    FILE *f = open_memstream(&text, len);
    if (f == NULL)
        return NULL;
    struct rpcd_stats st;
    rpcd_stats_get(r, &st);
    family(f, "dctx_build_info", "gauge", "The version and instance name; always 1.");
    fprintf(f, "dctx_build_info{version=\"%s\",name=", RPCD_VERSION);
    label_value(f, r->name);
    fputs("} 1\n", f);
    family(f, "dctx_start_time_seconds", "gauge", "When rpcd started, in Unix time.");
    fprintf(f, "dctx_start_time_seconds %.3f\n", m.started_unix_s);
    method_calls(f);
    method_latency(f);
    server_metrics(f, &st.server);
    single(f, "dctx_cancels_pushed_total", "counter",
           "Cancels pushed onward to next hops, all hops together.", st.cancels_pushed);
    single(f, "dctx_log_lines_dropped_total", "counter",
           "Log lines dropped because the log's queue was full.", rpcd_log_dropped());
    next_hop_metrics(f, r, st.hops);
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}
