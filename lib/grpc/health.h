/*
 * health.h - grpc.health.v1.Health/Check, answered by the gateway itself:
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

#endif
