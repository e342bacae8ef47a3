/*
 * rpc.h - gRPC-style unary calls that carry their context, over the dctx
 * session protocol on nng streams (proto/PROTOCOL.md).
 *
 * A call made with a context sends the context along: its deadline as the
 * remaining budget, a fresh cancel token, and the whitelisted values (see
 * wire.h). The server rebuilds a child context from it under its own root
 * and hands it to the handler. When the caller's context is done before
 * the reply, the call fails at once with the context's error and a Cancel
 * frame carrying the cause is pushed to the server, which cancels the
 * handler's context; a handler that calls onward with that context cancels
 * the next hop in turn. Calls run at most once: nothing is resent.
 *
 * A channel keeps one connection to its server and multiplexes every call
 * on it; a server accepts any number of connections.
 *
 * Methods are named "/package.Service/Method". Results are gRPC status
 * codes (dctx.h). URLs are nng's: ipc:///path, tcp://host:port,
 * tls+tcp://host:port, abstract://name (a Linux abstract socket), and
 * inproc://name, which is served as an abstract socket named after the
 * process, a random number of its own and the name (nng 1.5.2 has no
 * in-process stream; another process could reach it only by reading the
 * name from /proc/net/unix).
 *
 * Threads: every function is thread safe. Completion callbacks, event
 * hooks and handlers run on threads of the library or of nng, never on
 * the caller's thread inside the call that started them (dctx.h's rule).
 * A completion callback usually runs on the thread that read the reply
 * from the connection, so a callback that blocks delays the channel's
 * other replies: keep it short. One ended by a cancel runs on the
 * library's own deferred-work thread.
 *
 * Results: a dctx_rpc_result the library writes into your struct is
 * yours, to free once with dctx_rpc_result_free; the const one a callback
 * receives is lent to it and valid until the callback returns.
 *
 * Errors: functions return 0 (DCTX_OK) or a status code of dctx.h; each
 * says which. Failures of nng are mapped to codes one way everywhere:
 * closed, refused, reset, unreachable or an address in use:
 * DCTX_UNAVAILABLE; timed out: DCTX_DEADLINE_EXCEEDED; no memory or too
 * big: DCTX_RESOURCE_EXHAUSTED; a bad URL, scheme, option or TLS file:
 * DCTX_INVALID_ARGUMENT; a missing path (an ipc directory, a TLS file):
 * DCTX_NOT_FOUND; no permission: DCTX_PERMISSION_DENIED; a peer that fails
 * TLS authentication: DCTX_UNAUTHENTICATED; anything else DCTX_INTERNAL.
 *
 * Keys: a channel given its identity and the server's public key, and a
 * server given its identity, prove who they are on every connection and
 * seal every frame after the hellos (encrypted and authenticated; a frame
 * replayed, reordered or moved to another connection is refused), so no
 * token, value or payload crosses the wire in the clear. A server can
 * limit who calls what (an allow list, identity.h, and an authorize hook)
 * and a handler can see who called (dctx_rpc_caller). SECURITY.md says
 * what this protects against and what it does not.
 *
 * protobuf-c messages: <dctx/rpc_pb.h>.
 */
#ifndef DCTX_RPC_H
#define DCTX_RPC_H

#include <dctx/dctx.h>
#include <dctx/identity.h>
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

/* The number of cancel outcomes: the size of the stats' outcome arrays. */
#define DCTX_RPC_CANCEL_OUTCOMES 6

/* dctx_rpc_cancel_outcome_name: "none", "stopped", "prevented", "too_late",
 * "pending", "unreached"; "?" for anything else. A static string. */
DCTX_API const char *dctx_rpc_cancel_outcome_name(int outcome);

/* ===== Events =====
 *
 * For logs and metrics: a channel or server can report what happens to its
 * calls. The callback runs on a library or nng thread, never inside a call
 * of yours (dctx_cancel included), with three exceptions that report on
 * your thread the calls they end: dctx_rpc_call_raw its own call, and
 * dctx_rpc_channel_close and dctx_rpc_server_close theirs. It must be
 * quick and must not call back into the channel or server; the event and
 * its strings are valid only during it. */

enum dctx_rpc_event_kind {
    DCTX_RPC_EVENT_CALL_START = 1,      /* server: a call was admitted */
    DCTX_RPC_EVENT_CALL_END = 2,        /* server: answered; client: ended */
    DCTX_RPC_EVENT_CANCEL_PUSHED = 3,   /* client: a Cancel frame was handed to the connection */
    DCTX_RPC_EVENT_CANCEL_RECEIVED = 4, /* server: a Cancel frame was handled */
    DCTX_RPC_EVENT_TRACE_DROPPED = 5,   /* server: a malformed traceparent was dropped */
    DCTX_RPC_EVENT_DENIED = 6,          /* server: a call refused by the allow list or authorize */
    DCTX_RPC_EVENT_UNAUTHENTICATED = 7  /* server: a connection failed its handshake */
};

typedef struct dctx_rpc_event {
    enum dctx_rpc_event_kind kind;
    const char *method;     /* NULL for CANCEL_RECEIVED */
    int code;               /* CALL_END: the status; CANCEL_*: the cause */
    const char *message;    /* CALL_END: status message; CANCEL_*: cause message; never NULL */
    int64_t elapsed_ns;     /* CALL_END: since the call started (server: was received);
                               CANCEL_RECEIVED: since the frame was read (acting on it,
                               which includes pushing the cancel onward); CANCEL_PUSHED:
                               since the frame was handed to the connection (the event
                               comes later, off the canceling thread) */
    int64_t deadline_in_ns; /* CALL_START: time left to the call's deadline; -1: none */
    int outcome;            /* CANCEL_RECEIVED: enum dctx_rpc_cancel_outcome */
    dctx *ctx;              /* CALL_START/CALL_END: the call's context (borrowed) */
    /* CALL_START/CALL_END of a traced call (trace.h), else NULL: the trace,
     * the span of this call's work, and the caller's span. */
    const char *trace_id, *span_id, *parent_span_id;
    /* DENIED and UNAUTHENTICATED: the peer, as its key's text (identity.h)
     * or, unproven, its address; these two kinds come at most once per
     * peer per second (and 1,024 per second in all), and suppressed says
     * how many refusals were left out since the last report of this peer
     * (or of a peer that shares its slot of the limit's table). */
    const char *peer;
    uint64_t suppressed;
    /* CALL_START and CALL_END of a stream (stream.h): stream is true, and
     * at CALL_END the stream's messages each way: received from the peer
     * and sent to it. */
    bool stream;
    uint64_t messages_received, messages_sent;
} dctx_rpc_event;

typedef void (*dctx_rpc_event_fn)(void *arg, const dctx_rpc_event *ev);

/* ===== Results ===== */

/* The end of a call. message is never NULL ("" when there is none; at
 * most DCTX_WIRE_MESSAGE_BYTES_MAX bytes); payload is the response bytes
 * (empty unless code is DCTX_OK). Every function that takes a
 * dctx_rpc_result *res to fill fills it on every path, success or not, so
 * it is always valid to free afterwards (see "Results" above). */
typedef struct dctx_rpc_result {
    int code;
    const char *message;
    const void *payload;
    size_t payload_len;
    int cancel_outcome; /* enum dctx_rpc_cancel_outcome, as known at the end */
    void *internal;     /* the library's; do not touch */
} dctx_rpc_result;

/* dctx_rpc_result_free frees what the library wrote into res and clears
 * it (code DCTX_OK, message ""). NULL, a cleared result and one set to all
 * zeros are fine; freeing a callback's lent result is not. */
DCTX_API void dctx_rpc_result_free(dctx_rpc_result *res);

/* dctx_rpc_result_set fills res (whatever it held is not freed) with code,
 * a copy of message (NULL: ""; cut to DCTX_WIRE_MESSAGE_BYTES_MAX bytes at a
 * UTF-8 boundary) and a copy of payload_len bytes of payload, to free with
 * dctx_rpc_result_free: for code that makes results of its own, as a
 * bridge to another RPC system does. Without memory an OK becomes
 * DCTX_RESOURCE_EXHAUSTED and the message is "". Never blocks. */
DCTX_API void dctx_rpc_result_set(dctx_rpc_result *res, int code, const char *message,
                                  const void *payload, size_t payload_len);

/* ===== Client ===== */

typedef struct dctx_rpc_channel dctx_rpc_channel;
typedef struct dctx_rpc_handle dctx_rpc_handle;

/* The defaults dctx_rpc_channel_options_init sets. */
#define DCTX_RPC_DEFAULT_RESERVE_NS 500000LL                /* 500 us */
#define DCTX_RPC_DEFAULT_CONNECT_WAIT_NS 200000000LL        /* 200 ms */
#define DCTX_RPC_DEFAULT_RECV_MAX_BYTES ((size_t)4 << 20)   /* 4 MiB, both sides */
#define DCTX_RPC_DEFAULT_CANCEL_ACK_TIMEOUT_NS 1000000000LL /* 1 s */
#define DCTX_RPC_DEFAULT_KEEPALIVE_NS 10000000000LL         /* 10 s, both sides */
#define DCTX_RPC_DEFAULT_KEEPALIVE_TIMEOUT_NS 10000000000LL /* 10 s, both sides */

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
    /* The largest reply payload accepted (the connection's frame limit is
     * this plus room for the frame's own fields). Default 4 MiB; 0 also
     * means the default. */
    size_t recv_max_bytes;
    /* How long callers such as rpcd wait for a pushed cancel's answer.
     * The answer comes on the connection the cancel went on; one that
     * never comes is UNREACHED when that connection ends. Default 1 s; 0
     * or less also means the default. */
    int64_t cancel_ack_timeout_ns;
    /* Keepalive: every keepalive_ns the connection looks whether it read
     * anything since its last look; if not, it pings the server, and if
     * nothing comes within keepalive_timeout_ns, it is closed and its
     * calls fail DCTX_UNAVAILABLE ("peer stopped answering"); the channel
     * dials again. A server gone without a word (a cut link, a stopped
     * process) is so found within 2 * keepalive_ns + keepalive_timeout_ns:
     * 30 s with the defaults, DCTX_RPC_DEFAULT_KEEPALIVE_NS and
     * DCTX_RPC_DEFAULT_KEEPALIVE_TIMEOUT_NS. keepalive_ns 0 turns it off
     * (such a server is then found only by each call's deadline);
     * keepalive_timeout_ns 0 means keepalive_ns. A server refuses pings
     * that come more often than its keepalive_min_interval_ns: told so,
     * the channel doubles its interval for its next connections. */
    int64_t keepalive_ns, keepalive_timeout_ns;
    /* tls+tcp: a CA file to verify the server with, and the name it must
     * bear. NULL: the system's defaults. */
    const char *tls_ca_file;
    const char *tls_server_name;
    /* tls+tcp: a certificate and its key (PEM, one file) to present to a
     * server that asks for one (mutual TLS). NULL: none. */
    const char *tls_cert_key_file;
    /* Keys: this channel's identity and the public key its server must
     * prove (DCTX_PUBLIC_KEY_BYTES, copied); both or neither. With them a
     * server that proves another key, or none, is refused: calls fail
     * DCTX_UNAUTHENTICATED at once, naming the key it proved, until a
     * connection succeeds. identity must outlive the channel. */
    const dctx_identity *identity;
    const unsigned char *server_key;
    /* Optional event hook (see Events). */
    dctx_rpc_event_fn on_event;
    void *event_arg;
} dctx_rpc_channel_options;

/* dctx_rpc_channel_options_init fills o with the defaults (the
 * DCTX_RPC_DEFAULT_* above; no TLS settings, no event hook). */
DCTX_API void dctx_rpc_channel_options_init(dctx_rpc_channel_options *o);

/* dctx_rpc_channel_open makes a channel to url (opts NULL: defaults; opts
 * and its strings are copied or read only during the call, except
 * policy.listed, event_arg and the TLS file names, which must outlive the
 * channel). It dials in the background and redials by itself, so the
 * server need not be up yet: calls made while it is down fail with
 * DCTX_UNAVAILABLE after connect_wait_ns. On success *out is the channel,
 * to close with dctx_rpc_channel_close. Returns 0, or with *out NULL:
 * DCTX_INVALID_ARGUMENT (url or out NULL, a bad URL or scheme, a TLS CA
 * file that cannot be used, a negative keepalive), DCTX_NOT_FOUND (the CA file does not exist)
 * or DCTX_RESOURCE_EXHAUSTED (no memory). Never blocks on the network. */
DCTX_API DCTX_NODISCARD int dctx_rpc_channel_open(const char *url,
                                                  const dctx_rpc_channel_options *opts,
                                                  dctx_rpc_channel **out);

/* dctx_rpc_channel_open_urls makes one channel over n URLs (1 to 64):
 * a channel to each, dialing and redialing as dctx_rpc_channel_open's
 * does, with the same options. Each new call goes to the next URL, round
 * robin, among those connected whose server does not drain; when none is,
 * to one still dialing (the call waits for it, as on one URL); when every
 * server drains, it fails UNAVAILABLE "draining". A call stays where it
 * went: its cancel, reply and failure are that URL's, and it is never
 * resent elsewhere (at most once). The stats add up the URLs' (connections
 * and draining: those up now). Returns what dctx_rpc_channel_open returns
 * for the first URL that fails (then nothing is left open), or
 * DCTX_INVALID_ARGUMENT for n 0 or over 64. */
DCTX_API DCTX_NODISCARD int dctx_rpc_channel_open_urls(const char *const *urls, size_t n,
                                                       const dctx_rpc_channel_options *opts,
                                                       dctx_rpc_channel **out);

/* dctx_rpc_channel_close ends every call in flight (DCTX_UNAVAILABLE; the
 * callbacks of those calls run on this thread), waits for every callback,
 * and frees the channel. Calls must not be started on it during or after
 * the close. Blocks: for the callbacks, and for pushed cancels to reach
 * the server (at most 250 ms), and for streams' receive callbacks
 * (stream.h) to run. Must not be called from a completion callback, a
 * stream's receive callback or an event hook of any channel (they may run
 * on the thread close waits for). NULL is fine. */
DCTX_API void dctx_rpc_channel_close(dctx_rpc_channel *ch);

/* dctx_rpc_call_raw calls method with req_len bytes of req (borrowed for
 * the call), blocking until the reply, the context's end, or a failure.
 * ctx NULL means Background; ctx is borrowed. Returns the status code,
 * DCTX_OK on success; res (may be NULL) is filled on every path with the
 * whole result, to free with dctx_rpc_result_free. Codes from here, on top
 * of the server's own: DCTX_CANCELED or DCTX_DEADLINE_EXCEEDED (the
 * context ended; a cancel was pushed; DEADLINE_EXCEEDED also when it was
 * canceled with a deadline as its cause), DCTX_DEADLINE_EXCEEDED (the
 * budget is gone or under the channel's minimum: not sent),
 * DCTX_UNAVAILABLE (no connection within connect_wait_ns, it broke, or the
 * channel closed), DCTX_INVALID_ARGUMENT (ch NULL, a bad method name, req
 * NULL with req_len > 0, or values that break a limit of wire.h),
 * DCTX_RESOURCE_EXHAUSTED (no memory, a request or reply over the size
 * limits, or too many values), DCTX_INTERNAL (a malformed reply); the
 * message names the cause. */
DCTX_API int dctx_rpc_call_raw(dctx_rpc_channel *ch, dctx *ctx, const char *method, const void *req,
                               size_t req_len, dctx_rpc_result *res);

/* A completion callback: res and its strings are lent to it, valid until
 * it returns (to keep them, copy them). */
typedef void (*dctx_rpc_done_fn)(void *arg, const dctx_rpc_result *res);

/* dctx_rpc_call_start starts an asynchronous call; ctx is retained until
 * done has run, req is copied. Returns 0, and then done (may be NULL) runs
 * exactly once, on a library or nng thread; or returns a code (those of
 * dctx_rpc_call_raw for failures found before sending) and done never
 * runs. If out is not NULL it gets a handle (NULL on failure), to release
 * with dctx_rpc_handle_release. Never blocks on the network, but waits up
 * to connect_wait_ns for a connection when there is none. */
DCTX_API int dctx_rpc_call_start(dctx_rpc_channel *ch, dctx *ctx, const char *method,
                                 const void *req, size_t req_len, dctx_rpc_done_fn done, void *arg,
                                 dctx_rpc_handle **out);

/* dctx_rpc_handle_wait waits up to timeout_ns (< 0: forever) for the call to
 * end (after its callback returned). True if it has; false for NULL. */
DCTX_API bool dctx_rpc_handle_wait(dctx_rpc_handle *call, int64_t timeout_ns);

/* dctx_rpc_handle_result waits for the call to end and returns its status
 * code; res (may be NULL) is filled with a copy of the whole result, to
 * free with dctx_rpc_result_free. DCTX_INVALID_ARGUMENT for a NULL call
 * (res filled so too). Blocks. */
DCTX_API int dctx_rpc_handle_result(dctx_rpc_handle *call, dctx_rpc_result *res);

/* dctx_rpc_handle_cancel_outcome waits up to timeout_ns (< 0: forever) for
 * the answer to a pushed cancel, and returns what it did
 * (DCTX_RPC_CANCEL_NONE if no cancel was pushed or call is NULL; PENDING if
 * the wait ran out first). */
DCTX_API int dctx_rpc_handle_cancel_outcome(dctx_rpc_handle *call, int64_t timeout_ns);

/* dctx_rpc_handle_release drops the handle; the call goes on if it has not
 * ended. NULL is fine. Never blocks. */
DCTX_API void dctx_rpc_handle_release(dctx_rpc_handle *call);

/* Counters of a channel since it opened. */
typedef struct dctx_rpc_channel_stats {
    uint64_t calls;                      /* started */
    uint64_t by_code[DCTX_CODE_MAX + 1]; /* ended, by status code */
    uint64_t not_sent_budget;            /* refused before sending: budget under the minimum */
    uint64_t cancels_pushed;
    uint64_t cancel_outcomes[DCTX_RPC_CANCEL_OUTCOMES]; /* by enum dctx_rpc_cancel_outcome */
    uint64_t bad_frames;  /* protocol errors of a server (each ended its connection) */
    uint32_t connections; /* connections up now (0: the server is not
                                                           reached; the channel keeps redialing) */
    uint32_t draining;    /* of those, the ones whose server drains (it takes no new call) */
    char last_error[128]; /* why the last dial or connection failed ("not connected yet") */
} dctx_rpc_channel_stats;

/* dctx_rpc_channel_stats_get fills *out with ch's counters now (each read
 * atomically; together they are a snapshot only when nothing is in
 * flight). Never blocks. */
DCTX_API void dctx_rpc_channel_stats_get(dctx_rpc_channel *ch, dctx_rpc_channel_stats *out);

/* ===== Server ===== */

typedef struct dctx_rpc_server dctx_rpc_server;
typedef struct dctx_rpc_reply dctx_rpc_reply;

/* The defaults dctx_rpc_server_options_init sets. */
#define DCTX_RPC_DEFAULT_WORKERS 4
#define DCTX_RPC_DEFAULT_MAX_IN_FLIGHT 10000
#define DCTX_RPC_DEFAULT_SHUTDOWN_GRACE_NS 5000000000LL         /* 5 s */
#define DCTX_RPC_DEFAULT_KEEPALIVE_MIN_INTERVAL_NS 1000000000LL /* 1 s */

/* An application's decision on a call, made on the thread that read it,
 * before it is queued (so it must be quick): the caller's proven key
 * (NULL on a server without an identity) and the method. Return DCTX_OK
 * to let it run, or the status to refuse it with (DCTX_PERMISSION_DENIED,
 * say), having written why into why (why_len bytes, a NUL-terminated
 * message for the caller; left empty, the library writes one). */
typedef int (*dctx_rpc_authorize_fn)(void *arg, const unsigned char *caller_key, const char *method,
                                     char *why, size_t why_len);

typedef struct dctx_rpc_server_options {
    int workers;                   /* handler threads, >= 1 */
    int max_in_flight;             /* calls queued or running, >= 1; beyond: RESOURCE_EXHAUSTED */
    size_t recv_max_bytes;         /* largest request payload accepted; 0: the default */
    int64_t max_budget_ns;         /* cap on a call's deadline; 0: none (the default) */
    int64_t shutdown_grace_ns;     /* how long close waits for canceled handlers */
    const char *tls_cert_key_file; /* tls+tcp: PEM with the certificate and key */
    /* tls+tcp: mutual TLS: every caller must present a certificate signed
     * by a CA of this file (PEM), or its connection fails in the
     * handshake. NULL: no certificate asked. */
    const char *tls_client_ca_file;
    /* The server's name, for its callers' logs (in its hello) and for the
     * error a call loop gets: a call that comes back to a server it
     * passed through is refused DCTX_FAILED_PRECONDITION "call loop
     * through NAME", so no cycle of servers can hold workers waiting on
     * themselves. NULL: "this server". */
    const char *name;
    /* Keepalive, as the channel's, toward each caller: a connection
     * silent for keepalive_ns is pinged and closed if nothing comes within
     * keepalive_timeout_ns; its calls' contexts are canceled ("caller
     * lost"), which goes on downstream as any cancel. A connection that
     * sends no hello by the first look is closed. keepalive_ns 0 turns it
     * off. Callers' pings that come less than keepalive_min_interval_ns
     * apart are strikes; the third closes the connection with a GoAway
     * RESOURCE_EXHAUSTED "too many pings" (0: no limit; default
     * DCTX_RPC_DEFAULT_KEEPALIVE_MIN_INTERVAL_NS). */
    int64_t keepalive_ns, keepalive_timeout_ns, keepalive_min_interval_ns;
    dctx_rpc_event_fn on_event; /* optional event hook (see Events) */
    void *event_arg;
    /* Keys. identity: the server proves it to every caller and admits only
     * callers that prove one of their own (a caller without keys is
     * refused: its calls fail DCTX_UNAUTHENTICATED). allow (needs
     * identity): the callers let in and what each may call; any other
     * call is answered DCTX_PERMISSION_DENIED. authorize: the
     * application's decision per call, after the allow list (both must
     * let it in). Refusals are counted in the stats and reported as
     * events. NULL: none. All three must outlive the server. */
    const dctx_identity *identity;
    const dctx_allow *allow;
    dctx_rpc_authorize_fn authorize;
    void *authorize_arg;
} dctx_rpc_server_options;

/* On a server with an identity, a handler's context holds its caller's
 * proven public key (DCTX_PUBLIC_KEY_BYTES bytes) under dctx_rpc_caller_key,
 * a key that never crosses the wire. dctx_rpc_caller copies it into key;
 * false if ctx has none (a server without keys). */
DCTX_API extern const dctx_key dctx_rpc_caller_key;
DCTX_API bool dctx_rpc_caller(const dctx *ctx, unsigned char key[DCTX_PUBLIC_KEY_BYTES]);

/* dctx_rpc_server_options_init fills o with the defaults: the
 * DCTX_RPC_DEFAULT_* above, DCTX_RPC_DEFAULT_RECV_MAX_BYTES, no budget cap,
 * no TLS, no event hook. */
DCTX_API void dctx_rpc_server_options_init(dctx_rpc_server_options *o);

/* A handler gets the rebuilt context (done when the caller cancels, its
 * deadline passes, the caller is lost or the server closes; dctx_cause
 * says which; borrowed: retain it to keep it past the return) and the
 * request bytes (valid during the call). It may set a response payload and
 * a status message on reply, and returns a status code (DCTX_OK for
 * success; a value outside 0..DCTX_CODE_MAX is sent as DCTX_UNKNOWN). It
 * runs on a worker thread (or, DCTX_RPC_INLINE, on nng's receiving
 * thread) and should return soon after ctx is done. */
typedef int (*dctx_rpc_handler_fn)(void *arg, dctx *ctx, const void *req, size_t req_len,
                                   dctx_rpc_reply *reply);

/* dctx_rpc_reply_set_payload sets the response bytes (a copy; a second
 * call replaces the first). Returns 0 or DCTX_RESOURCE_EXHAUSTED (the
 * reply is unchanged). Only during the handler. */
DCTX_API int dctx_rpc_reply_set_payload(dctx_rpc_reply *reply, const void *data, size_t len);

/* dctx_rpc_reply_set_message sets the status message, printf-style, cut
 * at DCTX_WIRE_MESSAGE_BYTES_MAX bytes on a UTF-8 character boundary.
 * Only during the handler. */
DCTX_API void dctx_rpc_reply_set_message(dctx_rpc_reply *reply, const char *fmt, ...)
    DCTX_PRINTF(2, 3);

/* dctx_rpc_server_open makes a server that is not listening or started
 * yet (opts NULL: defaults; opts is copied, but its strings and event_arg
 * must outlive the server). On success *out is the server, to close with
 * dctx_rpc_server_close. Returns 0, DCTX_INVALID_ARGUMENT (out NULL, or an
 * option out of range: workers or max_in_flight under 1, a negative
 * max_budget_ns or keepalive) or DCTX_RESOURCE_EXHAUSTED, with *out NULL. Never blocks. */
DCTX_API DCTX_NODISCARD int dctx_rpc_server_open(const dctx_rpc_server_options *opts,
                                                 dctx_rpc_server **out);

/* dctx_rpc_server_listen listens on url; may be called for several URLs,
 * before or after start. Connections are accepted at once, and their
 * calls read once the server has started. Returns 0, DCTX_INVALID_ARGUMENT (s or url NULL,
 * a bad URL or scheme, a certificate file that cannot be used, a server
 * shut down),
 * DCTX_UNAVAILABLE (the address is in use), DCTX_NOT_FOUND (an ipc
 * path's directory or the certificate file does not exist),
 * DCTX_PERMISSION_DENIED or DCTX_RESOURCE_EXHAUSTED. Never blocks. */
DCTX_API int dctx_rpc_server_listen(dctx_rpc_server *s, const char *url);

/* dctx_rpc_server_register registers fn for a method name (copied),
 * before start; arg is passed to every call and must outlive the server.
 * Returns 0, DCTX_INVALID_ARGUMENT (NULL, started, or a name that is not
 * "/..." of 2..DCTX_WIRE_METHOD_BYTES_MAX bytes), DCTX_ALREADY_EXISTS or
 * DCTX_RESOURCE_EXHAUSTED. Not thread safe against start. */
DCTX_API int dctx_rpc_server_register(dctx_rpc_server *s, const char *method,
                                      dctx_rpc_handler_fn fn, void *arg);

/* Flags for dctx_rpc_server_register_flags. */
#define DCTX_RPC_INLINE                                                                            \
    1u /* the handler is short and never blocks: run it on the
          thread that received the call, skipping the hand-off
          to a worker (cheaper and faster; a handler that blocks
          here stops the server from receiving) */

/* dctx_rpc_server_register with flags (DCTX_RPC_INLINE; any other bit is
 * DCTX_INVALID_ARGUMENT). */
DCTX_API int dctx_rpc_server_register_flags(dctx_rpc_server *s, const char *method,
                                            dctx_rpc_handler_fn fn, void *arg, unsigned flags);

/* dctx_rpc_server_methods stores up to max of s's method names in names
 * (each valid until the server is closed) and returns how many it has: a
 * fixed set for metrics and listings. Not thread safe against register. */
DCTX_API size_t dctx_rpc_server_methods(const dctx_rpc_server *s, const char **names, size_t max);

/* dctx_rpc_server_start starts the workers and begins receiving on every
 * listener (those added later too). Returns 0, DCTX_INVALID_ARGUMENT (s
 * NULL or already started) or DCTX_RESOURCE_EXHAUSTED (no memory or
 * threads); a failed start stopped everything it had begun, so the server
 * is as before: start may be tried again, or the server closed. Never
 * blocks on the network. */
DCTX_API DCTX_NODISCARD int dctx_rpc_server_start(dctx_rpc_server *s);

/* dctx_rpc_server_call_start calls a unary method of s from this
 * process, without a socket: the fastest way to a server in the same
 * process, for code that is not one of its handlers (a gateway in front of
 * it, a background task; a handler's own context has passed through s, so
 * its call is a loop, refused FAILED_PRECONDITION as over a socket). The
 * call is what it would be from a channel with policy (NULL: the
 * defaults) to s: the handler's context is rebuilt from ctx as the wire
 * would carry it (the budget after the policy's reserve, the values the
 * policy sends, a new span of its trace), it queues for a worker (an
 * INLINE handler runs on this thread) and counts in the server's stats
 * and events as any call; on a server with an identity it is a call of
 * the server's own key, so the allow list and the authorize hook must let
 * that key in. ctx's cancel or deadline reaches the handler as a remote
 * caller's does, and decides the call at once (done gets ctx's error,
 * cancel_outcome what the cancel did). req is copied.
 *
 * Returns 0, and then done runs exactly once: on a worker with the
 * handler's answer, on the library's reaper thread when ctx's end decided
 * the call (never inside the dctx_cancel that ended it), or on this thread
 * before the return when the server refuses the call at once (unknown
 * method, refused by policy or as a loop, draining, busy). Or returns a
 * code and done never runs: DCTX_INVALID_ARGUMENT (NULL, a bad method
 * name, values that break a limit of wire.h), DCTX_UNAVAILABLE (s not
 * started), DCTX_CANCELED or DCTX_DEADLINE_EXCEEDED (ctx done, or its
 * budget gone after the reserve), DCTX_RESOURCE_EXHAUSTED (no memory, req
 * over s's recv_max_bytes, too many values). Never blocks on the network.
 * Close s only once every call's done ran and every call_start returned. */
DCTX_API int dctx_rpc_server_call_start(dctx_rpc_server *s, dctx *ctx,
                                        const dctx_wire_policy *policy, const char *method,
                                        const void *req, size_t req_len, dctx_rpc_done_fn done,
                                        void *arg);

/* dctx_rpc_deadline is dctx_deadline as a handler should see it: the
 * earlier of ctx's own deadline and, when ctx descends from a call of a
 * server that drains, the end of the drain's grace (when what still runs
 * is stopped, as by a deadline). A context's deadline never changes, so a
 * drain is not seen by dctx_deadline; calls made with ctx send what is
 * left of this one as their budget. Returns false when there is neither.
 * No lock unless a server of the process drains. */
DCTX_API bool dctx_rpc_deadline(const dctx *ctx, int64_t *deadline_ns);

/* dctx_rpc_server_shutdown drains and stops the server as close does, but
 * frees nothing: its stats can still be read (a final count, or a metrics
 * endpoint that answers through the drain). Returns what close would; a
 * second call returns the first one's result at once. Afterwards the
 * server can only be closed. Blocks, with close's restrictions; not
 * concurrently with itself or close. */
DCTX_API int dctx_rpc_server_shutdown(dctx_rpc_server *s);

/* dctx_rpc_server_close drains, then closes: it stops listening, tells
 * every caller it drains (their new calls then fail at once with
 * DCTX_UNAVAILABLE "draining"; calls that still reach it are refused so),
 * and lets the calls in flight finish within shutdown_grace_ns. Handlers
 * still running then have their context ended as by a deadline
 * (DCTX_DEADLINE_EXCEEDED, cause DCTX_UNAVAILABLE "server shut down: its
 * drain's grace of N ms ran out"), which goes on downstream as any cancel.
 * Then it sends each connection a GoAway after its last replies and closes
 * it, waits for the workers (all of that is dctx_rpc_server_shutdown, done
 * here unless it ran before) and frees everything, the server's started or
 * not. Returns 0, or DCTX_DEADLINE_EXCEEDED if handlers outlived the grace
 * (it still waited for them). Blocks; must not be called from a handler or
 * event hook of the same server, nor from a completion callback, a
 * stream's receive callback or an event hook of a channel (they may run on
 * the thread close waits for). NULL is fine. */
DCTX_API int dctx_rpc_server_close(dctx_rpc_server *s);

typedef struct dctx_rpc_server_stats {
    uint64_t calls;                      /* received */
    uint64_t by_code[DCTX_CODE_MAX + 1]; /* answered, by status code */
    uint64_t in_flight;
    uint64_t cancels_received;
    uint64_t cancel_outcomes[DCTX_RPC_CANCEL_OUTCOMES]; /* by enum dctx_rpc_cancel_outcome */
    uint64_t peers_lost;                                /* connections that went away */
    uint64_t calls_canceled_by_peer_loss;
    uint64_t bad_frames;           /* malformed input, dropped or refused */
    uint64_t expired_in_queue;     /* refused: the budget ran out while queued */
    uint64_t accept_failures;      /* accepts that failed (out of descriptors, say) and
                                      were tried again after a pause */
    uint64_t connections_accepted; /* since the server opened */
    uint64_t traces_dropped;       /* malformed traceparents dropped */
    uint64_t unauthenticated;      /* connections refused in the handshake: no keys, a proof
                                      that failed, or a frame that did not open */
    uint64_t denied;               /* calls refused by the allow list or authorize */
    /* Connections with keys, by the AEAD their frames are sealed with
     * (SECURITY.md): AES-256-GCM where both ends have AES-NI, else
     * ChaCha20-Poly1305. */
    uint64_t sealed_aes256gcm, sealed_chacha20poly1305;
} dctx_rpc_server_stats;

/* dctx_rpc_server_stats_get fills *out with s's counters now (each read
 * atomically; together a snapshot only when the server is idle). Never
 * blocks. */
DCTX_API void dctx_rpc_server_stats_get(dctx_rpc_server *s, dctx_rpc_server_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* DCTX_RPC_H */
