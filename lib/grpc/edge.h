/*
 * edge.h - what the gateway and the gRPC client share: the deadline's
 * conversion between gRPC's clock and dctx's, and the metadata that may
 * cross.
 */
#ifndef DCTX_GRPC_EDGE_H
#define DCTX_GRPC_EDGE_H

#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* dctx__grpc_budget_ns returns the time left to a gRPC deadline (gRPC's
 * clock), -1 for none (the infinite future); 0 if it has passed. */
int64_t dctx__grpc_budget_ns(gpr_timespec deadline);

/* dctx__grpc_timeout_unit_ns returns the unit gRPC rounds a timeout of
 * budget_ns up to when it sends it (3 significant digits of
 * milliseconds): 1 ms under 1 s, 10 ms under 10 s, and so on. */
int64_t dctx__grpc_timeout_unit_ns(int64_t budget_ns);

/* dctx__grpc_deadline makes the gRPC deadline budget_ns from now (-1:
 * none). */
gpr_timespec dctx__grpc_deadline(int64_t budget_ns);

/* dctx__grpc_key_sendable tells whether a value under name may go as gRPC
 * metadata: a legal lowercase key, not reserved (grpc-*, :*), and for a
 * name not ending in -bin a printable value. */
bool dctx__grpc_key_sendable(const char *name, const void *value, size_t len);

/* dctx__grpc_key_is_bin tells whether a metadata key carries bytes. */
bool dctx__grpc_key_is_bin(const char *name, size_t len);

/* dctx__grpc_read_bytes copies a received message's bytes into *out
 * (malloc'd; NULL and 0 for an empty one). False if it cannot be read
 * (compression) or without memory. */
bool dctx__grpc_read_bytes(grpc_byte_buffer *bb, unsigned char **out, size_t *len);

/* dctx__grpc_read_slice: the same bytes as one slice (to unref), no copy
 * when the message came in one; false if it cannot be read. */
bool dctx__grpc_read_slice(grpc_byte_buffer *bb, grpc_slice *out);

/* dctx__grpc_queue_destroy shuts an idle completion queue down, takes what
 * is left on it, and destroys it (nobody else may be waiting on it). */
void dctx__grpc_queue_destroy(grpc_completion_queue *cq);

#endif
