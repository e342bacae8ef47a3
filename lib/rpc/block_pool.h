/*
 * block_pool.h - memory for what one thread makes and another frees,
 * many times a second: stream messages (made by the connection's reader,
 * freed by the receiver) and frames (made by a sender, freed by the
 * connection's writer). Never installed.
 *
 * malloc's per-thread caches do not serve that pattern: every block
 * crosses arenas, and a busy stream spent a quarter of its receiver's time
 * (and its sender's growing and trimming an arena) in malloc and free.
 * So what fits DCTX__BLOCK_BYTES is a block of the pool, whatever its
 * size; larger ones are malloc's. A block given back stays in the giving
 * thread's cache; a full cache hands a batch to a depot shared by the
 * process, where a thread whose cache is empty takes one. A thread keeps
 * at most 128 blocks (32 KiB) until it exits; the depot at most 2 MiB.
 * Under a sanitizer every block is malloc'd and freed, so that a use
 * after free is still found.
 */
#ifndef DCTX_RPC_BLOCK_POOL_H
#define DCTX_RPC_BLOCK_POOL_H

#include <stdbool.h>
#include <stddef.h>

#define DCTX__BLOCK_BYTES 256

/* Whether bytes is served by a block of the pool (then it takes
 * DCTX__BLOCK_BYTES of memory, whatever it asked for). */
static inline bool dctx__block_pooled(size_t bytes)
{
    return bytes <= DCTX__BLOCK_BYTES;
}

/* bytes of memory (aligned as malloc's), or NULL (no memory). Any
 * thread. */
void *dctx__block_alloc(size_t bytes);

/* Give back p, made by dctx__block_alloc(bytes) (NULL is fine). Any
 * thread. */
void dctx__block_free(void *p, size_t bytes);

#endif /* DCTX_RPC_BLOCK_POOL_H */
