/*
 * grpc.h - dctx at the edge of gRPC: a gateway that takes gRPC calls and
 * makes each a dctx call, and a client that calls gRPC servers from a dctx
 * context. Built on gRPC's C core (Debian's libgrpc-dev); link
 * dctx::dctx_grpc (pkg-config dctx-grpc). Nothing of HTTP/2 is dctx's own.
 *
 * What crosses the edge, both ways:
 * - the deadline: a gRPC call's timeout becomes the dctx call's budget,
 *   and a dctx context's time left becomes the gRPC deadline. gRPC rounds
 *   a timeout up (to 3 significant digits) before it sends it, so the
 *   gateway takes one unit of that rounding off (1 ms under 1 s, 10 ms
 *   under 10 s, ...): it never hands on more time than the caller had;
 * - the cancel: a gRPC caller that cancels (RST_STREAM) or goes away
 *   cancels the dctx call with DCTX_CANCELED and a cause that says so, and
 *   a cancel that reaches the gRPC call's deadline is DEADLINE_EXCEEDED (no
 *   gRPC API tells the two apart: the gateway reads the clock, and takes
 *   a cancel within a twentieth of the timeout of the deadline, 2 to 50
 *   ms, for it: the C core's copy of the deadline counts from when it read
 *   the caller's headers, milliseconds late on a loaded machine); a dctx
 *   context canceled while it calls a gRPC server cancels that call;
 * - values: metadata keys on the gateway's list (always traceparent,
 *   tracestate and baggage) become propagated values under the same names,
 *   the rest stay at the edge; outbound, every value the context would
 *   propagate goes as metadata (a gRPC server refuses more than its
 *   metadata limit, 8 KiB by default: RESOURCE_EXHAUSTED). A key ending
 *   in "-bin" carries bytes (gRPC sends them base64, each side sees the
 *   bytes); any other key's value must be printable ASCII (gRPC's rule),
 *   else the value is not sent.
 *   The limits of wire.h hold: metadata over them fails the call with the
 *   status a dctx call would get;
 * - the status: code and message, one to one (the codes are gRPC's).
 *
 * The gateway also answers grpc.health.v1.Health/Check: SERVING while it
 * runs, NOT_SERVING once dctx_grpc_gateway_drain was called (Kubernetes'
 * gRPC probes and load balancers use it); and Health/Watch, as gRPC
 * clients' own health checking calls it: the status at once, then each
 * change, until the caller leaves or the gateway closes (a service other
 * than "" gets SERVICE_UNKNOWN, the stream left open).
 *
 * Threads: each gateway runs one thread on a gRPC completion queue; a
 * call crosses to dctx once (dctx_rpc_call_start on that thread: give the
 * forward channel a short connect_wait_ns, as that thread waits it out
 * when no server is reached; or dctx_rpc_server_call_start to a local
 * server, which never waits) and back once (the reply is sent from the
 * dctx completion callback). Both hand-offs are counted in the gateway's
 * stats. An outbound call blocks its caller on a completion queue of
 * its own (dctx_grpc_call), or completes on its channel's thread
 * (dctx_grpc_call_start).
 */
#ifndef DCTX_GRPC_H
#define DCTX_GRPC_H

#include <dctx/rpc.h>
#include <dctx/stream.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Metadata keys a gateway carries on, beyond the three trace keys. */
#define DCTX_GRPC_FORWARD_KEYS_MAX 32
/* Streams a gateway bridges at once by default. */
#define DCTX_GRPC_DEFAULT_MAX_STREAMS 256

/* ===== Gateway: gRPC in, dctx out ===== */

typedef struct dctx_grpc_gateway dctx_grpc_gateway;

/* How one gRPC call through the gateway ended (for logs). Strings are lent
 * for the callback only. */
typedef struct dctx_grpc_gateway_event {
    const char *method;
    const char *peer;    /* the gRPC caller's address ("ipv4:127.0.0.1:5000") */
    int code;            /* the status sent back */
    const char *message; /* its message */
    int canceled_by;     /* 0, or DCTX_CANCELED / DCTX_DEADLINE_EXCEEDED: the gRPC
                            * caller's cancel or deadline ended the call first */
    int64_t budget_ns;   /* the budget handed on; -1: none */
    int64_t duration_ns; /* from the call's arrival to its end */
    size_t values;       /* metadata entries carried on as values */
} dctx_grpc_gateway_event;

typedef void (*dctx_grpc_gateway_event_fn)(void *arg, const dctx_grpc_gateway_event *ev);

typedef struct dctx_grpc_gateway_options {
    /* "HOST:PORT" to accept gRPC on (HTTP/2; with TLS when
     * tls_cert_key_file is set); port 0 picks one (see
     * dctx_grpc_gateway_port). */
    const char *listen;
    /* Where every call goes, method unchanged: borrowed, must outlive the
     * gateway. NULL if local is given and no method is a stream. */
    dctx_rpc_channel *forward;
    /* A server of this process that takes the unary calls instead, without
     * a socket (dctx_rpc_server_call_start, with local_policy as a channel
     * to it would have; NULL: the defaults): the way to services in the
     * gateway's own process, about one dctx round trip cheaper per call.
     * Streams still go over forward. Both borrowed, must outlive the
     * gateway. NULL: every call goes over forward. */
    dctx_rpc_server *local;
    const dctx_wire_policy *local_policy;
    /* Metadata keys carried on as values besides traceparent, tracestate
     * and baggage: lowercase, at most DCTX_GRPC_FORWARD_KEYS_MAX. */
    const char *const *forward_keys;
    size_t n_forward_keys;
    /* Methods that are streams (of any kind) behind the gateway: each call
     * to one is bridged to a dctx stream (stream.h), messages relayed both
     * ways until each side is done, then the status. gRPC does not say on
     * the wire which calls are streams: any other method is unary. A
     * bridged stream has two threads of its own while it runs (512 KiB
     * stacks), so their number is bounded: */
    const char *const *stream_methods;
    size_t n_stream_methods;
    /* Streams bridged at once; one more is refused RESOURCE_EXHAUSTED.
     * 0: DCTX_GRPC_DEFAULT_MAX_STREAMS. */
    int max_streams;
    /* TLS: the gateway's certificate chain and its key (PEM, one file, as
     * dctx's tls_cert_key_file); NULL: insecure HTTP/2. With
     * tls_client_ca_file (PEM), mutual TLS: callers must present a
     * certificate signed by one of its CAs. Both read when the gateway
     * opens. */
    const char *tls_cert_key_file;
    const char *tls_client_ca_file;
    /* Keepalive toward callers: a connection silent for keepalive_ns is
     * pinged (calls in flight or not) and closed when no answer comes
     * within keepalive_timeout_ns (0: gRPC's 20 s), which cancels its
     * calls as a caller's going away does. 0: gRPC's default (2 hours). */
    int64_t keepalive_ns, keepalive_timeout_ns;
    /* HTTP/2 streams (calls) one caller's connection may have open at
     * once, announced in SETTINGS; 0: gRPC's default (no limit). */
    int max_concurrent_streams;
    /* Called once per call that ended, on the gateway's or a dctx thread;
     * must not block. NULL: none. */
    dctx_grpc_gateway_event_fn on_event;
    void *event_arg;
} dctx_grpc_gateway_options;

/* dctx_grpc_forward_key_valid tells whether key may be a forward key:
 * 1..256 of a-z 0-9 - _ . (gRPC's lowercase keys), not grpc-*. */
DCTX_API bool dctx_grpc_forward_key_valid(const char *key);

/* dctx_grpc_gateway_open listens and starts serving. Returns 0,
 * DCTX_INVALID_ARGUMENT (no listen, neither forward nor local, stream
 * methods without forward, a bad forward key, too many, a negative
 * number, a client CA without a certificate, a TLS file that is not PEM
 * with a certificate (and, for tls_cert_key_file, a private key)),
 * DCTX_NOT_FOUND or DCTX_PERMISSION_DENIED (a TLS file),
 * DCTX_UNAVAILABLE (cannot listen on the address) or
 * DCTX_RESOURCE_EXHAUSTED (no memory or thread). */
DCTX_API DCTX_NODISCARD int dctx_grpc_gateway_open(const dctx_grpc_gateway_options *opts,
                                                   dctx_grpc_gateway **out);

/* dctx_grpc_gateway_port returns the TCP port the gateway listens on. */
DCTX_API int dctx_grpc_gateway_port(const dctx_grpc_gateway *gw);

/* dctx_grpc_gateway_drain makes the health service answer NOT_SERVING;
 * calls are still taken and served. Never blocks. */
DCTX_API void dctx_grpc_gateway_drain(dctx_grpc_gateway *gw);

/* dctx_grpc_gateway_close stops accepting, cancels the calls in flight
 * (their gRPC callers get UNAVAILABLE, their dctx calls a cancel), waits
 * for each to end, and frees the gateway. Blocks. NULL is fine. */
DCTX_API void dctx_grpc_gateway_close(dctx_grpc_gateway *gw);

/* Counters of a gateway since it opened. */
typedef struct dctx_grpc_gateway_stats {
    uint64_t calls;                      /* gRPC calls taken (health checks included) */
    uint64_t by_code[DCTX_CODE_MAX + 1]; /* ended, by the status sent back */
    uint64_t canceled_by_caller;         /* a gRPC caller's cancel reached the dctx call */
    uint64_t deadline_by_caller;         /* the gRPC deadline ended the call first */
    uint64_t values_carried;             /* metadata entries carried on as values */
    uint64_t health_checks;
    uint64_t to_dctx;   /* hand-offs from the gRPC thread to dctx (calls started) */
    uint64_t to_grpc;   /* hand-offs from dctx back to gRPC (replies sent) */
    uint32_t in_flight; /* calls taken and not yet ended */
} dctx_grpc_gateway_stats;

DCTX_API void dctx_grpc_gateway_stats_get(dctx_grpc_gateway *gw, dctx_grpc_gateway_stats *out);

/* ===== Client: dctx in, gRPC out ===== */

typedef struct dctx_grpc_channel dctx_grpc_channel;

/* dctx_grpc_channel_get returns the channel to target ("HOST:PORT",
 * insecure HTTP/2; it connects on first use), shared by every user of the
 * same target in the process: a second get of a target takes another
 * reference to the first one's channel. Returns 0, DCTX_INVALID_ARGUMENT
 * (target NULL or empty) or DCTX_RESOURCE_EXHAUSTED. Thread safe. */
DCTX_API DCTX_NODISCARD int dctx_grpc_channel_get(const char *target, dctx_grpc_channel **out);

/* How a channel reaches its target. All zero: insecure HTTP/2. */
typedef struct dctx_grpc_channel_options {
    /* Speak TLS: the server's certificate must be signed by a CA of
     * tls_ca_file (PEM; NULL: gRPC's default roots) and bear
     * tls_server_name (NULL: the target's host). tls_cert_key_file (PEM,
     * the chain and its key, one file): presented to a server that asks
     * (mutual TLS); NULL: none. The files are read when the channel is
     * made. */
    bool tls;
    const char *tls_ca_file;
    const char *tls_server_name;
    const char *tls_cert_key_file;
} dctx_grpc_channel_options;

/* dctx_grpc_channel_get_with is dctx_grpc_channel_get with options (NULL:
 * insecure): channels are shared by target and options alike. Returns 0,
 * DCTX_INVALID_ARGUMENT (target NULL or empty, a TLS file without the PEM
 * it needs, TLS file names without tls), DCTX_NOT_FOUND or
 * DCTX_PERMISSION_DENIED (a TLS file), DCTX_RESOURCE_EXHAUSTED. */
DCTX_API DCTX_NODISCARD int dctx_grpc_channel_get_with(const char *target,
                                                       const dctx_grpc_channel_options *opts,
                                                       dctx_grpc_channel **out);

/* dctx_grpc_channel_release drops a reference; the last closes the
 * channel (and joins its thread of asynchronous calls). Calls on it must
 * have returned, asynchronous ones ended and streams been released. Not
 * from a done callback. NULL is fine. */
DCTX_API void dctx_grpc_channel_release(dctx_grpc_channel *ch);

/* dctx_grpc_call calls method ("/package.Service/Method") with req_len
 * bytes of req, blocking until its status. ctx (NULL: Background) bounds
 * it: its time left goes as the gRPC deadline, its cancel cancels the gRPC
 * call, its propagated values go as metadata (see above). Returns the
 * status code; res (may be NULL) is filled on every path, to free with
 * dctx_rpc_result_free. Codes from here on top of the server's:
 * DCTX_CANCELED or DCTX_DEADLINE_EXCEEDED (ctx ended; its cause's message),
 * DCTX_INVALID_ARGUMENT (ch or method NULL, req NULL with req_len > 0,
 * values over the limits of wire.h), DCTX_UNAVAILABLE (gRPC could not
 * reach the server). Thread safe. */
DCTX_API int dctx_grpc_call(dctx_grpc_channel *ch, dctx *ctx, const char *method, const void *req,
                            size_t req_len, dctx_rpc_result *res);

/* dctx_grpc_call_start starts the call dctx_grpc_call makes and returns at
 * once: 0, and then done(arg, res) runs exactly once with what
 * dctx_grpc_call would have returned, on the channel's own thread (one per
 * channel, started by its first asynchronous call; res is lent, and done
 * must not block nor release the channel); or a code, and done never
 * runs: DCTX_INVALID_ARGUMENT (ch, method or done NULL, req NULL with
 * req_len > 0, values over the limits of wire.h), ctx's cause (ctx done:
 * DCTX_CANCELED, or the code it was canceled with), DCTX_DEADLINE_EXCEEDED
 * (no time left),
 * DCTX_RESOURCE_EXHAUSTED. ctx (NULL: Background) is held until done ran.
 * Release the channel only after every call started on it has ended. */
DCTX_API int dctx_grpc_call_start(dctx_grpc_channel *ch, dctx *ctx, const char *method,
                                  const void *req, size_t req_len, dctx_rpc_done_fn done,
                                  void *arg);

/* ===== Client streams: dctx in, gRPC out ===== */

/* A stream call to a gRPC server (any of the three kinds: gRPC does not
 * tell them apart on the wire). Its context bounds the whole stream as a
 * unary call's does: its time left is the deadline, its cancel cancels the
 * stream, its values go once, as metadata. A sender and a receiver may be
 * two threads; each function below is called by one thread at a time. */
typedef struct dctx_grpc_stream dctx_grpc_stream;

/* dctx_grpc_stream_open opens a stream of method on ch with ctx (NULL:
 * Background) and waits until its headers are on their way. Returns 0
 * with *out the stream (to release with dctx_grpc_stream_release), or a
 * code with *out NULL: DCTX_INVALID_ARGUMENT (ch, method or out NULL,
 * values over the limits of wire.h), ctx's cause or DCTX_DEADLINE_EXCEEDED
 * (ctx done, no time left), the server's status or DCTX_UNAVAILABLE (the
 * call failed at once), DCTX_RESOURCE_EXHAUSTED. Blocks. */
DCTX_API DCTX_NODISCARD int dctx_grpc_stream_open(dctx_grpc_channel *ch, dctx *ctx,
                                                  const char *method, dctx_grpc_stream **out);

/* dctx_grpc_stream_send sends len bytes (copied), blocking while gRPC's
 * flow control holds it. Returns 0; the stream's end status when it has
 * ended (its deadline, a cancel, the server's status);
 * DCTX_FAILED_PRECONDITION after close_send; DCTX_INVALID_ARGUMENT. */
DCTX_API int dctx_grpc_stream_send(dctx_grpc_stream *st, const void *data, size_t len);

/* dctx_grpc_stream_close_send says the client has sent everything (a
 * half-close); the server may still send. Returns as send. */
DCTX_API int dctx_grpc_stream_close_send(dctx_grpc_stream *st);

/* dctx_grpc_stream_recv waits for the server's next message into *out (to
 * free with dctx_rpc_message_free; budget_ns is the stream's time left).
 * False at the end of the server's messages, however it came (finish says
 * how): the server's status, the deadline, a cancel, or a message that
 * cannot be read (compression; the stream is then canceled). Blocks. */
DCTX_API bool dctx_grpc_stream_recv(dctx_grpc_stream *st, dctx_rpc_message *out);

/* dctx_grpc_stream_finish waits for the stream's end and returns its
 * status (the server's, or ctx's end: its cause, as dctx_grpc_call); res
 * (may be NULL) gets it with its message, to free with
 * dctx_rpc_result_free. The server's messages not received yet are read
 * and dropped (gRPC gives the status only after them), so no other thread
 * may be receiving. Blocks until the server ends the call, its deadline
 * passes or ctx is canceled. */
DCTX_API int dctx_grpc_stream_finish(dctx_grpc_stream *st, dctx_rpc_result *res);

/* dctx_grpc_stream_release cancels the stream if it has not ended, waits
 * for gRPC to let it go, and frees it. No other call on st may be under
 * way. NULL is fine. */
DCTX_API void dctx_grpc_stream_release(dctx_grpc_stream *st);

/* ===== gRPC's own log ===== */

/* A log line of gRPC's C core: severity "E" (errors, the only ones it
 * writes by default), "I" or "D"; the source file and line in gRPC. The
 * strings are lent for the call. */
typedef void (*dctx_grpc_log_fn)(void *arg, const char *severity, const char *file, int line,
                                 const char *message);

/* dctx_grpc_set_log sends the C core's log lines (a failed TLS handshake,
 * a peer that broke HTTP/2) to fn instead of stderr, process-wide; NULL:
 * back to stderr. fn runs on gRPC's threads, one line at a time, and must
 * not call gRPC; once set_log returns, the function it replaced is never
 * called again. */
DCTX_API void dctx_grpc_set_log(dctx_grpc_log_fn fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* DCTX_GRPC_H */
