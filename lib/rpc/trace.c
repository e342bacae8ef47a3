/*
 * trace.c - W3C traceparent: parsing, starting a trace, new spans (see
 * trace.h). The traceparent text is the value under dctx_traceparent_key,
 * exactly what goes on the wire; the caller's span id, which W3C's header
 * has no room for, is kept under a local key for logs.
 */
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include <dctx/trace.h>

#include "wire_impl.h"

const dctx_key dctx_traceparent_key = {"traceparent", DCTX_KEY_PROPAGATE};
static const dctx_key parent_span_key = {"dctx.trace.parent", 0}; /* never leaves */

static bool lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* A lowercase hex digit's value (checked by lower_hex before). */
static int hex_digit(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

static bool all_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0')
            return false;
    return true;
}

bool dctx_trace_parse(const char *text, size_t len, dctx_trace *t)
{
    /* version "-" trace-id "-" parent-id "-" flags: offsets 0, 3, 36, 53 */
    if (text == NULL || len < DCTX_TRACEPARENT_BYTES || !lower_hex(text, 2) ||
        memcmp(text, "ff", 2) == 0)
        return false;
    bool v00 = memcmp(text, "00", 2) == 0;
    /* version 00 is exactly 55; a later version may add fields after a dash */
    if ((v00 && len != DCTX_TRACEPARENT_BYTES) ||
        (!v00 && len > DCTX_TRACEPARENT_BYTES && text[DCTX_TRACEPARENT_BYTES] != '-'))
        return false;
    if (text[2] != '-' || text[35] != '-' || text[52] != '-')
        return false;
    const char *trace = text + 3, *span = text + 36, *flags = text + 53;
    if (!lower_hex(trace, 32) || all_zero(trace, 32) || !lower_hex(span, 16) ||
        all_zero(span, 16) || !lower_hex(flags, 2))
        return false;
    if (t != NULL) {
        memcpy(t->trace_id, trace, 32);
        t->trace_id[32] = '\0';
        memcpy(t->span_id, span, 16);
        t->span_id[16] = '\0';
        t->parent_span_id[0] = '\0';
        /* By hand: text need not end in a NUL, and sscanf reads to one
         * (fuzz_traceparent found it reading past a value off the wire). */
        t->flags = (unsigned)(hex_digit(flags[0]) << 4 | hex_digit(flags[1]));
    }
    return true;
}

bool dctx_trace_get(const dctx *ctx, dctx_trace *t)
{
    size_t len = 0;
    const char *tp = dctx_value(ctx, &dctx_traceparent_key, &len);
    if (tp == NULL || !dctx_trace_parse(tp, len, t))
        return false;
    size_t plen = 0;
    const char *parent = dctx_value(ctx, &parent_span_key, &plen);
    if (t != NULL && parent != NULL && plen == 16) {
        memcpy(t->parent_span_id, parent, 16);
        t->parent_span_id[16] = '\0';
    }
    return true;
}

/* n random bytes as 2n lowercase hex digits, never all zero. */
static bool random_hex(char *out, size_t n)
{
    unsigned char bytes[16];
    do {
        if (!dctx__random(bytes, n))
            return false;
        sodium_bin2hex(out, 2 * n + 1, bytes, n);
    } while (all_zero(out, 2 * n));
    return true;
}

/* A child carrying trace_id/span_id/flags, with parent_span (or NULL). */
static int with_position(dctx *parent, const char *trace_id, const char *span_id,
                         const char *parent_span, unsigned flags, dctx **out)
{
    char tp[DCTX_TRACEPARENT_BYTES + 1];
    snprintf(tp, sizeof tp, "00-%.32s-%.16s-%02x", trace_id, span_id, flags & 0xffu);
    dctx *mid = NULL;
    int rc = dctx_with_value(parent, &dctx_traceparent_key, tp, DCTX_TRACEPARENT_BYTES,
                             parent_span != NULL ? &mid : out);
    if (rc != 0 || parent_span == NULL)
        return rc;
    rc = dctx_with_value(mid, &parent_span_key, parent_span, 16, out);
    dctx_release(mid);
    return rc;
}

int dctx_trace_start(dctx *parent, unsigned flags, dctx **out)
{
    if (out != NULL)
        *out = NULL;
    if (parent == NULL || out == NULL)
        return DCTX_INVALID_ARGUMENT;
    char trace_id[33], span_id[17];
    if (!random_hex(trace_id, 16) || !random_hex(span_id, 8))
        return DCTX_INTERNAL;
    return with_position(parent, trace_id, span_id, NULL, flags, out);
}

int dctx_trace_span(dctx *parent, dctx **out)
{
    if (out != NULL)
        *out = NULL;
    dctx_trace t;
    if (parent == NULL || out == NULL)
        return DCTX_INVALID_ARGUMENT;
    if (!dctx_trace_get(parent, &t))
        return DCTX_FAILED_PRECONDITION;
    char span_id[17];
    if (!random_hex(span_id, 8))
        return DCTX_INTERNAL;
    return with_position(parent, t.trace_id, span_id, t.span_id, t.flags, out);
}

int dctx__trace_continue(dctx *parent, const char *traceparent, size_t len, dctx **out)
{
    dctx_trace t;
    if (!dctx_trace_parse(traceparent, len, &t))
        return DCTX_INVALID_ARGUMENT;
    char span_id[17];
    if (!random_hex(span_id, 8))
        return DCTX_INTERNAL;
    return with_position(parent, t.trace_id, span_id, t.span_id, t.flags, out);
}
