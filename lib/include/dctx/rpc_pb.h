/*
 * rpc_pb.h - calls and services with protobuf-c messages, on top of the
 * byte-level API of rpc.h. The one dctx header that needs protobuf-c:
 * build with `pkg-config --cflags --libs dctx-pb` or link CMake's
 * dctx::dctx_pb, which add it.
 */
#ifndef DCTX_RPC_PB_H
#define DCTX_RPC_PB_H

#include <protobuf-c/protobuf-c.h>

#include <dctx/rpc.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dctx_rpc_call calls method with the protobuf-c message req, blocking as
 * dctx_rpc_call_raw does, and unpacks the response with resp_desc into
 * *resp. On DCTX_OK *resp is the response, to free with
 * protobuf_c_message_free_unpacked(*resp, NULL); on any other code *resp
 * is NULL. res (may be NULL) is filled on every path, as by
 * dctx_rpc_call_raw. Returns the codes of dctx_rpc_call_raw, and
 * DCTX_INVALID_ARGUMENT (req, resp_desc or resp NULL), DCTX_RESOURCE_EXHAUSTED
 * (no memory to pack req) or DCTX_INTERNAL (the response does not parse as
 * resp_desc). Blocks; thread safe. */
DCTX_API int dctx_rpc_call(dctx_rpc_channel *ch, dctx *ctx, const char *method,
                           const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                           ProtobufCMessage **resp, dctx_rpc_result *res);

/* dctx_rpc_server_register_service registers every method of a protobuf-c
 * service as "/package.Service/Method", before dctx_rpc_server_start.
 * service is borrowed and must outlive the server. Each method runs on a
 * worker with its request unpacked; it finds the call's context with
 * dctx_rpc_service_context, may fail the call with dctx_rpc_service_fail,
 * and answers OK by calling its closure with a message. A method that
 * returns without calling the closure answers DCTX_INTERNAL. Returns 0,
 * DCTX_INVALID_ARGUMENT (NULL, started, a name over
 * DCTX_WIRE_METHOD_BYTES_MAX), DCTX_ALREADY_EXISTS or
 * DCTX_RESOURCE_EXHAUSTED; on failure the methods registered before the
 * failing one stay registered. */
DCTX_API int dctx_rpc_server_register_service(dctx_rpc_server *s, ProtobufCService *service);

/* dctx_rpc_service_context returns the context of the service call being
 * served on this thread (borrowed: valid until the method returns), NULL
 * outside one. */
DCTX_API dctx *dctx_rpc_service_context(void);

/* dctx_rpc_service_fail makes the service call served on this thread fail
 * with code (DCTX_OK becomes DCTX_UNKNOWN) and a copy of message (NULL:
 * none; cut at DCTX_WIRE_MESSAGE_BYTES_MAX). Nothing outside a call. */
DCTX_API void dctx_rpc_service_fail(int code, const char *message);

#ifdef __cplusplus
}
#endif

#endif /* DCTX_RPC_PB_H */
