/*
 * trace_load.c - rpcd's JSON-lines logs read back into spans and cancel
 * lines, and one trace picked out of them (see trace_load.h).
 *
 * The reader is not a JSON parser: it looks up "key":"value" and "key":N
 * by their text, which is enough for the lines rpcd writes (flat objects,
 * every quote inside a string escaped, so a value never looks like a key)
 * and harmless for any other line: the worst a hand-made line gets is a
 * span with odd strings, which the views escape.
 */
#include "trace_load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "rpcd.h"

/* Times and durations past this are lies; clamped to it, the sum or the
 * difference of any two of them fits a long long. */
#define NS_MAX (1LL << 62)

/* The deadline a call_start line announced for one span, matched to the
 * span's call_end by hop, trace and span id once every file is read. */
struct due {
    char hop[64], trace_id[33], span_id[17];
    long long at_ns;
};

/* ==== Fields of one line ==== */

/* The string value of "key" in a JSON line, into out (cut to n on a
 * character boundary). An escape keeps the character after the backslash
 * as it is (\n becomes n, \u001b becomes u001b), as the terminal view
 * always showed them: no escape turns into a control byte there. */
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
    /* Cut short: the character cut may have lost its end. out[i], the
     * NUL's place, lends room for the first byte left out. */
    if (*p && *p != '"') {
        out[i] = *p;
        i = rpcd_json_cut(out, i + 1, i);
    }
    out[i] = '\0';
    return true;
}

static long long clamp(long long v, long long hi)
{
    return v < 0 ? 0 : v > hi ? hi : v;
}

/* The number value of "key", clamped to 0..hi. */
static bool json_num(const char *line, const char *key, long long hi, long long *out)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    if (p == NULL)
        return false;
    *out = clamp(strtoll(p + strlen(pat), NULL, 10), hi);
    return true;
}

/* ==== Lines into spans, deadlines and cancel lines ==== */

/* A call_end line with a trace becomes a span. */
static bool read_span(const char *line, struct rpcd_trace_span *s)
{
    long long ts, elapsed_us;
    memset(s, 0, sizeof *s);
    if (!json_str(line, "trace_id", s->trace_id, sizeof s->trace_id) ||
        !json_str(line, "span_id", s->span_id, sizeof s->span_id) ||
        !json_num(line, "ts", NS_MAX, &ts) ||
        !json_num(line, "elapsed_us", NS_MAX / 1000, &elapsed_us))
        return false;
    json_str(line, "parent_span_id", s->parent_id, sizeof s->parent_id);
    json_str(line, "name", s->hop, sizeof s->hop);
    json_str(line, "method", s->method, sizeof s->method);
    json_str(line, "status", s->status, sizeof s->status);
    json_str(line, "message", s->message, sizeof s->message);
    /* No span starts before 1970: every time stays in 0..NS_MAX. */
    s->dur_ns = elapsed_us * 1000 < ts ? elapsed_us * 1000 : ts;
    s->start_ns = ts - s->dur_ns;
    s->deadline_ns = -1;
    if (!json_num(line, "messages_in", NS_MAX, &s->messages_in) ||
        !json_num(line, "messages_out", NS_MAX, &s->messages_out))
        s->messages_in = s->messages_out = -1;
    return true;
}

/* A call_start line with a trace and a deadline. */
static bool read_due(const char *line, struct due *d)
{
    long long ts, in_us;
    memset(d, 0, sizeof *d);
    if (!json_str(line, "trace_id", d->trace_id, sizeof d->trace_id) ||
        !json_str(line, "span_id", d->span_id, sizeof d->span_id) ||
        !json_num(line, "ts", NS_MAX, &ts) ||
        !json_num(line, "deadline_in_us", NS_MAX / 1000, &in_us))
        return false;
    json_str(line, "name", d->hop, sizeof d->hop);
    d->at_ns = ts + in_us * 1000;
    return true;
}

static bool read_cancel(const char *line, const char *event, struct rpcd_trace_cancel *c)
{
    memset(c, 0, sizeof *c);
    if (!json_num(line, "ts", NS_MAX, &c->ts_ns))
        return false;
    snprintf(c->event, sizeof c->event, "%s", event);
    json_str(line, "name", c->hop, sizeof c->hop);
    json_str(line, "method", c->method, sizeof c->method);
    json_str(line, "cause", c->cause, sizeof c->cause);
    json_str(line, "outcome", c->outcome, sizeof c->outcome);
    /* serve says why in cause_message; call's cancel_sent says when in message */
    if (!json_str(line, "cause_message", c->message, sizeof c->message))
        json_str(line, "message", c->message, sizeof c->message);
    return true;
}

struct loading {
    struct rpcd_trace_logs *logs;
    struct due *dues; /* RPCD_TRACE_SPANS_MAX */
    int n_dues;
    long long latest_end;
};

static void read_line(struct loading *ld, const char *line)
{
    struct rpcd_trace_logs *logs = ld->logs;
    char event[32];
    if (!json_str(line, "event", event, sizeof event))
        return;
    if ((strcmp(event, "call_end") == 0 || strcmp(event, "stream_end") == 0) &&
        logs->n_spans < RPCD_TRACE_SPANS_MAX) {
        struct rpcd_trace_span *s = &logs->spans[logs->n_spans];
        if (!read_span(line, s))
            return;
        if (s->start_ns + s->dur_ns >= ld->latest_end) {
            ld->latest_end = s->start_ns + s->dur_ns;
            memcpy(logs->latest, s->trace_id, sizeof s->trace_id);
        }
        logs->n_spans++;
    } else if ((strcmp(event, "call_start") == 0 || strcmp(event, "stream_start") == 0) &&
               ld->n_dues < RPCD_TRACE_SPANS_MAX) {
        ld->n_dues += read_due(line, &ld->dues[ld->n_dues]);
    } else if ((strcmp(event, "cancel_received") == 0 || strcmp(event, "cancel_pushed") == 0 ||
                strcmp(event, "cancel_sent") == 0) &&
               logs->n_cancels < RPCD_TRACE_CANCELS_MAX) {
        logs->n_cancels += read_cancel(line, event, &logs->cancels[logs->n_cancels]);
    }
}

/* Read one file line by line. A line that does not fit the buffer is no
 * line of rpcd's: the rest of it is skipped too, so that its tail is
 * never read as a line of its own. */
static int read_file(struct loading *ld, const char *path)
{
    FILE *in = fopen(path, "r");
    if (in == NULL) {
        fprintf(stderr, "rpcd trace: cannot read %s\n", path);
        return RPCD_EXIT_USAGE;
    }
    char line[RPCD_TRACE_LINE_BYTES];
    while (fgets(line, sizeof line, in) != NULL) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            int c;
            while ((c = getc(in)) != EOF && c != '\n')
                ;
            continue;
        }
        read_line(ld, line);
    }
    bool failed = ferror(in);
    fclose(in);
    if (failed) { /* a directory, say */
        fprintf(stderr, "rpcd trace: cannot read %s\n", path);
        return RPCD_EXIT_USAGE;
    }
    return 0;
}

/* Each span gets the deadline its call_start line announced. */
static void match_dues(struct rpcd_trace_logs *logs, const struct due *dues, int n_dues)
{
    for (int i = 0; i < logs->n_spans; i++) {
        struct rpcd_trace_span *s = &logs->spans[i];
        for (int j = 0; j < n_dues && s->deadline_ns < 0; j++)
            if (strcmp(dues[j].span_id, s->span_id) == 0 &&
                strcmp(dues[j].trace_id, s->trace_id) == 0 && strcmp(dues[j].hop, s->hop) == 0)
                s->deadline_ns = dues[j].at_ns;
    }
}

int rpcd_trace_logs_load(char **files, int n_files, struct rpcd_trace_logs *logs)
{
    memset(logs, 0, sizeof *logs);
    struct loading ld = {.logs = logs};
    logs->spans = calloc(RPCD_TRACE_SPANS_MAX, sizeof *logs->spans);
    logs->cancels = calloc(RPCD_TRACE_CANCELS_MAX, sizeof *logs->cancels);
    ld.dues = calloc(RPCD_TRACE_SPANS_MAX, sizeof *ld.dues);
    int rc = logs->spans && logs->cancels && ld.dues ? 0 : DCTX_RESOURCE_EXHAUSTED;
    for (int f = 0; rc == 0 && f < n_files; f++)
        rc = read_file(&ld, files[f]);
    if (rc == 0)
        match_dues(logs, ld.dues, ld.n_dues);
    free(ld.dues);
    return rc;
}

void rpcd_trace_logs_free(struct rpcd_trace_logs *logs)
{
    free(logs->spans);
    free(logs->cancels);
    memset(logs, 0, sizeof *logs);
}

/* ==== One trace: the tree, the window, its cancel lines ==== */

struct tree {
    const struct rpcd_trace_span **spans; /* the trace's */
    bool *placed;
    int n;
    struct rpcd_trace *t;
};

/* Place span at and then its children, in start order, depth first. */
static void place(struct tree *tr, int at, int depth)
{
    tr->placed[at] = true;
    tr->t->rows[tr->t->n_rows++] = (struct rpcd_trace_row){tr->spans[at], depth, false};
    for (;;) {
        int next = -1;
        for (int i = 0; i < tr->n; i++)
            if (!tr->placed[i] && strcmp(tr->spans[i]->parent_id, tr->spans[at]->span_id) == 0 &&
                (next < 0 || tr->spans[i]->start_ns < tr->spans[next]->start_ns))
                next = i;
        if (next < 0)
            break;
        place(tr, next, depth + 1);
    }
}

/* Roots are the spans whose parent is not in the trace, in log order. */
static void order_rows(struct tree *tr)
{
    for (int i = 0; i < tr->n; i++) {
        bool has_parent = false;
        for (int j = 0; j < tr->n && !has_parent; j++)
            has_parent = strcmp(tr->spans[i]->parent_id, tr->spans[j]->span_id) == 0;
        if (!has_parent && !tr->placed[i])
            place(tr, i, 0);
    }
    for (int i = 0; i < tr->n; i++)
        if (!tr->placed[i])
            tr->t->rows[tr->t->n_rows++] = (struct rpcd_trace_row){tr->spans[i], 0, true};
}

static bool hop_in_trace(const struct rpcd_trace *t, const char *hop)
{
    for (int i = 0; i < t->n_rows; i++)
        if (strcmp(t->rows[i].span->hop, hop) == 0)
            return true;
    return false;
}

static int by_time(const void *a, const void *b)
{
    const struct rpcd_trace_cancel *x = *(const struct rpcd_trace_cancel *const *)a;
    const struct rpcd_trace_cancel *y = *(const struct rpcd_trace_cancel *const *)b;
    if (x->ts_ns != y->ts_ns)
        return x->ts_ns < y->ts_ns ? -1 : 1;
    return x < y ? -1 : x > y; /* log order among equals */
}

/* The cancel lines of the trace's hops within its time window: these
 * lines carry no trace id (see rpcd_trace_pick). */
static void attribute_cancels(const struct rpcd_trace_logs *logs, struct rpcd_trace *t)
{
    for (int i = 0; i < logs->n_cancels; i++) {
        const struct rpcd_trace_cancel *c = &logs->cancels[i];
        if (c->ts_ns >= t->t0_ns && c->ts_ns <= t->t1_ns && hop_in_trace(t, c->hop))
            t->cancels[t->n_cancels++] = c;
    }
    qsort(t->cancels, (size_t)t->n_cancels, sizeof *t->cancels, by_time);
}

int rpcd_trace_pick(const struct rpcd_trace_logs *logs, const char *id, struct rpcd_trace *t)
{
    memset(t, 0, sizeof *t);
    snprintf(t->id, sizeof t->id, "%s", id != NULL ? id : logs->latest);
    const struct rpcd_trace_span **spans = calloc((size_t)logs->n_spans + 1, sizeof *spans);
    bool *placed = calloc((size_t)logs->n_spans + 1, sizeof *placed);
    t->rows = calloc((size_t)logs->n_spans + 1, sizeof *t->rows);
    t->cancels = calloc((size_t)logs->n_cancels + 1, sizeof *t->cancels);
    if (spans == NULL || placed == NULL || t->rows == NULL || t->cancels == NULL) {
        free(spans);
        free(placed);
        rpcd_trace_free(t);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    /* Compared whole, as given: an id cut to fit t->id matches nothing. */
    const char *want = id != NULL ? id : logs->latest;
    struct tree tr = {spans, placed, 0, t};
    for (int i = 0; i < logs->n_spans; i++) {
        const struct rpcd_trace_span *s = &logs->spans[i];
        if (strcmp(s->trace_id, want) != 0)
            continue;
        if (tr.n == 0 || s->start_ns < t->t0_ns)
            t->t0_ns = s->start_ns;
        if (s->start_ns + s->dur_ns > t->t1_ns)
            t->t1_ns = s->start_ns + s->dur_ns;
        spans[tr.n++] = s;
    }
    if (tr.n > 0) {
        order_rows(&tr);
        attribute_cancels(logs, t);
    }
    free(spans);
    free(placed);
    if (tr.n == 0) {
        fprintf(stderr, "rpcd trace: no trace %s in these logs\n", want[0] ? want : "at all");
        rpcd_trace_free(t);
        return DCTX_NOT_FOUND;
    }
    return 0;
}

void rpcd_trace_free(struct rpcd_trace *t)
{
    free(t->rows);
    free(t->cancels);
    t->rows = NULL;
    t->cancels = NULL;
    t->n_rows = t->n_cancels = 0;
}

bool rpcd_trace_status_canceled(const char *status)
{
    return strcmp(status, "CANCELLED") == 0 || strcmp(status, "DEADLINE_EXCEEDED") == 0;
}
