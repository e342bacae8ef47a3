/*
 * trace_html.c - the page of `rpcd trace --html FILE`: one trace as a
 * waterfall in plain HTML and inline CSS.
 *
 * No script: each bar and marker is a div placed on its row's track with
 * left and width in percent of the trace's duration, so the page draws
 * itself at any width. The track grid lines and the line where the cancel
 * or deadline struck lie in two overlays the size of the track column,
 * one under the rows and one over them.
 *
 * Every string comes from logs anyone could have written: each goes
 * through put_text, which escapes & < > " ' and replaces control bytes,
 * and the page's Content-Security-Policy allows no script and no fetch at
 * all, so even a string that slipped through could neither run nor call
 * out. Classes and data- attributes name what each element shows (the
 * tests read them): main.trace, .row.span with data-hop, data-method and
 * data-status, .mark.seen (a hop saw the cancel or deadline), .mark.pushed
 * (a hop sent it on), .mark.due (a deadline), .strike (where it struck).
 */
#include "trace_html.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpcd.h"

/* The fixed columns before the track: hop, method, start, duration,
 * status. The overlays start where they end (OVERLAY_LEFT, in the CSS). */
#define COLUMNS "140px 190px 80px 80px 170px 1fr"
#define OVERLAY_LEFT "660px"
#define TRACK_MARGIN "16px"
#define TICKS_ABOUT 8
#define INDENT_MAX 12 /* deeper spans are indented no further */

static const char style[] =
    "*{box-sizing:border-box}\n"
    "body{margin:16px;font:13px/1.4 system-ui,sans-serif;color:#1d2330;background:#fff}\n"
    "h1{font-size:18px;margin:0 0 4px}\n"
    "code,.method{font-family:ui-monospace,monospace;font-size:12px}\n"
    ".summary{margin:0 0 12px;color:#4a5160}\n"
    ".waterfall{position:relative;border:1px solid #d5d9e0;border-radius:4px;min-width:960px}\n"
    ".row{display:grid;grid-template-columns:" COLUMNS ";align-items:center;height:26px;"
    "border-top:1px solid #eef0f3;position:relative}\n"
    ".row>div{overflow:hidden;white-space:nowrap;text-overflow:ellipsis;padding:0 6px}\n"
    ".axis{border-top:0;background:#f6f7f9;font-weight:600;color:#4a5160;height:36px}\n"
    ".num{text-align:right;font-variant-numeric:tabular-nums}\n"
    ".row>.track{position:relative;height:100%;padding:0;overflow:visible;"
    "margin-right:" TRACK_MARGIN "}\n"
    ".tick{position:absolute;bottom:3px;transform:translateX(-50%);font-weight:400;"
    "font-size:11px}\n"
    ".overlay{position:absolute;top:0;bottom:0;left:" OVERLAY_LEFT ";right:" TRACK_MARGIN ";"
    "pointer-events:none}\n"
    ".over{z-index:2}\n"
    ".grid{position:absolute;top:0;bottom:0;border-left:1px solid #e3e6eb}\n"
    ".strike{position:absolute;top:0;bottom:0;border-left:2px solid #e11d48}\n"
    ".strike span{position:absolute;top:2px;left:3px;background:#e11d48;color:#fff;"
    "font-size:11px;padding:0 4px;border-radius:2px;white-space:nowrap}\n"
    ".strike.label-left span{left:auto;right:3px}\n"
    ".bar{position:absolute;top:6px;height:14px;min-width:2px;border-radius:3px;z-index:1}\n"
    ".bar.ok,i.ok{background:#2e9d52}.status.ok{color:#1f7a3d}\n"
    ".bar.cancelled,i.cancelled{background:#e08a00}.status.cancelled{color:#b36b00}\n"
    ".bar.deadline,i.deadline{background:#c0262d}.status.deadline{color:#c0262d}\n"
    ".bar.error,i.error{background:#7c3aed}.status.error{color:#6d28d9}\n"
    ".bar.unknown,i.unknown{background:#8a93a3}.status.unknown{color:#5b6472}\n"
    ".status{font-weight:600}\n"
    ".loose{background:#fff6e5}\n"
    ".mark{position:absolute;z-index:2}\n"
    ".seen{width:10px;height:10px;top:8px;margin-left:-5px;background:#111;"
    "border:1px solid #fff;transform:rotate(45deg)}\n"
    ".pushed{width:10px;height:10px;top:8px;margin-left:-5px;border-radius:50%;"
    "background:#fff;border:2px solid #111}\n"
    ".due{width:0;top:2px;height:22px;border-left:2px dashed #1d2330}\n"
    "table{border-collapse:collapse;margin-top:14px}\n"
    "th,td{padding:2px 8px;border-bottom:1px solid #eef0f3;text-align:left}\n"
    ".legend{margin-top:14px;color:#4a5160;max-width:960px}\n"
    ".legend i,.legend .mark{display:inline-block;position:relative;vertical-align:middle;"
    "margin:0 6px 0 14px;top:0}\n"
    ".legend i{width:14px;height:10px;border-radius:2px}\n"
    ".legend .due{height:14px;margin-left:18px}\n"
    ".legend .seen,.legend .pushed{margin-left:19px}\n"
    ".legend p{margin:6px 0}\n";

/* What the page needs besides the trace. */
struct page {
    FILE *f;
    const struct rpcd_trace *t;
    long long total_ns;
    int *cancel_row; /* by cancel line: the row it is drawn on */
    /* Where the cancel or deadline struck: a span's end or a cancel line. */
    long long strike_ns; /* -1: nothing struck */
    const struct rpcd_trace_span *strike_span;
    const struct rpcd_trace_cancel *strike_cancel;
};

/* ==== Text and numbers ==== */

/* s as HTML text or attribute value (always double-quoted). Invalid UTF-8
 * is left to the browser, which shows U+FFFD for it (the page says utf-8). */
static void put_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '&')
            fputs("&amp;", f);
        else if (c == '<')
            fputs("&lt;", f);
        else if (c == '>')
            fputs("&gt;", f);
        else if (c == '"')
            fputs("&quot;", f);
        else if (c == '\'')
            fputs("&#39;", f);
        else if (c < 0x20 || c == 0x7f)
            fputs("&#xfffd;", f);
        else
            putc(c, f);
    }
}

static void put_attr(FILE *f, const char *name, const char *value)
{
    fprintf(f, " %s=\"", name);
    put_text(f, value);
    putc('"', f);
}

/* The place of time at_ns on the track, in percent. */
static double percent_at(const struct page *p, long long at_ns)
{
    if (p->total_ns <= 0)
        return 0;
    double x = (double)(at_ns - p->t->t0_ns) * 100.0 / (double)p->total_ns;
    return x < 0 ? 0 : x > 100 ? 100 : x;
}

static double ms_since_start(const struct page *p, long long at_ns)
{
    return (double)(at_ns - p->t->t0_ns) / 1e6;
}

/* A fixed set of classes for the status: never the log's text. */
static const char *status_class(const char *status)
{
    if (strcmp(status, "OK") == 0)
        return "ok";
    if (strcmp(status, "CANCELLED") == 0)
        return "cancelled";
    if (strcmp(status, "DEADLINE_EXCEEDED") == 0)
        return "deadline";
    return status[0] != '\0' ? "error" : "unknown";
}

/* ==== What struck, and where each cancel line goes ==== */

/* The earliest of the ends with CANCELLED or DEADLINE_EXCEEDED and the
 * cancel lines attributed to the trace. */
static void find_strike(struct page *p)
{
    const struct rpcd_trace *t = p->t;
    p->strike_ns = -1;
    for (int i = 0; i < t->n_rows; i++) {
        const struct rpcd_trace_span *s = t->rows[i].span;
        long long end = s->start_ns + s->dur_ns;
        if (rpcd_trace_status_canceled(s->status) && (p->strike_ns < 0 || end < p->strike_ns)) {
            p->strike_ns = end;
            p->strike_span = s;
        }
    }
    /* cancels are in time order: the first is the earliest */
    if (t->n_cancels > 0 && (p->strike_ns < 0 || t->cancels[0]->ts_ns < p->strike_ns)) {
        p->strike_ns = t->cancels[0]->ts_ns;
        p->strike_span = NULL;
        p->strike_cancel = t->cancels[0];
    }
}

/* A cancel line goes on the row of its hop whose span was open at the
 * time, or else on its hop's first row. */
static int row_of(const struct rpcd_trace *t, const struct rpcd_trace_cancel *c)
{
    int first = -1;
    for (int i = 0; i < t->n_rows; i++) {
        const struct rpcd_trace_span *s = t->rows[i].span;
        if (strcmp(s->hop, c->hop) != 0)
            continue;
        if (c->ts_ns >= s->start_ns && c->ts_ns <= s->start_ns + s->dur_ns)
            return i;
        if (first < 0)
            first = i;
    }
    return first;
}

/* ==== The parts of the page ==== */

static void write_head(const struct page *p)
{
    FILE *f = p->f;
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n", f);
    fputs("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
          "style-src 'unsafe-inline'\">\n",
          f);
    fputs("<title>trace ", f);
    put_text(f, p->t->id);
    fprintf(f, "</title>\n<style>\n%s</style>\n</head>\n", style);
}

static void write_summary(const struct page *p)
{
    FILE *f = p->f;
    fputs("<h1>trace <code>", f);
    put_text(f, p->t->id);
    fprintf(f, "</code></h1>\n<p class=\"summary\">%d spans, %.3f ms", p->t->n_rows,
            p->total_ns / 1e6);
    if (p->strike_span != NULL) {
        fprintf(f, "; struck at +%.3f ms: ", ms_since_start(p, p->strike_ns));
        put_text(f, p->strike_span->hop);
        fputs("'s call ended ", f);
        put_text(f, p->strike_span->status);
    } else if (p->strike_cancel != NULL) {
        fprintf(f, "; struck at +%.3f ms: ", ms_since_start(p, p->strike_ns));
        put_text(f, p->strike_cancel->hop);
        fputs(" logged ", f);
        put_text(f, p->strike_cancel->event);
        fputs(" ", f);
        put_text(f, p->strike_cancel->cause);
    } else {
        fputs("; no cancel or deadline struck", f);
    }
    fputs("</p>\n", f);
}

/* A tick about every TICKS_ABOUTth of the trace, at a round 1, 2 or 5. */
static long long tick_step(long long total_ns)
{
    long long raw = total_ns / TICKS_ABOUT, step = 1;
    while (step <= raw / 10)
        step *= 10;
    if (step >= raw)
        return step;
    return 2 * step >= raw ? 2 * step : 5 * step >= raw ? 5 * step : 10 * step;
}

static void write_axis(const struct page *p)
{
    FILE *f = p->f;
    fputs("<div class=\"row axis\"><div>hop</div><div>method</div><div class=\"num\">start ms"
          "</div><div class=\"num\">ms</div><div>status</div><div class=\"track\">",
          f);
    long long step = tick_step(p->total_ns);
    int decimals = step >= 1000000 ? 0 : step >= 100000 ? 1 : step >= 10000 ? 2 : 3;
    for (long long at = 0; at <= p->total_ns; at += step)
        fprintf(f, "<span class=\"tick\" style=\"left:%.3f%%\">%.*f ms</span>",
                percent_at(p, p->t->t0_ns + at), decimals, at / 1e6);
    fputs("</div></div>\n", f);
}

static void write_grid(const struct page *p)
{
    FILE *f = p->f;
    fputs("<div class=\"overlay under\">", f);
    long long step = tick_step(p->total_ns);
    for (long long at = 0; at <= p->total_ns; at += step)
        fprintf(f, "<div class=\"grid\" style=\"left:%.3f%%\"></div>",
                percent_at(p, p->t->t0_ns + at));
    fputs("</div>\n", f);
}

static void write_strike(const struct page *p)
{
    if (p->strike_ns < 0)
        return;
    /* A label past the middle goes left of its line, within the page. */
    double x = percent_at(p, p->strike_ns);
    fprintf(p->f,
            "<div class=\"overlay over\"><div class=\"strike%s\" data-at-ms=\"%.3f\" "
            "style=\"left:%.3f%%\"><span>struck +%.3f ms</span></div></div>\n",
            x > 50 ? " label-left" : "", ms_since_start(p, p->strike_ns), x,
            ms_since_start(p, p->strike_ns));
}

/* A marker on a track: kind is its class, event its data-kind. */
static void write_mark(const struct page *p, const char *kind, const char *event, long long at_ns,
                       const char *hop, const char *what)
{
    FILE *f = p->f;
    fprintf(f, "<div class=\"mark %s\"", kind);
    put_attr(f, "data-kind", event);
    fprintf(f, " data-at-ms=\"%.3f\" style=\"left:%.3f%%\" title=\"", ms_since_start(p, at_ns),
            percent_at(p, at_ns));
    put_text(f, hop);
    fputs(": ", f);
    put_text(f, what);
    fprintf(f, " at +%.3f ms\"></div>", ms_since_start(p, at_ns));
}

static void write_cancel_marks(const struct page *p, int row)
{
    for (int i = 0; i < p->t->n_cancels; i++) {
        const struct rpcd_trace_cancel *c = p->t->cancels[i];
        if (p->cancel_row[i] != row)
            continue;
        bool received = strcmp(c->event, "cancel_received") == 0;
        char what[160];
        snprintf(what, sizeof what, "%s %s%s%s", c->event, c->cause, c->outcome[0] ? ", " : "",
                 c->outcome);
        write_mark(p, received ? "seen" : "pushed", c->event, c->ts_ns, c->hop, what);
    }
}

static void write_track(const struct page *p, int row)
{
    FILE *f = p->f;
    const struct rpcd_trace_span *s = p->t->rows[row].span;
    long long end = s->start_ns + s->dur_ns;
    double left = percent_at(p, s->start_ns);
    fprintf(f, "<div class=\"track\"><div class=\"bar %s\" style=\"left:%.3f%%;width:%.3f%%\"",
            status_class(s->status), left, percent_at(p, end) - left);
    fputs(" title=\"", f);
    put_text(f, s->status);
    fprintf(f, " after %.3f ms", s->dur_ns / 1e6);
    if (s->message[0] != '\0') {
        fputs(": ", f);
        put_text(f, s->message);
    }
    fputs("\"></div>", f);
    if (s->deadline_ns >= p->t->t0_ns && s->deadline_ns <= p->t->t1_ns)
        write_mark(p, "due", "deadline", s->deadline_ns, s->hop, "its deadline was due");
    if (rpcd_trace_status_canceled(s->status))
        write_mark(p, "seen", "end", end, s->hop, s->status);
    write_cancel_marks(p, row);
    fputs("</div>", f);
}

static void write_row(const struct page *p, int row)
{
    FILE *f = p->f;
    const struct rpcd_trace_row *r = &p->t->rows[row];
    const struct rpcd_trace_span *s = r->span;
    fprintf(f, "<div class=\"row span%s\"", r->loose ? " loose" : "");
    put_attr(f, "data-hop", s->hop);
    put_attr(f, "data-method", s->method);
    put_attr(f, "data-status", s->status);
    put_attr(f, "data-span-id", s->span_id);
    put_attr(f, "data-parent-span-id", s->parent_id);
    if (s->messages_in >= 0)
        fprintf(f, " data-messages-in=\"%lld\" data-messages-out=\"%lld\"", s->messages_in,
                s->messages_out);
    fprintf(f, " data-depth=\"%d\"%s>", r->depth, r->loose ? " data-loose=\"true\"" : "");
    int depth = r->depth < INDENT_MAX ? r->depth : INDENT_MAX;
    fprintf(f, "<div class=\"hop\" style=\"padding-left:%dpx\"", 6 + depth * 12);
    put_attr(f, "title", s->hop);
    putc('>', f);
    put_text(f, s->hop);
    fputs("</div><div class=\"method\"", f);
    put_attr(f, "title", s->method);
    putc('>', f);
    put_text(f, s->method);
    if (s->messages_in >= 0)
        fprintf(f, " <small>(stream: %lld in, %lld out)</small>", s->messages_in, s->messages_out);
    fprintf(f, "</div><div class=\"num\">%.3f</div><div class=\"num\">%.3f</div>",
            ms_since_start(p, s->start_ns), s->dur_ns / 1e6);
    fprintf(f, "<div class=\"status %s\">", status_class(s->status));
    put_text(f, s->status[0] ? s->status : "(none)");
    fputs("</div>", f);
    write_track(p, row);
    fputs("</div>\n", f);
}

static void write_cancel_table(const struct page *p)
{
    FILE *f = p->f;
    if (p->t->n_cancels == 0)
        return;
    fputs("<table class=\"cancels\">\n<tr><th>+ms</th><th>hop</th><th>event</th><th>method</th>"
          "<th>cause</th><th>outcome</th><th>message</th></tr>\n",
          f);
    for (int i = 0; i < p->t->n_cancels; i++) {
        const struct rpcd_trace_cancel *c = p->t->cancels[i];
        const char *cells[] = {c->hop, c->event, c->method, c->cause, c->outcome, c->message};
        fputs("<tr class=\"cancel-line\"", f);
        put_attr(f, "data-hop", c->hop);
        put_attr(f, "data-event", c->event);
        fprintf(f, "><td class=\"num\">%.3f</td>", ms_since_start(p, c->ts_ns));
        for (size_t k = 0; k < sizeof cells / sizeof cells[0]; k++) {
            fputs("<td>", f);
            put_text(f, cells[k]);
            fputs("</td>", f);
        }
        fputs("</tr>\n", f);
    }
    fputs("</table>\n", f);
}

static void write_legend(FILE *f)
{
    fputs("<div class=\"legend\">\n<p>Status:<i class=\"ok\"></i>OK<i class=\"cancelled\"></i>"
          "CANCELLED<i class=\"deadline\"></i>DEADLINE_EXCEEDED<i class=\"error\"></i>other error"
          "</p>\n<p>Markers:<span class=\"mark seen\"></span>the hop saw the cancel or deadline "
          "(its call ended so, or it logged cancel_received)<span class=\"mark pushed\"></span>"
          "the hop sent a cancel on (cancel_pushed, cancel_sent)<span class=\"mark due\"></span>"
          "the span's deadline; the red line: where the cancel or deadline struck first.</p>\n"
          "<p>Cancel lines carry no trace id: a line is shown here when its hop is one of this "
          "trace's hops and its time falls within the trace, so another call on that hop at the "
          "same time could lend it its cancels.</p>\n</div>\n",
          f);
}

static void write_page(struct page *p)
{
    FILE *f = p->f;
    write_head(p);
    fputs("<body>\n<main class=\"trace\"", f);
    put_attr(f, "data-trace-id", p->t->id);
    fprintf(f, " data-spans=\"%d\" data-duration-ms=\"%.3f\">\n", p->t->n_rows, p->total_ns / 1e6);
    write_summary(p);
    fputs("<div class=\"waterfall\">\n", f);
    write_grid(p);
    write_axis(p);
    for (int i = 0; i < p->t->n_rows; i++)
        write_row(p, i);
    write_strike(p);
    fputs("</div>\n", f);
    write_cancel_table(p);
    write_legend(f);
    fputs("</main>\n</body>\n</html>\n", f);
}

int rpcd_trace_html_write(const struct rpcd_trace *t, const char *path)
{
    struct page p = {.t = t, .total_ns = t->t1_ns - t->t0_ns};
    p.cancel_row = calloc((size_t)t->n_cancels + 1, sizeof *p.cancel_row);
    if (p.cancel_row == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    for (int i = 0; i < t->n_cancels; i++)
        p.cancel_row[i] = row_of(t, t->cancels[i]);
    find_strike(&p);
    p.f = fopen(path, "w");
    if (p.f == NULL) {
        fprintf(stderr, "rpcd trace: cannot write %s: %s\n", path, strerror(errno));
        free(p.cancel_row);
        return RPCD_EXIT_USAGE;
    }
    write_page(&p);
    free(p.cancel_row);
    /* A full disk shows only when the buffer is flushed, at the close. */
    bool failed = ferror(p.f) != 0;
    errno = 0;
    if (fclose(p.f) != 0 || failed) {
        fprintf(stderr, "rpcd trace: cannot write %s: %s\n", path,
                errno != 0 ? strerror(errno) : "write failed");
        return RPCD_EXIT_USAGE;
    }
    return 0;
}
