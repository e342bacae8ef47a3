/*
 * gateway.c - the gateway (grpc.h, "Gateway"): a gRPC server that takes
 * calls for any method (grpc_server_request_call), one thread that runs
 * its completion queue, and the counters. A call's own way is in
 * gateway_call.c.
 *
 * The server keeps CALLS_REQUESTED calls asked for at once; each one that
 * arrives asks for the next, so a burst of callers waits on nothing of
 * ours. Close follows gRPC's order: shutdown_and_notify, cancel every
 * call, wait for the shutdown tag and for each call to be freed, destroy
 * the server, then drain and destroy the queue.
 */
#include <dctx/trace.h>
#include <grpc/grpc_security.h>
#include <limits.h>
#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"
#include "gateway.h"
#include "tls.h"

#define METADATA_BYTES_MAX (64 * 1024)
/* The server's two fixed arguments and at most five from the options. */
#define GATEWAY_ARGS_MAX 7

/* Carried on whatever the options say; traceparent under the library's
 * own key, so that servers read it as the trace. */
static const char *const other_trace_keys[] = {"tracestate", "baggage"};

/* Adds the key named name (a copy), unless it is there already. */
static int add_key(dctx_grpc_gateway *gw, const char *name)
{
    if (!dctx_grpc_forward_key_valid(name))
        return DCTX_INVALID_ARGUMENT;
    for (size_t k = 0; k < gw->n_keys; k++)
        if (strcmp(gw->keys[k]->name, name) == 0)
            return 0;
    char *copy = strdup(name);
    if (copy == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    gw->own_keys[gw->n_keys] = (dctx_key){.name = copy, .flags = DCTX_KEY_PROPAGATE};
    gw->keys[gw->n_keys] = &gw->own_keys[gw->n_keys];
    gw->n_keys++;
    return 0;
}

static void *run_queue(void *arg)
{
    dctx_grpc_gateway *gw = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(gw->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        struct gateway_tag *tag = ev.tag;
        if (tag->kind == TAG_SHUTDOWN) {
            pthread_mutex_lock(&gw->mu);
            gw->shut_down = true;
            pthread_cond_broadcast(&gw->idle);
            pthread_mutex_unlock(&gw->mu);
            continue;
        }
        dctx__gateway_on_tag(tag, ev.success != 0);
    }
}

void dctx__gateway_call_ended(dctx_grpc_gateway *gw)
{
    pthread_mutex_lock(&gw->mu);
    if (--gw->in_flight == 0)
        pthread_cond_broadcast(&gw->idle);
    pthread_mutex_unlock(&gw->mu);
}

bool dctx_grpc_forward_key_valid(const char *name)
{
    if (name == NULL || !dctx_wire_key_name_valid(name) || strncmp(name, "grpc-", 5) == 0)
        return false;
    for (const char *p = name; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' ||
              *p == '.'))
            return false;
    return true;
}

static int set_keys(dctx_grpc_gateway *gw, const dctx_grpc_gateway_options *o)
{
    if (o->n_forward_keys > DCTX_GRPC_FORWARD_KEYS_MAX ||
        (o->n_forward_keys > 0 && o->forward_keys == NULL))
        return DCTX_INVALID_ARGUMENT;
    gw->keys[gw->n_keys++] = &dctx_traceparent_key;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < 2; i++)
        rc = add_key(gw, other_trace_keys[i]);
    for (size_t i = 0; rc == 0 && i < o->n_forward_keys; i++)
        rc = add_key(gw, o->forward_keys[i]);
    return rc;
}

static void free_gateway(dctx_grpc_gateway *gw)
{
    for (size_t i = 0; i < gw->n_stream_methods; i++)
        free((char *)gw->stream_methods[i]);
    free(gw->stream_methods);
    for (size_t k = 0; k < gw->n_keys; k++)
        if (gw->keys[k] == &gw->own_keys[k])
            free((char *)gw->own_keys[k].name);
    pthread_mutex_destroy(&gw->mu);
    pthread_mutex_destroy(&gw->watch_mu);
    pthread_cond_destroy(&gw->idle);
    free(gw);
}

/* Shuts the queue down and joins its thread (it returns once the queue is
 * drained). */
static void close_queue(dctx_grpc_gateway *gw)
{
    grpc_completion_queue_shutdown(gw->cq);
    pthread_join(gw->thread, NULL);
    grpc_completion_queue_destroy(gw->cq);
}

/* Stops the started server, ends every call, and frees it all. */
static void stop(dctx_grpc_gateway *gw)
{
    atomic_store(&gw->closing, true);
    grpc_server_shutdown_and_notify(gw->server, gw->cq, &gw->shutdown_tag);
    grpc_server_cancel_all_calls(gw->server);
    pthread_mutex_lock(&gw->mu);
    while (!gw->shut_down || gw->in_flight > 0)
        pthread_cond_wait(&gw->idle, &gw->mu);
    pthread_mutex_unlock(&gw->mu);
    grpc_server_destroy(gw->server);
    close_queue(gw);
    grpc_shutdown();
    free_gateway(gw);
}

/* Whether listen ("HOST:PORT", "[V6]:PORT") can be bound now: when it
 * can, a port gRPC refused with TLS credentials was refused for them (a
 * key that does not go with its certificate, a PEM body gRPC cannot read),
 * not for the address. */
static bool address_free(const char *listen)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    size_t n = colon != NULL ? (size_t)(colon - listen) : 0;
    if (colon == NULL || n >= sizeof host)
        return false;
    memcpy(host, listen, n);
    host[n] = '\0';
    char *h = host;
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        host[n - 1] = '\0';
        h = host + 1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *found = NULL;
    if (getaddrinfo(h[0] != '\0' ? h : NULL, colon + 1, &hints, &found) != 0)
        return false;
    bool bound = false;
    for (struct addrinfo *a = found; a != NULL && !bound; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0)
            continue;
        int on = 1; /* as gRPC binds: a port in TIME_WAIT is free */
        (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        bound = bind(fd, a->ai_addr, a->ai_addrlen) == 0;
        close(fd);
    }
    freeaddrinfo(found);
    return bound;
}

/* The server's arguments: the n fixed ones, then those of the options
 * (keepalive, concurrent streams). Returns how many are in all. */
static size_t server_args(const dctx_grpc_gateway_options *o, const grpc_arg *fixed, size_t n,
                          grpc_arg *all)
{
    memcpy(all, fixed, n * sizeof *fixed);
    if (o->keepalive_ns > 0) {
        /* gRPC counts milliseconds in an int. */
        int64_t ms = o->keepalive_ns / 1000000 > 0 ? o->keepalive_ns / 1000000 : 1;
        int64_t timeout_ms = o->keepalive_timeout_ns > 0 ? o->keepalive_timeout_ns / 1000000 : 0;
        all[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                              .key = (char *)GRPC_ARG_KEEPALIVE_TIME_MS,
                              .value.integer = ms < INT_MAX ? (int)ms : INT_MAX};
        if (timeout_ms > 0)
            all[n++] =
                (grpc_arg){.type = GRPC_ARG_INTEGER,
                           .key = (char *)GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                           .value.integer = timeout_ms < INT_MAX ? (int)timeout_ms : INT_MAX};
        /* Idle connections are pinged too: a caller that vanished while
         * it had nothing in flight is found as one with calls would be. */
        all[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                              .key = (char *)GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
                              .value.integer = 1};
        /* and not only twice: gRPC stops pinging a connection that sent
         * no data after this many pings (2 by default). */
        all[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                              .key = (char *)GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA,
                              .value.integer = 0};
    }
    if (o->max_concurrent_streams > 0)
        all[n++] = (grpc_arg){.type = GRPC_ARG_INTEGER,
                              .key = (char *)GRPC_ARG_MAX_CONCURRENT_STREAMS,
                              .value.integer = o->max_concurrent_streams};
    return n;
}

int dctx_grpc_gateway_open(const dctx_grpc_gateway_options *o, dctx_grpc_gateway **out)
{
    if (out != NULL)
        *out = NULL;
    if (o == NULL || out == NULL || o->listen == NULL ||
        (o->forward == NULL && (o->local == NULL || o->n_stream_methods > 0)))
        return DCTX_INVALID_ARGUMENT;
    dctx_grpc_gateway *gw = calloc(1, sizeof *gw);
    if (gw == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    pthread_mutex_init(&gw->mu, NULL);
    pthread_mutex_init(&gw->watch_mu, NULL);
    pthread_cond_init(&gw->idle, NULL);
    int rc = set_keys(gw, o);
    if (rc != 0) {
        free_gateway(gw);
        return rc;
    }
    if (o->n_stream_methods > 0) {
        gw->stream_methods = calloc(o->n_stream_methods, sizeof *gw->stream_methods);
        if (gw->stream_methods == NULL || o->stream_methods == NULL) {
            free_gateway(gw);
            return o->stream_methods == NULL ? DCTX_INVALID_ARGUMENT : DCTX_RESOURCE_EXHAUSTED;
        }
        for (size_t i = 0; i < o->n_stream_methods; i++) {
            if (o->stream_methods[i] == NULL ||
                (gw->stream_methods[i] = strdup(o->stream_methods[i])) == NULL) {
                free_gateway(gw);
                return o->stream_methods[i] == NULL ? DCTX_INVALID_ARGUMENT
                                                    : DCTX_RESOURCE_EXHAUSTED;
            }
            gw->n_stream_methods++;
        }
    }
    if (o->max_streams < 0 || o->max_concurrent_streams < 0 || o->keepalive_ns < 0 ||
        o->keepalive_timeout_ns < 0 ||
        (o->tls_client_ca_file != NULL && o->tls_cert_key_file == NULL)) {
        free_gateway(gw);
        return DCTX_INVALID_ARGUMENT;
    }
    gw->max_streams = o->max_streams > 0 ? o->max_streams : DCTX_GRPC_DEFAULT_MAX_STREAMS;
    gw->forward = o->forward;
    gw->local = o->local;
    gw->local_policy = o->local_policy;
    gw->on_event = o->on_event;
    gw->event_arg = o->event_arg;
    gw->shutdown_tag = (struct gateway_tag){TAG_SHUTDOWN, NULL};

    grpc_init();
    grpc_server_credentials *creds = NULL;
    if (o->tls_cert_key_file != NULL)
        rc = dctx__grpc_server_tls(o->tls_cert_key_file, o->tls_client_ca_file, &creds);
    else
        creds = grpc_insecure_server_credentials_create();
    if (rc != 0) {
        grpc_shutdown();
        free_gateway(gw);
        return rc;
    }
    gw->cq = grpc_completion_queue_create_for_next(NULL);
    /* The queue's thread first: from here every way out goes through it. */
    if (pthread_create(&gw->thread, NULL, run_queue, gw) != 0) {
        grpc_server_credentials_release(creds);
        dctx__grpc_queue_destroy(gw->cq);
        grpc_shutdown();
        free_gateway(gw);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    /* gRPC's own metadata limit (8 KiB by default) above the dctx wire's, so
     * that too many values get the wire's status and message. */
    grpc_arg arg[] = {
        {.type = GRPC_ARG_INTEGER,
         .key = (char *)GRPC_ARG_MAX_METADATA_SIZE,
         .value.integer = METADATA_BYTES_MAX},
        /* gRPC binds with SO_REUSEPORT by default: a port in use
                       * would be shared with whoever holds it, not refused. */
        {.type = GRPC_ARG_INTEGER, .key = (char *)GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0}};
    grpc_arg all[GATEWAY_ARGS_MAX];
    grpc_channel_args args = {.num_args = server_args(o, arg, 2, all), .args = all};
    gw->server = grpc_server_create(&args, NULL);
    grpc_server_register_completion_queue(gw->server, gw->cq, NULL);
    gw->port = grpc_server_add_http2_port(gw->server, o->listen, creds);
    grpc_server_credentials_release(creds);
    if (gw->port == 0) {
        /* Never started and listening nowhere: no shutdown needed. */
        grpc_server_destroy(gw->server);
        close_queue(gw);
        rc = o->tls_cert_key_file != NULL && address_free(o->listen) ? DCTX_INVALID_ARGUMENT
                                                                     : DCTX_UNAVAILABLE;
        grpc_shutdown();
        free_gateway(gw);
        return rc;
    }
    grpc_server_start(gw->server);
    dctx__gateway_request_calls(gw);
    if (atomic_load(&gw->requested) == 0) {
        stop(gw);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    *out = gw;
    return 0;
}

int dctx_grpc_gateway_port(const dctx_grpc_gateway *gw)
{
    return gw != NULL ? gw->port : 0;
}

void dctx_grpc_gateway_drain(dctx_grpc_gateway *gw)
{
    if (gw == NULL)
        return;
    atomic_store(&gw->draining, true);
    dctx__gateway_watch_moved(gw);
}

void dctx_grpc_gateway_close(dctx_grpc_gateway *gw)
{
    if (gw != NULL)
        stop(gw);
}

void dctx_grpc_gateway_stats_get(dctx_grpc_gateway *gw, dctx_grpc_gateway_stats *out)
{
    memset(out, 0, sizeof *out);
    if (gw == NULL)
        return;
    out->calls = atomic_load(&gw->calls);
    for (int i = 0; i <= DCTX_CODE_MAX; i++)
        out->by_code[i] = atomic_load(&gw->by_code[i]);
    out->canceled_by_caller = atomic_load(&gw->canceled_by_caller);
    out->deadline_by_caller = atomic_load(&gw->deadline_by_caller);
    out->values_carried = atomic_load(&gw->values_carried);
    out->health_checks = atomic_load(&gw->health_checks);
    out->to_dctx = atomic_load(&gw->to_dctx);
    out->to_grpc = atomic_load(&gw->to_grpc);
    pthread_mutex_lock(&gw->mu);
    out->in_flight = gw->in_flight;
    pthread_mutex_unlock(&gw->mu);
}
