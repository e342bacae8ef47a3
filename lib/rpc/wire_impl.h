/*
 * wire_impl.h - context <-> wire header, for the RPC client and server.
 * Never installed: the protobuf-c types are an internal detail.
 */
#ifndef DCTX_WIRE_IMPL_H
#define DCTX_WIRE_IMPL_H

#include <stdint.h>

#include <dctx/wire.h>

#include "dctx.pb-c.h"

/* An encoded header and the scratch it points into. The strings and bytes
 * point into the context given to dctx__wire_encode, so the context must
 * be held until the header has been packed. */
struct dctx__wire_out {
    Dctx__Wire__ContextHeader hdr;
    Dctx__Wire__Value values[DCTX_WIRE_VALUES_MAX];
    Dctx__Wire__Value *value_ptrs[DCTX_WIRE_VALUES_MAX];
    uint8_t token[DCTX_TOKEN_BYTES];
    uint64_t route[DCTX_WIRE_HOPS_MAX];
};

/* Room for a message naming what went wrong. */
#define DCTX__WIRE_ERR_BYTES 160

/* dctx__wire_encode fills out from ctx for a call sent at now_ns, with a
 * fresh token (out->token). Returns 0; DCTX_DEADLINE_EXCEEDED when the
 * budget left after the policy's reserve is gone or under its minimum;
 * DCTX_INVALID_ARGUMENT or DCTX_RESOURCE_EXHAUSTED when the values break a
 * limit. err (DCTX__WIRE_ERR_BYTES) names the cause. */
int dctx__wire_encode(const dctx *ctx, const dctx_wire_policy *policy, int64_t now_ns,
                      struct dctx__wire_out *out, char *err);

/* dctx__wire_decode checks hdr and rebuilds the caller's context under
 * root: its values (registered keys by key, others kept to pass through),
 * its hop count, and on top a cancelable node whose deadline is now_ns
 * plus the budget, capped at max_budget_ns (0: no cap; a cap also bounds a
 * call that came without a deadline). *out gets that top node. Returns 0,
 * DCTX_INVALID_ARGUMENT, DCTX_RESOURCE_EXHAUSTED (limits) or
 * DCTX_DEADLINE_EXCEEDED (a zero budget), with err naming the cause. A
 * valid traceparent continues its trace under a new span (trace.h); a
 * malformed one is dropped, and *trace_dropped (if not NULL) set. A
 * server's self_id (not 0) must not be in the header's route: a call
 * that came back is refused FAILED_PRECONDITION; the rebuilt context
 * carries the route with self_id added, for the calls made from it. */
int dctx__wire_decode(dctx *root, const Dctx__Wire__ContextHeader *hdr, int64_t now_ns,
                      int64_t max_budget_ns, uint64_t self_id, dctx **out, char *err,
                      bool *trace_dropped);

/* A child of parent that continues the trace of traceparent under a new
 * span (trace.c). */
int dctx__trace_continue(dctx *parent, const char *traceparent, size_t len, dctx **out);

/* n unguessable bytes (random.c: a per-thread ChaCha20 stream keyed from
 * libsodium, started on first use); false if libsodium cannot start. */
bool dctx__random(void *buf, size_t n);

/* The hop count a call sent from ctx carries (0 at the edge). */
uint32_t dctx__wire_hops(const dctx *ctx);

#endif /* DCTX_WIRE_IMPL_H */
