/*
 * rpc_impl.h - what the RPC client and server share: results, replies,
 * method registration and nng errors as status codes. Never installed.
 */
#ifndef DCTX_RPC_IMPL_H
#define DCTX_RPC_IMPL_H

#include <nng/nng.h>

#include <dctx/identity.h>
#include <dctx/rpc.h>

/* ===== Results, replies, methods ===== */

/* dctx__result_set fills res (whatever it held before is not freed) with
 * code and copies of message (cut to the wire limit) and payload, in one
 * allocation. Out of memory: the texts go, and the code stays but for OK,
 * which becomes RESOURCE_EXHAUSTED; res is always valid to free
 * (result.c). */
void dctx__result_set(dctx_rpc_result *res, int code, const char *message, const void *payload,
                      size_t payload_len);

/* dctx__result_setf is dctx__result_set with a printf-style message and
 * no payload. */
void dctx__result_setf(dctx_rpc_result *res, int code, const char *fmt, ...) DCTX_PRINTF(3, 4);

/* dctx__result_from_context fills res with the status of a call whose
 * context ended first: its error, with its cause. A context canceled
 * because a deadline passed upstream reports DEADLINE_EXCEEDED, as gRPC
 * asks of a client that sees CANCELLED. */
void dctx__result_from_context(dctx *ctx, dctx_rpc_result *res);

/* dctx__error writes a message into err (err_len bytes; nothing when err
 * is NULL) and returns code: `return dctx__error(...)` for the functions
 * that report why into a caller's buffer. */
int dctx__error(int code, char *err, size_t err_len, const char *fmt, ...) DCTX_PRINTF(4, 5);

/* dctx__reply_take_payload sets reply's payload to data (malloc'ed; the
 * reply frees it), without the copy dctx_rpc_reply_set_payload makes. */
void dctx__reply_take_payload(dctx_rpc_reply *reply, void *data, size_t len);

/* dctx__server_register_owned is dctx_rpc_server_register_flags for a
 * wrapper (pb.c): owned (may be NULL) is freed when the server is, and
 * only if this returns 0. */
int dctx__server_register_owned(dctx_rpc_server *srv, const char *method, dctx_rpc_handler_fn fn,
                                void *arg, unsigned flags, void *owned);

/* ===== Channels ===== */

/* What a channel can do with a new call now: send it on a connection;
 * wait for one (it dials); or nothing (its server drains). */
enum dctx__channel_state { DCTX__CHANNEL_READY, DCTX__CHANNEL_DIALING, DCTX__CHANNEL_DRAINING };
enum dctx__channel_state dctx__channel_state(dctx_rpc_channel *ch);

/* ===== Identities ===== */

/* dctx__identity_from_text reads a key file's text (NUL-terminated: its
 * secret line, comments and blank lines around it) into *out, as
 * dctx_identity_load does once it has read and checked the file. Returns
 * 0, DCTX_INVALID_ARGUMENT or DCTX_RESOURCE_EXHAUSTED. */
int dctx__identity_from_text(const char *text, dctx_identity **out);

/* ===== Status ===== */

/* dctx__status_from_nng is the one map from nng errors to status codes
 * (rpc.h, "Errors"): ETIMEDOUT is DEADLINE_EXCEEDED; closed, refused,
 * reset or shut connections UNAVAILABLE; no memory or a message too big
 * RESOURCE_EXHAUSTED; a bad URL, option or TLS file INVALID_ARGUMENT; a
 * missing path NOT_FOUND; EPERM PERMISSION_DENIED; a peer failing TLS
 * authentication UNAUTHENTICATED; ECANCELED CANCELLED; the rest INTERNAL. */
int dctx__status_from_nng(int nng_err);

/* A duration option in ms, rounded up and capped; 0 for 0 or less. */
int32_t dctx__ns_to_ms(int64_t ns);

/* What a side's frame limit adds to its payload limit: room for the
 * Frame's own fields at their largest (a method of 1024 bytes, 8192 bytes
 * of values, a message of 1024), so any call or reply whose payload is
 * within the limit fits. */
#define DCTX__FRAME_OVERHEAD_BYTES (16 * 1024)

#endif /* DCTX_RPC_IMPL_H */
