/*
 * stream_impl.h - what a stream is, on either side (stream.c has what
 * both share; client.c and server.c each open theirs). Never installed.
 */
#ifndef DCTX_RPC_STREAM_IMPL_H
#define DCTX_RPC_STREAM_IMPL_H

#include <dctx/stream.h>

#include "dctx.pb-c.h"
#include "stream_half.h"

/* How one side sends a stream's frames and learns its end. */
struct dctx__stream_ops {
    /* Queue f (its call id set by the side); 0 or a status. */
    int (*send)(void *owner, Dctx__Wire__Frame *f);
    /* The stream's end status once it ended (the context's error, the
     * server's status); DCTX_CANCELED if it is not known yet. */
    int (*end_code)(void *owner);
};

struct dctx_rpc_stream {
    struct dctx__stream_half half;
    const struct dctx__stream_ops *ops;
    void *owner;      /* the server's call, or the client's handle */
    dctx *ctx;        /* the stream's context (borrowed from the owner): canceled when idle */
    bool send_closed; /* the client half-closed; the sender's own */
};

/* Send a Credit frame for what was taken (nothing if both are 0). */
void dctx__stream_grant(dctx_rpc_stream *st, uint32_t messages, uint32_t bytes);

#endif /* DCTX_RPC_STREAM_IMPL_H */
