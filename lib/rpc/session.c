/*
 * session.c - hellos, Frame messages, pings and protocol errors on a
 * connection (session.h; proto/PROTOCOL.md).
 *
 * Design
 *   States: HELLO (the client has sent its hello; the server waits for
 *   it) -> READY (both hellos seen: ready is set, with release, after the
 *   peer's hello is stored) -> ENDED (set once: the connection ended, the
 *   peer sent a GoAway, or this side found a protocol error and sent one).
 *   Frames are read on the connection's receive callback, one at a time,
 *   so hello_seen and the peer's hello need no lock; senders on other
 *   threads read the peer's limits only after an acquire load of ready.
 *
 *   Every frame is checked before the owner sees it: it parses, its kind
 *   is known, it is a kind this side may receive, it comes after the
 *   hello, and a call-level kind has a call id. Anything else is a
 *   protocol error: a GoAway naming it goes to the peer, the session ends
 *   (on_end, once), and the frames after it are dropped unread. The
 *   connection stays open until the owner closes the session.
 *
 *   Lingering: an owner done with a session whose peer may still be
 *   reading (it was sent a GoAway) closes it once the peer has closed its
 *   end, or at a deadline: the connection reads and drops until then
 *   (conn.c, Lingering), and the first of the peer's close (conn_ended)
 *   and the timer claims the linger and calls the owner back.
 *
 *   Keepalive: a timer (one aio per session, nng's sleep) checks every
 *   keepalive_ms whether anything was read since its last check (or,
 *   while reads are paused for a caller that reads slowly, whether its
 *   replies still go out); silence
 *   gets a ping (the peer answers it from its reading side, so any frame
 *   will do), and silence after the ping, or before the peer's hello,
 *   aborts the connection, which its receive side then reports. A timer
 *   and not a read timeout: nng 1.5.2's TLS layer never times out a read
 *   posted after the peer closed.
 */
#include "session.h"

#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/dctx.h>

#include <sodium.h>

#include "conn.h"
#include "frame.h"
#include "handshake.h"
#include "rpc_impl.h"

struct dctx__session {
    struct dctx__conn *conn;
    struct dctx__session_options o; /* immutable; o.name points at name */
    char name[DCTX__SESSION_NAME_BYTES_MAX + 1];
    bool hello_seen;         /* the receive callback's */
    nng_aio *ka;             /* the keepalive timer; NULL without one */
    int64_t ping_sent_ns;    /* a keepalive ping unanswered since; 0: none; the timer's */
    int64_t last_ping_rx_ns; /* when the peer's last ping came; the receive side's */
    int ping_strikes;        /* its pings in a row under the minimum interval; the receive side's */
    /* The connection's counts at the last tick, and the time since: the timer's. */
    uint64_t last_frames, last_bytes, last_sends;
    int32_t window_ms;
    struct dctx__session_peer peer; /* written before ready */
    atomic_bool ready, ended;
    atomic_int busy;   /* owner's threads inside a call of ours: close waits for them */
    nng_aio *lt;       /* the linger's timer; NULL until it lingers */
    atomic_int linger; /* LINGER_* */
    void (*linger_done)(void *arg); /* written before linger is LINGER_WAITING */
    void *linger_arg;
    atomic_uint_fast64_t bad_frames;
    /* Keys. hs lives from the first hello to the last proof checked, on
     * the receive side (a client makes it before its hello). sealing is
     * set on the receive side before any other thread sends (before
     * ready): every frame queued after it is sealed. tx is used by the
     * connection's writer (seal_frame, one thread at a time), rx on the
     * receive side only. */
    struct dctx__handshake *hs;
    bool sealing;
    bool awaiting_auth;             /* a server: the client's proof is the next frame */
    struct dctx__seal_key *tx, *rx; /* one block, made with hs */
};

/* ===== Sending ===== */

static void pack_frame(const void *arg, unsigned char *out)
{
    dctx__wire__frame__pack(arg, out);
}

static void seal_frame(void *owner, unsigned char *body, size_t len)
{
    struct dctx__session *s = owner;
    dctx__seal(s->tx, body, len - DCTX__SEAL_TAG_BYTES);
}

/* f's body on the wire: sealed frames carry a tag. */
static size_t wire_size(const struct dctx__session *s, const Dctx__Wire__Frame *f)
{
    return dctx__wire__frame__get_packed_size(f) + (s->sealing ? DCTX__SEAL_TAG_BYTES : 0);
}

/* Queue f, size bytes on the wire. Calls, replies and stream messages are
 * data; every other kind is control: it may use the send queue's reserve,
 * so a cancel or a pong gets out when data cannot. */
static int send_sized(struct dctx__session *s, const Dctx__Wire__Frame *f, size_t size)
{
    bool control = f->body_case != DCTX__WIRE__FRAME__BODY_CALL &&
                   f->body_case != DCTX__WIRE__FRAME__BODY_REPLY &&
                   f->body_case != DCTX__WIRE__FRAME__BODY_MESSAGE;
    unsigned flags = (control ? DCTX__CONN_CONTROL : 0) | (s->sealing ? DCTX__CONN_SEAL : 0);
    return dctx__conn_send_packed(s->conn, size, pack_frame, f, flags);
}

static int send_frame(struct dctx__session *s, const Dctx__Wire__Frame *f)
{
    return send_sized(s, f, wire_size(s, f));
}

/* The frame is sized once: the owners ask here whether it fits. */
static int session_send(struct dctx__session *s, const Dctx__Wire__Frame *f)
{
    if (!atomic_load_explicit(&s->ready, memory_order_acquire) || atomic_load(&s->ended))
        return DCTX_UNAVAILABLE;
    size_t size = wire_size(s, f);
    if (size > s->peer.max_frame_bytes)
        return DCTX_RESOURCE_EXHAUSTED;
    return send_sized(s, f, size);
}

size_t dctx__session_oversize(struct dctx__session *s, const Dctx__Wire__Frame *f)
{
    if (!atomic_load_explicit(&s->ready, memory_order_acquire))
        return 0;
    size_t size = wire_size(s, f);
    return size > s->peer.max_frame_bytes ? size : 0;
}

static int session_ping(struct dctx__session *s, uint64_t data)
{
    Dctx__Wire__Ping p = DCTX__WIRE__PING__INIT;
    p.has_data = 1;
    p.data = data;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_PING;
    f.ping = &p;
    return session_send(s, &f);
}

/* This side's hello as the transcript sees it: what send_hello sends. */
static struct dctx__hello_view own_view(const struct dctx__session *s)
{
    return (struct dctx__hello_view){.version = DCTX__SESSION_VERSION,
                                     .max_frame_bytes = s->o.max_frame_bytes,
                                     .max_calls = s->o.server ? s->o.max_calls : 0,
                                     .name = s->name,
                                     .name_len = strlen(s->name),
                                     .kx_public = s->hs->kx_public,
                                     .ciphers = dctx__ciphers_supported()};
}

/* The peer's hello as the transcript sees it (its kx_public checked). */
static struct dctx__hello_view peer_view(const Dctx__Wire__Hello *h)
{
    const char *name = h->name != NULL ? h->name : "";
    return (struct dctx__hello_view){.version = h->version,
                                     .max_frame_bytes = h->max_frame_bytes,
                                     .max_calls = h->has_max_calls ? h->max_calls : 0,
                                     .name = name,
                                     .name_len = strlen(name),
                                     .kx_public = h->kx_public.data,
                                     .ciphers = h->has_ciphers ? h->ciphers : 0};
}

/* sealed_identity: a server's hello's proof, or NULL. */
static int send_hello(struct dctx__session *s, const unsigned char *sealed_identity)
{
    Dctx__Wire__Hello h = DCTX__WIRE__HELLO__INIT;
    h.has_version = 1;
    h.version = DCTX__SESSION_VERSION;
    h.has_max_frame_bytes = 1;
    h.max_frame_bytes = s->o.max_frame_bytes;
    if (s->o.server) {
        h.has_max_calls = 1;
        h.max_calls = s->o.max_calls;
    }
    h.name = s->name[0] != '\0' ? s->name : NULL;
    if (s->hs != NULL) {
        h.has_kx_public = 1;
        h.kx_public.data = s->hs->kx_public;
        h.kx_public.len = DCTX__KX_BYTES;
        h.has_ciphers = 1;
        h.ciphers = dctx__ciphers_supported();
    }
    if (sealed_identity != NULL) {
        h.has_sealed_identity = 1;
        h.sealed_identity.data = (uint8_t *)sealed_identity;
        h.sealed_identity.len = DCTX__SEALED_IDENTITY_BYTES;
    }
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_HELLO;
    f.hello = &h;
    return send_frame(s, &f);
}

static void enter(struct dctx__session *s)
{
    atomic_fetch_add_explicit(&s->busy, 1, memory_order_acquire);
}

static void leave(struct dctx__session *s)
{
    atomic_fetch_sub_explicit(&s->busy, 1, memory_order_release);
}

int dctx__session_send(struct dctx__session *s, const Dctx__Wire__Frame *f)
{
    enter(s);
    int rc = session_send(s, f);
    leave(s);
    return rc;
}

int dctx__session_ping(struct dctx__session *s, uint64_t data)
{
    enter(s);
    int rc = session_ping(s, data);
    leave(s);
    return rc;
}

/* Wait for the owner's threads still returning from a call of ours. */
static void drain_callers(struct dctx__session *s)
{
    while (atomic_load_explicit(&s->busy, memory_order_acquire) > 0)
        sched_yield();
}

/* ===== Ending ===== */

static void end(struct dctx__session *s, int code, const char *why)
{
    if (atomic_exchange(&s->ended, true))
        return;
    if (s->o.on_end != NULL)
        s->o.on_end(s->o.owner, s, code, why);
}

/* A protocol error: tell the peer why with a GoAway, then end. */
static void protocol_error(struct dctx__session *s, int code, const char *fmt, ...)
    DCTX_PRINTF(3, 4);

/* Send g (best effort: the peer may be gone), count a bad frame, end. */
static void goaway_and_end(struct dctx__session *s, Dctx__Wire__GoAway *g)
{
    atomic_fetch_add_explicit(&s->bad_frames, 1, memory_order_relaxed);
    if (!atomic_load(&s->ended)) {
        Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
        f.body_case = DCTX__WIRE__FRAME__BODY_GOAWAY;
        f.goaway = g;
        (void)send_frame(s, &f);
    }
    end(s, (int)g->code, g->message);
}

static void protocol_error(struct dctx__session *s, int code, const char *fmt, ...)
{
    char why[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    Dctx__Wire__GoAway g = DCTX__WIRE__GO_AWAY__INIT;
    g.has_code = 1;
    g.code = (uint32_t)code;
    g.message = why;
    goaway_and_end(s, &g);
}

void dctx__session_fail(struct dctx__session *s, int code, const char *why)
{
    protocol_error(s, code, "%s", why);
}

enum { LINGER_NONE, LINGER_WAITING, LINGER_OVER };

/* The linger ends once, by whichever comes first: the peer's close or the
 * timer. True for the one that ends it. */
static bool linger_claim(struct dctx__session *s)
{
    int waiting = LINGER_WAITING;
    return atomic_compare_exchange_strong(&s->linger, &waiting, LINGER_OVER);
}

static void linger_tick(void *arg)
{
    struct dctx__session *s = arg;
    if (nng_aio_result(s->lt) == 0 && linger_claim(s)) /* not when close stops it */
        s->linger_done(s->linger_arg);
}

static void conn_ended(void *owner, struct dctx__conn *c, int code, const char *why)
{
    (void)c;
    struct dctx__session *s = owner;
    end(s, code, why);
    if (linger_claim(s))
        s->linger_done(s->linger_arg);
}

/* A length of 0 or over the limit: a protocol error, answered while the
 * connection can still send. Before the hello the limit is the hello's. */
static void bad_framing(void *owner, struct dctx__conn *c, int code, const char *why)
{
    (void)c;
    struct dctx__session *s = owner;
    if (!s->hello_seen && code == DCTX_RESOURCE_EXHAUSTED)
        protocol_error(s, code, "first frame longer than %d bytes: a hello has at most %d",
                       DCTX__SESSION_HELLO_BYTES_MAX, DCTX__SESSION_HELLO_BYTES_MAX);
    else
        protocol_error(s, code, "%s", why);
}

/* ===== The handshake (PROTOCOL.md, section 9) ===== */

static void handshake_over(struct dctx__session *s)
{
    if (s->hs != NULL) {
        dctx__handshake_wipe(s->hs);
        free(s->hs);
        s->hs = NULL;
    }
}

/* A handshake that fails ends the session UNAUTHENTICATED. A server says
 * why in a GoAway (sealed once it seals); a client only closes: the
 * server awaits a sealed frame, and would take a GoAway in the clear for
 * a forged one. */
static void handshake_fail(struct dctx__session *s, const char *fmt, ...) DCTX_PRINTF(2, 3);

static void handshake_fail(struct dctx__session *s, const char *fmt, ...)
{
    char why[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (s->o.server)
        protocol_error(s, DCTX_UNAUTHENTICATED, "%s", why);
    else
        end(s, DCTX_UNAUTHENTICATED, why);
}

/* The handshake's state and the two directions' keys; false: no memory
 * (the session ends). */
static bool handshake_alloc(struct dctx__session *s)
{
    s->hs = malloc(sizeof *s->hs);
    s->tx = aligned_alloc(_Alignof(struct dctx__seal_key), 2 * sizeof *s->tx);
    if (s->hs == NULL || s->tx == NULL) {
        end(s, DCTX_RESOURCE_EXHAUSTED, "no memory for the handshake");
        return false;
    }
    s->rx = s->tx + 1;
    dctx__handshake_begin(s->hs);
    return true;
}

/* The AEAD for a peer's hello: the fastest both offer (a hello that names
 * none offers ChaCha20-Poly1305); 0, and the session ends, if none. */
static unsigned choose_cipher(struct dctx__session *s, const Dctx__Wire__Hello *h)
{
    unsigned c = dctx__cipher_choose(dctx__ciphers_supported(),
                                     h->has_ciphers ? h->ciphers : DCTX__CIPHER_CHACHA20_POLY1305);
    if (c == 0)
        handshake_fail(s, "no cipher in common (the peer offers 0x%x)", h->ciphers);
    return c;
}

static bool kx_given(const Dctx__Wire__Hello *h)
{
    return h->has_kx_public && h->kx_public.len == DCTX__KX_BYTES;
}

/* A server with an identity, at the client's hello: exchange keys and
 * seal its proof (its key and its signature of the transcript) into
 * sealed (DCTX__SEALED_IDENTITY_BYTES). */
static bool server_prove(struct dctx__session *s, const Dctx__Wire__Hello *h, unsigned char *sealed)
{
    if (!kx_given(h)) {
        handshake_fail(s, "this server admits only peers with keys: give the channel its own key "
                          "and the server's public key");
        return false;
    }
    unsigned cipher = choose_cipher(s, h);
    if (cipher == 0 || !handshake_alloc(s))
        return false;
    struct dctx__hello_view client = peer_view(h), server = own_view(s);
    dctx__handshake_transcript(s->hs, &client, &server);
    if (!dctx__handshake_keys(s->hs, true, h->kx_public.data, cipher, s->tx, s->rx)) {
        handshake_fail(s, "the client's kx_public is not a usable key");
        return false;
    }
    dctx_identity_public_key(s->o.identity, sealed);
    dctx__handshake_sign(s->hs, true, s->o.identity, sealed + DCTX_PUBLIC_KEY_BYTES);
    dctx__seal(s->tx, sealed, DCTX_PUBLIC_KEY_BYTES + DCTX__SIGNATURE_BYTES);
    return true;
}

/* A client with keys, at the server's hello: check the server's proof and
 * send its own, the first sealed frame. */
static bool client_check_and_prove(struct dctx__session *s, const Dctx__Wire__Hello *h)
{
    if (!kx_given(h) || !h->has_sealed_identity ||
        h->sealed_identity.len != DCTX__SEALED_IDENTITY_BYTES) {
        char want[DCTX_PUBLIC_KEY_TEXT_BYTES];
        dctx_public_key_text(s->o.server_key, want);
        handshake_fail(s, "the server proved no identity (it has no key), not %s", want);
        return false;
    }
    unsigned cipher = choose_cipher(s, h);
    if (cipher == 0)
        return false;
    struct dctx__hello_view client = own_view(s), server = peer_view(h);
    dctx__handshake_transcript(s->hs, &client, &server);
    unsigned char proof[DCTX_PUBLIC_KEY_BYTES + DCTX__SIGNATURE_BYTES];
    if (!dctx__handshake_keys(s->hs, false, h->kx_public.data, cipher, s->tx, s->rx) ||
        !dctx__open(s->rx, h->sealed_identity.data, h->sealed_identity.len, proof)) {
        handshake_fail(s, "the server's proof of identity does not open");
        return false;
    }
    if (sodium_memcmp(proof, s->o.server_key, DCTX_PUBLIC_KEY_BYTES) != 0) {
        char got[DCTX_PUBLIC_KEY_TEXT_BYTES];
        dctx_public_key_text(proof, got);
        handshake_fail(s, "the server is %s, not the key expected", got);
        return false;
    }
    if (!dctx__handshake_verify(s->hs, true, proof, proof + DCTX_PUBLIC_KEY_BYTES)) {
        handshake_fail(s, "the server's signature does not verify");
        return false;
    }
    s->peer.authenticated = true;
    memcpy(s->peer.key, proof, DCTX_PUBLIC_KEY_BYTES);
    s->peer.cipher = s->rx->cipher;
    s->sealing = true;
    Dctx__Wire__Auth a = DCTX__WIRE__AUTH__INIT;
    unsigned char key[DCTX_PUBLIC_KEY_BYTES], sig[DCTX__SIGNATURE_BYTES];
    dctx_identity_public_key(s->o.identity, key);
    dctx__handshake_sign(s->hs, false, s->o.identity, sig);
    handshake_over(s);
    a.has_public_key = 1;
    a.public_key.data = key;
    a.public_key.len = sizeof key;
    a.has_signature = 1;
    a.signature.data = sig;
    a.signature.len = sizeof sig;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_AUTH;
    f.auth = &a;
    if (send_frame(s, &f) != 0) {
        end(s, DCTX_RESOURCE_EXHAUSTED, "no memory for the proof of identity");
        return false;
    }
    return true;
}

static void become_ready(struct dctx__session *s)
{
    atomic_store_explicit(&s->ready, true, memory_order_release);
    if (s->o.on_ready != NULL)
        s->o.on_ready(s->o.owner, s, &s->peer);
}

/* A server, at the first sealed frame: the client's proof. */
static void take_auth(struct dctx__session *s, const Dctx__Wire__Frame *f)
{
    const Dctx__Wire__Auth *a = f->auth;
    if (f->body_case != DCTX__WIRE__FRAME__BODY_AUTH || !a->has_public_key ||
        a->public_key.len != DCTX_PUBLIC_KEY_BYTES || !a->has_signature ||
        a->signature.len != DCTX__SIGNATURE_BYTES) {
        handshake_fail(s, "the first sealed frame is a %s, not a well-formed auth",
                       dctx__frame_kind_name(f->body_case));
        return;
    }
    if (!dctx__handshake_verify(s->hs, false, a->public_key.data, a->signature.data)) {
        char key[DCTX_PUBLIC_KEY_TEXT_BYTES];
        dctx_public_key_text(a->public_key.data, key);
        handshake_fail(s, "the client's signature does not verify for %s", key);
        return;
    }
    handshake_over(s);
    s->awaiting_auth = false;
    dctx__conn_set_max_body(s->conn, s->o.max_frame_bytes);
    s->peer.authenticated = true;
    memcpy(s->peer.key, a->public_key.data, DCTX_PUBLIC_KEY_BYTES);
    s->peer.cipher = s->rx->cipher;
    become_ready(s);
}

/* ===== Receiving ===== */

static bool take_hello(struct dctx__session *s, const Dctx__Wire__Hello *h)
{
    if (!h->has_version || h->version != DCTX__SESSION_VERSION) {
        protocol_error(s, DCTX_FAILED_PRECONDITION,
                       "protocol version %u not supported; this peer speaks %d",
                       h->has_version ? h->version : 0, DCTX__SESSION_VERSION);
        return false;
    }
    if (!h->has_max_frame_bytes || h->max_frame_bytes < DCTX__SESSION_HELLO_BYTES_MAX) {
        protocol_error(s, DCTX_INVALID_ARGUMENT, "hello's max_frame_bytes %u is under %d",
                       h->max_frame_bytes, DCTX__SESSION_HELLO_BYTES_MAX);
        return false;
    }
    unsigned char sealed[DCTX__SEALED_IDENTITY_BYTES];
    bool keyed_server = s->o.server && s->o.identity != NULL;
    if (keyed_server && !server_prove(s, h, sealed))
        return false;
    s->peer.version = h->version;
    s->peer.max_frame_bytes = h->max_frame_bytes;
    s->peer.max_calls = !s->o.server && h->has_max_calls ? h->max_calls : 0;
    snprintf(s->peer.name, sizeof s->peer.name, "%s", h->name != NULL ? h->name : "");
    s->hello_seen = true;
    dctx__conn_set_max_body(s->conn, s->o.max_frame_bytes);
    if (!s->o.server && s->hs != NULL && !client_check_and_prove(s, h))
        return false;
    if (s->o.server && send_hello(s, keyed_server ? sealed : NULL) != 0) {
        end(s, DCTX_RESOURCE_EXHAUSTED, "no memory for the hello");
        return false;
    }
    if (keyed_server) { /* ready once the client's proof is checked */
        s->sealing = true;
        s->awaiting_auth = true;
        /* An unproven peer sends nothing larger than its proof. */
        dctx__conn_set_max_body(s->conn, DCTX__SESSION_HELLO_BYTES_MAX);
        return true;
    }
    become_ready(s);
    return true;
}

/* May this side receive kind k? (call and cancel go to a server; reply,
 * cancel_ack and drain to a client; the rest both ways.) */
static bool for_this_side(const struct dctx__session *s, Dctx__Wire__Frame__BodyCase k)
{
    switch (k) {
    case DCTX__WIRE__FRAME__BODY_CALL:
    case DCTX__WIRE__FRAME__BODY_CANCEL:
    case DCTX__WIRE__FRAME__BODY_HALF_CLOSE:
        return s->o.server;
    case DCTX__WIRE__FRAME__BODY_REPLY:
    case DCTX__WIRE__FRAME__BODY_CANCEL_ACK:
    case DCTX__WIRE__FRAME__BODY_DRAIN:
        return !s->o.server;
    default:
        return true;
    }
}

static bool needs_call_id(Dctx__Wire__Frame__BodyCase k)
{
    return k == DCTX__WIRE__FRAME__BODY_CALL || k == DCTX__WIRE__FRAME__BODY_REPLY ||
           k == DCTX__WIRE__FRAME__BODY_CANCEL || k == DCTX__WIRE__FRAME__BODY_CANCEL_ACK ||
           k == DCTX__WIRE__FRAME__BODY_MESSAGE || k == DCTX__WIRE__FRAME__BODY_HALF_CLOSE ||
           k == DCTX__WIRE__FRAME__BODY_CREDIT;
}

static void answer_ping(struct dctx__session *s, const Dctx__Wire__Ping *p)
{
    Dctx__Wire__Pong q = DCTX__WIRE__PONG__INIT;
    q.has_data = p->has_data;
    q.data = p->data;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_PONG;
    f.pong = &q;
    (void)send_frame(s, &f); /* a full queue: the peer is not reading, and will time out */
}

/* The peer pinged too often: a GoAway that says how often it may. */
static void refuse_pings(struct dctx__session *s)
{
    char why[64];
    snprintf(why, sizeof why, "too many pings (at most one per %d ms)", s->o.min_ping_interval_ms);
    Dctx__Wire__GoAway g = DCTX__WIRE__GO_AWAY__INIT;
    g.has_code = 1;
    g.code = DCTX_RESOURCE_EXHAUSTED;
    g.message = why;
    g.has_min_ping_interval_ms = 1;
    g.min_ping_interval_ms = (uint32_t)s->o.min_ping_interval_ms;
    goaway_and_end(s, &g);
}

/* A ping less than min_ping_interval_ms after the one before is a strike;
 * the third is one too many (gRPC's enforcement policy does the same). */
static bool too_many_pings(struct dctx__session *s)
{
    if (s->o.min_ping_interval_ms <= 0)
        return false;
    int64_t now = dctx_now();
    if (s->last_ping_rx_ns != 0 &&
        now - s->last_ping_rx_ns < (int64_t)s->o.min_ping_interval_ms * 1000000)
        s->ping_strikes++;
    else /* strikes count in a row: a timer's jitter now and then is no flood */
        s->ping_strikes = 0;
    s->last_ping_rx_ns = now;
    return s->ping_strikes >= 3;
}

/* One frame of a READY session, of a kind known and checked; true if the
 * owner kept it. */
static bool dispatch(struct dctx__session *s, Dctx__Wire__Frame *f)
{
    switch (f->body_case) {
    case DCTX__WIRE__FRAME__BODY_PING:
        if (too_many_pings(s))
            refuse_pings(s);
        else
            answer_ping(s, f->ping);
        return false;
    case DCTX__WIRE__FRAME__BODY_GOAWAY: {
        char why[DCTX__SESSION_NAME_BYTES_MAX];
        snprintf(why, sizeof why, "peer went away: %s",
                 f->goaway->message != NULL ? f->goaway->message : "");
        bool kept = s->o.on_frame != NULL && s->o.on_frame(s->o.owner, s, f);
        end(s, DCTX_UNAVAILABLE, why);
        return kept;
    }
    default:
        return s->o.on_frame != NULL && s->o.on_frame(s->o.owner, s, f);
    }
}

/* Check f and hand it on; true if the owner kept it. */
static bool check_and_dispatch(struct dctx__session *s, Dctx__Wire__Frame *f)
{
    Dctx__Wire__Frame__BodyCase k = f->body_case;
    if (s->awaiting_auth) { /* whatever it is: the client's proof, or a failed one */
        take_auth(s, f);
        return false;
    }
    if (k == DCTX__WIRE__FRAME__BODY__NOT_SET) {
        if (f->base.n_unknown_fields > 0)
            protocol_error(s, DCTX_UNIMPLEMENTED, "frame kind %u not understood",
                           f->base.unknown_fields[0].tag);
        else
            protocol_error(s, DCTX_INVALID_ARGUMENT, "frame with no kind");
        return false;
    }
    if (k == DCTX__WIRE__FRAME__BODY_HELLO) {
        if (s->hello_seen)
            protocol_error(s, DCTX_INVALID_ARGUMENT, "a second hello");
        else
            take_hello(s, f->hello);
        return false;
    }
    if (!s->hello_seen && k == DCTX__WIRE__FRAME__BODY_GOAWAY && !s->o.server) {
        /* The server refused the connection (a client without keys, say):
         * its code and words are the session's end. A client with keys
         * takes nothing unproven from the server: its words are shown,
         * but the end is UNAVAILABLE (anyone on the path could send it). */
        const Dctx__Wire__GoAway *g = f->goaway;
        char why[DCTX__SESSION_NAME_BYTES_MAX];
        snprintf(why, sizeof why, "server refused the connection%s: %s",
                 s->hs != NULL ? " (an unauthenticated goaway)" : "",
                 g->message != NULL ? g->message : "");
        bool code_ok = g->has_code && g->code >= 1 && g->code <= DCTX_CODE_MAX;
        end(s, code_ok && s->hs == NULL ? (int)g->code : DCTX_UNAVAILABLE, why);
        return false;
    }
    if (!s->hello_seen) {
        protocol_error(s, DCTX_INVALID_ARGUMENT, "first frame is a %s, not a hello",
                       dctx__frame_kind_name(k));
        return false;
    }
    if (k == DCTX__WIRE__FRAME__BODY_AUTH) {
        protocol_error(s, DCTX_INVALID_ARGUMENT, "an auth frame %s",
                       s->o.server ? "after the first, or without keys" : "sent to the client");
        return false;
    }
    if (!for_this_side(s, k)) {
        protocol_error(s, DCTX_INVALID_ARGUMENT, "a %s sent to the %s", dctx__frame_kind_name(k),
                       s->o.server ? "server" : "client");
        return false;
    }
    if (needs_call_id(k) && (!f->has_call_id || f->call_id == 0)) {
        protocol_error(s, DCTX_INVALID_ARGUMENT, "a %s without a call id",
                       dctx__frame_kind_name(k));
        return false;
    }
    return dispatch(s, f);
}

/* Keepalive, on nng's timer: a look every keepalive_ms, and one
 * ping_timeout_ms after a ping. A whole frame read since the last look is
 * a sign of life, and so is part of one coming at DCTX__SESSION_MIN_RATE
 * or faster (a large frame on a slow link); a peer that trickles a frame
 * slower than that cannot answer a ping (its pong would land inside the
 * frame), so it is dropped as a silent one is, holding nothing but its
 * connection meanwhile. While reads are paused for a caller that reads
 * slowly, its replies going out are the sign instead. Silence gets a
 * ping, and silence after the ping, or before the peer's hello, aborts the
 * connection. The tick is the only writer of ping_sent_ns, window_ms and
 * the last_* counts. */
static void keepalive_tick(void *arg)
{
    struct dctx__session *s = arg;
    if (nng_aio_result(s->ka) != 0 || atomic_load(&s->ended))
        return; /* stopped, or the session is over */
    uint64_t frames = dctx__conn_frames_read(s->conn), bytes = dctx__conn_bytes_read(s->conn);
    uint64_t sends = dctx__conn_sends(s->conn);
    uint64_t trickled = bytes - s->last_bytes;
    bool ready = atomic_load_explicit(&s->ready, memory_order_acquire);
    bool alive = frames != s->last_frames ||
                 trickled >= (uint64_t)s->window_ms * DCTX__SESSION_MIN_RATE / 1000 + 1 ||
                 (sends != s->last_sends && dctx__conn_paused(s->conn));
    s->last_frames = frames;
    s->last_bytes = bytes;
    s->last_sends = sends;
    int32_t next = s->o.keepalive_ms;
    if (alive) {
        s->ping_sent_ns = 0;
    } else if (!ready || s->ping_sent_ns != 0) {
        char why[160];
        if (ready && trickled > 0)
            snprintf(why, sizeof why,
                     "peer stalled inside a frame (%llu bytes in %d ms after a ping, under %d "
                     "bytes/s)",
                     (unsigned long long)trickled, s->window_ms, DCTX__SESSION_MIN_RATE);
        else if (ready)
            snprintf(why, sizeof why, "peer stopped answering (no frame %d ms after a ping)",
                     s->o.ping_timeout_ms);
        else
            snprintf(why, sizeof why, "peer stopped answering (no hello within %d ms)",
                     s->o.keepalive_ms);
        dctx__conn_abort(s->conn, DCTX_UNAVAILABLE, why);
        return;
    } else {
        s->ping_sent_ns = dctx_now(); /* even if it could not be queued: the peer does not read */
        (void)session_ping(s, 0);
        next = s->o.ping_timeout_ms;
    }
    s->window_ms = next;
    nng_sleep_aio(next, s->ka);
}

/* Open a sealed frame in place (its tag dropped from *len); false if it
 * does not open, the connection then ended. */
static bool open_frame(struct dctx__session *s, unsigned char *body, size_t *len)
{
    if (*len <= DCTX__SEAL_TAG_BYTES) {
        protocol_error(s, DCTX_UNAUTHENTICATED, "a sealed frame of %zu bytes: too short", *len);
        return false;
    }
    if (!dctx__open(s->rx, body, *len, body)) {
        protocol_error(s, DCTX_UNAUTHENTICATED,
                       "frame %llu failed authentication (forged, altered, replayed or "
                       "reordered)",
                       (unsigned long long)s->rx->next);
        return false;
    }
    *len -= DCTX__SEAL_TAG_BYTES;
    return true;
}

static void got_frame(void *owner, struct dctx__conn *c, unsigned char *body, size_t len)
{
    (void)c;
    struct dctx__session *s = owner;
    if (atomic_load(&s->ended))
        return; /* after a protocol error, nothing more is read for the owner */
    /* Each side seals from the peer's hello on (it is set while that
     * hello is read): every frame after it arrives sealed. */
    if (s->sealing && !open_frame(s, body, &len))
        return;
    Dctx__Wire__Frame *f = dctx__frame_unpack_bytes(body, len);
    if (f == NULL) {
        protocol_error(s, s->awaiting_auth ? DCTX_UNAUTHENTICATED : DCTX_INVALID_ARGUMENT,
                       "a frame of %zu bytes that does not parse (or unpacks too large)", len);
        return;
    }
    if (!check_and_dispatch(s, f))
        dctx__frame_free(f);
}

/* ===== The session ===== */

int dctx__session_open(nng_stream *st, const struct dctx__session_options *o,
                       struct dctx__session **out)
{
    *out = NULL;
    if (o->max_frame_bytes < DCTX__SESSION_HELLO_BYTES_MAX) {
        nng_stream_close(st);
        nng_stream_free(st);
        return DCTX_INVALID_ARGUMENT;
    }
    struct dctx__session *s = calloc(1, sizeof *s);
    if (s == NULL) {
        nng_stream_close(st);
        nng_stream_free(st);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    s->o = *o;
    if (s->o.ping_timeout_ms <= 0)
        s->o.ping_timeout_ms = s->o.keepalive_ms;
    snprintf(s->name, sizeof s->name, "%s", o->name != NULL ? o->name : "");
    s->o.name = s->name;
    size_t queue = o->send_queue_max != 0 ? o->send_queue_max : 4 * (size_t)o->max_frame_bytes;
    if (queue < DCTX__CONN_QUEUE_MIN(o->max_frame_bytes))
        queue = DCTX__CONN_QUEUE_MIN(o->max_frame_bytes);
    struct dctx__conn_options co = {.max_body = o->max_frame_bytes,
                                    .send_queue_max = queue,
                                    .pause_reads_when_full = o->server,
                                    .on_frame = got_frame,
                                    .on_end = conn_ended,
                                    .on_bad_framing = bad_framing,
                                    .seal = seal_frame,
                                    .owner = s};
    int rc = dctx__conn_open(st, &co, &s->conn);
    if (rc != 0) {
        free(s);
        return rc;
    }
    if (o->keepalive_ms > 0 && nng_aio_alloc(&s->ka, keepalive_tick, s) != 0) {
        dctx__conn_close(s->conn);
        free(s);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    /* Until the peer's hello, the most a frame may have is a hello's. */
    dctx__conn_set_max_body(s->conn, DCTX__SESSION_HELLO_BYTES_MAX);
    *out = s;
    return 0;
}

static void session_start(struct dctx__session *s)
{
    if (!s->o.server && s->o.server_key != NULL && !handshake_alloc(s))
        return;
    if (!s->o.server && send_hello(s, NULL) != 0) {
        end(s, DCTX_RESOURCE_EXHAUSTED, "no memory for the hello");
        return;
    }
    dctx__conn_start(s->conn);
    if (s->ka != NULL) {
        s->window_ms = s->o.keepalive_ms;
        nng_sleep_aio(s->o.keepalive_ms, s->ka);
    }
}

/* Stop the timers: a keepalive tick may touch the connection, a linger's
 * calls the owner back. After nng_aio_stop, a sleep posted is dropped. */
static void stop_timers(struct dctx__session *s)
{
    if (s->ka != NULL)
        nng_aio_stop(s->ka);
    if (s->lt != NULL)
        nng_aio_stop(s->lt);
}

static void free_timers(struct dctx__session *s)
{
    nng_aio_free(s->ka);
    nng_aio_free(s->lt);
}

/* The session's memory, its keys wiped. */
static void session_free(struct dctx__session *s)
{
    handshake_over(s);
    if (s->tx != NULL)
        sodium_memzero(s->tx, 2 * sizeof *s->tx);
    free(s->tx);
    free(s);
}

bool dctx__session_close_after_flush(struct dctx__session *s, int64_t timeout_ns)
{
    atomic_store(&s->ended, true);
    stop_timers(s);
    bool flushed = dctx__conn_close_after_flush(s->conn, timeout_ns);
    drain_callers(s);
    free_timers(s);
    session_free(s);
    return flushed;
}

void dctx__session_start(struct dctx__session *s)
{
    enter(s);
    session_start(s);
    leave(s);
}

void dctx__session_shutdown(struct dctx__session *s)
{
    atomic_store(&s->ended, true);
    dctx__conn_shutdown(s->conn);
}

const struct dctx__session_peer *dctx__session_peer_hello(struct dctx__session *s)
{
    return atomic_load_explicit(&s->ready, memory_order_acquire) ? &s->peer : NULL;
}

uint64_t dctx__session_bad_frames(struct dctx__session *s)
{
    return atomic_load_explicit(&s->bad_frames, memory_order_relaxed);
}

bool dctx__session_linger(struct dctx__session *s, int64_t until_ns, void (*done)(void *arg),
                          void *arg)
{
    if (nng_aio_alloc(&s->lt, linger_tick, s) != 0)
        return false;
    atomic_store(&s->ended, true); /* nothing more for the owner, keepalive included */
    s->linger_done = done;
    s->linger_arg = arg;
    atomic_store(&s->linger, LINGER_WAITING);
    /* Ended already (the peer closed, or this side shut it down): close
     * now, unless its end is being reported and claims the linger first. */
    if (!dctx__conn_linger(s->conn))
        return !linger_claim(s);
    nng_sleep_aio(dctx__ns_to_ms(until_ns - dctx_now()), s->lt);
    return true;
}

void dctx__session_close(struct dctx__session *s)
{
    if (s == NULL)
        return;
    atomic_store(&s->ended, true); /* no on_end for a close of our own */
    stop_timers(s);
    dctx__conn_close(s->conn);
    drain_callers(s);
    free_timers(s);
    session_free(s);
}
