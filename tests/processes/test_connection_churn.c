/*
 * test_connection_churn.c - peers that connect to a server and leave at
 * every stage of a session (proto/PROTOCOL.md, sections 4 and 6) never
 * cost a healthy connection a call, never stop the listener and never keep
 * a descriptor. Over ipc, tcp and tls+tcp, 10,000 raw peers each connect
 * and close at once, cut the hello's length in half, send a hello and leave
 * it unanswered, finish the hellos, send a Call and vanish (its handler
 * running or not yet), or reset the connection; on tls+tcp some also break
 * the TLS handshake. Beside them a channel keeps calls in flight the whole
 * time. Every one of those calls must end DCTX_OK, a fresh channel must be
 * served afterwards, and once the server has reaped what the peers left:
 * the process's descriptors are back to their count, and the server's
 * counters say what the churn did. Every connection accepted was a peer
 * lost; none committed a protocol error (section 7: a peer that leaves
 * mid-frame is lost, not bad); every call from a peer that left was
 * canceled by its loss, with cause CANCELLED "caller lost" (section 6),
 * those whose handler ran when it left for sure.
 *
 * The server runs in this process: its counters are read directly, and the
 * descriptors counted (/proc/self/fd) are the server's, the channel's (open
 * before the count) and the raw peers' (closed by the time of the count):
 * any left over is the server's or nng's. tcp ports come from this
 * program's own block (29000..29999), ipc sockets from its own directory,
 * so ctest -j runs it beside the other programs.
 */
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>

#include <dctx/rpc.h>

#include "dctx.pb-c.h"
#include "frame.h"
#include "framing.h"
#include "stream_testutil.h"
#include "testutil.h"

#ifndef TLS_DIR
#error "TLS_DIR must name tests/tls"
#endif

enum { PORT_BASE = 29000, PORT_SPAN = 1000 };

/* Peers per transport: 10,000 take a plain build some 3 to 5 s a transport.
 * Sanitizer builds run them several times slower (ThreadSanitizer 5 to 15
 * times), past a minute, so there a quarter of them (stress_scale): every
 * stage still comes hundreds of times (tls+tcp's TLS stages some 15). */
enum { PEERS = 10000 };

#define SLEEP "/t.Churn/Sleep"
#define HOLD "/t.Churn/Hold"
#define SLEEP_NS MS(2)  /* a healthy call's handler */
#define HOLD_NS SEC(20) /* how long a held call waits for its caller to be lost */
#define WAIT_MS 5000    /* every network wait of a raw peer */

/* ===== Handlers ===== */

static int sleep_echo(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    if (dctx_wait(ctx, SLEEP_NS))
        return dctx_err(ctx);
    return dctx_rpc_reply_set_payload(reply, req, len);
}

/* What the held calls saw (static: handlers write it). A held call's
 * request is the number of the peer that sent it. */
static struct holds {
    atomic_uchar entered_by[PEERS];
    atomic_int entered, exited, not_lost;
    char first_not_lost[300]; /* written before exited counts it */
} holds;

/* Runs until its context is done, which must be because its caller was
 * lost (CANCELLED "caller lost"), within HOLD_NS. */
static int hold(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)reply;
    uint32_t peer = PEERS;
    if (len == sizeof peer)
        memcpy(&peer, req, sizeof peer);
    if (peer < PEERS)
        atomic_store(&holds.entered_by[peer], 1);
    atomic_fetch_add(&holds.entered, 1);
    bool done = dctx_wait(ctx, HOLD_NS);
    const char *msg = NULL;
    int cause = dctx_cause(ctx, &msg);
    if (!done || cause != DCTX_CANCELED || msg == NULL || strstr(msg, "caller lost") == NULL) {
        if (atomic_fetch_add(&holds.not_lost, 1) == 0)
            snprintf(holds.first_not_lost, sizeof holds.first_not_lost, "peer %u: %s \"%s\"",
                     (unsigned)peer, done ? dctx_code_name(cause) : "still live after 20 s",
                     msg != NULL ? msg : "");
    }
    atomic_fetch_add(&holds.exited, 1);
    return done ? dctx_err(ctx) : DCTX_OK;
}

/* ===== Healthy calls: IN_FLIGHT asynchronous calls on one channel, each
 * replaced as it ends, until told to stop ===== */

enum { IN_FLIGHT = 8 };

static struct load {
    dctx_rpc_channel *ch;
    atomic_int stop;
    long started, ok, failed;
    char first_failure[400];
} load;

struct slot {
    dctx_rpc_handle *h;
    uint64_t n; /* the call's number: its request, echoed */
};

static void load_failed(const char *fmt, ...) DCTX_PRINTF(1, 2);

static void load_failed(const char *fmt, ...)
{
    if (load.failed++ > 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(load.first_failure, sizeof load.first_failure, fmt, ap);
    va_end(ap);
}

static void load_start(struct slot *s)
{
    s->n = (uint64_t)load.started++;
    dctx *ctx = NULL;
    if (dctx_with_timeout(dctx_background(), SEC(60), &ctx) != 0) {
        load_failed("call %llu: no context", (unsigned long long)s->n);
        return;
    }
    int rc = dctx_rpc_call_start(load.ch, ctx, SLEEP, &s->n, sizeof s->n, NULL, NULL, &s->h);
    dctx_release(ctx);
    if (rc != DCTX_OK)
        load_failed("call %llu not started: %s", (unsigned long long)s->n, dctx_code_name(rc));
}

/* The end of the call in s (it has ended): OK with its request echoed. */
static void load_end(struct slot *s)
{
    dctx_rpc_result res;
    int rc = dctx_rpc_handle_result(s->h, &res);
    if (rc != DCTX_OK)
        load_failed("call %llu: %s \"%s\"", (unsigned long long)s->n, dctx_code_name(rc),
                    res.message);
    else if (res.payload_len != sizeof s->n || memcmp(res.payload, &s->n, sizeof s->n) != 0)
        load_failed("call %llu: the reply is not its request", (unsigned long long)s->n);
    else
        load.ok++;
    dctx_rpc_result_free(&res);
    dctx_rpc_handle_release(s->h);
    s->h = NULL;
}

static void *load_main(void *arg)
{
    (void)arg;
    struct slot slots[IN_FLIGHT] = {{0}};
    int64_t give_up = dctx_now() + SEC(600);
    for (long sweep = 0; sweep < 10000000 && !atomic_load(&load.stop) && dctx_now() < give_up;
         sweep++) {
        for (int i = 0; i < IN_FLIGHT; i++) {
            if (slots[i].h != NULL && dctx_rpc_handle_wait(slots[i].h, 0))
                load_end(&slots[i]);
            if (slots[i].h == NULL)
                load_start(&slots[i]);
        }
        nng_msleep(1);
    }
    for (int i = 0; i < IN_FLIGHT; i++) {
        if (slots[i].h == NULL)
            continue;
        if (dctx_rpc_handle_wait(slots[i].h, SEC(30))) {
            load_end(&slots[i]);
        } else {
            load_failed("call %llu did not end in 30 s", (unsigned long long)slots[i].n);
            dctx_rpc_handle_release(slots[i].h);
        }
    }
    return NULL;
}

/* ===== Raw peers ===== */

enum transport { IPC, TCP, TLS };

static const char *transport_name(enum transport t)
{
    return t == IPC ? "ipc" : t == TCP ? "tcp" : "tls+tcp";
}

/* Where raw peers go: plain sockets to the address (on tls+tcp, the TLS
 * port spoken to in the clear), TLS streams through the dialer. */
struct target {
    enum transport t;
    char url[256];
    struct sockaddr_storage sa;
    socklen_t sa_len;
    nng_stream_dialer *tls;
    nng_aio *aio; /* the TLS streams' dials, sends and receives (one peer at a time) */
};

struct peer {
    int fd;         /* a plain socket, or -1 */
    nng_stream *st; /* a TLS stream, or NULL */
};

/* tcp peers come from 127.0.0.2 .. 127.0.0.251 in turn. From one address,
 * thousands of short connections soon make the kernel reuse a local port
 * whose last connection the server has not closed yet (the client's end in
 * TIME_WAIT, the server's in CLOSE_WAIT): that SYN is answered with an ACK,
 * not a SYN-ACK, and the connect waits a second for its retry. Spread over
 * 250 addresses, no port is needed twice. */
static void bind_source(int fd)
{
    static unsigned next;
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + next++ % 250);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
}

static struct peer peer_connect_plain(const struct target *tg)
{
    struct peer p = {.fd = -1};
    /* A full listen backlog refuses an ipc connect for now: try again. */
    for (int tries = 0; tries < 100 && p.fd < 0; tries++) {
        int fd = socket(tg->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        assert_true(fd >= 0);
        struct timeval tv = {.tv_sec = WAIT_MS / 1000};
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv), 0);
        assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv), 0);
        if (tg->sa.ss_family == AF_INET)
            bind_source(fd);
        if (connect(fd, (const struct sockaddr *)&tg->sa, tg->sa_len) == 0) {
            p.fd = fd;
            break;
        }
        int err = errno;
        close(fd);
        if (err != EAGAIN)
            fail_msg("connect to %s: %s", tg->url, strerror(err));
        nng_msleep(2);
    }
    if (p.fd < 0)
        fail_msg("connect to %s refused 100 times", tg->url);
    return p;
}

static struct peer peer_connect_tls(const struct target *tg)
{
    nng_aio_set_timeout(tg->aio, WAIT_MS);
    nng_stream_dialer_dial(tg->tls, tg->aio);
    nng_aio_wait(tg->aio);
    int rv = nng_aio_result(tg->aio);
    if (rv != 0)
        fail_msg("tls dial to %s: %s", tg->url, nng_strerror(rv));
    struct peer p = {.fd = -1, .st = nng_aio_get_output(tg->aio, 0)};
    return p;
}

static void peer_send(const struct target *tg, struct peer *p, const void *buf, size_t n)
{
    while (n > 0) {
        size_t sent;
        if (p->st != NULL) {
            nng_iov iov = {.iov_buf = (void *)buf, .iov_len = n};
            assert_int_equal(nng_aio_set_iov(tg->aio, 1, &iov), 0);
            nng_aio_set_timeout(tg->aio, WAIT_MS);
            nng_stream_send(p->st, tg->aio);
            nng_aio_wait(tg->aio);
            int rv = nng_aio_result(tg->aio);
            if (rv != 0)
                fail_msg("tls send: %s", nng_strerror(rv));
            sent = nng_aio_count(tg->aio);
        } else {
            ssize_t w = send(p->fd, buf, n, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                fail_msg("send: %s", strerror(errno));
            sent = (size_t)w;
        }
        buf = (const char *)buf + sent;
        n -= sent;
    }
}

static void peer_recv(const struct target *tg, struct peer *p, void *buf, size_t n)
{
    while (n > 0) {
        size_t got;
        if (p->st != NULL) {
            nng_iov iov = {.iov_buf = buf, .iov_len = n};
            assert_int_equal(nng_aio_set_iov(tg->aio, 1, &iov), 0);
            nng_aio_set_timeout(tg->aio, WAIT_MS);
            nng_stream_recv(p->st, tg->aio);
            nng_aio_wait(tg->aio);
            int rv = nng_aio_result(tg->aio);
            if (rv != 0)
                fail_msg("tls receive: %s", nng_strerror(rv));
            got = nng_aio_count(tg->aio);
        } else {
            ssize_t r = recv(p->fd, buf, n, 0);
            if (r < 0 && errno == EINTR)
                continue;
            if (r == 0)
                fail_msg("the server closed the connection");
            if (r < 0)
                fail_msg("receive: %s", strerror(errno));
            got = (size_t)r;
        }
        buf = (char *)buf + got;
        n -= got;
    }
}

/* Close p; reset: with SO_LINGER 0, so the server sees a reset, not an end. */
static void peer_close(struct peer *p, bool reset)
{
    if (p->st != NULL) {
        nng_stream_close(p->st);
        nng_stream_free(p->st);
        return;
    }
    if (reset) {
        struct linger l = {.l_onoff = 1, .l_linger = 0};
        assert_int_equal(setsockopt(p->fd, SOL_SOCKET, SO_LINGER, &l, sizeof l), 0);
    }
    close(p->fd);
}

/* ===== Frames ===== */

static unsigned char hello[64]; /* this client's hello, header included */
static size_t hello_len;

/* Peer number peer's Call of HOLD (call id 1), with a token of its own. */
static size_t pack_hold_call(uint32_t peer, unsigned char *out, size_t cap)
{
    static uint64_t token_base;
    if (token_base == 0)
        token_base = (uint64_t)dctx_now() ^ ((uint64_t)getpid() << 32);
    uint8_t token[DCTX_TOKEN_BYTES] = {0};
    uint64_t mark = token_base++;
    memcpy(token, &mark, sizeof mark);
    memcpy(token + sizeof mark, &peer, sizeof peer);
    Dctx__Wire__ContextHeader hdr = DCTX__WIRE__CONTEXT_HEADER__INIT;
    hdr.has_budget_us = 1;
    hdr.budget_us = 60000000; /* 60 s: longer than the handler holds */
    hdr.has_cancel_token = 1;
    hdr.cancel_token.data = token;
    hdr.cancel_token.len = sizeof token;
    Dctx__Wire__Call c = DCTX__WIRE__CALL__INIT;
    c.has_method = 1;
    c.method.data = (uint8_t *)HOLD;
    c.method.len = strlen(HOLD);
    c.context = &hdr;
    c.has_payload = 1;
    c.payload.data = (uint8_t *)&peer;
    c.payload.len = sizeof peer;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &c;
    f.has_call_id = 1;
    f.call_id = 1;
    return st_frame(&f, out, cap);
}

/* Read the server's answer to our hello: its hello, version 1. */
static void read_server_hello(const struct target *tg, struct peer *p)
{
    unsigned char h[DCTX__FRAME_HEADER_BYTES], body[4096];
    peer_recv(tg, p, h, sizeof h);
    uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    if (len == 0 || len > sizeof body)
        fail_msg("the server's first frame has %u bytes", (unsigned)len);
    peer_recv(tg, p, body, len);
    Dctx__Wire__Frame *f = dctx__frame_unpack_bytes(body, len);
    assert_non_null(f);
    assert_int_equal(f->body_case, DCTX__WIRE__FRAME__BODY_HELLO);
    assert_int_equal(f->hello->version, 1);
    dctx__frame_free(f);
}

/* ===== The stages at which a peer leaves ===== */

enum stage {
    CONNECT_CLOSE,     /* (a) connect, close at once */
    HALF_HEADER,       /* (b) 2 of the hello's 4 length bytes, close */
    HELLO_UNREAD,      /* (c) a whole hello, close before reading */
    HELLO_EXCHANGED,   /* (d) both hellos, close */
    CALL_SENT,         /* (e) the hellos and a Call, close at once */
    CALL_RUNNING,      /* (e) the hellos and a Call, close once its handler runs */
    RESET_AT_ONCE,     /* (f) connect, reset */
    RESET_AFTER_HELLO, /* (f) a hello, reset */
    RESET_MID_CALL,    /* (f) the hellos and a Call, reset once its handler runs */
    TLS_RECORD_CUT,    /* tls: 3 bytes of a TLS record header in the clear, close */
    CLEARTEXT_HELLO,   /* tls: a hello in the clear where TLS is spoken, close */
    STAGES
};

static const char *const stage_names[STAGES] = {
    "connect-close",  "half-header",    "hello-unread",   "hello-exchanged",
    "call-sent",      "call-running",   "reset-at-once",  "reset-after-hello",
    "reset-mid-call", "tls-record-cut", "cleartext-hello"};

/* Whether a stage's peer speaks TLS on a tls+tcp server (the others talk
 * to its port in the clear). */
static bool speaks_tls(enum stage s)
{
    return s == HALF_HEADER || s == HELLO_UNREAD || s == HELLO_EXCHANGED || s == CALL_SENT ||
           s == CALL_RUNNING;
}

/* Wait until peer's held call runs (its handler entered). */
static void wait_for_hold(uint32_t peer)
{
    int64_t until = dctx_now() + MS(WAIT_MS);
    while (!atomic_load(&holds.entered_by[peer]) && dctx_now() < until)
        usleep(100);
    if (!atomic_load(&holds.entered_by[peer]))
        fail_msg("peer %u: the held call did not start in %d ms (held calls running: %d)",
                 (unsigned)peer, WAIT_MS, atomic_load(&holds.entered) - atomic_load(&holds.exited));
}

/* Peer number peer goes through stage s and leaves. */
static void run_peer(const struct target *tg, enum stage s, uint32_t peer)
{
    struct peer p = tg->t == TLS && speaks_tls(s) ? peer_connect_tls(tg) : peer_connect_plain(tg);
    unsigned char call[256];
    static const unsigned char record_head[3] = {0x16, 0x03, 0x01}; /* a TLS handshake record */
    switch (s) {
    case CONNECT_CLOSE:
    case RESET_AT_ONCE:
        break;
    case HALF_HEADER:
        peer_send(tg, &p, hello, 2);
        break;
    case HELLO_UNREAD:
    case RESET_AFTER_HELLO:
    case CLEARTEXT_HELLO:
        peer_send(tg, &p, hello, hello_len);
        break;
    case HELLO_EXCHANGED:
        peer_send(tg, &p, hello, hello_len);
        read_server_hello(tg, &p);
        break;
    case CALL_SENT:
    case CALL_RUNNING:
    case RESET_MID_CALL:
        peer_send(tg, &p, hello, hello_len);
        read_server_hello(tg, &p);
        peer_send(tg, &p, call, pack_hold_call(peer, call, sizeof call));
        if (s != CALL_SENT)
            wait_for_hold(peer);
        break;
    case TLS_RECORD_CUT:
        peer_send(tg, &p, record_head, sizeof record_head);
        break;
    case STAGES:
        break;
    }
    peer_close(&p, s == RESET_AT_ONCE || s == RESET_AFTER_HELLO || s == RESET_MID_CALL);
}

/* The stage of peer i on transport t. In turn: on ipc there are no
 * resets; on tls+tcp a reset needs the socket, so only the peers that speak
 * in the clear reset, and one peer in 32 speaks TLS (a handshake costs both
 * sides milliseconds of CPU). */
static enum stage stage_of(enum transport t, int i)
{
    static const enum stage ipc[] = {CONNECT_CLOSE,   HALF_HEADER, HELLO_UNREAD,
                                     HELLO_EXCHANGED, CALL_SENT,   CALL_RUNNING};
    static const enum stage tcp[] = {CONNECT_CLOSE,   HALF_HEADER,       HELLO_UNREAD,
                                     HELLO_EXCHANGED, CALL_SENT,         CALL_RUNNING,
                                     RESET_AT_ONCE,   RESET_AFTER_HELLO, RESET_MID_CALL};
    static const enum stage tls[] = {HALF_HEADER, HELLO_UNREAD, HELLO_EXCHANGED, CALL_SENT,
                                     CALL_RUNNING};
    static const enum stage clear[] = {CONNECT_CLOSE, RESET_AT_ONCE, TLS_RECORD_CUT,
                                       CLEARTEXT_HELLO};
#define PICK(a, n) a[(size_t)(n) % (sizeof a / sizeof a[0])]
    if (t == IPC)
        return PICK(ipc, i);
    if (t == TCP)
        return PICK(tcp, i);
    return i % 32 == 0 ? PICK(tls, i / 32) : PICK(clear, i);
#undef PICK
}

/* ===== A run: the server, the channels, the peers' target ===== */

static char scratch[64]; /* the program's ipc directory */

static struct run {
    dctx_rpc_server *srv;
    dctx_rpc_channel *ch, *fresh;
    bool load_running;
    pthread_t load_thread;
    struct target tg;
} run;

static dctx_rpc_channel_options channel_options(enum transport t)
{
    dctx_rpc_channel_options o;
    dctx_rpc_channel_options_init(&o);
    o.connect_wait_ns = SEC(5);
    if (t == TLS) {
        o.tls_ca_file = TLS_DIR "/cert.pem";
        o.tls_server_name = "localhost";
    }
    return o;
}

/* Listen on a fresh address of t: a socket in scratch, or a port of the
 * block (from a place of the pid's, skipping ports found taken). */
static void listen_fresh(enum transport t, struct target *tg)
{
    memset(tg, 0, sizeof *tg);
    tg->t = t;
    if (t == IPC) {
        struct sockaddr_un *un = (struct sockaddr_un *)&tg->sa;
        un->sun_family = AF_UNIX;
        snprintf(un->sun_path, sizeof un->sun_path, "%s/churn.ipc", scratch);
        tg->sa_len = sizeof *un;
        snprintf(tg->url, sizeof tg->url, "ipc://%s", un->sun_path);
        assert_int_equal(dctx_rpc_server_listen(run.srv, tg->url), 0);
        return;
    }
    int rc = -1, port = 0;
    for (int i = 0; i < 50 && rc != 0; i++) {
        port = PORT_BASE + (int)((getpid() + i * 37) % PORT_SPAN);
        snprintf(tg->url, sizeof tg->url, "%s://127.0.0.1:%d", t == TLS ? "tls+tcp" : "tcp", port);
        rc = dctx_rpc_server_listen(run.srv, tg->url);
        assert_true(rc == 0 || rc == DCTX_UNAVAILABLE);
    }
    assert_int_equal(rc, 0);
    struct sockaddr_in *in = (struct sockaddr_in *)&tg->sa;
    in->sin_family = AF_INET;
    in->sin_port = htons((uint16_t)port);
    in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    tg->sa_len = sizeof *in;
    if (t == TLS) {
        nng_tls_config *cfg;
        assert_int_equal(nng_stream_dialer_alloc(&tg->tls, tg->url), 0);
        assert_int_equal(nng_tls_config_alloc(&cfg, NNG_TLS_MODE_CLIENT), 0);
        assert_int_equal(nng_tls_config_ca_file(cfg, TLS_DIR "/cert.pem"), 0);
        assert_int_equal(nng_tls_config_server_name(cfg, "localhost"), 0);
        assert_int_equal(nng_stream_dialer_set_ptr(tg->tls, NNG_OPT_TLS_CONFIG, cfg), 0);
        nng_tls_config_free(cfg);
        /* nng 1.5.2's stream dialers leave Nagle on: each handshake would
         * wait out the server's delayed ACKs (some 40 ms, twice). */
        assert_int_equal(nng_stream_dialer_set_bool(tg->tls, NNG_OPT_TCP_NODELAY, true), 0);
        assert_int_equal(nng_aio_alloc(&tg->aio, NULL, NULL), 0);
    }
}

static void start_server(enum transport t)
{
    dctx_rpc_server_options o;
    dctx_rpc_server_options_init(&o);
    /* Held calls wait on workers for their callers' loss: room for all
     * that could wait at once, so that a loss the server misses shows as
     * such, not as a queue. */
    o.workers = 128;
    o.tls_cert_key_file = TLS_DIR "/cert_key.pem";
    /* A short keepalive: connections whose peer left unnoticed (nng
     * 1.5.2's TLS reads after the peer's close never complete) and peers
     * that never say hello are closed within about two of it, well inside
     * the wait for descriptors below. Healthy peers answer its pings. */
    o.keepalive_ns = MS(250) * stress_scale();
    o.keepalive_timeout_ns = o.keepalive_ns;
    assert_int_equal(dctx_rpc_server_open(&o, &run.srv), 0);
    assert_int_equal(dctx_rpc_server_register(run.srv, SLEEP, sleep_echo, NULL), 0);
    assert_int_equal(dctx_rpc_server_register(run.srv, HOLD, hold, NULL), 0);
    listen_fresh(t, &run.tg);
    assert_int_equal(dctx_rpc_server_start(run.srv), 0);
}

static int call_sleep(dctx_rpc_channel *ch)
{
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_timeout(dctx_background(), SEC(30), &ctx), 0);
    dctx_rpc_result res;
    int rc = dctx_rpc_call_raw(ch, ctx, SLEEP, "x", 1, &res);
    if (rc != DCTX_OK)
        print_message("call on %s: %s \"%s\"\n", run.tg.url, dctx_code_name(rc), res.message);
    dctx_rpc_result_free(&res);
    dctx_release(ctx);
    return rc;
}

static void stop_load(void)
{
    if (!run.load_running)
        return;
    atomic_store(&load.stop, 1);
    join_thread(run.load_thread);
    run.load_running = false;
}

/* The teardown of every test, also after a failure half way. */
static int end_run(void **state)
{
    (void)state;
    stop_load();
    dctx_rpc_channel_close(run.fresh);
    dctx_rpc_channel_close(run.ch);
    int rc = dctx_rpc_server_close(run.srv);
    if (run.tg.tls != NULL)
        nng_stream_dialer_free(run.tg.tls);
    if (run.tg.aio != NULL)
        nng_aio_free(run.tg.aio);
    memset(&run, 0, sizeof run);
    return rc;
}

static dctx_rpc_server_stats server_stats(void)
{
    dctx_rpc_server_stats st;
    dctx_rpc_server_stats_get(run.srv, &st);
    return st;
}

/* Whether every connection accepted since before but one (the fresh
 * channel's) was lost (the counters into *now). */
static bool all_lost(const dctx_rpc_server_stats *before, dctx_rpc_server_stats *now)
{
    *now = server_stats();
    return now->peers_lost - before->peers_lost + 1 ==
           now->connections_accepted - before->connections_accepted;
}

/* The whole test for transport t: n peers going through stages in turn
 * beside the healthy calls, then the checks. */
static void churn(enum transport t)
{
    memset(&holds, 0, sizeof holds);
    memset(&load, 0, sizeof load);
    start_server(t);
    dctx_rpc_channel_options o = channel_options(t);
    assert_int_equal(dctx_rpc_channel_open(run.tg.url, &o, &run.ch), 0);
    assert_int_equal(call_sleep(run.ch), DCTX_OK); /* connected */
    const int fds_before = open_fds();
    const dctx_rpc_server_stats before = server_stats();

    load.ch = run.ch;
    run.load_thread = start_thread(load_main, NULL);
    run.load_running = true;

    const int peers = PEERS / stress_scale();
    int per_stage[STAGES] = {0};
    int64_t t0 = dctx_now();
    for (int i = 0; i < peers; i++) {
        enum stage s = stage_of(t, i);
        run_peer(&run.tg, s, (uint32_t)i);
        per_stage[s]++;
    }
    int64_t churned = dctx_now() - t0;
    stop_load();
    print_message("%s: %d peers in %.1f s; %ld healthy calls beside them\n", transport_name(t),
                  peers, churned / 1e9, load.ok);
    for (int s = 0; s < STAGES; s++)
        if (per_stage[s] > 0)
            print_message("  %-17s %d\n", stage_names[s], per_stage[s]);

    /* 1. The healthy calls, all of them OK; the listener still accepts. */
    if (load.failed > 0)
        fail_msg("%ld of %ld healthy calls failed; the first: %s", load.failed, load.started,
                 load.first_failure);
    assert_true(load.ok > 0);
    assert_int_equal(load.ok, load.started);
    assert_int_equal(dctx_rpc_channel_open(run.tg.url, &o, &run.fresh), 0);
    assert_int_equal(call_sleep(run.fresh), DCTX_OK);

    /* The server reaps what the peers left (5 s at most): their held calls
     * end, its calls in flight go to 0, every connection accepted since the
     * count but the fresh channel's (kept open until the counts are read,
     * so that its call's end never races with its loss) is lost, and the
     * descriptors come back to their count before the churn and the fresh
     * channel's connection (its two ends, in this process). All is printed
     * before the checks. */
    const int64_t reap_wait = SEC(5) * stress_scale();
    dctx_rpc_server_stats after;
    int fds_after = 0;
    WAIT_FOR(atomic_load(&holds.exited) == atomic_load(&holds.entered) &&
                 all_lost(&before, &after) && after.in_flight == 0 &&
                 (fds_after = open_fds()) == fds_before + 2,
             reap_wait);
    after = server_stats();
    fds_after = open_fds();
    const int held = atomic_load(&holds.entered), still = held - atomic_load(&holds.exited);
    const uint64_t accepted = after.connections_accepted - before.connections_accepted;
    const uint64_t lost = after.peers_lost - before.peers_lost;
    /* The channel's calls all ran, the fresh one's too; every other call
     * came from a peer that left. */
    const uint64_t raw_calls = after.calls - before.calls - (uint64_t)load.started - 1;
    const uint64_t canceled =
        after.calls_canceled_by_peer_loss - before.calls_canceled_by_peer_loss;
    print_message("  descriptors: %d before, %d after (2 of them the fresh channel's)\n",
                  fds_before, fds_after);
    print_message("  held calls: %d ran, %d still running, %d not ended by their caller's loss\n",
                  held, still, atomic_load(&holds.not_lost));
    print_message("  server: +%llu connections, +%llu peers lost, %llu calls from peers that "
                  "left, +%llu canceled by peer loss, +%llu bad frames, %llu in flight\n",
                  (unsigned long long)accepted, (unsigned long long)lost,
                  (unsigned long long)raw_calls, (unsigned long long)canceled,
                  (unsigned long long)(after.bad_frames - before.bad_frames),
                  (unsigned long long)after.in_flight);

    /* 3. Every held call ended because its caller was lost (section 6):
     * those whose handler ran when the peer left for sure (call-running,
     * reset-mid-call), those sent just before leaving (call-sent) if the
     * server read them before it saw the end. */
    const int running = per_stage[CALL_RUNNING] + per_stage[RESET_MID_CALL];
    const int sent = running + per_stage[CALL_SENT];
    if (still > 0)
        fail_msg("%d of %d held calls still run %.0f s after their callers left: the server "
                 "has not seen those peers go",
                 still, held, reap_wait / 1e9);
    if (atomic_load(&holds.not_lost) > 0)
        fail_msg("%d held calls did not end as their caller's loss; the first: %s",
                 atomic_load(&holds.not_lost), holds.first_not_lost);
    assert_true(held >= running && held <= sent);
    assert_int_equal(after.in_flight, 0);

    /* 2. No descriptor kept. */
    assert_int_equal(fds_after, fds_before + 2);

    /* 3. The counters. Every connection but the fresh channel's was lost
     * by its peer: those that got the server's hello for sure, the others
     * if nng handed them over before they were gone. None committed a
     * protocol error (section 7): a peer that leaves mid-frame is lost, not
     * bad. Each call from a peer that left was canceled by its loss. */
    const int hellos = per_stage[HELLO_EXCHANGED] + sent;
    assert_int_equal(lost + 1, accepted);
    assert_true(accepted >= (uint64_t)hellos + 1);
    assert_true(accepted <= (uint64_t)peers + 1);
    assert_int_equal(after.bad_frames, before.bad_frames);
    assert_int_equal(canceled, raw_calls);
    assert_true(canceled >= (uint64_t)running && canceled <= (uint64_t)sent);
}

static void ipc_peers_leaving_at_every_stage_cost_no_call_and_no_descriptor(void **state)
{
    (void)state;
    churn(IPC);
}

static void
tcp_peers_leaving_or_resetting_at_every_stage_cost_no_call_and_no_descriptor(void **state)
{
    (void)state;
    churn(TCP);
}

static void tls_peers_leaving_in_or_after_the_handshake_cost_no_call_and_no_descriptor(void **state)
{
    (void)state;
    churn(TLS);
}

int main(void)
{
    snprintf(scratch, sizeof scratch, "/tmp/dctx-churn-XXXXXX");
    if (mkdtemp(scratch) == NULL)
        return 1;
    hello_len = st_client_hello("churn", hello, sizeof hello);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(ipc_peers_leaving_at_every_stage_cost_no_call_and_no_descriptor,
                                  end_run),
        cmocka_unit_test_teardown(
            tcp_peers_leaving_or_resetting_at_every_stage_cost_no_call_and_no_descriptor, end_run),
        cmocka_unit_test_teardown(
            tls_peers_leaving_in_or_after_the_handshake_cost_no_call_and_no_descriptor, end_run),
    };
    int rc = cmocka_run_group_tests_name("connection_churn", tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", scratch);
    if (system(cmd) != 0 && rc == 0)
        rc = 1;
    return rc;
}
