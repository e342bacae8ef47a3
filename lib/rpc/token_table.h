/*
 * token_table.h - the server's cancel-token table: which in-flight call a
 * Cancel frame names. Never installed.
 *
 * Every RPC call carries a 16-byte random cancel token; a later Cancel frame
 * names it. The table maps tokens to the server's live calls and remembers
 * two more kinds of token, because the network reorders and peers replay:
 *   TOMBSTONE  a cancel that arrived before its call (it overtook it). The
 *              call, when it comes, is refused. Kept until an expiry time.
 *   FINISHED   a call that ended recently, so a late cancel is told "too
 *              late" and a replayed call is refused as a duplicate.
 *
 * Hostile peers choose the tokens, so: the bucket index is SipHash-2-4
 * (crypto_shorthash) of the token under a random per-table key, which a
 * peer cannot learn, so it cannot aim tokens at one bucket; tokens are
 * compared in constant time (sodium_memcmp), so timing does not reveal how
 * much of a live token a guess got right; and every structure has a bound
 * fixed at open (live calls are refused past max_live, the oldest tombstone
 * and the oldest finished token are forgotten to make room).
 *
 * Memory
 *   Live entries are allocated one by one at insert (the only operation
 *   that may fail for lack of memory); finish turns a live entry into a
 *   finished one in place, and tombstones come from a pool of
 *   max_tombstones entries allocated at open. So finish and cancel never
 *   allocate and never fail. The bucket array starts small and doubles
 *   (an O(n) rehash, amortised O(1)) up to the first power of two at or
 *   above max_live + max_tombstones + max_finished; past that it stops.
 *
 * Expiry
 *   A tombstone whose expiry time has passed counts as absent for every
 *   lookup. Expired tombstones are purged lazily: insert and cancel each
 *   pop at most a few expired ones off the head of the tombstone FIFO, so
 *   each operation does O(1) work and the backlog shrinks faster than
 *   cancels can grow it. dctx__token_tombstone_count counts the expired
 *   tombstones not yet purged.
 *
 * Thread safety
 *   One pthread mutex per table guards everything in it; every operation
 *   but open and close takes it, for O(1) expected work (each_of_pipe drops
 *   it between bounded batches). retain callbacks run under it; fn
 *   callbacks of each_of_pipe run without it.
 */
#ifndef DCTX_TOKEN_TABLE_H
#define DCTX_TOKEN_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dctx/wire.h> /* DCTX_TOKEN_BYTES */

typedef struct dctx__token_table dctx__token_table;

/* The largest value of each limit; larger ones are DCTX_INVALID_ARGUMENT
 * (they keep the bucket sizing free of overflow). */
#define DCTX__TOKEN_LIMIT_MAX ((size_t)1 << 28)

/* Open a table holding at most max_live live calls (inserts beyond fail),
 * max_tombstones tombstones (the oldest evicted first when full) and
 * max_finished finished tokens (the oldest forgotten). Each limit must be
 * 1..DCTX__TOKEN_LIMIT_MAX. Returns 0, DCTX_INVALID_ARGUMENT, or
 * DCTX_RESOURCE_EXHAUSTED (no memory, or libsodium cannot initialise). */
int dctx__token_table_open(size_t max_live, size_t max_tombstones, size_t max_finished,
                           dctx__token_table **out);

/* Close t. Live entries are just forgotten (the server owns the calls).
 * No other operation on t may run or follow. NULL is ignored. */
void dctx__token_table_close(dctx__token_table *t);

/* Register a live call under token, from the peer pipe_id (an nng pipe id,
 * for peer-loss lookups). Returns
 *   0                        registered
 *   DCTX_CANCELED            an unexpired tombstone holds the token: its
 *                            cancel overtook the call, which must be
 *                            refused. The tombstone is consumed.
 *   DCTX_ALREADY_EXISTS      the token is live or finished recently (a
 *                            replay or a duplicate)
 *   DCTX_RESOURCE_EXHAUSTED  max_live calls are live, or no memory. */
int dctx__token_insert(dctx__token_table *t, const uint8_t token[DCTX_TOKEN_BYTES], void *call,
                       uint32_t pipe_id, int64_t now_ns);

/* The call finished: if token's live entry is still there and still points
 * at call, remove it and remember the token as finished (the oldest
 * finished token is forgotten if the ring is full). Otherwise nothing. */
void dctx__token_finish(dctx__token_table *t, const uint8_t token[DCTX_TOKEN_BYTES], void *call);

enum dctx__token_found { DCTX__TOKEN_LIVE, DCTX__TOKEN_FINISHED, DCTX__TOKEN_TOMBSTONED };

/* A cancel for token arrived.
 *   LIVE        a live call has it and retain(call) succeeded, under the
 *               table lock: *call holds that reference, for the caller to
 *               use and release after the lock is dropped.
 *   FINISHED    the token finished recently, or its live call is dying
 *               (retain returned false): too late.
 *   TOMBSTONED  otherwise: a tombstone now holds the token until expires_ns
 *               (clamped by the caller); one already there is refreshed to
 *               expires_ns and becomes the newest. When the pool is full
 *               the oldest tombstone makes room.
 * *call is NULL unless LIVE. retain must be cheap and must not call into
 * the table; NULL means there is nothing to retain. */
enum dctx__token_found dctx__token_cancel(dctx__token_table *t,
                                          const uint8_t token[DCTX_TOKEN_BYTES], int64_t now_ns,
                                          int64_t expires_ns, bool (*retain)(void *call),
                                          void **call);

/* Peer loss: call fn(call, arg) for every call that came from pipe_id and
 * was live when each_of_pipe began (calls inserted later are not visited).
 * Returns the number of fn calls.
 *
 * Calls are collected in batches of at most 64 into an array on the stack,
 * each retained (retain, as in cancel) under the lock; a call whose retain
 * fails is skipped. The lock is dropped and fn runs on the batch, so fn may
 * call into the table (finish, cancel); fn receives the reference retain
 * took and must release it. Between batches a marker entry on the caller's
 * stack keeps the place in the live list, so each entry is visited once
 * (O(live) in all) and the lock is never held for more than a bounded walk.
 * Memory: O(1), nothing allocated. */
size_t dctx__token_each_of_pipe(dctx__token_table *t, uint32_t pipe_id, bool (*retain)(void *call),
                                void (*fn)(void *call, void *arg), void *arg);

/* Counts for stats and tests. */
size_t dctx__token_live_count(dctx__token_table *t);
size_t dctx__token_tombstone_count(dctx__token_table *t); /* includes expired, not yet purged */
size_t dctx__token_finished_count(dctx__token_table *t);

#endif /* DCTX_TOKEN_TABLE_H */
