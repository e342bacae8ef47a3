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

/* What a completion on the queue is about: every tag is one of these,
 * inside the call (or gateway) it belongs to. */
enum gateway_tag_kind { TAG_NEW_CALL, TAG_RECV, TAG_CLOSE, TAG_SEND, TAG_SHUTDOWN };

struct gateway_tag {
    enum gateway_tag_kind kind;
    struct gateway_call *call;
};

struct dctx_grpc_gateway {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    int port;
    dctx_rpc_channel *forward;
    const dctx_key *keys[GATEWAY_KEYS_MAX];
    dctx_key own_keys[GATEWAY_KEYS_MAX]; /* those keys[] points to, but traceparent */
    size_t n_keys;
    dctx_grpc_gateway_event_fn on_event;
    void *event_arg;
    struct gateway_tag shutdown_tag;
    atomic_bool draining;
    atomic_bool closing;

    pthread_mutex_t mu; /* in_flight and shut_down, for close to wait on */
    pthread_cond_t idle;
    uint32_t in_flight;
    bool shut_down;

    atomic_uint_fast64_t calls, by_code[DCTX_CODE_MAX + 1], canceled_by_caller, deadline_by_caller,
        values_carried, health_checks, to_dctx, to_grpc;
};

/* gateway_call.c */

/* dctx__gateway_request_call asks the server for one more call: its
 * completion comes as a TAG_NEW_CALL. False if it could not be asked. */
bool dctx__gateway_request_call(dctx_grpc_gateway *gw);

/* dctx__gateway_on_tag handles one completion of the queue. */
void dctx__gateway_on_tag(struct gateway_tag *tag, bool ok);

/* dctx__gateway_call_ended counts a call out of in_flight. */
void dctx__gateway_call_ended(dctx_grpc_gateway *gw);

/* gateway_values.c: the context a call runs under: base (cancelable, with
 * the deadline budget_ns from now, -1: none) and under it *out with the
 * values of the whitelisted metadata. Returns 0 (*values: how many), or a
 * status with its message in message (both contexts NULL then). */
int dctx__gateway_context(const dctx_grpc_gateway *gw, const grpc_metadata_array *md,
                          int64_t budget_ns, dctx **base, dctx **out, size_t *values, char *message,
                          size_t message_len);

#endif
