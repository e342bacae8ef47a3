/*
 * rpc.h - gRPC-style unary calls over nng REQ/REP that carry their context.
 *
 * A call made with a context sends the context along: its deadline as the
 * remaining budget, a fresh cancel token, and the whitelisted values (see
 * wire.h). The server rebuilds a child context from it under its own root
 * and hands it to the handler. When the caller's context is done before
 * the reply, the call fails at once with the context's error and a Cancel
 * frame carrying the cause is pushed to the server, which cancels the
 * handler's context; a handler that calls onward with that context cancels
 * the next hop in turn. Calls run at most once: nng never resends them.
 *
 * Methods are named "/package.Service/Method". Results are gRPC status
 * codes (dctx.h). URLs are nng's: inproc://name, ipc:///path,
 * tcp://host:port, tls+tcp://host:port.
 *
 * Threads: every function is thread safe. Completion callbacks and
 * handlers run on threads of the library or of nng, never inside the call
 * that started them.
 */
#ifndef DCTX_RPC_H
#define DCTX_RPC_H

#include <protobuf-c/protobuf-c.h>

#include <dctx/dctx.h>
#include <dctx/wire.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ===== Cancel outcomes ===== */

/* What a pushed cancel did at the far end. */
enum dctx_rpc_cancel_outcome {
    DCTX_RPC_CANCEL_NONE = 0,      /* no cancel was pushed */
    DCTX_RPC_CANCEL_STOPPED = 1,   /* the handler was running; its context was canceled */
    DCTX_RPC_CANCEL_PREVENTED = 2, /* the call had not started there; it never will */
    DCTX_RPC_CANCEL_TOO_LATE = 3,  /* the call had already finished there */
    DCTX_RPC_CANCEL_PENDING = 4,   /* pushed; no answer yet */
    DCTX_RPC_CANCEL_UNREACHED = 5  /* pushed; no answer came (peer gone or timed out) */
};

/* dctx_rpc_cancel_outcome_name: "none", "stopped", "prevented", "too_late",
 * "pending", "unreached"; "?" for anything else. */
DCTX_API const char *dctx_rpc_cancel_outcome_name(int outcome);

/* ===== Events =====
 *
 * For logs and metrics: a channel or server can report what happens to its
 * calls. The callback runs on a library or nng thread, must be quick and
 * must not call back into the channel or server; the event and its strings
 * are valid only during it. One exception to the thread: CANCEL_PUSHED
 * is reported by the thread whose dctx_cancel (or deadline) ended the
 * call's context, inside that cancel, so the hook must not take a lock that
 * a thread may hold while it cancels a context. */

enum dctx_rpc_event_kind {
    DCTX_RPC_EVENT_CALL_START = 1,     /* server: a call was admitted */
    DCTX_RPC_EVENT_CALL_END = 2,       /* server: answered; client: ended */
    DCTX_RPC_EVENT_CANCEL_PUSHED = 3,  /* client: a Cancel frame was sent */
    DCTX_RPC_EVENT_CANCEL_RECEIVED = 4, /* server: a Cancel frame was handled */
    DCTX_RPC_EVENT_TRACE_DROPPED = 5    /* server: a malformed traceparent was dropped */
};

typedef struct dctx_rpc_event {
    enum dctx_rpc_event_kind kind;
    const char *method;       /* NULL for CANCEL_RECEIVED */
    int code;                 /* CALL_END: the status; CANCEL_*: the cause */
    const char *message;      /* CALL_END: status message; CANCEL_*: cause message; never NULL */
    int64_t elapsed_ns;       /* CALL_END: since the call started (server: was received);
                                 CANCEL_RECEIVED: since the frame was read (acting on it,
                                 which includes pushing the cancel onward) */
    int64_t deadline_in_ns;   /* CALL_START: time left to the call's deadline; -1: none */
    int outcome;              /* CANCEL_RECEIVED: enum dctx_rpc_cancel_outcome */
    dctx *ctx;                /* CALL_START/CALL_END: the call's context (borrowed) */
    /* CALL_START/CALL_END of a traced call (trace.h), else NULL: the trace,
     * the span of this call's work, and the caller's span. */
    const char *trace_id, *span_id, *parent_span_id;
} dctx_rpc_event;

typedef void (*dctx_rpc_event_fn)(void *arg, const dctx_rpc_event *ev);

/* ===== Results ===== */

/* The end of a call. message is never NULL ("" when there is none);
 * payload is the response bytes (empty unless code is DCTX_OK). */
typedef struct dctx_rpc_result {
    int code;
    const char *message;
    const void *payload;
    size_t payload_len;
    int cancel_outcome;  /* enum dctx_rpc_cancel_outcome, as known at the end */
    void *storage;       /* owned; freed by dctx_rpc_result_free */
} dctx_rpc_result;

/* dctx_rpc_result_free frees what a blocking call stored in res and
 * clears it. NULL or a cleared result is fine. */
DCTX_API void dctx_rpc_result_free(dctx_rpc_result *res);

/* ===== Client ===== */

typedef struct dctx_rpc_channel dctx_rpc_channel;
typedef struct dctx_rpc_handle dctx_rpc_handle;

#define DCTX_RPC_DEFAULT_RESERVE_NS 500000LL /* 500 us */

typedef struct dctx_rpc_channel_options {
    /* Deadline and value policy for this destination (wire.h). The default
     * reserve is DCTX_RPC_DEFAULT_RESERVE_NS: the budget sent is the time
     * left minus it, so a callee's deadline, which starts when the call
     * arrives, stays earlier than the caller's despite the time in transit. */
    dctx_wire_policy policy;
    /* How long a call waits for a connection before it fails with
     * DCTX_UNAVAILABLE (never past its deadline). The budget sent is what
     * is left after this wait. Default 200 ms. A lost or refused
     * connection is redialed with a back-off of at most half of this
     * (between 10 ms and 1 s), so a server that comes up is reached
     * within one such wait. */
    int64_t connect_wait_ns;
    /* The largest reply accepted (NNG_OPT_RECVMAXSZ). Default 4 MiB. */
    size_t recv_max_bytes;
    /* How long a pushed cancel waits for its answer. Default 1 s. */
    int64_t cancel_ack_timeout_ns;
    /* tls+tcp: a CA file to verify the server with, and the name it must
     * bear. NULL: the system's defaults. */
    const char *tls_ca_file;
    const char *tls_server_name;
    /* Optional event hook (see Events). */
    dctx_rpc_event_fn on_event;
    void *event_arg;
} dctx_rpc_channel_options;

/* dctx_rpc_channel_options_init fills o with the defaults. */
DCTX_API void dctx_rpc_channel_options_init(dctx_rpc_channel_options *o);

/* dctx_rpc_channel_open makes a channel to url (opts NULL: defaults). It
 * dials in the background and redials by itself, so the server need not
 * be up yet: calls made while it is down fail with DCTX_UNAVAILABLE after
 * connect_wait_ns. Returns 0, DCTX_INVALID_ARGUMENT (a bad URL or option,
 * *out NULL) or DCTX_RESOURCE_EXHAUSTED. */
DCTX_API int dctx_rpc_channel_open(const char *url, const dctx_rpc_channel_options *opts,
                                   dctx_rpc_channel **out);

/* dctx_rpc_channel_close ends every call in flight (DCTX_UNAVAILABLE),
 * waits for their callbacks, and frees the channel. Calls must not be
 * started on it during or after the close. NULL is fine. */
DCTX_API void dctx_rpc_channel_close(dctx_rpc_channel *ch);

/* dctx_rpc_call_raw calls method with req_len bytes of req, blocking until
 * the reply, the context's end, or a failure. ctx NULL means Background.
 * Returns the status code, DCTX_OK on success; if res is not NULL it gets
 * the whole result, to free with dctx_rpc_result_free. Codes from here, on
 * top of the server's: DCTX_CANCELED or DCTX_DEADLINE_EXCEEDED (the
 * context ended; a cancel was pushed; DEADLINE_EXCEEDED also when it was
 * canceled with a deadline as its cause), DCTX_DEADLINE_EXCEEDED (the budget
 * is gone or under the channel's minimum: not sent), DCTX_UNAVAILABLE (no
 * connection, or it broke), DCTX_INVALID_ARGUMENT, DCTX_RESOURCE_EXHAUSTED
 * (limits of wire.h, named in the message). */
DCTX_API int dctx_rpc_call_raw(dctx_rpc_channel *ch, dctx *ctx, const char *method,
                               const void *req, size_t req_len, dctx_rpc_result *res);

/* dctx_rpc_call calls method with a protobuf-c message and unpacks the
 * response with resp_desc into *resp (free it with
 * protobuf_c_message_free_unpacked; NULL unless DCTX_OK). res as above. */
DCTX_API int dctx_rpc_call(dctx_rpc_channel *ch, dctx *ctx, const char *method,
                           const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                           ProtobufCMessage **resp, dctx_rpc_result *res);

/* A completion callback: res and its strings are valid only during it. */
typedef void (*dctx_rpc_done_fn)(void *arg, const dctx_rpc_result *res);

/* dctx_rpc_call_start starts an asynchronous call. Returns 0, and then done
 * runs exactly once, on another thread; or returns a code (as
 * dctx_rpc_call_raw does for failures found before sending) and done never
 * runs. If out is not NULL it gets a handle for dctx_rpc_handle_wait and
 * dctx_rpc_handle_cancel_outcome, to release with dctx_rpc_handle_release. */
DCTX_API int dctx_rpc_call_start(dctx_rpc_channel *ch, dctx *ctx, const char *method,
                                 const void *req, size_t req_len, dctx_rpc_done_fn done,
                                 void *arg, dctx_rpc_handle **out);

/* dctx_rpc_handle_wait waits up to timeout_ns (< 0: forever) for the call to
 * end (after its callback returned). True if it has. */
DCTX_API bool dctx_rpc_handle_wait(dctx_rpc_handle *call, int64_t timeout_ns);

/* dctx_rpc_handle_result waits for the call to end and returns its status
 * code; if res is not NULL it gets a copy of the whole result, to free with
 * dctx_rpc_result_free. */
DCTX_API int dctx_rpc_handle_result(dctx_rpc_handle *call, dctx_rpc_result *res);

/* dctx_rpc_handle_cancel_outcome waits up to timeout_ns for the answer to a
 * pushed cancel, and returns what it did (DCTX_RPC_CANCEL_NONE if no
 * cancel was pushed; PENDING if the wait ran out first). */
DCTX_API int dctx_rpc_handle_cancel_outcome(dctx_rpc_handle *call, int64_t timeout_ns);

/* dctx_rpc_handle_release drops the handle; the call goes on if it has not
 * ended. NULL is fine. */
DCTX_API void dctx_rpc_handle_release(dctx_rpc_handle *call);

/* Counters of a channel since it opened. */
typedef struct dctx_rpc_channel_stats {
    uint64_t calls;                      /* started */
    uint64_t by_code[DCTX_CODE_MAX + 1]; /* ended, by status code */
    uint64_t not_sent_budget;            /* refused before sending: budget under the minimum */
    uint64_t cancels_pushed;
    uint64_t cancel_outcomes[6];         /* by enum dctx_rpc_cancel_outcome */
    uint32_t connections;                /* connections up now (0: the server is not
                                            reached; the channel keeps redialing) */
} dctx_rpc_channel_stats;

DCTX_API void dctx_rpc_channel_stats_get(dctx_rpc_channel *ch, dctx_rpc_channel_stats *out);

/* ===== Server ===== */

typedef struct dctx_rpc_server dctx_rpc_server;
typedef struct dctx_rpc_reply dctx_rpc_reply;

typedef struct dctx_rpc_server_options {
    int workers;              /* handler threads; default 4 */
    int max_in_flight;        /* calls queued or running; beyond: RESOURCE_EXHAUSTED. Default 10000 */
    size_t recv_max_bytes;    /* largest call accepted (NNG_OPT_RECVMAXSZ). Default 4 MiB */
    int64_t max_budget_ns;    /* cap on a call's deadline; 0: none. Default 0 */
    int64_t shutdown_grace_ns;/* how long close waits for canceled handlers. Default 5 s */
    const char *tls_cert_key_file; /* tls+tcp: PEM with the certificate and key */
    dctx_rpc_event_fn on_event;    /* optional event hook (see Events) */
    void *event_arg;
} dctx_rpc_server_options;

DCTX_API void dctx_rpc_server_options_init(dctx_rpc_server_options *o);

/* A handler gets the rebuilt context (done when the caller cancels, its
 * deadline passes, the caller is lost or the server closes; dctx_cause
 * says which) and the request bytes (valid during the call). It may set a
 * response payload and a status message on reply, and returns a status
 * code (DCTX_OK for success). It runs on a worker thread and should return
 * soon after ctx is done. */
typedef int (*dctx_rpc_handler_fn)(void *arg, dctx *ctx, const void *req, size_t req_len,
                                   dctx_rpc_reply *reply);

/* Set the response bytes (copied). Returns 0 or DCTX_RESOURCE_EXHAUSTED. */
DCTX_API int dctx_rpc_reply_set_payload(dctx_rpc_reply *reply, const void *data, size_t len);
/* Set the status message (printf-style; cut at DCTX_WIRE_MESSAGE_BYTES_MAX). */
DCTX_API void dctx_rpc_reply_set_message(dctx_rpc_reply *reply, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

DCTX_API int dctx_rpc_server_open(const dctx_rpc_server_options *opts, dctx_rpc_server **out);

/* Listen on url; may be called for several URLs, before or after start.
 * Returns 0, DCTX_INVALID_ARGUMENT (bad URL) or DCTX_UNAVAILABLE (the
 * address is taken or cannot be bound; the message is logged by nng). */
DCTX_API int dctx_rpc_server_listen(dctx_rpc_server *s, const char *url);

/* Register a handler for a method name; before start. Returns 0,
 * DCTX_INVALID_ARGUMENT or DCTX_ALREADY_EXISTS. */
DCTX_API int dctx_rpc_server_register(dctx_rpc_server *s, const char *method,
                                      dctx_rpc_handler_fn fn, void *arg);

/* Flags for dctx_rpc_server_register_flags. */
#define DCTX_RPC_INLINE 1u /* the handler is short and never blocks: run it on the
                              thread that received the call, skipping the hand-off
                              to a worker (cheaper and faster; a handler that blocks
                              here stops the server from receiving) */

/* dctx_rpc_server_register with flags (DCTX_RPC_INLINE). */
DCTX_API int dctx_rpc_server_register_flags(dctx_rpc_server *s, const char *method,
                                            dctx_rpc_handler_fn fn, void *arg, unsigned flags);

/* Register every method of a protobuf-c service ("/package.Service/Name").
 * Its methods get the call's context from dctx_rpc_service_context and may
 * set a failing status with dctx_rpc_service_fail; calling the closure
 * with a message answers OK with it. */
DCTX_API int dctx_rpc_server_register_service(dctx_rpc_server *s, ProtobufCService *service);

/* For protobuf-c service methods: the context of the call being served on
 * this thread (NULL outside one), and a way to fail it with a status. */
DCTX_API dctx *dctx_rpc_service_context(void);
DCTX_API void dctx_rpc_service_fail(int code, const char *message);

/* Start serving. */
DCTX_API int dctx_rpc_server_start(dctx_rpc_server *s);

/* dctx_rpc_server_close shuts down gracefully: new calls are refused with
 * DCTX_UNAVAILABLE, every handler's context is canceled with cause
 * DCTX_UNAVAILABLE "server shutting down", and close waits up to the grace
 * for them to return; then it closes the sockets, waits for the workers and
 * frees everything. Returns 0, or DCTX_DEADLINE_EXCEEDED if handlers
 * outlived the grace (it still waited for them). NULL is fine. */
DCTX_API int dctx_rpc_server_close(dctx_rpc_server *s);

typedef struct dctx_rpc_server_stats {
    uint64_t calls;                      /* received */
    uint64_t by_code[DCTX_CODE_MAX + 1]; /* answered, by status code */
    uint64_t in_flight;
    uint64_t cancels_received;
    uint64_t cancel_outcomes[6];         /* by enum dctx_rpc_cancel_outcome */
    uint64_t peers_lost;                 /* connections that went away */
    uint64_t calls_canceled_by_peer_loss;
    uint64_t bad_frames;                 /* malformed input, dropped or refused */
    uint64_t expired_in_queue;           /* refused: the budget ran out while queued */
    uint64_t listeners_restarted;        /* re-created after they stopped accepting (nng #1518) */
    uint64_t traces_dropped;             /* malformed traceparents dropped */
} dctx_rpc_server_stats;

DCTX_API void dctx_rpc_server_stats_get(dctx_rpc_server *s, dctx_rpc_server_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* DCTX_RPC_H */
