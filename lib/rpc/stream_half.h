/*
 * stream_half.h - one side's view of a stream (proto/PROTOCOL.md section
 * 10): the messages the peer sent and this side has not taken yet, and the
 * credit this side has to send its own. Shared by a channel's streams and
 * a server's stream handlers. Never installed.
 *
 * Flow control: each side may send DCTX_RPC_STREAM_WINDOW_MESSAGES
 * messages and DCTX_RPC_STREAM_WINDOW_BYTES bytes (a message may overdraw
 * the bytes once) before the receiver grants more; the receiver grants
 * what was taken once half a window was, so a reader that stops reading
 * stops its writer, and a stream never holds more than a window and one
 * message of the peer's.
 *
 * Threads: any; every function takes the half's lock. Waits end when a
 * message or credit comes, the peer is done, the stream ends, or the
 * context given at init is done (an inline after-func wakes them: never
 * cancel that context while holding the lock).
 */
#ifndef DCTX_RPC_STREAM_HALF_H
#define DCTX_RPC_STREAM_HALF_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dctx/stream.h>

struct dctx__stream_msg {
    struct dctx__stream_msg *next;
    size_t len;
    unsigned char data[];
};

struct dctx__stream_half {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct dctx__stream_msg *head, **tail; /* the peer's, not yet taken */
    int64_t allow, allow_bytes;            /* what the peer may still send */
    uint32_t taken, taken_bytes;           /* taken since the last grant */
    int64_t credit, credit_bytes;          /* what this side may still send */
    bool peer_done;                        /* the peer sends no more */
    bool ended;                            /* the stream is over (or its context done) */
    int64_t idle_ns;                       /* a take waits this long at most; 0: no limit */
    dctx_after *wake;                      /* the context's end ends the waits */
    uint64_t received, sent;               /* messages, for logs */
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
 * (free it with free()), 0 when the peer sends no more and all was taken,
 * -1 when the stream ended first, -2 when nothing came for idle_ns.
 * *grant_messages and *grant_bytes, when not 0, are credit the caller
 * sends the peer (outside any lock). */
int dctx__stream_half_take(struct dctx__stream_half *h, struct dctx__stream_msg **m,
                           uint32_t *grant_messages, uint32_t *grant_bytes);

/* dctx__stream_half_refund gives back what reserve took for a message of
 * len bytes that was not sent after all. */
void dctx__stream_half_refund(struct dctx__stream_half *h, size_t len);

/* The messages received from the peer and sent to it so far. */
void dctx__stream_half_counts(struct dctx__stream_half *h, uint64_t *received, uint64_t *sent);

/* dctx__stream_half_reserve waits for credit to send a message of len
 * bytes and takes it: true, or false when the stream ended first. */
bool dctx__stream_half_reserve(struct dctx__stream_half *h, size_t len);

#endif /* DCTX_RPC_STREAM_HALF_H */
