/*
 * trace_load.h - the logs of rpcd hops read back into traces, for
 * `rpcd trace`: the spans (one per call_end line with a trace id), the
 * cancel lines, and one trace picked out of them as the rows of a
 * waterfall.
 *
 * The logs are input from anywhere: every string is cut to its buffer on
 * a character boundary, numbers are clamped so that no sum overflows, and
 * a line longer than RPCD_TRACE_LINE_BYTES is skipped whole.
 */
#ifndef RPCD_TRACE_LOAD_H
#define RPCD_TRACE_LOAD_H

#include <stdbool.h>

#define RPCD_TRACE_SPANS_MAX 4096
#define RPCD_TRACE_CANCELS_MAX 4096
#define RPCD_TRACE_LINE_BYTES 8192 /* twice the longest line rpcd writes */

/* A call_end line with a trace: one span, as one hop saw it. */
struct rpcd_trace_span {
    char hop[64], method[128], status[32], message[256];
    char trace_id[33], span_id[17], parent_id[17];
    long long start_ns, dur_ns; /* Unix ns; the start is the end less elapsed_us */
    long long deadline_ns;      /* when its deadline was due (its call_start line), or -1 */
    long long messages_in, messages_out; /* a stream's (stream_end), else -1 */
};

/* A cancel line: cancel_received and cancel_pushed (rpcd serve),
 * cancel_sent (rpcd call). These lines carry no trace id. */
struct rpcd_trace_cancel {
    char hop[64], event[32], method[128], cause[32], outcome[32], message[256];
    long long ts_ns;
};

/* Everything read from the log files. */
struct rpcd_trace_logs {
    struct rpcd_trace_span *spans; /* RPCD_TRACE_SPANS_MAX */
    int n_spans;
    struct rpcd_trace_cancel *cancels; /* RPCD_TRACE_CANCELS_MAX */
    int n_cancels;
    char latest[33]; /* the trace of the span that ended last */
};

/* A row of the waterfall: a span and how deep it sits in the call tree.
 * loose: the span is part of a cycle of parents (a log that lies), so it
 * has no place in the tree; such rows come last. */
struct rpcd_trace_row {
    const struct rpcd_trace_span *span;
    int depth;
    bool loose;
};

/* One trace: its rows in tree order (each root, then its children by
 * start, depth first) and the cancel lines attributed to it. */
struct rpcd_trace {
    char id[33];
    struct rpcd_trace_row *rows; /* one per span */
    int n_rows;
    const struct rpcd_trace_cancel **cancels; /* by time */
    int n_cancels;
    long long t0_ns, t1_ns; /* the earliest start, the latest end */
};

/* rpcd_trace_logs_load reads every file into *logs (which it allocates;
 * free with rpcd_trace_logs_free, also after a failure). Spans and cancel
 * lines beyond the maxima are left out. Returns 0, RPCD_EXIT_USAGE when a
 * file cannot be read (said on stderr), or DCTX_RESOURCE_EXHAUSTED. */
int rpcd_trace_logs_load(char **files, int n_files, struct rpcd_trace_logs *logs);
void rpcd_trace_logs_free(struct rpcd_trace_logs *logs);

/* rpcd_trace_pick fills *t with the trace id (or the latest when id is
 * NULL), pointing into logs, which must outlive it. Cancel lines carry no
 * trace id: a line is attributed to the trace when its hop is one of the
 * trace's hops and its time falls within the trace's; a call of another
 * trace on that hop at that time would lend it its cancels. Returns 0,
 * DCTX_NOT_FOUND (no span of that trace; said on stderr) or
 * DCTX_RESOURCE_EXHAUSTED. Free with rpcd_trace_free. */
int rpcd_trace_pick(const struct rpcd_trace_logs *logs, const char *id, struct rpcd_trace *t);
void rpcd_trace_free(struct rpcd_trace *t);

/* Did a span with this status end for a cancel or a deadline? */
bool rpcd_trace_status_canceled(const char *status);

#endif
