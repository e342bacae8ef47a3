/*
 * block_pool.h - blocks of DCTX__BLOCK_BYTES for what one thread makes
 * and another frees, many times a second: stream messages (made by the
 * connection's reader, freed by the receiver) and small frames (made by a
 * sender, freed by the connection's writer). Never installed.
 *
 * malloc's per-thread caches do not serve that pattern: every block
 * crosses arenas, and a busy stream spent a quarter of its receiver's time
 * (and its sender's growing and trimming an arena) in malloc and free. A
 * block given back stays in the giving thread's cache; a full cache hands
 * a batch to a depot shared by the process, where a thread whose cache
 * is empty takes one. A thread keeps at most 128 blocks (32 KiB) until
 * it exits; the depot at most 2 MiB. Under a sanitizer every block is malloc'd and
 * freed, so that a use after free is still found.
 */
#ifndef DCTX_RPC_BLOCK_POOL_H
#define DCTX_RPC_BLOCK_POOL_H

#define DCTX__BLOCK_BYTES 256

/* A block of DCTX__BLOCK_BYTES (aligned as malloc's), or NULL (no
 * memory). Any thread. */
void *dctx__block_get(void);

/* Give a block back (NULL is fine). Any thread. */
void dctx__block_put(void *b);

#endif /* DCTX_RPC_BLOCK_POOL_H */
