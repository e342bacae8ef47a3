/*
 * health_watch.c - grpc.health.v1.Health/Watch at the gateway: a server
 * stream that sends the gateway's status at once, then again each time it
 * changes (SERVING -> NOT_SERVING when it drains), until the caller leaves
 * or the gateway closes. A service other than "" gets SERVICE_UNKNOWN,
 * once, and the stream stays open, as the health protocol asks. This is
 * what gRPC clients' own health checking (for load balancing) watches.
 *
 * Every watcher is on the gateway's list from its start to its close,
 * both on the gateway's queue thread (gw->watch_mu, taken before a call's
 * mu, never after); at most one send
 * of each is under way, and one that completes sends again if the status
 * moved while it was on its way.
 */
#include <grpc/byte_buffer.h>
#include <stdlib.h>
#include <string.h>

#include "gateway.h"
#include "health.h"

static int status_now(const struct gateway_call *c)
{
    if (!c->watch_known)
        return DCTX__HEALTH_UNKNOWN;
    return atomic_load(&c->gw->draining) ? DCTX__HEALTH_NOT_SERVING : DCTX__HEALTH_SERVING;
}

/* Send the status now if it is not the one last sent and nothing is on
 * its way (mu held). */
static void send_if_moved(struct gateway_call *c)
{
    int status = status_now(c);
    if (c->watch_sending || c->replied || status == c->watch_sent)
        return;
    unsigned char bytes[2] = {0x08, (unsigned char)status}; /* field 1, varint */
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)bytes, sizeof bytes);
    c->watch_msg = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_op op = {.op = GRPC_OP_SEND_MESSAGE};
    op.data.send_message.send_message = c->watch_msg;
    if (grpc_call_start_batch(c->call, &op, 1, &c->watch_tag, NULL) != GRPC_CALL_OK) {
        grpc_byte_buffer_destroy(c->watch_msg);
        c->watch_msg = NULL;
        return;
    }
    c->refs++;
    c->watch_sending = true;
    c->watch_sent = status;
}

void dctx__gateway_watch_start(struct gateway_call *c, const unsigned char *req, size_t len)
{
    dctx_grpc_gateway *gw = c->gw;
    atomic_fetch_add(&gw->health_checks, 1);
    const char *message = NULL;
    bool known = false;
    int code = dctx__health_watch_request(req, len, &known, &message);
    pthread_mutex_lock(&gw->watch_mu);
    pthread_mutex_lock(&c->mu);
    if (code != DCTX_OK) {
        dctx__gateway_reply_locked(c, code, message, NULL, 0);
    } else if (!c->closed) { /* a watch closed already never joins the list */
        c->watching = true;
        c->watch_known = known;
        c->stream = true; /* its status carries no payload */
        c->watch_next = gw->watchers;
        gw->watchers = c;
        send_if_moved(c);
    }
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&gw->watch_mu);
}

void dctx__gateway_watch_sent(struct gateway_call *c, bool ok)
{
    pthread_mutex_lock(&c->mu);
    grpc_byte_buffer_destroy(c->watch_msg);
    c->watch_msg = NULL;
    c->watch_sending = false;
    if (ok)
        send_if_moved(c);
    dctx__gateway_unlock_dropping(c);
}

void dctx__gateway_watch_moved(dctx_grpc_gateway *gw)
{
    pthread_mutex_lock(&gw->watch_mu);
    for (struct gateway_call *c = gw->watchers; c != NULL; c = c->watch_next) {
        pthread_mutex_lock(&c->mu);
        send_if_moved(c);
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&gw->watch_mu);
}

void dctx__gateway_watch_end(struct gateway_call *c)
{
    dctx_grpc_gateway *gw = c->gw;
    pthread_mutex_lock(&gw->watch_mu);
    struct gateway_call **p = &gw->watchers;
    while (*p != NULL && *p != c)
        p = &(*p)->watch_next;
    if (*p == c)
        *p = c->watch_next;
    pthread_mutex_unlock(&gw->watch_mu);
}
