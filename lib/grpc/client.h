/*
 * client.h - a gRPC channel as client.c keeps it, for the calls made on it
 * (client_call.c).
 */
#ifndef DCTX_GRPC_CLIENT_H
#define DCTX_GRPC_CLIENT_H

#include <dctx/grpc.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <stdbool.h>

struct dctx_grpc_channel {
    struct dctx_grpc_channel *next;
    char *target;
    /* The options it was made with, their strings copied (NULL kept). */
    bool tls;
    char *tls_ca_file, *tls_server_name, *tls_cert_key_file;
    grpc_channel *channel;
    int refs; /* under client.c's channels_mu */
    /* Where asynchronous calls complete: a queue and the thread that runs
     * their ends, made by the first one; under mu. */
    pthread_mutex_t mu;
    grpc_completion_queue *cq;
    pthread_t thread;
    bool has_thread;
};

/* The tag of an asynchronous call's batch: the queue's thread calls end. */
struct dctx__grpc_async_tag {
    void (*end)(struct dctx__grpc_async_tag *tag, bool ok);
};

/* The metadata a call sends: the context's propagated values that gRPC can
 * carry (client_call.c). */
struct dctx__grpc_md {
    grpc_metadata entries[DCTX_WIRE_VALUES_MAX];
    size_t n;
};

/* dctx__grpc_md_collect fills md from ctx (its slices point into ctx's
 * values: hold ctx for the call); 0 or the wire's limit broken. */
int dctx__grpc_md_collect(dctx *ctx, struct dctx__grpc_md *md);

/* dctx__grpc_can_start: whether a call with ctx can go at all, with the
 * budget it goes with (-1: none; one unit of gRPC's rounding taken off);
 * else res says why (ctx's cause, or DEADLINE_EXCEEDED). */
bool dctx__grpc_can_start(dctx *ctx, int64_t *budget, dctx_rpc_result *res);

/* dctx__grpc_call_open makes a call of method (copied) on ch, completing
 * on cq, with budget (-1: no deadline); ctx's cancel cancels it, by an
 * after-func (*after; NULL if none could be made) holding its own
 * reference to the call and to gRPC. dctx__grpc_call_close lets go of a
 * call whose operations have all completed, after-func included. */
grpc_call *dctx__grpc_call_open(dctx_grpc_channel *ch, dctx *ctx, const char *method,
                                grpc_completion_queue *cq, int64_t budget, dctx_after **after);
void dctx__grpc_call_close(grpc_call *call, dctx_after *after);

/* dctx__grpc_status_result fills res with a call's end: its status and
 * details (and payload, for OK), or ctx's end when ctx ended it; returns
 * the code. */
int dctx__grpc_status_result(dctx *ctx, grpc_status_code status, grpc_slice details,
                             const void *payload, size_t len, dctx_rpc_result *res);

/* dctx__grpc_channel_queue returns ch's queue for asynchronous calls,
 * its thread started on first use; NULL if no thread could be. */
grpc_completion_queue *dctx__grpc_channel_queue(dctx_grpc_channel *ch);

#endif /* DCTX_GRPC_CLIENT_H */
