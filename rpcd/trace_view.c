/*
 * trace_view.c - `rpcd trace LOGFILE...`: one trace, rebuilt from the logs
 * of every hop (trace_load.c), drawn as a waterfall on the terminal or,
 * with --html, written as a page (trace_html.c). Every hop logs a call_end
 * line per call with the trace id, its span and its caller's span; put
 * together, the lines of all hops rebuild the call tree. Without
 * --trace-id, the most recent trace is shown.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "rpcd.h"
#include "trace_html.h"
#include "trace_load.h"

#define BAR_WIDTH 40
#define MAX_FILES 64

static const char trace_usage[] =
    "usage: rpcd trace LOGFILE... [--trace-id ID] [--html FILE]\n\n"
    "Rebuild one trace (the latest, or ID) from the JSON logs of every hop and\n"
    "draw it as a waterfall: hop, method, start (ms), duration (ms), status.\n"
    "  --html FILE   write the waterfall as one self-contained HTML page instead\n"
    "                (no script, nothing fetched): a bar per span on a time axis,\n"
    "                each status, where the cancel or deadline struck and when each\n"
    "                hop saw it; prints \"wrote FILE: trace ID, N spans\"\n";

/* How many of the bar's cells ns takes when total fills them all: in
 * integers while ns * BAR_WIDTH fits (any trace under 7 years), in
 * floating point past that, for times in a log may be anything. */
static int cells_of(long long ns, long long total)
{
    if (ns <= LLONG_MAX / BAR_WIDTH)
        return (int)(ns * BAR_WIDTH / total);
    return (int)((double)ns / (double)total * BAR_WIDTH);
}

static void print_row(const struct rpcd_trace_row *r, long long t0, long long total)
{
    const struct rpcd_trace_span *s = r->span;
    char bar[BAR_WIDTH + 1];
    int from = total > 0 ? cells_of(s->start_ns - t0, total) : 0;
    int len = total > 0 ? cells_of(s->dur_ns, total) : BAR_WIDTH;
    from = from < 0 ? 0 : from > BAR_WIDTH - 1 ? BAR_WIDTH - 1 : from;
    len = len < 1 ? 1 : from + len > BAR_WIDTH ? BAR_WIDTH - from : len;
    for (int i = 0; i < BAR_WIDTH; i++)
        bar[i] = i >= from && i < from + len ? '#' : ' ';
    bar[BAR_WIDTH] = '\0';
    printf("%*s%-*s %-28s %9.3f %9.3f  %-18s |%s|", r->depth * 2, "", 14 - r->depth * 2, s->hop,
           s->method, (s->start_ns - t0) / 1e6, s->dur_ns / 1e6, s->status, bar);
    if (s->messages_in >= 0) /* a stream: its messages each way */
        printf(" stream: %lld in, %lld out", s->messages_in, s->messages_out);
    putchar('\n');
}

/* The terminal waterfall. Loose spans (a cycle of parents) have no place
 * in the tree, and the terminal leaves them out. */
static void print_waterfall(const struct rpcd_trace *t)
{
    printf("trace %s: %d spans, %.3f ms\n", t->id, t->n_rows, (t->t1_ns - t->t0_ns) / 1e6);
    printf("%-14s %-28s %9s %9s  %-18s |%-*s|\n", "hop", "method", "start ms", "ms", "status",
           BAR_WIDTH, "");
    for (int i = 0; i < t->n_rows; i++)
        if (!t->rows[i].loose)
            print_row(&t->rows[i], t->t0_ns, t->t1_ns - t->t0_ns);
}

static int show(char **files, int n_files, const char *want, const char *html)
{
    struct rpcd_trace_logs logs;
    struct rpcd_trace t = {0};
    int rc = rpcd_trace_logs_load(files, n_files, &logs);
    if (rc == 0)
        rc = rpcd_trace_pick(&logs, want, &t);
    if (rc == 0 && html != NULL) {
        rc = rpcd_trace_html_write(&t, html);
        if (rc == 0)
            printf("wrote %s: trace %s, %d spans\n", html, t.id, t.n_rows);
    } else if (rc == 0) {
        print_waterfall(&t);
    }
    rpcd_trace_free(&t);
    rpcd_trace_logs_free(&logs);
    return rc;
}

int rpcd_trace(int argc, char **argv)
{
    char *files[MAX_FILES];
    int n_files = 0;
    const char *want = NULL, *html = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(trace_usage, stdout);
            return 0;
        }
        if (strcmp(argv[i], "--trace-id") == 0 && i + 1 < argc)
            want = argv[++i];
        else if (strcmp(argv[i], "--html") == 0 && i + 1 < argc)
            html = argv[++i];
        else if (strncmp(argv[i], "--", 2) == 0 || n_files == MAX_FILES)
            return fprintf(stderr, "rpcd trace: bad argument %s\n", argv[i]), RPCD_EXIT_USAGE;
        else
            files[n_files++] = argv[i];
    }
    if (n_files == 0)
        return fprintf(stderr, "rpcd trace: give the log files of the hops\n"), RPCD_EXIT_USAGE;
    return show(files, n_files, want, html);
}
