/*
 * trace_view.c - `rpcd trace LOGFILE...`: the tree of one trace, drawn as a
 * waterfall. Every hop logs a call_end line per call with the trace id,
 * its span and its caller's span; put together, the lines of all hops
 * rebuild the call tree. Without --trace-id, the most recent trace shown.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpcd.h"

#define MAX_SPANS 4096
#define BAR_WIDTH 40

struct span {
    char name[64], method[128], status[32];
    char trace[33], id[17], parent[17];
    long long start_ns, dur_ns;
    int depth;
    bool printed;
};

/* The string value of "key" in a JSON line, into out (cut to n). */
static bool json_str(const char *line, const char *key, char *out, size_t n)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    const char *p = strstr(line, pat);
    if (p == NULL)
        return false;
    p += strlen(pat);
    size_t i = 0;
    for (; *p && *p != '"' && i + 1 < n; p++) {
        if (*p == '\\' && p[1])
            p++;
        out[i++] = *p;
    }
    out[i] = '\0';
    return true;
}

static bool json_num(const char *line, const char *key, long long *out)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (p == NULL)
        return false;
    *out = strtoll(p + strlen(pat), NULL, 10);
    return true;
}

/* A call_end line with a trace becomes a span. */
static bool read_span(const char *line, struct span *s)
{
    char event[32];
    long long ts, elapsed_us;
    memset(s, 0, sizeof *s);
    if (!json_str(line, "event", event, sizeof event) || strcmp(event, "call_end") != 0 ||
        !json_str(line, "trace_id", s->trace, sizeof s->trace) ||
        !json_str(line, "span_id", s->id, sizeof s->id) || !json_num(line, "ts", &ts) ||
        !json_num(line, "elapsed_us", &elapsed_us))
        return false;
    json_str(line, "parent_span_id", s->parent, sizeof s->parent);
    json_str(line, "name", s->name, sizeof s->name);
    json_str(line, "method", s->method, sizeof s->method);
    json_str(line, "status", s->status, sizeof s->status);
    s->dur_ns = elapsed_us * 1000;
    s->start_ns = ts - s->dur_ns;
    return true;
}

static int load(char **files, int n_files, struct span *spans, int *n, long long *latest_end,
                char *latest_trace)
{
    for (int f = 0; f < n_files; f++) {
        FILE *in = fopen(files[f], "r");
        if (in == NULL) {
            fprintf(stderr, "rpcd trace: cannot read %s\n", files[f]);
            return RPCD_EXIT_USAGE;
        }
        char line[8192];
        while (fgets(line, sizeof line, in) != NULL && *n < MAX_SPANS) {
            struct span *s = &spans[*n];
            if (!read_span(line, s))
                continue;
            if (s->start_ns + s->dur_ns >= *latest_end) {
                *latest_end = s->start_ns + s->dur_ns;
                memcpy(latest_trace, s->trace, sizeof s->trace);
            }
            (*n)++;
        }
        fclose(in);
    }
    return 0;
}

static void print_tree(struct span *spans, int n, int at, int depth, long long t0, long long total)
{
    struct span *s = &spans[at];
    s->printed = true;
    char bar[BAR_WIDTH + 1];
    int from = total > 0 ? (int)((s->start_ns - t0) * BAR_WIDTH / total) : 0;
    int len = total > 0 ? (int)(s->dur_ns * BAR_WIDTH / total) : BAR_WIDTH;
    from = from < 0 ? 0 : from > BAR_WIDTH - 1 ? BAR_WIDTH - 1 : from;
    len = len < 1 ? 1 : from + len > BAR_WIDTH ? BAR_WIDTH - from : len;
    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i >= from && i < from + len ? '#' : ' ';
    bar[BAR_WIDTH] = '\0';
    printf("%*s%-*s %-28s %9.3f %9.3f  %-18s |%s|\n", depth * 2, "", 14 - depth * 2, s->name,
           s->method, (s->start_ns - t0) / 1e6, s->dur_ns / 1e6, s->status, bar);
    /* children in start order */
    for (;;) {
        int next = -1;
        for (int i = 0; i < n; i++)
            if (!spans[i].printed && strcmp(spans[i].parent, s->id) == 0 &&
                (next < 0 || spans[i].start_ns < spans[next].start_ns))
                next = i;
        if (next < 0)
            break;
        print_tree(spans, n, next, depth + 1, t0, total);
    }
}

int rpcd_trace(int argc, char **argv)
{
    char *files[64];
    int n_files = 0;
    const char *want = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: rpcd trace LOGFILE... [--trace-id ID]\n\n"
                   "Rebuild one trace (the latest, or ID) from the JSON logs of every hop and\n"
                   "draw it as a waterfall: hop, method, start (ms), duration (ms), status.\n");
            return 0;
        }
        if (strcmp(argv[i], "--trace-id") == 0 && i + 1 < argc)
            want = argv[++i];
        else if (strncmp(argv[i], "--", 2) == 0 || n_files == 64)
            return fprintf(stderr, "rpcd trace: bad argument %s\n", argv[i]), RPCD_EXIT_USAGE;
        else
            files[n_files++] = argv[i];
    }
    if (n_files == 0)
        return fprintf(stderr, "rpcd trace: give the log files of the hops\n"), RPCD_EXIT_USAGE;
    struct span *all = calloc(MAX_SPANS, sizeof *all);
    if (all == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    int n_all = 0;
    long long latest_end = 0;
    char latest[33] = "";
    int rc = load(files, n_files, all, &n_all, &latest_end, latest);
    /* keep the spans of the chosen trace */
    const char *trace = want != NULL ? want : latest;
    struct span *spans = all;
    int n = 0;
    long long t0 = 0, t1 = 0;
    for (int i = 0; rc == 0 && i < n_all; i++) {
        if (strcmp(all[i].trace, trace) != 0)
            continue;
        spans[n] = all[i];
        if (n == 0 || spans[n].start_ns < t0)
            t0 = spans[n].start_ns;
        if (spans[n].start_ns + spans[n].dur_ns > t1)
            t1 = spans[n].start_ns + spans[n].dur_ns;
        n++;
    }
    if (rc == 0 && n == 0) {
        fprintf(stderr, "rpcd trace: no trace %s in these logs\n", trace[0] ? trace : "at all");
        rc = DCTX_NOT_FOUND;
    }
    if (rc == 0) {
        printf("trace %s: %d spans, %.3f ms\n", trace, n, (t1 - t0) / 1e6);
        printf("%-14s %-28s %9s %9s  %-18s |%-*s|\n", "hop", "method", "start ms", "ms", "status",
               BAR_WIDTH, "");
        for (int i = 0; i < n; i++) { /* roots: spans whose parent is not here */
            bool has_parent = false;
            for (int j = 0; j < n && !has_parent; j++)
                has_parent = strcmp(spans[i].parent, spans[j].id) == 0;
            if (!has_parent && !spans[i].printed)
                print_tree(spans, n, i, 0, t0, t1 - t0);
        }
    }
    free(all);
    return rc;
}
