/*
 * metrics_http.h - `rpcd serve --metrics-listen HOST:PORT`: GET /metrics
 * (metrics.h, for Prometheus) and GET /healthz (200 "serving", 503
 * "draining"), on nng's own HTTP server.
 */
#ifndef RPCD_METRICS_HTTP_H
#define RPCD_METRICS_HTTP_H

#include <stddef.h>

struct rpcd;

/* Serve r's metrics on HOST:PORT (port 0: one the system picks); bound
 * gets "HOST:PORT" with the port in use. r must stay open until
 * rpcd_metrics_http_stop. Returns 0, or an error written to stderr and
 * RPCD_EXIT_USAGE (not HOST:PORT) or a status code (cannot listen). */
int rpcd_metrics_http_start(const struct rpcd *r, const char *hostport, char *bound,
                            size_t bound_len);
/* Stop serving: after it, no request is being answered. Safe when never
 * started. */
void rpcd_metrics_http_stop(void);

#endif
