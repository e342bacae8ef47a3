/*
 * children.h - what the multi-process examples share: services run in
 * child processes of the example (fork), report over a pipe when they
 * serve, and every process prints timestamped lines on one clock.
 * Not part of dctx: plumbing, so each example's main.c shows only dctx.
 */
#ifndef DCTX_EXAMPLE_CHILDREN_H
#define DCTX_EXAMPLE_CHILDREN_H

#include <stdbool.h>
#include <stddef.h>

#define MS 1000000LL /* nanoseconds */

/* Line-buffered stdout, the start time, a temporary directory for the
 * ipc sockets (/tmp/dctx-<tag>-XXXXXX) and the report pipe. Call first,
 * before any dctx thread exists (the children are forked). */
bool example_begin(const char *tag);

/* Remove the temporary directory and what nng left in it. */
void example_end(void);

/* "ipc://<dir>/<name>.ipc" */
void example_url(const char *name, char *out, size_t n);

/* One line: ms since example_begin, who, what. CLOCK_MONOTONIC is one
 * clock for every process of a machine; stdout is line buffered, so each
 * line is one write even with several processes printing. */
void say(const char *who, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* In a child: report one byte to the parent ('r' is "serving"). */
void tell_parent(char what);

/* In the parent: read reports until n of kind `what` came; false after timeout_ms. */
bool wait_reports(char what, int n, int timeout_ms);

/* Fork n children, the last index first, each running child_main(i) with
 * SIGTERM blocked (for serve_until_sigterm) and set to die with the parent,
 * and exiting with its result; wait for each one's 'r' before the next, so a
 * service is serving before the one that calls it starts. */
bool start_children(int n, int (*child_main)(int i));

/* In a child whose service is up: report 'r', then wait for SIGTERM.
 * 0, or DCTX_INTERNAL if the wait failed. */
int serve_until_sigterm(void);

/* SIGTERM every child and wait for it; true if all exited with 0. */
bool stop_children(void);

#endif
