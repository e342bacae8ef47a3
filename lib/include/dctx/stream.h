/*
 * stream.h - streaming calls: server streaming (one request, many
 * responses), client streaming (many requests, one response) and
 * bidirectional, each a call whose context covers the whole stream
 * (proto/PROTOCOL.md section 10).
 *
 * A stream is opened on a channel with a context and a method; both sides
 * send messages in order, each delivered once; the client says when it
 * has sent everything (dctx_rpc_stream_close_send); the server's handler
 * returns a status, which ends the stream on both sides as a unary call's
 * reply does. The context's deadline bounds the stream, its values travel
 * once at the start, and its cancel ends the stream on both sides and
 * goes on through every hop that streams further. Ending a stream by any
 * path (status, cancel, deadline, a lost peer, a closed channel) frees
 * what it held: no side must read to the end to avoid a leak.
 *
 * Flow control: each side may have a window of messages and bytes sent
 * and not yet taken by the other (a message may pass the bytes once); a
 * sender with no credit blocks until the receiver takes some, or the
 * stream ends. The window starts at DCTX_RPC_STREAM_FIRST_WINDOW_MESSAGES
 * and _BYTES and doubles each time the receiver takes half of it, up to
 * DCTX_RPC_STREAM_WINDOW_MESSAGES and _BYTES: a stream read flat out
 * soon has the whole window, one whose reader never reads holds a small
 * one (and a cancel early in a fast stream meets a short pipeline). So a
 * stream holds at most the largest window and one message of the peer's:
 * DCTX_RPC_STREAM_WINDOW_BYTES plus the largest message (4 MiB by
 * default), each message of 240 bytes or less in a block of 256 (1 MiB
 * for a window of small messages), a larger one in its length and 16
 * bytes; and a connection at most that per stream on it (a server runs
 * max_in_flight calls at most; each stream handler holds a worker while
 * it runs).
 *
 * Beyond gRPC: an idle timeout per stream (no message for a while ends it
 * DEADLINE_EXCEEDED, with a cause that says so), and each message received
 * carries the budget the stream had left when it came.
 *
 * Threads: one thread sends and one receives on a stream at a time (they
 * may be two threads); release from any thread once both are done.
 */
#ifndef DCTX_STREAM_H
#define DCTX_STREAM_H

#include <dctx/rpc.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The largest window, and the first (proto/PROTOCOL.md section 10). */
#define DCTX_RPC_STREAM_WINDOW_MESSAGES 4096
#define DCTX_RPC_STREAM_WINDOW_BYTES (256 * 1024)
#define DCTX_RPC_STREAM_FIRST_WINDOW_MESSAGES 64
#define DCTX_RPC_STREAM_FIRST_WINDOW_BYTES (64 * 1024)

typedef struct dctx_rpc_stream dctx_rpc_stream;

/* A message received: yours, free it with dctx_rpc_message_free. */
typedef struct dctx_rpc_message {
    void *data;
    size_t len;
    int64_t budget_ns; /* the stream's time left when it was received; -1: no deadline */
} dctx_rpc_message;

DCTX_API void dctx_rpc_message_free(dctx_rpc_message *m);

/* dctx_rpc_message_set fills m with a copy of len bytes of data and
 * budget_ns, to free with dctx_rpc_message_free: for code that makes
 * messages of its own, as a bridge to another RPC system does. Returns 0,
 * or DCTX_RESOURCE_EXHAUSTED (m then empty). */
DCTX_API int dctx_rpc_message_set(dctx_rpc_message *m, const void *data, size_t len,
                                  int64_t budget_ns);

/* dctx_rpc_stream_send sends len bytes (copied) on the stream, blocking
 * while the receiver has granted no room, until the stream ends (its
 * context done included). Returns 0, or the stream's end: its status
 * (the server's, or the context's error), DCTX_FAILED_PRECONDITION after
 * close_send or once the stream ended OK, DCTX_RESOURCE_EXHAUSTED for a
 * message over the connection's limit. */
DCTX_API int dctx_rpc_stream_send(dctx_rpc_stream *st, const void *data, size_t len);

/* dctx_rpc_stream_recv blocks for the peer's next message: true with *m;
 * false once the peer sends no more (the client half-closed, or the
 * server ended the stream: dctx_rpc_stream_finish gives its status), or
 * the stream ended. */
DCTX_API bool dctx_rpc_stream_recv(dctx_rpc_stream *st, dctx_rpc_message *m);

/* An asynchronous receive's completion: m is the next message (yours:
 * free it with dctx_rpc_message_free), or NULL where
 * dctx_rpc_stream_recv would return false. */
typedef void (*dctx_rpc_stream_recv_fn)(void *arg, dctx_rpc_stream *st, dctx_rpc_message *m);

/* dctx_rpc_stream_recv_start is dctx_rpc_stream_recv without the wait:
 * fn(arg, st, m) runs once, never inside this call: on the connection's
 * thread when a message or the peer's half-close comes, on the library's
 * deferred-work thread when one was there already or the stream ended.
 * fn must not block (no send that may wait for credit, no close of a
 * channel or server): it delays the connection's other frames. fn may
 * start the next receive (a stream read so, message after message, stays
 * on the connection's thread), may release the stream, and, once given
 * the end, may call dctx_rpc_stream_finish (it returns at once then: a
 * client's end comes once the status is known). The stream stays valid
 * until fn has run, even if released first; on the server's side the
 * handler must not return before. Returns 0, or DCTX_FAILED_PRECONDITION
 * while another receive is armed or waiting (one at a time: a blocking
 * recv meanwhile returns false at once) or once the end was delivered.
 * The idle timeout applies to blocking receives only. */
DCTX_API int dctx_rpc_stream_recv_start(dctx_rpc_stream *st, dctx_rpc_stream_recv_fn fn, void *arg);

/* dctx_rpc_stream_set_idle_timeout: from now on, a recv that waits
 * idle_ns for a message (0: no limit, the default) ends the stream on
 * both sides with DEADLINE_EXCEEDED and the cause "stream idle for ...",
 * as its deadline would. Returns 0 or DCTX_INVALID_ARGUMENT. */
DCTX_API int dctx_rpc_stream_set_idle_timeout(dctx_rpc_stream *st, int64_t idle_ns);

/* ===== The client's side ===== */

/* dctx_rpc_stream_open opens a stream of method on ch with ctx (NULL:
 * Background; retained for the stream's life). Returns 0 with *out, or a
 * status (as dctx_rpc_call_start's: not sent). Never blocks beyond the
 * channel's connect wait. */
DCTX_API int dctx_rpc_stream_open(dctx_rpc_channel *ch, dctx *ctx, const char *method,
                                  dctx_rpc_stream **out);

/* dctx_rpc_stream_close_send: the client has sent every message. Returns
 * 0 (also when the server ended the stream OK first) or the stream's end
 * status. Never blocks. */
DCTX_API int dctx_rpc_stream_close_send(dctx_rpc_stream *st);

/* dctx_rpc_stream_finish waits for the stream's end and returns its
 * status, its message in res (if not NULL; free with
 * dctx_rpc_result_free). Messages not received are dropped. */
DCTX_API int dctx_rpc_stream_finish(dctx_rpc_stream *st, dctx_rpc_result *res);

/* dctx_rpc_stream_release cancels the stream if it has not ended and
 * frees it. NULL is fine. */
DCTX_API void dctx_rpc_stream_release(dctx_rpc_stream *st);

/* ===== The server's side ===== */

/* A stream handler runs on a worker with the rebuilt context and the
 * stream (valid during the call), receives and sends, and returns the
 * status that ends it (with reply's message; a payload is ignored). */
typedef int (*dctx_rpc_stream_handler_fn)(void *arg, dctx *ctx, dctx_rpc_stream *st,
                                          dctx_rpc_reply *reply);

/* dctx_rpc_server_register_stream registers a stream handler for method,
 * before start (as dctx_rpc_server_register). A unary call of it, or a
 * stream of a unary method, is refused DCTX_UNIMPLEMENTED. */
DCTX_API int dctx_rpc_server_register_stream(dctx_rpc_server *s, const char *method,
                                             dctx_rpc_stream_handler_fn fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* DCTX_STREAM_H */
