/*
 * pb.c - protobuf-c calls and services (rpc_pb.h), built on the byte-level
 * API: a call packs its request and unpacks its reply; a service method is
 * an ordinary handler whose argument names the service and the method.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/rpc_pb.h>

#include "context/alloc.h"
#include "rpc_impl.h"
#include "text.h"

/* ===== Calls ===== */

/* The call, with r always filled. */
static int call_packed(dctx_rpc_channel *ch, dctx *ctx, const char *method,
                       const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
                       ProtobufCMessage **resp, dctx_rpc_result *r)
{
    if (req == NULL || resp_desc == NULL || resp == NULL) {
        dctx__result_set(r, DCTX_INVALID_ARGUMENT, "request, response type and out are needed",
                         NULL, 0);
        return DCTX_INVALID_ARGUMENT;
    }
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = dctx__malloc(n ? n : 1);
    if (buf == NULL) {
        dctx__result_set(r, DCTX_RESOURCE_EXHAUSTED, "no memory to pack the request", NULL, 0);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    protobuf_c_message_pack(req, buf);
    int rc = dctx_rpc_call_raw(ch, ctx, method, buf, n, r);
    free(buf);
    if (rc != DCTX_OK)
        return rc;
    *resp = protobuf_c_message_unpack(resp_desc, NULL, r->payload_len, r->payload);
    if (*resp != NULL)
        return DCTX_OK;
    dctx_rpc_result_free(r);
    dctx__result_set(r, DCTX_INTERNAL, "the response does not parse as the expected message", NULL,
                     0);
    return DCTX_INTERNAL;
}

int dctx_rpc_call(dctx_rpc_channel *ch, dctx *ctx, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                  dctx_rpc_result *res)
{
    dctx_rpc_result local;
    dctx_rpc_result *r = res != NULL ? res : &local;
    if (resp != NULL)
        *resp = NULL;
    int rc = call_packed(ch, ctx, method, req, resp_desc, resp, r);
    if (r == &local)
        dctx_rpc_result_free(&local);
    return rc;
}

/* ===== Services ===== */

/* The handler argument of one service method. The first method of a
 * service owns the array of them (the server frees it at close). */
struct pb_method {
    ProtobufCService *service;
    unsigned index;
};

/* The service call being served on this thread, for the two functions a
 * protobuf-c method can reach it through. */
struct service_call {
    dctx *ctx;
    int code;
    char message[DCTX__MESSAGE_SIZE];
    dctx_rpc_reply *reply;
    bool replied;
};

static _Thread_local struct service_call *current_service_call;

dctx *dctx_rpc_service_context(void)
{
    return current_service_call != NULL ? current_service_call->ctx : NULL;
}

void dctx_rpc_service_fail(int code, const char *message)
{
    struct service_call *sc = current_service_call;
    if (sc == NULL)
        return;
    sc->code = code != DCTX_OK ? code : DCTX_UNKNOWN;
    dctx__message_copy(sc->message, message);
}

static void service_closure(const ProtobufCMessage *out, void *data)
{
    struct service_call *sc = data;
    sc->replied = true;
    if (out == NULL) {
        if (sc->code == DCTX_OK)
            sc->code = DCTX_INTERNAL;
        return;
    }
    size_t n = protobuf_c_message_get_packed_size(out);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL) {
        sc->code = DCTX_RESOURCE_EXHAUSTED;
        return;
    }
    protobuf_c_message_pack(out, buf);
    dctx__reply_take_payload(sc->reply, buf, n);
}

static int service_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    const struct pb_method *pm = arg;
    const ProtobufCMethodDescriptor *md = &pm->service->descriptor->methods[pm->index];
    ProtobufCMessage *in = protobuf_c_message_unpack(md->input, NULL, len, req);
    if (in == NULL) {
        dctx_rpc_reply_set_message(reply, "request does not parse as %s", md->input->name);
        return DCTX_INVALID_ARGUMENT;
    }
    struct service_call sc = {.ctx = ctx, .code = DCTX_OK, .reply = reply};
    current_service_call = &sc;
    pm->service->invoke(pm->service, pm->index, in, service_closure, &sc);
    current_service_call = NULL;
    protobuf_c_message_free_unpacked(in, NULL);
    if (!sc.replied && sc.code == DCTX_OK) {
        sc.code = DCTX_INTERNAL;
        snprintf(sc.message, sizeof sc.message, "%s.%s did not reply",
                 pm->service->descriptor->name, md->name);
    }
    if (sc.message[0] != '\0')
        dctx_rpc_reply_set_message(reply, "%s", sc.message);
    return sc.code;
}

int dctx_rpc_server_register_service(dctx_rpc_server *srv, ProtobufCService *service)
{
    if (srv == NULL || service == NULL || service->descriptor == NULL)
        return DCTX_INVALID_ARGUMENT;
    const ProtobufCServiceDescriptor *d = service->descriptor;
    if (d->n_methods == 0)
        return 0;
    struct pb_method *methods = calloc(d->n_methods, sizeof *methods);
    if (methods == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    void *owned = methods; /* handed to the server with the first method */
    for (unsigned i = 0; i < d->n_methods; i++) {
        methods[i] = (struct pb_method){.service = service, .index = i};
        char name[DCTX_WIRE_METHOD_BYTES_MAX + 2];
        int n = snprintf(name, sizeof name, "/%s/%s", d->name, d->methods[i].name);
        int rc =
            n < 0 || (size_t)n >= sizeof name
                ? DCTX_INVALID_ARGUMENT
                : dctx__server_register_owned(srv, name, service_handler, &methods[i], 0, owned);
        if (rc != 0) {
            free(owned); /* NULL once a method took it */
            return rc;
        }
        owned = NULL;
    }
    return 0;
}
