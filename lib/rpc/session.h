/*
 * session.h - the session protocol's connection-level rules
 * (proto/PROTOCOL.md, sections 3, 4 and 7) on top of a connection
 * (conn.h): the hellos that open it, Frame messages packed and unpacked,
 * pings answered at once, and every protocol error answered with a GoAway
 * and the end of the connection. Calls are the owner's: a client or a
 * server gets each call-level frame (call, reply, cancel, cancel_ack,
 * drain, pong, goaway) with its call id. Never installed.
 *
 * Threads are conn.h's: callbacks run on nng's threads, on_frame one at a
 * time per session; dctx__session_send from any thread until
 * dctx__session_close, which must not be called from a callback.
 */
#ifndef DCTX_RPC_SESSION_H
#define DCTX_RPC_SESSION_H

#include <stdbool.h>
#include <stdint.h>

#include <nng/nng.h>

#include <dctx/identity.h>

#include "dctx.pb-c.h"

#define DCTX__SESSION_VERSION 1
/* The least max_frame_bytes a peer may announce, and the most a first
 * frame (the hello) may have before the sender knows the receiver's. */
#define DCTX__SESSION_HELLO_BYTES_MAX 4096
#define DCTX__SESSION_NAME_BYTES_MAX 256
/* Bytes per second: a frame arriving slower than this is no sign of life
 * to the keepalive (a peer trickling a frame to hold a connection). */
#define DCTX__SESSION_MIN_RATE 256

struct dctx__session;

/* What the peer's hello said. */
struct dctx__session_peer {
    uint32_t version, max_frame_bytes, max_calls;
    char name[DCTX__SESSION_NAME_BYTES_MAX + 1];
    bool authenticated; /* it proved key (a session with keys) */
    unsigned char key[DCTX_PUBLIC_KEY_BYTES];
    unsigned cipher; /* the AEAD frames are sealed with (handshake.h); 0: none */
};

/* The hellos are exchanged (and, with keys, the proofs checked): calls
 * may go. */
typedef void (*dctx__session_ready_fn)(void *owner, struct dctx__session *s,
                                       const struct dctx__session_peer *peer);
/* A call-level frame (its kind checked for this side, its call id set where
 * the kind needs one). Return true to keep f (free it with dctx__frame_free
 * when done: a server hands a call to a worker so), false to have it freed
 * when the callback returns. */
typedef bool (*dctx__session_frame_fn)(void *owner, struct dctx__session *s, Dctx__Wire__Frame *f);
/* The session ended, once: the peer closed it or went away (a GoAway), the
 * stream failed, or a protocol error (a GoAway was sent to say which). */
typedef void (*dctx__session_end_fn)(void *owner, struct dctx__session *s, int code,
                                     const char *why);

struct dctx__session_options {
    bool server;              /* the side that accepted */
    uint32_t max_frame_bytes; /* the largest body this side accepts (>= 4096) */
    uint32_t max_calls;       /* a server's calls at once per connection */
    const char *name;         /* this side's name for the peer's logs; NULL: none */
    size_t send_queue_max;    /* 0: 4 * max_frame_bytes, at least conn.h's least */
    /* Keepalive (0: none). Every keepalive_ms the session looks whether it
     * read anything since its last look; if not, it pings, and if nothing
     * is read within ping_timeout_ms of the ping, the session ends ("peer
     * stopped answering"). A frame trickling in under
     * DCTX__SESSION_MIN_RATE counts as nothing. So a peer that is gone
     * without a word, or stalls inside a frame, is found within
     * 2 * keepalive_ms + ping_timeout_ms. Before the peer's hello, the
     * first silent look ends it. ping_timeout_ms 0: keepalive_ms. */
    int32_t keepalive_ms, ping_timeout_ms;
    /* A server's limit on its callers' pings (0: none): a ping less than
     * this after the one before is a strike, and the third strike in a row
     * (a ping at the pace allowed clears them) ends the session with a
     * GoAway RESOURCE_EXHAUSTED "too many pings". */
    int32_t min_ping_interval_ms;
    /* Keys (proto/PROTOCOL.md, section 9): a server with an identity
     * admits only peers that prove one; a client with server_key proves
     * its identity (required then) and requires the server to prove that
     * key (DCTX_PUBLIC_KEY_BYTES). Every frame after the hellos is then
     * sealed. A failed handshake ends the session with
     * DCTX_UNAUTHENTICATED. NULL: no keys. Both must outlive the session. */
    const dctx_identity *identity;
    const unsigned char *server_key;
    dctx__session_ready_fn on_ready;
    dctx__session_frame_fn on_frame;
    dctx__session_end_fn on_end;
    void *owner;
};

/* dctx__session_open makes a session of st (it owns st from here, on
 * failure too) without any I/O: the owner records it, then calls
 * dctx__session_start. Returns 0, DCTX_INVALID_ARGUMENT (max_frame_bytes
 * under 4096) or DCTX_RESOURCE_EXHAUSTED. */
int dctx__session_open(nng_stream *st, const struct dctx__session_options *o,
                       struct dctx__session **out);

/* dctx__session_start begins: a client sends its hello; both read. The
 * callbacks may run from here on (on_end too, if the peer is gone). */
void dctx__session_start(struct dctx__session *s);

/* dctx__session_send packs f and queues it. Returns 0; DCTX_UNAVAILABLE
 * (not ready, or ended); DCTX_RESOURCE_EXHAUSTED (f, sealed if the
 * session seals, is larger than the peer's max_frame_bytes: nothing is
 * sent and the session goes on; or the send queue is full, or no memory).
 * Never blocks. */
int dctx__session_send(struct dctx__session *s, const Dctx__Wire__Frame *f);

/* dctx__session_oversize: f's size on the wire if that is what refused
 * it (over the peer's limit), else 0 (a full queue). For the message
 * after DCTX_RESOURCE_EXHAUSTED: f is sized only then, never on the way
 * out. */
size_t dctx__session_oversize(struct dctx__session *s, const Dctx__Wire__Frame *f);

/* dctx__session_ping sends a ping with data; the peer's pong reaches
 * on_frame. Returns what dctx__session_send does. */
int dctx__session_ping(struct dctx__session *s, uint64_t data);

/* dctx__session_fail: the owner found a protocol error in a frame it was
 * handed (PROTOCOL.md section 7, a call id already in flight, say): a
 * GoAway with code and why goes to the peer, it is counted in
 * dctx__session_bad_frames, and the session ends (on_end, once). From
 * on_frame only. */
void dctx__session_fail(struct dctx__session *s, int code, const char *why);

/* dctx__session_peer returns the peer's hello once ready, else NULL. */
const struct dctx__session_peer *dctx__session_peer_hello(struct dctx__session *s);

/* dctx__session_shutdown ends the session from any thread, callbacks
 * included: sends fail, the stream is closed, on_end is not called; the
 * memory stays until dctx__session_close. */
void dctx__session_shutdown(struct dctx__session *s);

/* dctx__session_close ends the session and frees it (conn.h's close, with
 * its rules: not from an nng callback); on_end is not called for it. NULL
 * is fine. */
void dctx__session_close(struct dctx__session *s);

/* dctx__session_linger: the owner is done with s, but the peer may still
 * be reading what it was sent (a GoAway: the last frame of a protocol
 * error or of a drain). Everything read from here on is dropped, and
 * done(arg) is called once, from an nng thread, when the peer has closed
 * its end or at until_ns, whichever comes first: the owner closes s then
 * (from another thread: done runs in a callback). Closing before the peer
 * does would make nng 1.5.2 lose the GoAway on the peer's side (conn.c).
 * Returns false, and done is not called, when there is nothing to wait
 * for (the connection ended already, or no memory for a timer): close
 * now. From the thread that closes s, once. */
bool dctx__session_linger(struct dctx__session *s, int64_t until_ns, void (*done)(void *arg),
                          void *arg);

/* dctx__session_close_after_flush is dctx__session_close once what is
 * queued went out, or after timeout_ns (conn.h); true if it all went. */
bool dctx__session_close_after_flush(struct dctx__session *s, int64_t timeout_ns);

/* Protocol errors this session found and answered with a GoAway. */
uint64_t dctx__session_bad_frames(struct dctx__session *s);

#endif /* DCTX_RPC_SESSION_H */
