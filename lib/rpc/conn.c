/*
 * conn.c - one connection of the session protocol (conn.h).
 *
 * Design
 *   Receive: ONE aio, always posted while the connection lives, reads as
 *   much as the stream has into rbuf (4 KiB, grown to 64 KiB the first
 *   time a read fills it: idle connections stay small); the callback
 *   feeds it to the frame
 *   reader (framing.c), which hands out every whole frame the read brought
 *   (many per read, or one spread over many reads), each to on_frame, in
 *   order, then posts the next read. Reads carry no timeout: nng 1.5.2's
 *   TLS layer ignores it on a read posted after the peer closed (it never
 *   completes); the owner watches for silence (session.c's keepalive) and
 *   aborts, and closing the stream fails that read too.
 *
 *   Send: frames are queued under mu, each one allocation holding its
 *   header and body, from block_pool.h (the sender's thread makes it, the
 *   writer's gives it back). Whoever queues a frame and finds no write
 *   under way takes the write token (writing), moves the queue to a list
 *   of its own (taken: the batch is built and copied outside mu, so
 *   senders never wait on it) and writes every frame it can: an aio of nng
 *   1.5.2 holds at most 8 iovs, so seven frames go as iovs of their own and
 *   the frames after them are copied into one buffer (up to COALESCE_MAX)
 *   that is the eighth. A short write is finished by sending the rest; a
 *   whole one frees the batch and starts the next, or gives the token
 *   back. Frames count against send_queue_max for their memory from
 *   queueing until written.
 *
 *   Who writes: an aio with a callback always completes through one of
 *   nng's task threads, one more wake per write (measured: a 64-byte
 *   round trip took 1.3-1.75x as long with one on the send). So a writer
 *   that finds the connection idle (no write for BUSY_GAP_NS) writes on
 *   its own thread, on txi, an aio without a callback: nng's streams write
 *   at once when the socket takes bytes and finish the aio there, so the
 *   writer accounts for it inline, for up to INLINE_WRITES_MAX batches.
 *   A write the socket cannot take stays queued in nng, whole; then a
 *   zero-byte send on tx, the fence, is queued behind it (nng writes a
 *   stream's sends in order), and its callback accounts for the write.
 *   On a busy connection the write goes on tx itself: while its callback is on its
 *   way, other threads' frames queue and go out together in the next
 *   write, one syscall for many (inline writes there cost a quarter of
 *   the throughput of 64 callers on tcp). A write error found inline
 *   reports the end from the writer's thread only when nothing reads (a
 *   paused server connection): one always has a write under way then, so
 *   no owner's send starts an inline write on it.
 *
 *   A side that answers what it reads (a server) may pause: once its send
 *   queue is over pause_above it posts no read; the send callback posts
 *   one again when the queue is back under resume_below. A peer that does
 *   not read is then not read from either, and this side's memory for it
 *   stays under send_queue_max.
 *
 *   Lingering: an owner done with the connection while the peer may still
 *   be reading (a GoAway, a draining server's last replies) has it read
 *   and drop everything until the peer closes, so the stream is never
 *   closed with the peer's bytes unread. Closing so makes the peer's
 *   kernel reset the connection, and nng 1.5.2's reader fails a read armed
 *   at that moment (EPOLLERR) without the bytes that came before the reset:
 *   the GoAway itself would be lost.
 *
 *   Ending: the first failure (a read, a write, the peer's close) sets
 *   ended and keeps its reason, under mu; sends fail from then on and no
 *   frame is handed out after the one under way. on_end is reported once,
 *   by the receive side (so it never races on_frame): a write that fails
 *   closes the stream, which fails the read posted, and its callback reports;
 *   one that fails while nothing is read (rx_idle: paused, or stopped by
 *   bad framing) reports itself. Shutdown and close set ended with
 *   reported already true: no on_end for the owner's own end.
 *
 * Who frees what
 *   No aio is freed, and the stream not closed, inside a callback of the
 *   connection: nng 1.5.2 touches an aio after its callback returns (a
 *   mutex inside it), and DESIGN.md records the crash freeing one there
 *   caused. Callbacks only mark the connection ended and tell the owner;
 *   dctx__conn_close, on a thread of the owner's, closes the stream, stops
 *   the receive aio and then the send aios, waits for the owner's threads
 *   still inside a send, and frees the aios, the stream, the queue, the
 *   writer's taken frames and batch. A read (or a fence) posted after its
 *   aio was stopped is refused by nng 1.5.2 without a callback, and
 *   stopping the fence's aio waits for its callback: so nothing runs once
 *   they are stopped. A failed write leaves its batch and the token where
 *   they are: close frees them. Frames are plain memory: the writer frees
 *   a batch once it is written.
 */
#include "conn.h"

#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/dctx.h>

#include "block_pool.h"
#include "context/clock.h"
#include "framing.h"
#include "rpc_impl.h"

/* The read buffer starts small (an idle connection reads hellos and
 * pings) and grows to RBUF_MAX the first time a read fills it. */
#define RBUF_FIRST (4 * 1024)
#define RBUF_MAX (64 * 1024)
#define AIO_IOVS 8 /* nng 1.5.2: an aio takes at most 8 iovs */
#define COALESCE_MAX (64 * 1024)
/* Idle: no write for this long. A frame-count test instead (frames queued
 * behind the last write) took 8% of the throughput of 64 callers. */
#define BUSY_GAP_NS 50000
#define INLINE_WRITES_MAX 4 /* batches one thread writes before the fence's callback goes on */

struct out_frame {
    struct out_frame *next;
    size_t len; /* header and body */
    bool seal;  /* the body is sealed as it goes into a batch */
    unsigned char bytes[];
};

/* A frame's memory, from the pool (block_pool.h). */
static size_t frame_size(size_t len)
{
    return sizeof(struct out_frame) + len;
}

struct dctx__conn {
    nng_stream *s;
    struct dctx__conn_options o; /* immutable */
    nng_aio *rx;                 /* the reads, with a callback */
    nng_aio *txi;                /* the writes, without one: waited for by whoever wrote */
    nng_aio *tx;                 /* the fence behind a write the stream could not take at once */

    /* The receive side: touched only by the receive callback. */
    struct dctx__frame_reader reader;
    unsigned char *rbuf;
    size_t rbuf_len; /* RBUF_FIRST, then RBUF_MAX; read under mu when a read is posted */

    pthread_mutex_t mu;
    pthread_cond_t flushed;         /* the queue emptied or the connection ended; CLOCK_MONOTONIC */
    struct out_frame *head, **tail; /* the queue; protected by mu */
    size_t queued_bytes;            /* queued or in the batch; protected by mu */
    bool writing;                   /* the write token is taken; protected by mu */
    int64_t idle_since_ns;          /* when the token was last given back; protected by mu */
    bool ended;                     /* protected by mu */
    bool closing;                   /* new frames refused, the queue drains; protected by mu */
    bool reported;                  /* on_end was called or is not owed; protected by mu */
    bool rx_idle;                   /* no read posted nor being handled; protected by mu */
    int end_code;                   /* the first failure's; protected by mu */
    char end_why[128];              /* protected by mu */
    atomic_bool ended_flag;         /* ended, for the receive loop's check per frame */
    atomic_bool discarding;         /* lingering: what is read is dropped unread */
    atomic_int busy;                /* owner's threads inside a call of ours */
    bool paused;                    /* no read posted: the queue is full; protected by mu */
    size_t pause_above, resume_below; /* immutable: the queue's marks */

    /* The token holder's: frames off the queue, and the batch under way. */
    struct out_frame *taken, **taken_tail;
    struct out_frame *batch;
    nng_iov iov[AIO_IOVS];
    unsigned n_iov;
    size_t batch_bytes; /* queued bytes the batch accounts for */
    unsigned batch_frames;
    unsigned char *coalesce; /* COALESCE_MAX bytes, made on first need */
    bool tx_is_fence;        /* tx waits for a write on txi, not one of its own */

    atomic_uint_fast64_t reads, frames_read, bytes_read, writes, frames_written, bytes_queued_max,
        pauses;
    atomic_uint_fast64_t sends_done; /* write operations that took bytes, short ones too */
};

static void count(atomic_uint_fast64_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* Mark the connection ended with a reason, unless it was; mu held. */
static void set_ended(struct dctx__conn *c, int code, const char *why, bool reported)
{
    if (c->ended)
        return;
    c->ended = true;
    c->reported = reported;
    c->end_code = code;
    snprintf(c->end_why, sizeof c->end_why, "%s", why);
    atomic_store_explicit(&c->ended_flag, true, memory_order_release);
}

/* Report the end to the owner if it is owed and not done; mu not held. */
static void report(struct dctx__conn *c)
{
    pthread_mutex_lock(&c->mu);
    bool due = c->ended && !c->reported;
    c->reported = c->reported || due;
    int code = c->end_code;
    char why[sizeof c->end_why];
    memcpy(why, c->end_why, sizeof why);
    pthread_mutex_unlock(&c->mu);
    if (due && c->o.on_end != NULL)
        c->o.on_end(c->o.owner, c, code, why);
}

/* End with a reason (a write failed, the owner aborts), and have the
 * receive side report it (or report here when nothing is being read). */
static void end_with(struct dctx__conn *c, int code, const char *why)
{
    pthread_mutex_lock(&c->mu);
    set_ended(c, code, why, false);
    pthread_cond_broadcast(&c->flushed); /* nothing more will go out */
    bool here = c->rx_idle;
    pthread_mutex_unlock(&c->mu);
    /* Closing the stream and canceling the read fail the read posted (none
     * is posted after ended: post_read_locked), and its callback reports; a
     * write failure leaves nothing worth reading. */
    nng_stream_close(c->s);
    if (here)
        report(c);
    else
        nng_aio_cancel(c->rx);
}

static void post_read_locked(struct dctx__conn *c);

/* ===== Sending ===== */

/* What a frame holds of the send queue's room: its memory (a pooled one,
 * the whole block), so the queue's bound is its memory. */
static size_t charge(const struct out_frame *f)
{
    return dctx__block_pooled(frame_size(f->len)) ? DCTX__BLOCK_BYTES : f->len;
}

static void free_frames(struct out_frame *f)
{
    while (f != NULL) {
        struct out_frame *next = f->next;
        dctx__block_free(f, frame_size(f->len));
        f = next;
    }
}

/* Move the queue onto the token holder's own list (taken), in order; mu
 * held, token taken. The batch is then built from taken without mu, so
 * senders queueing meanwhile never wait on a copy. */
static void take_queue(struct dctx__conn *c)
{
    if (c->head == NULL)
        return;
    *c->taken_tail = c->head;
    c->taken_tail = c->tail;
    c->head = NULL;
    c->tail = &c->head;
}

/* Take f off taken for the batch, sealing it first if it asks to be:
 * the token holder takes frames in the order they were queued, so they
 * are numbered in the order they go, and a frame refused or dropped
 * before it goes uses no number. Sealing here, not when queued, keeps
 * the queue's lock free of it (a 4 MiB frame takes milliseconds). */
static struct out_frame *take_frame(struct dctx__conn *c)
{
    struct out_frame *f = c->taken;
    c->taken = f->next;
    if (f->seal) {
        c->o.seal(c->o.owner, f->bytes + DCTX__FRAME_HEADER_BYTES,
                  f->len - DCTX__FRAME_HEADER_BYTES);
        f->seal = false;
    }
    return f;
}

/* Take frames off taken into a new batch; token held, mu not needed,
 * taken not empty. */
static void build_batch(struct dctx__conn *c)
{
    struct out_frame **last = &c->batch;
    c->n_iov = 0;
    c->batch_bytes = 0;
    c->batch_frames = 0;
    size_t coalesced = 0;
    while (c->taken != NULL && c->n_iov < AIO_IOVS) {
        struct out_frame *f = c->taken;
        bool last_iov = c->n_iov == AIO_IOVS - 1;
        if (last_iov && f->next != NULL && f->len <= COALESCE_MAX &&
            (c->coalesce != NULL || (c->coalesce = malloc(COALESCE_MAX)) != NULL)) {
            /* The eighth iov: as many of the frames left as fit, copied. */
            while (c->taken != NULL && coalesced + c->taken->len <= COALESCE_MAX) {
                f = take_frame(c);
                memcpy(c->coalesce + coalesced, f->bytes, f->len);
                coalesced += f->len;
                c->batch_bytes += charge(f);
                c->batch_frames++;
                *last = f;
                last = &f->next;
            }
            c->iov[c->n_iov++] = (nng_iov){.iov_buf = c->coalesce, .iov_len = coalesced};
            break;
        }
        take_frame(c);
        c->iov[c->n_iov++] = (nng_iov){.iov_buf = f->bytes, .iov_len = f->len};
        c->batch_bytes += charge(f);
        c->batch_frames++;
        *last = f;
        last = &f->next;
    }
    *last = NULL;
    if (c->taken == NULL)
        c->taken_tail = &c->taken;
}

/* Drop the first n bytes of the batch's iovs: what a short write wrote. */
static void advance(struct dctx__conn *c, size_t n)
{
    unsigned k = 0;
    while (k < c->n_iov && n >= c->iov[k].iov_len)
        n -= c->iov[k++].iov_len;
    memmove(c->iov, c->iov + k, (c->n_iov - k) * sizeof c->iov[0]);
    c->n_iov -= k;
    if (c->n_iov > 0) {
        c->iov[0].iov_buf = (char *)c->iov[0].iov_buf + n;
        c->iov[0].iov_len -= n;
    }
}

/* The write on aio is over: account for what it wrote. True if there is
 * more to write (the rest of a short write, or the next batch: the token
 * is kept); false if the token was given back or the connection ended. */
static bool wrote(struct dctx__conn *c, nng_aio *aio)
{
    int rv = nng_aio_result(aio);
    if (rv != 0) { /* nng's words say why: a TLS handshake refused, say */
        char why[128];
        snprintf(why, sizeof why, "connection lost: a write failed (%s)", nng_strerror(rv));
        end_with(c, DCTX_UNAVAILABLE, why);
        return false; /* close frees the batch */
    }
    count(&c->sends_done, 1); /* whole or short: bytes went out */
    advance(c, nng_aio_count(aio));
    if (c->n_iov > 0)
        return true; /* the rest of a short write */
    count(&c->writes, 1);
    count(&c->frames_written, c->batch_frames);
    free_frames(c->batch);
    c->batch = NULL;
    pthread_mutex_lock(&c->mu);
    c->queued_bytes -= c->batch_bytes;
    bool more = (c->taken != NULL || c->head != NULL) && !c->ended;
    if (more)
        take_queue(c);
    else
        c->writing = false;
    if (!c->writing) {
        c->idle_since_ns = dctx_now();
        pthread_cond_broadcast(&c->flushed); /* a close after flush waits for this */
    }
    if (c->paused && !c->ended && c->queued_bytes <= c->resume_below) {
        c->paused = false;
        c->rx_idle = false;
        post_read_locked(c); /* the receive aio is idle while paused */
    }
    pthread_mutex_unlock(&c->mu);
    if (more)
        build_batch(c);
    return more;
}

/* Write the batch, token held, mu not held (see Send): on the writer's
 * thread if inline_ok, else on tx, whose callback goes on. */
static void write_batch(struct dctx__conn *c, bool inline_ok)
{
    for (int round = 0; inline_ok && round < INLINE_WRITES_MAX; round++) {
        nng_aio_set_iov(c->txi, c->n_iov, c->iov);
        nng_stream_send(c->s, c->txi);
        /* Over unless nothing was written and no error came: nng's streams
         * finish a send with what one write took, or leave it queued whole
         * (the socket is full). Both are read while nng's poller may be
         * finishing it: each is a word nng sets once, and a stale "queued"
         * only costs a fence that passes at once. */
        if (nng_aio_count(c->txi) == 0 && nng_aio_result(c->txi) == 0) {
            /* The fence: a zero-byte send queued behind the write (nng
             * writes a stream's sends in order); its callback runs once
             * the write is over. */
            c->tx_is_fence = true;
            nng_iov none = {.iov_buf = c->iov[0].iov_buf, .iov_len = 0};
            nng_aio_set_iov(c->tx, 1, &none);
            nng_stream_send(c->s, c->tx);
            return;
        }
        nng_aio_wait(c->txi); /* over, or being finished by nng's poller */
        if (!wrote(c, c->txi))
            return;
    }
    c->tx_is_fence = false;
    nng_aio_set_iov(c->tx, c->n_iov, c->iov);
    nng_stream_send(c->s, c->tx);
}

static void tx_done(void *arg)
{
    struct dctx__conn *c = arg;
    bool more;
    bool fence = c->tx_is_fence;
    if (fence && nng_aio_result(c->tx) == 0) {
        nng_aio_wait(c->txi); /* over: it was ahead of the fence */
        more = wrote(c, c->txi);
    } else {
        more = wrote(c, c->tx); /* its write, or the fence's failure */
    }
    /* On nng's thread already, so writing here adds no hop; but after a
     * fence the socket was full: the next batch goes on tx, not as an
     * inline try that would only find it full again. */
    if (more)
        write_batch(c, !fence);
}

/* Queue f (made and filled by the caller) and start a write if none is
 * under way; f is freed when refused. */
static int enqueue(struct dctx__conn *c, struct out_frame *f, unsigned flags)
{
    size_t limit =
        c->o.send_queue_max + (flags & DCTX__CONN_CONTROL ? DCTX__CONN_CONTROL_RESERVE : 0);
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    if (c->ended || c->closing)
        rc = DCTX_UNAVAILABLE;
    else if (c->queued_bytes + charge(f) > limit)
        rc = DCTX_RESOURCE_EXHAUSTED;
    if (rc != 0) {
        pthread_mutex_unlock(&c->mu);
        free_frames(f);
        return rc;
    }
    f->seal = (flags & DCTX__CONN_SEAL) != 0; /* by the writer: build_batch */
    *c->tail = f;
    c->tail = &f->next;
    c->queued_bytes += charge(f);
    if (c->queued_bytes > atomic_load_explicit(&c->bytes_queued_max, memory_order_relaxed))
        atomic_store_explicit(&c->bytes_queued_max, c->queued_bytes, memory_order_relaxed);
    bool start = !c->writing;
    bool inline_ok = false;
    if (start) {
        c->writing = true;
        take_queue(c);
        inline_ok = dctx_now() - c->idle_since_ns > BUSY_GAP_NS;
    }
    pthread_mutex_unlock(&c->mu);
    if (start) {
        build_batch(c);
        write_batch(c, inline_ok);
    }
    return 0;
}

/* A frame of len bytes of body, its header written; NULL if no memory. */
static struct out_frame *new_frame(size_t len)
{
    size_t bytes = DCTX__FRAME_HEADER_BYTES + len;
    struct out_frame *f = dctx__block_alloc(frame_size(bytes));
    if (f != NULL) {
        f->next = NULL;
        f->len = bytes;
        dctx__frame_header((uint32_t)len, f->bytes);
    }
    return f;
}

static int send_inner(struct dctx__conn *c, const void *body, size_t len)
{
    if (len == 0 || len > UINT32_MAX)
        return DCTX_INVALID_ARGUMENT;
    struct out_frame *f = new_frame(len);
    if (f == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    memcpy(f->bytes + DCTX__FRAME_HEADER_BYTES, body, len);
    return enqueue(c, f, 0);
}

static int send_packed_inner(struct dctx__conn *c, size_t len, dctx__conn_pack_fn pack,
                             const void *arg, unsigned flags)
{
    if (len == 0 || len > UINT32_MAX)
        return DCTX_INVALID_ARGUMENT;
    struct out_frame *f = new_frame(len);
    if (f == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    pack(arg, f->bytes + DCTX__FRAME_HEADER_BYTES);
    return enqueue(c, f, flags);
}

/* The owner's threads in a call of the connection: close waits for them,
 * since a callback may have the connection closed (the reaper) while the
 * thread that started it, or sends on it, is still returning. */
static void enter(struct dctx__conn *c)
{
    atomic_fetch_add_explicit(&c->busy, 1, memory_order_acquire);
}

static void leave(struct dctx__conn *c)
{
    atomic_fetch_sub_explicit(&c->busy, 1, memory_order_release);
}

int dctx__conn_send(struct dctx__conn *c, const void *body, size_t len)
{
    enter(c);
    int rc = send_inner(c, body, len);
    leave(c);
    return rc;
}

int dctx__conn_send_packed(struct dctx__conn *c, size_t len, dctx__conn_pack_fn pack,
                           const void *arg, unsigned flags)
{
    enter(c);
    int rc = send_packed_inner(c, len, pack, arg, flags);
    leave(c);
    return rc;
}

/* ===== Receiving ===== */

/* Post a read; mu held. nng 1.5.2 takes a read on a stream closed a
 * moment before and never completes it (its ipc and tcp streams check for
 * a close when they read, not when a read is posted), so reads are posted
 * only under mu, where ended is decided: a write that fails either comes
 * before (no read is posted) or after (the read is out, and it cancels
 * it). nng runs no callback inside nng_stream_recv, so mu is not taken
 * twice. */
static void post_read_locked(struct dctx__conn *c)
{
    nng_iov iov = {.iov_buf = c->rbuf, .iov_len = c->rbuf_len};
    nng_aio_set_iov(c->rx, 1, &iov);
    nng_stream_recv(c->s, c->rx);
}

/* Read on, unless the connection ended (then report it) or its send queue
 * is over the pause mark (the send callback then resumes reading). filled:
 * the last read filled the buffer, so a larger one may pay (no frame
 * points into the old one once take_frames returned). */
static void read_on(struct dctx__conn *c, bool filled)
{
    pthread_mutex_lock(&c->mu);
    if (filled && c->rbuf_len < RBUF_MAX) {
        unsigned char *b = malloc(RBUF_MAX);
        if (b != NULL) { /* no memory: read on with the small one */
            free(c->rbuf);
            c->rbuf = b;
            c->rbuf_len = RBUF_MAX;
        }
    }
    bool post = !c->ended;
    if (post && c->o.pause_reads_when_full && c->queued_bytes > c->pause_above &&
        !atomic_load_explicit(&c->discarding, memory_order_relaxed)) {
        c->paused = true;
        count(&c->pauses, 1);
        post = false;
    }
    c->rx_idle = !post;
    if (post)
        post_read_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (!post)
        report(c);
}

/* Reading stops for good (bad framing); the connection can still send. */
static void stop_reading(struct dctx__conn *c, int code, const char *why)
{
    pthread_mutex_lock(&c->mu);
    c->rx_idle = true;
    if (c->o.on_bad_framing == NULL)
        set_ended(c, code, why, false);
    pthread_mutex_unlock(&c->mu);
    if (c->o.on_bad_framing != NULL)
        c->o.on_bad_framing(c->o.owner, c, code, why);
    report(c); /* an end owed already, or the one just set */
}

/* Hand out every whole frame of n bytes read; false once reading stops. */
static bool take_frames(struct dctx__conn *c, size_t n)
{
    const unsigned char *p = c->rbuf;
    for (;;) {
        if (atomic_load_explicit(&c->ended_flag, memory_order_acquire))
            return true; /* read_on reports it */
        if (atomic_load_explicit(&c->discarding, memory_order_relaxed))
            return true; /* lingering: the owner wants no more frames */
        const unsigned char *body;
        size_t len;
        switch (dctx__frame_reader_next(&c->reader, &p, &n, &body, &len)) {
        case DCTX__FRAME_READY:
            count(&c->frames_read, 1);
            /* body is in rbuf or the reader's block: ours, writable. */
            if (c->o.on_frame != NULL)
                c->o.on_frame(c->o.owner, c, (unsigned char *)body, len);
            continue;
        case DCTX__FRAME_NEED_MORE:
            return true;
        case DCTX__FRAME_TOO_BIG:
            stop_reading(c, DCTX_RESOURCE_EXHAUSTED, "frame longer than this side's limit");
            return false;
        case DCTX__FRAME_EMPTY:
            stop_reading(c, DCTX_INVALID_ARGUMENT, "frame of length 0");
            return false;
        case DCTX__FRAME_NO_MEMORY:
            stop_reading(c, DCTX_RESOURCE_EXHAUSTED, "no memory for a frame");
            return false;
        }
    }
}

static void got_bytes(void *arg)
{
    struct dctx__conn *c = arg;
    int rv = nng_aio_result(c->rx);
    if (rv != 0) {
        /* The peer closed (between frames, or in the middle of one) or the
         * stream failed; or a failed write canceled this read, and its
         * reason, kept first, stands. */
        bool clean = dctx__frame_reader_idle(&c->reader);
        bool closed = rv == NNG_ECLOSED || rv == NNG_ECONNSHUT || rv == NNG_ECONNRESET;
        char why[128];
        snprintf(why, sizeof why, "%s%s%s%s",
                 clean ? "connection closed by the peer" : "connection closed mid-frame",
                 closed ? "" : " (", closed ? "" : nng_strerror(rv), closed ? "" : ")");
        pthread_mutex_lock(&c->mu);
        set_ended(c, DCTX_UNAVAILABLE, why, false);
        c->rx_idle = true;
        pthread_mutex_unlock(&c->mu);
        report(c);
        return;
    }
    count(&c->reads, 1);
    size_t n = nng_aio_count(c->rx);
    count(&c->bytes_read, n);
    if (take_frames(c, n))
        read_on(c, n == c->rbuf_len);
}

/* ===== The connection ===== */

int dctx__conn_open(nng_stream *s, const struct dctx__conn_options *o, struct dctx__conn **out)
{
    *out = NULL;
    if (o->max_body == 0 || o->send_queue_max < DCTX__CONN_QUEUE_MIN(o->max_body)) {
        nng_stream_close(s);
        nng_stream_free(s);
        return DCTX_INVALID_ARGUMENT;
    }
    struct dctx__conn *c = calloc(1, sizeof *c);
    if (c == NULL || (c->rbuf = malloc(RBUF_FIRST)) == NULL)
        goto fail;
    if (nng_aio_alloc(&c->rx, got_bytes, c) != 0 || nng_aio_alloc(&c->tx, tx_done, c) != 0 ||
        nng_aio_alloc(&c->txi, NULL, NULL) != 0)
        goto fail;
    c->s = s;
    c->o = *o;
    c->tail = &c->head;
    c->taken_tail = &c->taken;
    c->rbuf_len = RBUF_FIRST;
    /* Over pause_above, one more read's frames still fit (QUEUE_MIN). */
    c->pause_above = o->send_queue_max - DCTX__CONN_QUEUE_MIN(o->max_body) / 2;
    c->resume_below = c->pause_above / 2;
    dctx__frame_reader_init(&c->reader, o->max_body);
    pthread_mutex_init(&c->mu, NULL);
    dctx__cond_init_monotonic(&c->flushed);
    nng_stream_set_bool(s, NNG_OPT_TCP_NODELAY, true); /* not for ipc: ignored */
    c->rx_idle = true;
    *out = c;
    return 0;
fail:
    if (c != NULL) {
        if (c->rx != NULL)
            nng_aio_free(c->rx);
        if (c->tx != NULL)
            nng_aio_free(c->tx);
        if (c->txi != NULL)
            nng_aio_free(c->txi);
        free(c->rbuf);
        free(c);
    }
    nng_stream_close(s);
    nng_stream_free(s);
    return DCTX_RESOURCE_EXHAUSTED;
}

static void start_inner(struct dctx__conn *c)
{
    pthread_mutex_lock(&c->mu);
    c->rx_idle = c->ended;
    if (!c->ended)
        post_read_locked(c);
    pthread_mutex_unlock(&c->mu);
}

void dctx__conn_set_max_body(struct dctx__conn *c, uint32_t max_body)
{
    c->reader.max_body = max_body < c->o.max_body ? max_body : c->o.max_body;
}

void dctx__conn_start(struct dctx__conn *c)
{
    enter(c);
    start_inner(c);
    leave(c);
}

bool dctx__conn_linger(struct dctx__conn *c)
{
    enter(c);
    pthread_mutex_lock(&c->mu);
    bool open = !c->ended;
    atomic_store_explicit(&c->discarding, true, memory_order_relaxed);
    if (c->rx_idle && open) { /* paused, or stopped by bad framing */
        c->paused = false;
        c->rx_idle = false;
        post_read_locked(c);
    }
    pthread_mutex_unlock(&c->mu);
    leave(c);
    return open;
}

void dctx__conn_abort(struct dctx__conn *c, int code, const char *why)
{
    enter(c);
    end_with(c, code, why);
    leave(c);
}

uint64_t dctx__conn_frames_read(struct dctx__conn *c)
{
    return atomic_load_explicit(&c->frames_read, memory_order_relaxed);
}

uint64_t dctx__conn_bytes_read(struct dctx__conn *c)
{
    return atomic_load_explicit(&c->bytes_read, memory_order_relaxed);
}

uint64_t dctx__conn_sends(struct dctx__conn *c)
{
    return atomic_load_explicit(&c->sends_done, memory_order_relaxed);
}

bool dctx__conn_paused(struct dctx__conn *c)
{
    pthread_mutex_lock(&c->mu);
    bool paused = c->paused;
    pthread_mutex_unlock(&c->mu);
    return paused;
}

void dctx__conn_shutdown(struct dctx__conn *c)
{
    pthread_mutex_lock(&c->mu);
    set_ended(c, DCTX_UNAVAILABLE, "shut down", true);
    c->reported = true; /* also when a failure came first and is still owed */
    pthread_mutex_unlock(&c->mu);
    nng_stream_close(c->s);
}

void dctx__conn_close(struct dctx__conn *c)
{
    if (c == NULL)
        return;
    dctx__conn_shutdown(c);
    nng_aio_stop(c->rx); /* first: its callback may start a send */
    nng_aio_stop(c->tx);
    nng_aio_stop(c->txi);
    while (atomic_load_explicit(&c->busy, memory_order_acquire) > 0)
        sched_yield();     /* an owner's thread returning from a call: no wait, no lock held */
    nng_stream_free(c->s); /* before the aios: as in dialer.c */
    nng_aio_free(c->rx);
    nng_aio_free(c->tx);
    nng_aio_free(c->txi);
    free_frames(c->batch);
    free_frames(c->taken);
    free_frames(c->head);
    free(c->coalesce);
    free(c->rbuf);
    dctx__frame_reader_fini(&c->reader);
    pthread_cond_destroy(&c->flushed);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

bool dctx__conn_close_after_flush(struct dctx__conn *c, int64_t timeout_ns)
{
    int64_t until = dctx__add_sat(dctx_now(), timeout_ns);
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    while (c->writing && !c->ended && dctx_now() < until)
        dctx__cond_wait_until(&c->flushed, &c->mu, until);
    bool flushed = !c->writing && c->head == NULL && c->taken == NULL;
    pthread_mutex_unlock(&c->mu);
    dctx__conn_close(c);
    return flushed;
}

void dctx__conn_stats_get(struct dctx__conn *c, struct dctx__conn_stats *out)
{
    out->reads = atomic_load(&c->reads);
    out->frames_read = atomic_load(&c->frames_read);
    out->writes = atomic_load(&c->writes);
    out->frames_written = atomic_load(&c->frames_written);
    out->bytes_queued_max = atomic_load(&c->bytes_queued_max);
    out->pauses = atomic_load(&c->pauses);
}
