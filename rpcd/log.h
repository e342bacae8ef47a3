/*
 * log.h - rpcd's structured log: one JSON object per line, each with "ts"
 * (Unix time in ns), "name" (the instance) and "event". Lines are built
 * with the JSON writer (json.h), so each stays valid JSON whatever its
 * strings hold; a line too long for its buffer loses its last fields.
 */
#ifndef RPCD_LOG_H
#define RPCD_LOG_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include <dctx/dctx.h>

#include "json.h"

#define RPCD_LOG_LINE_BYTES 4096

/* Open the log: "-" or NULL is stderr, anything else a file appended to.
 * name (kept, not copied) goes into every line. Lines are written by a
 * thread of the log's own, in batches, within about 5 ms; a line that
 * finds the log's queue full (the file or terminal is slower than the
 * calls) is dropped and counted. A process killed outright loses the lines
 * of its last few milliseconds. Returns 0 or -1 (errno set). */
int rpcd_log_open(const char *path, const char *name);
/* Write every line queued, stop the writer, close the file; at most 2 s:
 * a writer stuck in a write that never returns is left to the exit. */
void rpcd_log_close(void);
/* Lines dropped so far because the queue was full. */
uint64_t rpcd_log_dropped(void);

/* A line buffer: fields are appended, then rpcd_log_end writes the line
 * whole. */
struct rpcd_log_line {
    char buf[RPCD_LOG_LINE_BYTES];
    struct rpcd_json json;
};

/* Start a line for event (adds ts, name, event). */
void rpcd_log_begin(struct rpcd_log_line *l, const char *event);
void rpcd_log_str(struct rpcd_log_line *l, const char *key, const char *value);
void rpcd_log_int(struct rpcd_log_line *l, const char *key, long long value);
/* The line's writer, for arrays and objects inside it. */
struct rpcd_json *rpcd_log_json(struct rpcd_log_line *l);
void rpcd_log_end(struct rpcd_log_line *l);

/* A free-form line: "event":"message" with text. */
void rpcd_log_message(const char *event, const char *fmt, ...) DCTX_PRINTF(2, 3);

#endif
