/*
 * client.c - the channels to gRPC servers (grpc.h, "Client"): one per
 * target and options, shared and counted; and each channel's queue and
 * thread for asynchronous calls (client_call.c makes the calls).
 */
#include <dctx/grpc.h>
#include <grpc/grpc_security.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "edge.h"
#include "tls.h"

static pthread_mutex_t channels_mu = PTHREAD_MUTEX_INITIALIZER;
static struct dctx_grpc_channel *channels;

static bool same_text(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static bool made_with(const dctx_grpc_channel *ch, const char *target,
                      const dctx_grpc_channel_options *o)
{
    return strcmp(ch->target, target) == 0 && ch->tls == o->tls &&
           same_text(ch->tls_ca_file, o->tls_ca_file) &&
           same_text(ch->tls_server_name, o->tls_server_name) &&
           same_text(ch->tls_cert_key_file, o->tls_cert_key_file);
}

static void channel_free(dctx_grpc_channel *ch)
{
    free(ch->target);
    free(ch->tls_ca_file);
    free(ch->tls_server_name);
    free(ch->tls_cert_key_file);
    pthread_mutex_destroy(&ch->mu);
    free(ch);
}

static char *copy_or_null(const char *s, bool *failed)
{
    char *c = s != NULL ? strdup(s) : NULL;
    if (s != NULL && c == NULL)
        *failed = true;
    return c;
}

/* A new channel (grpc_init held for it), or NULL with *rc set. */
static dctx_grpc_channel *channel_new(const char *target, const dctx_grpc_channel_options *o,
                                      int *rc)
{
    dctx_grpc_channel *ch = calloc(1, sizeof *ch);
    if (ch == NULL) {
        *rc = DCTX_RESOURCE_EXHAUSTED;
        return NULL;
    }
    bool failed = false;
    ch->target = copy_or_null(target, &failed);
    ch->tls = o->tls;
    ch->tls_ca_file = copy_or_null(o->tls_ca_file, &failed);
    ch->tls_server_name = copy_or_null(o->tls_server_name, &failed);
    ch->tls_cert_key_file = copy_or_null(o->tls_cert_key_file, &failed);
    pthread_mutex_init(&ch->mu, NULL);
    if (failed) {
        channel_free(ch);
        *rc = DCTX_RESOURCE_EXHAUSTED;
        return NULL;
    }
    grpc_init();
    grpc_channel_credentials *creds = NULL;
    *rc = o->tls ? dctx__grpc_channel_tls(o->tls_ca_file, o->tls_cert_key_file, &creds) : 0;
    if (*rc != 0) {
        grpc_shutdown();
        channel_free(ch);
        return NULL;
    }
    if (creds == NULL)
        creds = grpc_insecure_credentials_create();
    grpc_arg name = {.type = GRPC_ARG_STRING,
                     .key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG,
                     .value.string = (char *)o->tls_server_name};
    grpc_channel_args args = {.num_args = o->tls_server_name != NULL ? 1 : 0, .args = &name};
    ch->channel = grpc_channel_create(target, creds, &args);
    grpc_channel_credentials_release(creds);
    return ch;
}

int dctx_grpc_channel_get_with(const char *target, const dctx_grpc_channel_options *opts,
                               dctx_grpc_channel **out)
{
    if (out == NULL)
        return DCTX_INVALID_ARGUMENT;
    *out = NULL;
    dctx_grpc_channel_options insecure = {.tls = false};
    const dctx_grpc_channel_options *o = opts != NULL ? opts : &insecure;
    if (target == NULL || target[0] == '\0' ||
        (!o->tls &&
         (o->tls_ca_file != NULL || o->tls_server_name != NULL || o->tls_cert_key_file != NULL)))
        return DCTX_INVALID_ARGUMENT;
    int rc = 0;
    pthread_mutex_lock(&channels_mu);
    dctx_grpc_channel *ch = channels;
    while (ch != NULL && !made_with(ch, target, o))
        ch = ch->next;
    if (ch == NULL && (ch = channel_new(target, o, &rc)) != NULL) {
        ch->next = channels;
        channels = ch;
    }
    if (ch != NULL)
        ch->refs++;
    pthread_mutex_unlock(&channels_mu);
    *out = ch;
    return rc;
}

int dctx_grpc_channel_get(const char *target, dctx_grpc_channel **out)
{
    return dctx_grpc_channel_get_with(target, NULL, out);
}

void dctx_grpc_channel_release(dctx_grpc_channel *ch)
{
    if (ch == NULL)
        return;
    pthread_mutex_lock(&channels_mu);
    bool last = --ch->refs == 0;
    if (last) {
        dctx_grpc_channel **p = &channels;
        while (*p != ch)
            p = &(*p)->next;
        *p = ch->next;
    }
    pthread_mutex_unlock(&channels_mu);
    if (!last)
        return;
    if (ch->has_thread) { /* every asynchronous call has ended */
        grpc_completion_queue_shutdown(ch->cq);
        pthread_join(ch->thread, NULL);
        grpc_completion_queue_destroy(ch->cq);
    }
    grpc_channel_destroy(ch->channel);
    grpc_shutdown();
    channel_free(ch);
}

/* The thread of a channel's asynchronous calls: each batch's end, until
 * the channel's release shuts the queue down. */
static void *run_queue(void *arg)
{
    grpc_completion_queue *cq = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            return NULL;
        if (ev.type == GRPC_OP_COMPLETE) {
            struct dctx__grpc_async_tag *tag = ev.tag;
            tag->end(tag, ev.success != 0);
        }
    }
}

grpc_completion_queue *dctx__grpc_channel_queue(dctx_grpc_channel *ch)
{
    pthread_mutex_lock(&ch->mu);
    if (!ch->has_thread) {
        ch->cq = grpc_completion_queue_create_for_next(NULL);
        ch->has_thread = pthread_create(&ch->thread, NULL, run_queue, ch->cq) == 0;
        if (!ch->has_thread) {
            grpc_completion_queue_destroy(ch->cq);
            ch->cq = NULL;
        }
    }
    grpc_completion_queue *cq = ch->cq;
    pthread_mutex_unlock(&ch->mu);
    return cq;
}
