/*
 * gateway_values.c - the context a gRPC call runs under in dctx: its
 * deadline, and its whitelisted metadata as propagated values under the
 * same names. A key given more than once is one value, its entries joined
 * with "," (HTTP's rule for a repeated header); a -bin key's bytes cannot
 * be joined so, and given twice is refused. The wire's limits on values
 * (wire.h) are checked here, to refuse with a message that names them.
 */
#include <dctx/trace.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "gateway.h"

static bool key_is(grpc_slice key, const char *name, size_t len)
{
    return GRPC_SLICE_LENGTH(key) == len && memcmp(GRPC_SLICE_START_PTR(key), name, len) == 0;
}

/* The value of the entries of md under name: *value points into md when
 * there is one entry (no copy: the common case), into *joined (malloc'd)
 * when several are joined; NULL when there is none. budget is what the
 * wire's byte limit still allows. */
static int value_of(const grpc_metadata_array *md, const char *name, size_t budget,
                    const char **value, size_t *value_len, char **joined, char *message,
                    size_t message_len)
{
    size_t name_len = strlen(name), len = 0, n = 0, first = 0;
    for (size_t i = 0; i < md->count; i++)
        if (key_is(md->metadata[i].key, name, name_len)) {
            if (n++ == 0)
                first = i;
            len += (n > 1) + GRPC_SLICE_LENGTH(md->metadata[i].value);
        }
    *value = *joined = NULL;
    *value_len = len;
    if (n > 1 && dctx__grpc_key_is_bin(name, name_len)) {
        snprintf(message, message_len,
                 "metadata key %s given twice: a -bin key is carried as one value", name);
        return DCTX_INVALID_ARGUMENT;
    }
    if (n > 0 && name_len + len > budget) {
        snprintf(message, message_len,
                 "metadata carried on as values passes %d bytes (keys included), "
                 "the dctx wire's limit",
                 DCTX_WIRE_VALUE_BYTES_MAX);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    if (n == 1) {
        const char *bytes = (const char *)GRPC_SLICE_START_PTR(md->metadata[first].value);
        *value = bytes != NULL ? bytes : ""; /* an empty value is a value */
    }
    if (n <= 1)
        return 0;
    char *buf = malloc(len + 1);
    if (buf == NULL) {
        snprintf(message, message_len, "no memory for the call's values");
        return DCTX_RESOURCE_EXHAUSTED;
    }
    size_t at = 0;
    for (size_t i = 0; i < md->count; i++)
        if (key_is(md->metadata[i].key, name, name_len)) {
            if (at > 0)
                buf[at++] = ',';
            size_t vlen = GRPC_SLICE_LENGTH(md->metadata[i].value);
            memcpy(buf + at, GRPC_SLICE_START_PTR(md->metadata[i].value), vlen);
            at += vlen;
        }
    *value = *joined = buf;
    return 0;
}

int dctx__gateway_context(const dctx_grpc_gateway *gw, const grpc_metadata_array *md,
                          int64_t budget_ns, dctx **base, dctx **out, size_t *values, char *message,
                          size_t message_len)
{
    *base = *out = NULL;
    *values = 0;
    int rc = budget_ns < 0 ? dctx_with_cancel(dctx_background(), base)
                           : dctx_with_deadline_cause(dctx_background(), dctx_now() + budget_ns,
                                                      DCTX_DEADLINE_EXCEEDED,
                                                      "the gRPC caller's deadline passed", base);
    if (rc != 0) {
        snprintf(message, message_len, "no memory for the call's context");
        return DCTX_RESOURCE_EXHAUSTED;
    }
    dctx *top = dctx_retain(*base);
    size_t used = 0;
    for (size_t k = 0; k < gw->n_keys && rc == 0; k++) {
        const char *name = gw->keys[k]->name;
        const char *value = NULL;
        char *joined = NULL;
        size_t len = 0;
        rc = value_of(md, name, DCTX_WIRE_VALUE_BYTES_MAX - used, &value, &len, &joined, message,
                      message_len);
        if (rc != 0 || value == NULL)
            continue;
        dctx *next = NULL;
        rc = dctx_with_value(top, gw->keys[k], value, len, &next);
        free(joined);
        if (rc != 0) {
            snprintf(message, message_len, "no memory for the call's values");
            rc = DCTX_RESOURCE_EXHAUSTED;
            continue;
        }
        dctx_release(top);
        top = next;
        used += strlen(name) + len;
        (*values)++;
    }
    if (rc != 0) {
        dctx_release(top);
        dctx_release(*base);
        *base = NULL;
        *values = 0;
        return rc;
    }
    *out = top;
    return 0;
}
