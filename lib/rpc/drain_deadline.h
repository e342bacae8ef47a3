/*
 * drain_deadline.h - the deadlines of servers that drain, for the calls
 * they run: a server's calls all live under its call root, which holds
 * the server's instance id (dctx__drain_key); dctx_rpc_deadline finds the
 * id from any context under it and looks it up here. Never installed.
 */
#ifndef DCTX_RPC_DRAIN_DEADLINE_H
#define DCTX_RPC_DRAIN_DEADLINE_H

#include <stdbool.h>
#include <stdint.h>

#include <dctx/dctx.h>

/* The key of a server's instance id (8 bytes) on its call root. Not
 * propagated: a drain is the server's own. */
extern const dctx_key dctx__drain_key;

/* Server id drains until `until` (dctx_now's clock); returns false when
 * out of memory (its calls then see only their own deadlines). */
bool dctx__drain_begin(uint64_t id, int64_t until);
/* Server id is gone (closed): forget it. Nothing if it never drained. */
void dctx__drain_end(uint64_t id);

#endif /* DCTX_RPC_DRAIN_DEADLINE_H */
