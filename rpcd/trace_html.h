/*
 * trace_html.h - one trace (trace_load.h) as a self-contained HTML page:
 * `rpcd trace --html FILE`.
 */
#ifndef RPCD_TRACE_HTML_H
#define RPCD_TRACE_HTML_H

#include "trace_load.h"

/* rpcd_trace_html_write writes t as one HTML page to path (replaced if it
 * exists): a waterfall of plain HTML and inline CSS, no script, nothing
 * fetched. Every string from the logs is escaped. Returns 0, or
 * RPCD_EXIT_USAGE when the file cannot be written (said on stderr). */
int rpcd_trace_html_write(const struct rpcd_trace *t, const char *path);

#endif
