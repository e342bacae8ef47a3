/*
 * msg_pool.h - the blocks of stream messages (struct dctx__stream_msg),
 * small ones kept for the next. Never installed.
 *
 * A stream's messages are made on the connection's reader thread and
 * freed on the thread that received them: with malloc alone every message
 * crosses arenas, and on a busy stream a quarter of the receiver's time
 * went to malloc and free. Small blocks freed are kept in the freeing
 * thread's cache; a full cache hands a batch to a depot shared by the
 * process, where a thread whose cache is empty takes one. Under a
 * sanitizer every block is malloc'd and freed, so that a use after free
 * is still found.
 */
#ifndef DCTX_RPC_MSG_POOL_H
#define DCTX_RPC_MSG_POOL_H

#include <stddef.h>

#include "stream_half.h"

/* A block for a message of len bytes (its next and len set), or NULL (no
 * memory). Any thread. */
struct dctx__stream_msg *dctx__msg_alloc(size_t len);

/* Give a block back (NULL is fine). Any thread. */
void dctx__msg_free(struct dctx__stream_msg *m);

#endif /* DCTX_RPC_MSG_POOL_H */
