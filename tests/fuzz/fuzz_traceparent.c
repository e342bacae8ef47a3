/*
 * fuzz_traceparent.c - W3C traceparent parsing (lib/rpc/trace.c), on text
 * a peer sends: dctx_trace_parse, and a server continuing the trace under
 * a new span.
 *
 * Invariants: what parses has a 32-digit trace id and a 16-digit span id
 * in lowercase hex, neither all zeros, and reads back the same once
 * written as version 00; a continued trace keeps the trace id and flags,
 * takes a new span and names the caller's as its parent.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/trace.h>

#include "wire_impl.h"
#include "fuzz_check.h"

static bool lower_hex(const char *s, size_t n)
{
    bool nonzero = false;
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
        nonzero |= s[i] != '0';
    }
    return nonzero && s[n] == '\0';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    dctx_trace t;
    if (!dctx_trace_parse(text, size, &t))
        return 0;
    CHECK(lower_hex(t.trace_id, 32) && lower_hex(t.span_id, 16) && t.parent_span_id[0] == '\0');
    CHECK(t.flags <= 0xff);
    char again[DCTX_TRACEPARENT_BYTES + 1];
    snprintf(again, sizeof again, "00-%s-%s-%02x", t.trace_id, t.span_id, t.flags);
    dctx_trace u;
    CHECK(dctx_trace_parse(again, strlen(again), &u));
    CHECK(strcmp(u.trace_id, t.trace_id) == 0 && strcmp(u.span_id, t.span_id) == 0 &&
          u.flags == t.flags);

    dctx *ctx = NULL;
    CHECK(dctx__trace_continue(dctx_background(), text, size, &ctx) == 0);
    dctx_trace c;
    CHECK(dctx_trace_get(ctx, &c));
    CHECK(strcmp(c.trace_id, t.trace_id) == 0 && strcmp(c.parent_span_id, t.span_id) == 0);
    CHECK(lower_hex(c.span_id, 16) && c.flags == t.flags);
    dctx_release(ctx);
    return 0;
}
