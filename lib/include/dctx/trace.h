/*
 * trace.h - W3C Trace Context, understood by every hop.
 *
 * A context may carry a traceparent ("00-<trace id>-<span id>-<flags>")
 * under dctx_traceparent_key, which propagates. Its span id is the span of
 * the work done under that context. When a call arrives, the server checks
 * the traceparent it came with (W3C's rules; a malformed one is dropped,
 * with tracestate, and never forwarded), keeps the trace id and flags,
 * makes a new span id for the handler's work, and remembers the caller's
 * span as the parent. The handler's own calls then send its span onward as
 * their parent, so the logs of all hops rebuild the whole call tree.
 */
#ifndef DCTX_TRACE_H
#define DCTX_TRACE_H

#include <dctx/dctx.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DCTX_TRACEPARENT_BYTES 55 /* version 00: 2-32-16-2 hex digits and dashes */
#define DCTX_TRACE_SAMPLED 0x01u  /* trace-flags bit 0 */

/* The key traceparent values live under ("traceparent", propagated). */
DCTX_API extern const dctx_key dctx_traceparent_key;

/* A parsed trace position: lowercase hex strings, NUL-terminated. */
typedef struct dctx_trace {
    char trace_id[33];
    char span_id[17];        /* this context's span */
    char parent_span_id[17]; /* the caller's span; "" where the trace began */
    unsigned flags;
} dctx_trace;

/* dctx_trace_parse checks a traceparent by W3C's rules (version 00 exactly;
 * a higher version by its version-00 prefix; ff, upper case, all-zero ids
 * are invalid) and fills t (parent_span_id ""). False if malformed. */
DCTX_API bool dctx_trace_parse(const char *text, size_t len, dctx_trace *t);

/* dctx_trace_get fills t with ctx's trace position; false if it has none. */
DCTX_API bool dctx_trace_get(const dctx *ctx, dctx_trace *t);

/* dctx_trace_start makes a child of parent that begins a new trace: random
 * trace and span ids, the given flags (DCTX_TRACE_SAMPLED, say). On success
 * *out holds one reference for the caller to dctx_release. Returns 0,
 * DCTX_INVALID_ARGUMENT (parent or out NULL), DCTX_RESOURCE_EXHAUSTED (no
 * memory) or DCTX_INTERNAL (libsodium cannot start: no randomness), with
 * *out NULL. Thread safe; never blocks. */
DCTX_API int dctx_trace_start(dctx *parent, unsigned flags, dctx **out);

/* dctx_trace_span makes a child of parent for a new span of parent's trace
 * (parent's span becomes the parent span). Returns 0, the codes of
 * dctx_trace_start, or DCTX_FAILED_PRECONDITION when parent has no trace. */
DCTX_API int dctx_trace_span(dctx *parent, dctx **out);

#ifdef __cplusplus
}
#endif

#endif /* DCTX_TRACE_H */
