/*
 * stream_half.h - one side's view of a stream (proto/PROTOCOL.md section
 * 10): the messages the peer sent and this side has not taken yet, and the
 * credit this side has to send its own. Shared by a channel's streams and
 * a server's stream handlers. Never installed.
 *
 * Flow control: each side may send a window of messages and bytes (a
 * message may overdraw the bytes once) before the receiver grants more;
 * the receiver grants what was taken once half its window was, and as
 * much again as the window was while it is under the most
 * (DCTX_RPC_STREAM_WINDOW_MESSAGES and _BYTES; it starts at the FIRST_
 * ones): a reader that reads has the window doubled, one that stops
 * reading stops its writer, and a stream never holds more than the
 * largest window and one message of the peer's.
 *
 * Threads: any; every function takes the half's lock, but the receiver's
 * take and the sender's reserve and refund take it once per batch, not
 * per message: take moves the whole queue to the receiver's own list
 * (mine) and serves from there while it lasts, reserve moves all the
 * credit there is to the sender's own. Waits end when a message or credit
 * comes, the peer is done, the stream ends, or the context given at init
 * is done (an inline after-func wakes them: never cancel that context
 * while holding the lock).
 */
#ifndef DCTX_RPC_STREAM_HALF_H
#define DCTX_RPC_STREAM_HALF_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dctx/stream.h>

struct dctx__stream_msg {
    struct dctx__stream_msg *next;
    size_t len;
    unsigned char data[];
};

/* A message's block for len bytes (next and len set), or NULL (no
 * memory); a small one comes from block_pool.h. Any thread. */
struct dctx__stream_msg *dctx__msg_alloc(size_t len);

/* Give a message's block back (NULL is fine). Any thread. */
void dctx__msg_free(struct dctx__stream_msg *m);

struct dctx__stream_half {
    /* Shared: under mu, but for the atomics. */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct dctx__stream_msg *head, **tail; /* the peer's, not yet taken */
    int64_t allow, allow_bytes;            /* what the peer may still send */
    int64_t credit, credit_bytes;          /* what this side may still send */
    bool peer_done;                        /* the peer sends no more */
    atomic_bool ended;                     /* the stream is over (or its context done) */
    int64_t idle_ns;                       /* a take waits this long at most; 0: no limit */
    dctx_after *wake;                      /* the context's end ends the waits */
    atomic_bool woken;                     /* wake's after-func has returned */
    atomic_uint_fast64_t received;         /* messages, for logs */
    /* An asynchronous receive (stream.c): armed until a message, the
     * peer's half-close or the end makes it due; then delivering until the
     * deliverer is done (one at a time). kick starts the delivery, which
     * calls fn(fn_arg, ...): only the deliverer arms again meanwhile. */
    bool armed, delivering;
    bool end_delivered; /* a receive got the end: none may be armed after it */
    /* The end is not due yet: a client's, until its finish ran (so that
     * the end's callback may call finish); dctx__stream_half_conclude. */
    bool end_held;
    void (*kick)(void *arg, bool on_this_thread);
    void *kick_arg;
    dctx_rpc_stream_recv_fn fn;
    void *fn_arg;

    /* The receiver's own and the sender's own, each a cache line apart
     * from the rest: the connection's reader writes the shared fields for
     * every message it pushes, and a field on their line would miss on
     * every message too (padding, not alignment: the half lives in blocks
     * from malloc). */
    char apart_receiver[64];
    struct dctx__stream_msg *mine; /* taken off head at once: no lock */
    uint32_t taken;                /* taken since the last grant */
    uint64_t taken_bytes;          /* and their bytes (and what the last grant left over) */
    uint32_t window, window_bytes; /* what the peer may have sent and this side not taken */
    atomic_bool receiving;         /* the receiver's role is taken: a blocking receive,
                                      or an asynchronous one armed or being delivered */
    char apart_sender[64];
    int64_t my_credit, my_credit_bytes; /* moved off credit at once: no lock */
    atomic_uint_fast64_t sent;          /* messages, for logs */
};

/* init: the waits also end when ctx is done (ctx may be NULL: never). */
int dctx__stream_half_init(struct dctx__stream_half *h, dctx *ctx);
void dctx__stream_half_fini(struct dctx__stream_half *h);

/* The peer's message (copied): false if the peer had no credit for it
 * (a protocol error: the caller ends the connection) or no memory. */
bool dctx__stream_half_push(struct dctx__stream_half *h, const void *data, size_t len);

/* The peer sends no more messages (it half-closed). */
void dctx__stream_half_peer_done(struct dctx__stream_half *h);

/* The peer grants this side more credit. */
void dctx__stream_half_credit(struct dctx__stream_half *h, uint32_t messages, uint32_t bytes);

/* The stream is over: every wait ends. */
void dctx__stream_half_end(struct dctx__stream_half *h);

/* dctx__stream_half_take waits for the peer's next message: 1 with *m
 * (free it with dctx__msg_free), 0 when the peer sends no more and all was taken,
 * -1 when the stream ended first, -2 when nothing came for idle_ns.
 * *grant_messages and *grant_bytes, when not 0, are credit the caller
 * sends the peer (outside any lock). */
int dctx__stream_half_take(struct dctx__stream_half *h, struct dctx__stream_msg **m,
                           uint32_t *grant_messages, uint32_t *grant_bytes);

/* dctx__stream_half_refund gives back what reserve took for a message of
 * len bytes that was not sent after all. */
void dctx__stream_half_refund(struct dctx__stream_half *h, size_t len);

/* dctx__stream_half_arm arms an asynchronous receive of fn(fn_arg): when
 * it is due, kick(kick_arg, on_this_thread) runs once, with no lock held:
 * on the thread that made it due when that is a message or the peer's
 * half-close (the connection's), else on_this_thread false (the end may
 * come from inside a cancel: kick defers). Returns 1 if armed, 2 if armed
 * and due already (the caller defers the kick itself; delivering is set),
 * 0 if a receive is armed already, -1 once the end was delivered. Inside
 * a delivery (delivering set) it only arms: the deliverer sees it through
 * dctx__stream_half_next. */
int dctx__stream_half_arm(struct dctx__stream_half *h, dctx_rpc_stream_recv_fn fn, void *fn_arg,
                          void (*kick)(void *, bool), void *kick_arg);

/* dctx__stream_half_next: the deliverer finished one; true if another
 * receive was armed meanwhile and is due (deliver it too), else false and
 * delivering ends (and the receiver's role with it, if none is armed). */
bool dctx__stream_half_next(struct dctx__stream_half *h);

/* The deliverer is about to hand out the end: no receive is armed after. */
void dctx__stream_half_end_delivered(struct dctx__stream_half *h);

/* The stream's owner is done with its end (end_held): an armed
 * receive gets it now, deferred. */
void dctx__stream_half_conclude(struct dctx__stream_half *h);

/* The messages received from the peer and sent to it so far. */
void dctx__stream_half_counts(struct dctx__stream_half *h, uint64_t *received, uint64_t *sent);

/* dctx__stream_half_reserve waits for credit to send a message of len
 * bytes and takes it: true, or false when the stream ended first. */
bool dctx__stream_half_reserve(struct dctx__stream_half *h, size_t len);

#endif /* DCTX_RPC_STREAM_HALF_H */
