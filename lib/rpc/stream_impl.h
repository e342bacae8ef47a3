/*
 * stream_impl.h - what a stream is, on either side (stream.c has what
 * both share; client.c and server.c each open theirs). Never installed.
 */
#ifndef DCTX_RPC_STREAM_IMPL_H
#define DCTX_RPC_STREAM_IMPL_H

#include <dctx/stream.h>

#include "dctx.pb-c.h"
#include "reaper.h"
#include "stream_half.h"

/* What a side's send and end_code return for a stream that already
 * ended OK. */
#define DCTX__STREAM_OVER (-1)

/* How one side sends a stream's frames and learns its end. */
struct dctx__stream_ops {
    /* Queue f (its call id set by the side); 0, a status, or
     * DCTX__STREAM_OVER. */
    int (*send)(void *owner, Dctx__Wire__Frame *f);
    /* The stream's end status once it ended (the context's error, the
     * server's status, DCTX__STREAM_OVER for OK); DCTX_CANCELED if it is
     * not known yet. */
    int (*end_code)(void *owner);
    /* A reference on the owner (it holds the stream): an armed
     * asynchronous receive keeps one until its callback returned. */
    void (*hold)(void *owner);
    void (*drop)(void *owner);
};

struct dctx_rpc_stream {
    struct dctx__stream_half half;
    const struct dctx__stream_ops *ops;
    void *owner;      /* the server's call, or the client's handle */
    dctx *ctx;        /* the stream's context (borrowed from the owner): canceled when idle */
    bool send_closed; /* the client half-closed; the sender's own */
    struct dctx__reap_item deliver_later; /* an asynchronous receive's deferred delivery */
};

struct dctx__session;

/* dctx__stream_take_frame hands a stream frame the peer sent on s
 * (message, half-close, credit) to st (NULL: the frame's call is unary);
 * one that breaks the protocol fails s (dctx__session_fail). */
void dctx__stream_take_frame(dctx_rpc_stream *st, const Dctx__Wire__Frame *f,
                             struct dctx__session *s);

/* An event's stream fields: whether it is one (st not NULL) and its
 * message counts. */
void dctx__stream_event_counts(dctx_rpc_stream *st, dctx_rpc_event *ev);

/* Send a Credit frame for what was taken (nothing if both are 0). */
void dctx__stream_grant(dctx_rpc_stream *st, uint32_t messages, uint32_t bytes);

#endif /* DCTX_RPC_STREAM_IMPL_H */
