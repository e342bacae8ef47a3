/*
 * log.h - rpcd's structured log: one JSON object per line, each with "ts"
 * (Unix time in ns), "name" (the instance) and "event".
 */
#ifndef RPCD_LOG_H
#define RPCD_LOG_H

#include <stdarg.h>
#include <stdio.h>

/* Open the log: "-" or NULL is stderr, anything else a file appended to.
 * Returns 0 or -1 (errno set). */
int log_open(const char *path, const char *name);
void log_close(void);

/* A line buffer: fields are appended, then log_end writes the line whole. */
struct log_line {
    char buf[4096];
    size_t len;
};

/* Start a line for event (adds ts, name, event). */
void log_begin(struct log_line *l, const char *event);
void log_str(struct log_line *l, const char *key, const char *value);
void log_int(struct log_line *l, const char *key, long long value);
void log_end(struct log_line *l);

/* A free-form line: "event":"message" with text. */
void log_message(const char *event, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
