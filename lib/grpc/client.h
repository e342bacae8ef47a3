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

/* dctx__grpc_channel_queue returns ch's queue for asynchronous calls,
 * its thread started on first use; NULL if no thread could be. */
grpc_completion_queue *dctx__grpc_channel_queue(dctx_grpc_channel *ch);

#endif /* DCTX_GRPC_CLIENT_H */
