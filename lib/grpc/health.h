/*
 * health.h - grpc.health.v1.Health/Check and Watch, answered by the
 * gateway itself (Watch's stream: health_watch.c):
 * its two messages hand-encoded (HealthCheckRequest { string service = 1; },
 * HealthCheckResponse { ServingStatus status = 1; }).
 */
#ifndef DCTX_GRPC_HEALTH_H
#define DCTX_GRPC_HEALTH_H

#include <stdbool.h>
#include <stddef.h>

#define DCTX__HEALTH_CHECK "/grpc.health.v1.Health/Check"
#define DCTX__HEALTH_WATCH "/grpc.health.v1.Health/Watch"

/* dctx__health_check answers a Check request of len bytes: 0 (OK) with the
 * reply's bytes in reply (3 bytes room) and *reply_len, or a status code
 * with its message in message: INVALID_ARGUMENT for a request that does
 * not parse, NOT_FOUND for a service other than "" (the gateway as a
 * whole; it knows no others). */
int dctx__health_check(const unsigned char *req, size_t len, bool serving, unsigned char *reply,
                       size_t *reply_len, const char **message);

/* The statuses a Watch sends (HealthCheckResponse.ServingStatus). */
enum { DCTX__HEALTH_SERVING = 1, DCTX__HEALTH_NOT_SERVING = 2, DCTX__HEALTH_UNKNOWN = 3 };

/* dctx__health_watch_request reads a Watch request: 0 with *known (the
 * service is the gateway's own, ""), or INVALID_ARGUMENT with message. */
int dctx__health_watch_request(const unsigned char *req, size_t len, bool *known,
                               const char **message);

#endif
