/*
 * hooks.h - the context core's private interface to the RPC layer: the
 * few things lib/rpc/ needs that dctx.h does not offer. lib/rpc/ includes
 * this header and clock.h and alloc.h from lib/context/, nothing else of
 * the core's (tests/layout checks it), so the layers depend one way only.
 * Never installed.
 */
#ifndef DCTX_CONTEXT_HOOKS_H
#define DCTX_CONTEXT_HOOKS_H

#include <stdbool.h>
#include <stddef.h>

#include <dctx/dctx.h>

/* dctx__can_be_done tells whether ctx can ever become done (it or an
 * ancestor is cancelable): a call from a context that cannot needs no
 * cancel push. Never blocks. */
bool dctx__can_be_done(const dctx *ctx);

/* dctx__cancel_err cancels ctx (if it is cancelable) with the error err,
 * DCTX_CANCELED or DCTX_DEADLINE_EXCEEDED, and a cause with a copy of msg.
 * dctx_cancel_cause is this with DCTX_CANCELED; a server uses
 * DEADLINE_EXCEEDED when a caller's cancel says its deadline passed, so
 * the handler sees the error the caller saw. */
void dctx__cancel_err(dctx *ctx, int err, int cause, const char *msg);

/* dctx__after_func_inline is the library's own after-func: fn runs on the
 * thread that canceled ctx, once that cancel has released every node lock
 * and before it returns (or at once, on this thread, if ctx is done
 * already). For short work that never blocks and takes no lock a
 * canceling thread might hold: pushing a cancel onward without a hand-off
 * to the executor. Stop is as for dctx_after_func. */
int dctx__after_func_inline(dctx *ctx, void (*fn)(void *), void *arg, dctx_after **out);

/* One value of a context as dctx__value_next shows it. pos is the
 * walk's own place: NULL before the first value. */
struct dctx__value_view {
    const dctx_key *key;
    const void *data;
    size_t len;
    const void *pos;
};

/* dctx__value_next steps v to the next value of ctx's value chain,
 * nearest first, shadowed ones included; false once there is none. The
 * data lives as long as ctx. */
bool dctx__value_next(const dctx *ctx, struct dctx__value_view *v);

#endif /* DCTX_CONTEXT_HOOKS_H */
