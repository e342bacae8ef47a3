/*
 * grpc_edge.h - rpcd at the gRPC edge: `serve --grpc-listen HOST:PORT`
 * takes gRPC calls for any method and makes each a dctx call to this
 * instance's own services (in process, through the server as any
 * caller's call would go: its limits, keys, logs and metrics; streams
 * over inproc), and `serve --next grpc://HOST:PORT` (grpcs:// with TLS)
 * lets Chain call a gRPC server. Without
 * gRPC in the build (-DDCTX_GRPC=OFF) the flags are refused.
 */
#ifndef RPCD_GRPC_EDGE_H
#define RPCD_GRPC_EDGE_H

#include <pthread.h>
#include <stdbool.h>

#include <dctx/grpc.h>

#include "rpcd.h"

/* Whether this rpcd was built with the gRPC edge. */
extern const bool rpcd_grpc_built;

/* The gateway's settings from serve's flags. */
struct rpcd_grpc_args {
    const char *listen;                                   /* --grpc-listen; NULL: none */
    const char *forward_keys[DCTX_GRPC_FORWARD_KEYS_MAX]; /* --grpc-forward */
    int n_forward_keys;
    int max_streams;                         /* --grpc-max-streams; 0: the default */
    const char *tls_cert;                    /* --grpc-tls-cert; NULL: insecure */
    const char *tls_client_ca;               /* --grpc-tls-client-ca */
    const dctx_identity *identity;           /* the instance's, when it has one (--key) */
    const dctx_rpc_channel_options *channel; /* keepalive and the like for the inproc channel */
};

/* Whether key may be a --grpc-forward key (false without gRPC). */
bool rpcd_grpc_forward_key_valid(const char *key);

/* rpcd_grpc_gateway_start opens the gateway in front of r->server (which
 * must have started) and logs where it listens. Returns 0 or a status
 * (reported on stderr). */
int rpcd_grpc_gateway_start(struct rpcd *r, const struct rpcd_grpc_args *a, bool log_calls);

/* The gateway's health turns NOT_SERVING (the instance drains). */
void rpcd_grpc_gateway_drain(void);

/* Closes the gateway (its calls in flight get UNAVAILABLE). */
void rpcd_grpc_gateway_stop(void);

/* rpcd_grpc_write_stats adds the gateway's counters to Stats as "grpc"
 * (nothing without a gateway). */
struct rpcd_json;
void rpcd_grpc_write_stats(struct rpcd_json *j);

/* rpcd_grpc_next_open makes a gRPC next hop of url ("grpc://HOST:PORT",
 * or "grpcs://HOST:PORT" with TLS as tls says: its CA, server name and
 * certificate) into r->grpc_next. Returns 0 or a status (reported on
 * stderr). */
struct rpcd_tls;
int rpcd_grpc_next_open(struct rpcd *r, const char *url, const struct rpcd_tls *tls);
void rpcd_grpc_next_close(struct rpcd *r);

/* rpcd_grpc_count_relay relays Count from the first gRPC next hop (the
 * request req, then each of its messages sent on to st), logging what it
 * relayed as count_relay does; returns the stream's status, with reply's
 * message saying why when it is not OK. */
int rpcd_grpc_count_relay(struct rpcd *r, dctx *ctx, dctx_rpc_stream *st, const void *req,
                          size_t len, dctx_rpc_reply *reply);

/* A call of Chain on a gRPC next hop, under way. */
struct rpcd_grpc_hop {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool ended;
    dctx_rpc_result res;
};

/* rpcd_grpc_chain_start starts Chain on gRPC next hop i with ctx (its
 * budget, cancel and values go with it), alongside the other hops;
 * rpcd_grpc_chain_wait waits for its end and moves its result into res
 * (to free with dctx_rpc_result_free) and returns its code. Every hop
 * started is waited for. */
void rpcd_grpc_chain_start(struct rpcd *r, int i, dctx *ctx, const void *req, size_t len,
                           struct rpcd_grpc_hop *h);
int rpcd_grpc_chain_wait(struct rpcd_grpc_hop *h, dctx_rpc_result *res);

#endif
