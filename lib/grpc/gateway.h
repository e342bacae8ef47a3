/*
 * gateway.h - the gateway's private parts (grpc.h, "Gateway"): the
 * gateway itself (gateway.c: its server, completion queue thread and
 * counters), one gRPC call's way through it (gateway_call.c), and the
 * metadata that becomes the call's values (gateway_values.c).
 */
#ifndef DCTX_GRPC_GATEWAY_H
#define DCTX_GRPC_GATEWAY_H

#include <dctx/grpc.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <stdatomic.h>

/* traceparent, tracestate, baggage, then the forward keys. */
#define GATEWAY_KEYS_MAX (3 + DCTX_GRPC_FORWARD_KEYS_MAX)
/* Calls asked of the server at once: a burst of callers waits on none. */
#define GATEWAY_CALLS_REQUESTED 16

/* What a completion on the queue is about: every tag is one of these,
 * inside the call (or gateway) it belongs to. */
enum gateway_tag_kind {
    TAG_NEW_CALL,
    TAG_RECV,
    TAG_CLOSE,
    TAG_SEND,
    TAG_STREAM_RECV,
    TAG_STREAM_SEND,
    TAG_WATCH_SEND,
    TAG_SHUTDOWN
};

struct gateway_tag {
    enum gateway_tag_kind kind;
    struct gateway_call *call;
};

/* One gRPC call through the gateway (gateway_call.c has its way). mu
 * orders gRPC's thread (completions) against dctx's (the reply) and a
 * stream's own threads; refs counts the operations posted and not
 * completed, the dctx callback to come and a stream's thread. */
struct gateway_call {
    dctx_grpc_gateway *gw;
    grpc_call *call;
    grpc_call_details details;
    grpc_metadata_array md;
    struct gateway_tag new_tag, recv_tag, close_tag, send_tag;
    struct gateway_tag stream_recv_tag, stream_send_tag;
    grpc_byte_buffer *request;
    int cancelled; /* RECV_CLOSE_ON_SERVER's answer */

    pthread_mutex_t mu;
    int refs;
    grpc_byte_buffer *reply;
    grpc_slice status_details;
    bool replied; /* the status is on its way: a late cancel changes nothing */
    dctx *base;   /* the call's context: cancelable, with the deadline */
    int code;     /* the status sent back */
    char *message;
    int canceled_by;

    int64_t arrived_ns;
    int64_t caller_deadline_ns; /* dctx's clock; DCTX_DEADLINE_NONE: none */
    int64_t unit_ns;            /* the rounding of the caller's timeout */
    int64_t budget_ns;
    size_t values;
    char method[DCTX_WIRE_METHOD_BYTES_MAX + 1];

    /* A bridged stream (gateway_stream.c): its threads wait on these. */
    pthread_cond_t changed;
    bool stream;                /* bridged as a stream: its status carries no payload */
    dctx *ctx;                  /* the stream's context (values on base) */
    grpc_byte_buffer *incoming; /* a stream message read from gRPC */
    grpc_byte_buffer *outgoing; /* a stream message on its way to gRPC */
    bool recv_done, recv_ok, send_done, send_ok;

    /* A Health/Watch (health_watch.c): on the gateway's list while it lasts. */
    bool watching;
    bool closed;        /* RECV_CLOSE_ON_SERVER completed */
    bool watch_known;   /* the service is "" */
    bool watch_sending; /* a status is on its way */
    int watch_sent;     /* the status last sent; 0: none yet */
    grpc_byte_buffer *watch_msg;
    struct gateway_tag watch_tag;
    struct gateway_call *watch_next; /* gw->watchers; under gw->watch_mu */
};

struct dctx_grpc_gateway {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    int port;
    dctx_rpc_channel *forward;
    dctx_rpc_server *local; /* takes unary calls when not NULL */
    const dctx_wire_policy *local_policy;
    const dctx_key *keys[GATEWAY_KEYS_MAX];
    dctx_key own_keys[GATEWAY_KEYS_MAX]; /* those keys[] points to, but traceparent */
    size_t n_keys;
    dctx_grpc_gateway_event_fn on_event;
    void *event_arg;
    struct gateway_tag shutdown_tag;
    atomic_bool draining;
    atomic_bool closing;

    pthread_mutex_t watch_mu; /* the Health/Watch callers, before any call's mu */
    struct gateway_call *watchers;

    pthread_mutex_t mu; /* in_flight and shut_down, for close to wait on */
    pthread_cond_t idle;
    uint32_t in_flight;
    bool shut_down;

    const char **stream_methods; /* bridged as streams (a copy) */
    size_t n_stream_methods;
    int max_streams;
    atomic_int streams;   /* bridged now */
    atomic_int requested; /* calls asked of the server and not yet come */
    atomic_uint_fast64_t calls, by_code[DCTX_CODE_MAX + 1], canceled_by_caller, deadline_by_caller,
        values_carried, health_checks, to_dctx, to_grpc;
};

/* gateway_call.c */

/* dctx__gateway_request_calls asks the server for calls until
 * GATEWAY_CALLS_REQUESTED are asked for (each comes as a TAG_NEW_CALL),
 * or one cannot be asked (no memory: the next call's arrival tries
 * again). */
void dctx__gateway_request_calls(dctx_grpc_gateway *gw);

/* dctx__gateway_on_tag handles one completion of the queue. */
void dctx__gateway_on_tag(struct gateway_tag *tag, bool ok);

/* dctx__gateway_call_ended counts a call out of in_flight. */
void dctx__gateway_call_ended(dctx_grpc_gateway *gw);

/* dctx__gateway_reply_locked sends the reply (payload only with OK) and
 * status (mu held). */
void dctx__gateway_reply_locked(struct gateway_call *c, int code, const char *message,
                                const void *payload, size_t len);

/* dctx__gateway_unlock_dropping drops one of the call's references (mu
 * held; released here); the last reports the call and frees it. */
void dctx__gateway_unlock_dropping(struct gateway_call *c);

/* health_watch.c: a Watch starts with its request (no lock held); its
 * send completed; the gateway's status moved (drain); the call closed
 * (no lock held). */
void dctx__gateway_watch_start(struct gateway_call *c, const unsigned char *req, size_t len);
void dctx__gateway_watch_sent(struct gateway_call *c, bool ok);
void dctx__gateway_watch_moved(dctx_grpc_gateway *gw);
void dctx__gateway_watch_end(struct gateway_call *c);

/* dctx__gateway_not_started says why dctx refused to start a call. */
const char *dctx__gateway_not_started(int code);

/* gateway_stream.c: dctx__gateway_stream bridges the call as a stream,
 * its first message req (copied; NULL: the caller sent none), under ctx
 * (taken over); false if its
 * thread could not start (then ctx is released and nothing else done). */
const char *dctx__gateway_stream(struct gateway_call *c, dctx *ctx, const void *req, size_t len);

/* A completion of a stream's operation: wakes its threads (mu held). */
void dctx__gateway_stream_completed(struct gateway_call *c, enum gateway_tag_kind kind, bool ok);

/* gateway_values.c: the context a call runs under: base (cancelable, with
 * the deadline budget_ns from now, -1: none) and under it *out with the
 * values of the whitelisted metadata. Returns 0 (*values: how many), or a
 * status with its message in message (both contexts NULL then). */
int dctx__gateway_context(const dctx_grpc_gateway *gw, const grpc_metadata_array *md,
                          int64_t budget_ns, dctx **base, dctx **out, size_t *values, char *message,
                          size_t message_len);

#endif
