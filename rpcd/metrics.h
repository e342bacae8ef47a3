/*
 * metrics.h - rpcd's numbers in Prometheus' text exposition format
 * (version 0.0.4): calls and their latency by method, counted from the
 * server's events as they end, and the rest (in flight, cancels, peers,
 * bad frames, next hops) read from the library's stats when scraped.
 *
 * The methods are the server's own, fixed at start: a call to any other
 * name is counted under method="unknown", so no peer can add series.
 */
#ifndef RPCD_METRICS_H
#define RPCD_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct rpcd;

/* Start counting for r's server, whose methods are all registered (before
 * the server starts). Returns 0 or -1 (out of memory). */
int rpcd_metrics_init(const struct rpcd *r);
/* Free what init made, once nothing counts or renders any more. */
void rpcd_metrics_free(void);

/* A call the server answered (a CALL_END event): quick, lock-free, safe
 * from any thread; nothing before init. */
void rpcd_metrics_call_end(const char *method, int code, int64_t elapsed_ns);

/* The server drains from now on: /healthz answers 503, and the gauge
 * dctx_server_draining is 1. */
void rpcd_metrics_set_draining(void);
int rpcd_metrics_draining(void);

/* Every metric as text (malloc'd; *len bytes, NUL-terminated), or NULL
 * when out of memory. r's server and channels must be open. */
char *rpcd_metrics_render(const struct rpcd *r, size_t *len);

#endif
