/*
 * nng_status.c - nng's errors as dctx status codes, one map for every
 * caller (rpc.h, "Errors"), and duration options in milliseconds.
 */
#include <stdint.h>

#include "rpc_impl.h"

int dctx__status_from_nng(int e)
{
    switch (e) {
    case 0:
        return DCTX_OK;
    case NNG_ETIMEDOUT:
        return DCTX_DEADLINE_EXCEEDED;
    case NNG_ECANCELED:
        return DCTX_CANCELED;
    case NNG_ECLOSED:
    case NNG_ECONNREFUSED:
    case NNG_ECONNRESET:
    case NNG_ECONNSHUT:
    case NNG_ECONNABORTED:
    case NNG_EUNREACHABLE:
    case NNG_EADDRINUSE:
    case NNG_ESTATE:
        return DCTX_UNAVAILABLE;
    case NNG_ENOMEM:
    case NNG_EMSGSIZE:
    case NNG_ENOSPC:
        return DCTX_RESOURCE_EXHAUSTED;
    case NNG_EINVAL:
    case NNG_EADDRINVAL:
    case NNG_ENOTSUP:
    case NNG_EBADTYPE:
    /* nng says ECRYPTO when a certificate, key or CA file cannot be used;
     * a handshake that fails later ends its connection instead. */
    case NNG_ECRYPTO:
        return DCTX_INVALID_ARGUMENT;
    case NNG_ENOENT: /* an ipc path's directory, a TLS file */
        return DCTX_NOT_FOUND;
    case NNG_EPERM:
        return DCTX_PERMISSION_DENIED;
    case NNG_EPEERAUTH:
        return DCTX_UNAUTHENTICATED;
    default:
        return DCTX_INTERNAL;
    }
}

int32_t dctx__ns_to_ms(int64_t ns)
{
    if (ns <= 0)
        return 0;
    int64_t ms = (ns + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int32_t)ms;
}
