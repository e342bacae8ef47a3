/*
 * result.c - the end of a call as the caller gets it (rpc.h, "Results"):
 * one allocation holding the message and the payload.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_impl.h"
#include "text.h"

void dctx_rpc_result_free(dctx_rpc_result *res)
{
    if (res == NULL)
        return;
    free(res->internal);
    memset(res, 0, sizeof *res);
    res->message = "";
}

void dctx__result_set(dctx_rpc_result *res, int code, const char *message, const void *payload,
                      size_t payload_len)
{
    size_t mlen = message != NULL
                      ? dctx__utf8_prefix(message, strlen(message), DCTX_WIRE_MESSAGE_BYTES_MAX)
                      : 0;
    char *block = malloc(mlen + 1 + payload_len);
    memset(res, 0, sizeof *res);
    res->code = code;
    res->message = "";
    if (block == NULL) {
        /* Never an OK without its payload. */
        if (code == DCTX_OK)
            res->code = DCTX_RESOURCE_EXHAUSTED;
        return;
    }
    memcpy(block, message != NULL ? message : "", mlen);
    block[mlen] = '\0';
    if (payload_len > 0)
        memcpy(block + mlen + 1, payload, payload_len);
    res->internal = block;
    res->message = block;
    res->payload = block + mlen + 1;
    res->payload_len = payload_len;
}

void dctx_rpc_result_set(dctx_rpc_result *res, int code, const char *message, const void *payload,
                         size_t payload_len)
{
    if (res != NULL)
        dctx__result_set(res, code, message, payload, payload_len);
}

int dctx__error(int code, char *err, size_t err_len, const char *fmt, ...)
{
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

void dctx__result_setf(dctx_rpc_result *res, int code, const char *fmt, ...)
{
    char buf[DCTX_WIRE_MESSAGE_BYTES_MAX * 2]; /* dctx__result_set cuts on a character */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    dctx__result_set(res, code, buf, NULL, 0);
}

const char *dctx_rpc_cancel_outcome_name(int outcome)
{
    static const char *const names[] = {"none",     "stopped", "prevented",
                                        "too_late", "pending", "unreached"};
    return outcome >= 0 && outcome < DCTX_RPC_CANCEL_OUTCOMES ? names[outcome] : "?";
}

void dctx__result_from_context(dctx *ctx, dctx_rpc_result *res)
{
    const char *msg = NULL;
    int cause = dctx_cause(ctx, &msg);
    int err = dctx_err(ctx);
    if (cause == DCTX_DEADLINE_EXCEEDED)
        err = DCTX_DEADLINE_EXCEEDED;
    if (cause != 0 && cause != err)
        dctx__result_setf(res, err, "%s (cause: %s%s%s)", dctx_strerror(err), dctx_code_name(cause),
                          msg ? ": " : "", msg ? msg : "");
    else
        dctx__result_setf(res, err, "%s%s%s", dctx_strerror(err), msg ? ": " : "", msg ? msg : "");
}
