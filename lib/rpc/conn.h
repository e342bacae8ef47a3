/*
 * conn.h - one connection of the session protocol (proto/PROTOCOL.md): an
 * nng stream carrying frames both ways. Frames that arrive are handed to
 * the owner as they are read; frames to send are queued and written
 * together. The protocol's meaning (hello, calls, pings) is the owner's;
 * this is framing, batching, bounds and who frees what. Never installed.
 *
 * Threads: the owner's callbacks run on nng's threads; on_frame,
 * on_bad_framing and on_end come from the receive side, one at a time
 * (on_end from the send side only while nothing is being read), and must
 * not block. dctx__conn_send and dctx__conn_shutdown may be called from
 * any thread, callbacks included. dctx__conn_close waits for the
 * callbacks and for owner threads still inside a call of the connection
 * (a callback may have it closed while the thread that started it is
 * returning): never call it from an nng callback (nng's few task threads
 * would wait on themselves) nor while holding a lock a callback takes; and
 * the owner starts no new call once the close began, since close frees.
 */
#ifndef DCTX_RPC_CONN_H
#define DCTX_RPC_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>

struct dctx__conn;

/* A whole frame's body, valid during the call: the connection's own
 * memory, which the owner may overwrite (a sealed frame opens in place). */
typedef void (*dctx__conn_frame_fn)(void *owner, struct dctx__conn *c, unsigned char *body,
                                    size_t len);

/* The connection ended (the peer closed it, or a read or write failed), or
 * the peer broke the framing: a status code and a message naming why. */
typedef void (*dctx__conn_end_fn)(void *owner, struct dctx__conn *c, int code, const char *why);

/* Seals a frame's body of len bytes in place, as the frame that goes
 * next: called by one thread at a time (the writer's), in the order
 * frames were queued, each frame once it is sure to be written. */
typedef void (*dctx__conn_seal_fn)(void *owner, unsigned char *body, size_t len);

struct dctx__conn_options {
    uint32_t max_body;     /* the largest frame body accepted from the peer */
    size_t send_queue_max; /* bytes of frames queued, unsent, at most; at least
                              DCTX__CONN_QUEUE_MIN(max_body) */
    /* Stop reading while the send queue is over its high mark, so that a
     * peer that does not read what it is sent cannot make this side queue
     * more (a server: its replies come only from what it reads). Never both
     * sides of a connection: each would wait for the other. */
    bool pause_reads_when_full;
    dctx__conn_frame_fn on_frame;
    /* Called once when the connection ends; no frame is handed out after
     * it. Not called for dctx__conn_shutdown or dctx__conn_close. */
    dctx__conn_end_fn on_end;
    /* The peer sent a length of 0 or over the limit: reading stops, but
     * the connection can still send (a last frame saying why) until the
     * owner shuts it down. NULL: such a peer ends it through on_end. */
    dctx__conn_end_fn on_bad_framing;
    /* Seals the frames sent with DCTX__CONN_SEAL (NULL: none are). */
    dctx__conn_seal_fn seal;
    void *owner;
};

/* Counters, for tests and stats; each read atomically. */
struct dctx__conn_stats {
    uint64_t reads, frames_read, writes, frames_written, bytes_queued_max, pauses;
};

/* The least send queue for a max_body: room for what one read can hand
 * out (a 64 KiB read's frames, or one frame gathered over reads) twice. */
#define DCTX__CONN_QUEUE_MIN(max_body) (2 * ((size_t)(max_body) + 4 + 64 * 1024))

/* dctx__conn_open makes a connection of s (it owns s from here, on failure
 * too) without reading yet: the owner records it, then calls
 * dctx__conn_start. Returns 0, DCTX_INVALID_ARGUMENT (max_body 0, or
 * send_queue_max under DCTX__CONN_QUEUE_MIN) or DCTX_RESOURCE_EXHAUSTED. */
int dctx__conn_open(nng_stream *s, const struct dctx__conn_options *o, struct dctx__conn **out);

/* dctx__conn_start posts the first read; callbacks may run from here on. */
void dctx__conn_start(struct dctx__conn *c);

/* dctx__conn_set_max_body sets the largest body read from here on (at
 * most the options' max_body): before start, or from on_frame. */
void dctx__conn_set_max_body(struct dctx__conn *c, uint32_t max_body);

/* dctx__conn_send queues a frame of len bytes of body (copied) and starts
 * a write if none is under way. Returns 0; DCTX_INVALID_ARGUMENT (len 0 or
 * over 2^32-1); DCTX_RESOURCE_EXHAUSTED (no memory, or the queue would
 * pass send_queue_max: the peer is not reading); DCTX_UNAVAILABLE (the
 * connection ended or was shut down). Never blocks. */
int dctx__conn_send(struct dctx__conn *c, const void *body, size_t len);

/* Writes the len bytes of a frame's body at out. */
typedef void (*dctx__conn_pack_fn)(const void *arg, unsigned char *out);

/* Bytes past send_queue_max that control frames (pongs, cancels, their
 * answers, a GoAway) may still take: they must get out when data cannot. */
#define DCTX__CONN_CONTROL_RESERVE (64 * 1024)

/* dctx__conn_send_packed's flags. */
#define DCTX__CONN_CONTROL 1u /* a control frame: it may use DCTX__CONN_CONTROL_RESERVE */
#define DCTX__CONN_SEAL 2u    /* seal the body (the options' seal) as it is written */

/* dctx__conn_send_packed is dctx__conn_send for a body that pack(arg, out)
 * writes straight into the queued frame (a protobuf message: no copy). */
int dctx__conn_send_packed(struct dctx__conn *c, size_t len, dctx__conn_pack_fn pack,
                           const void *arg, unsigned flags);

/* dctx__conn_shutdown ends the connection from any thread: sends fail from
 * here on, the stream is closed (what is queued is dropped), no frame is
 * handed out after the one under way, on_end is not called. The memory
 * stays until dctx__conn_close. */
void dctx__conn_shutdown(struct dctx__conn *c);

/* dctx__conn_linger: the owner wants no more frames but the peer may still
 * be reading what it was sent. From here on what arrives is read and
 * dropped (reading resumes if it was paused or stopped by bad framing), so
 * that the peer's close reaches on_end and the stream is not closed with
 * the peer's bytes unread (conn.c, Lingering). Returns false if the
 * connection ended already (nothing to wait for). Any thread. */
bool dctx__conn_linger(struct dctx__conn *c);

/* dctx__conn_abort ends the connection from any thread with code and why
 * (a peer that stopped answering): the stream is closed, and on_end
 * reports it, from the receive side, unless an end came first. */
void dctx__conn_abort(struct dctx__conn *c, int code, const char *why);

/* Signs of the peer's life: whole frames and bytes read, and write
 * operations that took some, so far; and whether reading is paused (the
 * peer does not read what this side sends: pause_reads_when_full). A write
 * taking bytes says little by itself (a kernel or TLS buffer takes them for
 * a peer that is gone) but while reads are paused it is all there is. */
uint64_t dctx__conn_frames_read(struct dctx__conn *c);
uint64_t dctx__conn_bytes_read(struct dctx__conn *c);
uint64_t dctx__conn_sends(struct dctx__conn *c);
bool dctx__conn_paused(struct dctx__conn *c);

/* dctx__conn_close shuts the connection down, waits for its callbacks to
 * return, and frees it with every frame still queued (see Threads). NULL
 * is fine. */
void dctx__conn_close(struct dctx__conn *c);

/* dctx__conn_close_after_flush refuses new frames, waits up to timeout_ns
 * for those queued to be written (a last GoAway, a draining server's last
 * replies), then closes as dctx__conn_close. Returns true if all went out
 * before the close. The rules of dctx__conn_close apply. */
bool dctx__conn_close_after_flush(struct dctx__conn *c, int64_t timeout_ns);

void dctx__conn_stats_get(struct dctx__conn *c, struct dctx__conn_stats *out);

#endif /* DCTX_RPC_CONN_H */
