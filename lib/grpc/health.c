/*
 * health.c - the health service's requests and Check's answer (health.h):
 * the gateway serves one service, the empty name.
 */
#include <dctx/dctx.h>

#include "health.h"

/* The service name in a HealthCheckRequest: its field 1, length-delimited
 * (tag 0x0a), or absent. Anything else is not a request this version
 * knows. Its length is bounded by the request's. */
static bool service_name(const unsigned char *req, size_t len, size_t *name_len)
{
    *name_len = 0;
    if (len == 0)
        return true;
    if (req[0] != 0x0a || len < 2)
        return false;
    size_t n = 0, at = 1;
    for (int shift = 0; at < len && shift < 35; shift += 7) {
        n |= (size_t)(req[at] & 0x7f) << shift;
        if ((req[at++] & 0x80) == 0) {
            *name_len = n;
            return n == len - at;
        }
    }
    return false;
}

int dctx__health_check(const unsigned char *req, size_t len, bool serving, unsigned char *reply,
                       size_t *reply_len, const char **message)
{
    size_t name_len = 0;
    if (!service_name(req, len, &name_len)) {
        *message = "not a grpc.health.v1.HealthCheckRequest";
        return DCTX_INVALID_ARGUMENT;
    }
    if (name_len != 0) {
        *message = "unknown service: this gateway reports only its own health (service \"\")";
        return DCTX_NOT_FOUND;
    }
    reply[0] = 0x08; /* field 1, varint */
    reply[1] = serving ? DCTX__HEALTH_SERVING : DCTX__HEALTH_NOT_SERVING;
    *reply_len = 2;
    *message = NULL;
    return DCTX_OK;
}

int dctx__health_watch_request(const unsigned char *req, size_t len, bool *known,
                               const char **message)
{
    size_t name_len = 0;
    if (!service_name(req, len, &name_len)) {
        *message = "not a grpc.health.v1.HealthCheckRequest";
        return DCTX_INVALID_ARGUMENT;
    }
    *known = name_len == 0;
    *message = NULL;
    return DCTX_OK;
}
