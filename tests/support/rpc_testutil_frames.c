/*
 * rpc_testutil_frames.c - raw dctx frames, raw client sessions on nng
 * byte streams, and the relay that holds frames between a channel and a
 * server (rpc_testutil.h).
 *
 * The frame reading here is the tests' own (a growing buffer, a 4-byte
 * length, a body), not the library's framing.c: a peer that checks the
 * library should not share its code.
 */
#include "rpc_testutil.h"
#include "stream_testutil.h"
#include "frame.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "stream_url.h"

#define FRAME_WAIT_MS 2000 /* a raw session's wait for one frame */
#define WAIT_MS 5000       /* connecting, writing, and the relay's waits */
#define READ_BYTES 65536   /* what one read may take */
/* What a raw client announces: the library's default. */
#define RAW_MAX_FRAME_BYTES (4u * 1024 * 1024 + 4096)
/* A frame longer than this from a server fails the test: it is not one. */
#define FRAME_BYTES_SANE (64u * 1024 * 1024)

/* ===== Raw frames ===== */

void rt_token(uint8_t token[DCTX_TOKEN_BYTES])
{
    if (getrandom(token, DCTX_TOKEN_BYTES, 0) != DCTX_TOKEN_BYTES)
        fail_msg("getrandom failed");
}

uint8_t *rt_pack(const Dctx__Wire__Frame *f, size_t *len)
{
    *len = dctx__wire__frame__get_packed_size(f);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    assert_int_equal(dctx__wire__frame__pack(f, buf), *len);
    return buf;
}

/* A Call frame; a stream's (stream set) has no payload. */
static uint8_t *pack_call(uint32_t call_id, const char *method,
                          const uint8_t token[DCTX_TOKEN_BYTES], uint64_t budget_us, bool stream,
                          const void *payload, size_t payload_len, size_t *len)
{
    Dctx__Wire__ContextHeader h = DCTX__WIRE__CONTEXT_HEADER__INIT;
    h.has_cancel_token = 1;
    h.cancel_token.data = (uint8_t *)token;
    h.cancel_token.len = DCTX_TOKEN_BYTES;
    h.has_budget_us = budget_us != 0;
    h.budget_us = budget_us;
    h.has_hops = 1;
    h.hops = 0;
    Dctx__Wire__Call c = DCTX__WIRE__CALL__INIT;
    c.has_method = method != NULL;
    c.method.data = (uint8_t *)method;
    c.method.len = method != NULL ? strlen(method) : 0;
    c.context = &h;
    c.has_payload = !stream;
    c.payload.data = (uint8_t *)payload;
    c.payload.len = payload_len;
    c.has_stream = stream;
    c.stream = stream;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &c;
    f.has_call_id = call_id != 0;
    f.call_id = call_id;
    return rt_pack(&f, len);
}

uint8_t *rt_pack_call(uint32_t call_id, const char *method, const uint8_t token[DCTX_TOKEN_BYTES],
                      uint64_t budget_us, const void *payload, size_t payload_len, size_t *len)
{
    return pack_call(call_id, method, token, budget_us, false, payload, payload_len, len);
}

uint8_t *rt_pack_stream_call(uint32_t call_id, const char *method,
                             const uint8_t token[DCTX_TOKEN_BYTES], uint64_t budget_us, size_t *len)
{
    return pack_call(call_id, method, token, budget_us, true, NULL, 0, len);
}

uint8_t *rt_pack_stream_message(uint32_t call_id, const void *payload, size_t payload_len,
                                size_t *len)
{
    Dctx__Wire__StreamMessage m = DCTX__WIRE__STREAM_MESSAGE__INIT;
    m.has_payload = 1;
    m.payload.data = (uint8_t *)payload;
    m.payload.len = payload_len;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_MESSAGE;
    f.message = &m;
    f.has_call_id = call_id != 0;
    f.call_id = call_id;
    return rt_pack(&f, len);
}

uint8_t *rt_pack_half_close(uint32_t call_id, size_t *len)
{
    Dctx__Wire__HalfClose h = DCTX__WIRE__HALF_CLOSE__INIT;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_HALF_CLOSE;
    f.half_close = &h;
    f.has_call_id = call_id != 0;
    f.call_id = call_id;
    return rt_pack(&f, len);
}

uint8_t *rt_pack_credit(uint32_t call_id, uint32_t messages, uint32_t bytes, size_t *len)
{
    Dctx__Wire__Credit c = DCTX__WIRE__CREDIT__INIT;
    c.has_messages = messages > 0;
    c.messages = messages;
    c.has_bytes = bytes > 0;
    c.bytes = bytes;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CREDIT;
    f.credit = &c;
    f.has_call_id = call_id != 0;
    f.call_id = call_id;
    return rt_pack(&f, len);
}

uint8_t *rt_pack_cancel(uint32_t call_id, const uint8_t token[DCTX_TOKEN_BYTES], int code,
                        const char *msg, uint64_t budget_us, size_t *len)
{
    Dctx__Wire__Cancel c = DCTX__WIRE__CANCEL__INIT;
    c.has_cancel_token = 1;
    c.cancel_token.data = (uint8_t *)token;
    c.cancel_token.len = DCTX_TOKEN_BYTES;
    c.has_code = 1;
    c.code = (uint32_t)code;
    c.message = (char *)msg;
    c.has_budget_us = 1;
    c.budget_us = budget_us;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CANCEL;
    f.cancel = &c;
    f.has_call_id = call_id != 0;
    f.call_id = call_id;
    return rt_pack(&f, len);
}

uint8_t *rt_pack_reply(uint32_t call_id, int code, size_t *len)
{
    Dctx__Wire__Reply r = DCTX__WIRE__REPLY__INIT;
    r.has_code = 1;
    r.code = (uint32_t)code;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_REPLY;
    f.reply = &r;
    f.has_call_id = 1;
    f.call_id = call_id;
    return rt_pack(&f, len);
}

uint8_t *rt_pack_ping(uint64_t data, size_t *len)
{
    Dctx__Wire__Ping p = DCTX__WIRE__PING__INIT;
    p.has_data = 1;
    p.data = data;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_PING;
    f.ping = &p;
    return rt_pack(&f, len);
}

uint8_t *rt_pack_goaway(uint32_t code, const char *message, size_t *len)
{
    Dctx__Wire__GoAway g = DCTX__WIRE__GO_AWAY__INIT;
    g.has_code = 1;
    g.code = code;
    g.message = (char *)message;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_GOAWAY;
    f.goaway = &g;
    return rt_pack(&f, len);
}

const char *rt_frame_kind(const Dctx__Wire__Frame *f)
{
    if (f == NULL)
        return "(nothing)";
    if (f->body_case == DCTX__WIRE__FRAME__BODY__NOT_SET)
        return "a frame of no kind";
    return dctx__frame_kind_name(f->body_case);
}

/* ===== One end of a stream: whole frames in, whole writes out ===== */

struct rt_end {
    nng_stream *s;
    nng_aio *raio, *waio;
    pthread_mutex_t rlock, wlock; /* a reader and a writer at a time */
    uint8_t *buf;                 /* bytes read, not handed out yet */
    size_t len, cap;
    bool ended; /* a read failed other than by its timeout */
};

static void end_init(struct rt_end *e, nng_stream *s)
{
    memset(e, 0, sizeof *e);
    e->s = s;
    assert_int_equal(nng_aio_alloc(&e->raio, NULL, NULL), 0);
    assert_int_equal(nng_aio_alloc(&e->waio, NULL, NULL), 0);
    pthread_mutex_init(&e->rlock, NULL);
    pthread_mutex_init(&e->wlock, NULL);
}

/* Close the stream (a read or write under way ends), then free it all. */
static void end_fini(struct rt_end *e)
{
    if (e->s == NULL)
        return;
    nng_stream_close(e->s);
    nng_aio_stop(e->raio);
    nng_aio_stop(e->waio);
    nng_stream_free(e->s);
    nng_aio_free(e->raio);
    nng_aio_free(e->waio);
    pthread_mutex_destroy(&e->rlock);
    pthread_mutex_destroy(&e->wlock);
    free(e->buf);
    e->s = NULL;
}

/* Write n bytes whole, within timeout_ms: 0 or nng's error. */
static int end_write(struct rt_end *e, const void *bytes, size_t n, int timeout_ms)
{
    pthread_mutex_lock(&e->wlock);
    int rv = 0;
    int64_t until = dctx_now() + MS(timeout_ms);
    const uint8_t *p = bytes;
    while (n > 0 && rv == 0) {
        int64_t left_ms = (until - dctx_now()) / MS(1);
        if (left_ms <= 0) {
            rv = NNG_ETIMEDOUT;
            break;
        }
        nng_iov iov = {.iov_buf = (void *)p, .iov_len = n};
        nng_aio_set_iov(e->waio, 1, &iov);
        nng_aio_set_timeout(e->waio, (nng_duration)left_ms);
        nng_stream_send(e->s, e->waio);
        nng_aio_wait(e->waio);
        rv = nng_aio_result(e->waio);
        size_t done = nng_aio_count(e->waio);
        p += done;
        n -= done;
    }
    pthread_mutex_unlock(&e->wlock);
    return rv;
}

/* Write one frame: the header for len bytes, then body. */
static int end_write_frame(struct rt_end *e, const uint8_t *body, size_t len, int timeout_ms)
{
    uint8_t *b = malloc(4 + len);
    assert_non_null(b);
    b[0] = (uint8_t)(len >> 24);
    b[1] = (uint8_t)(len >> 16);
    b[2] = (uint8_t)(len >> 8);
    b[3] = (uint8_t)len;
    if (len > 0)
        memcpy(b + 4, body, len);
    int rv = end_write(e, b, 4 + len, timeout_ms);
    free(b);
    return rv;
}

/* One read into the buffer, within timeout_ms: 0 (bytes came),
 * NNG_ETIMEDOUT, or another error (the stream ended: e->ended). */
static int end_read_some(struct rt_end *e, int64_t timeout_ms)
{
    if (e->ended)
        return NNG_ECLOSED;
    if (timeout_ms <= 0)
        return NNG_ETIMEDOUT;
    if (e->cap - e->len < READ_BYTES) {
        size_t cap = e->len + READ_BYTES;
        uint8_t *b = realloc(e->buf, cap);
        assert_non_null(b);
        e->buf = b;
        e->cap = cap;
    }
    nng_iov iov = {.iov_buf = e->buf + e->len, .iov_len = e->cap - e->len};
    nng_aio_set_iov(e->raio, 1, &iov);
    nng_aio_set_timeout(e->raio, (nng_duration)timeout_ms);
    nng_stream_recv(e->s, e->raio);
    nng_aio_wait(e->raio);
    int rv = nng_aio_result(e->raio);
    if (rv == 0) {
        e->len += nng_aio_count(e->raio);
        if (nng_aio_count(e->raio) == 0)
            rv = NNG_ECONNSHUT;
    }
    if (rv != 0 && rv != NNG_ETIMEDOUT)
        e->ended = true;
    return rv;
}

/* The length of the whole frame at the start of the buffer, if it is all
 * there (else 0): its body is *body_len bytes after the header. */
static size_t end_whole_frame(struct rt_end *e, size_t *body_len)
{
    if (e->len < 4)
        return 0;
    uint32_t n = (uint32_t)e->buf[0] << 24 | (uint32_t)e->buf[1] << 16 | (uint32_t)e->buf[2] << 8 |
                 (uint32_t)e->buf[3];
    if (n > FRAME_BYTES_SANE)
        fail_msg("a frame of %u bytes came: not a dctx peer's", n);
    *body_len = n;
    return e->len >= 4 + (size_t)n ? 4 + (size_t)n : 0;
}

/* The next frame's body (a new buffer of *len bytes, malloc'd even when
 * empty) within wait_ms: 0, NNG_ETIMEDOUT, or NNG_ECLOSED (the stream
 * ended, with a part of a frame or none). */
static int end_read_frame(struct rt_end *e, int wait_ms, uint8_t **body, size_t *len)
{
    pthread_mutex_lock(&e->rlock);
    int64_t until = dctx_now() + MS(wait_ms);
    size_t whole, n = 0;
    int rv = 0;
    while ((whole = end_whole_frame(e, &n)) == 0) {
        rv = end_read_some(e, (until - dctx_now()) / MS(1));
        if (rv != 0)
            break;
    }
    if (whole != 0) {
        *body = malloc(n ? n : 1);
        assert_non_null(*body);
        memcpy(*body, e->buf + 4, n);
        *len = n;
        memmove(e->buf, e->buf + whole, e->len - whole);
        e->len -= whole;
        rv = 0;
    } else if (rv != NNG_ETIMEDOUT) {
        rv = NNG_ECLOSED;
    }
    pthread_mutex_unlock(&e->rlock);
    return rv;
}

/* A stream dialed to url (a dctx URL), tried again for 5 s while nothing
 * listens there yet or its backlog is full. NULL if it never connected,
 * with why in err (n bytes). No cmocka asserts: the relay's thread too. */
static nng_stream *dial_stream(const char *url, char *err, size_t n)
{
    char to[DCTX__STREAM_URL_BYTES];
    if (dctx__stream_url(url, to) != 0) {
        snprintf(err, n, "%s: not a URL a stream can be dialed at", url);
        return NULL;
    }
    int64_t until = dctx_now() + MS(WAIT_MS);
    int rv;
    do {
        nng_stream_dialer *d = NULL;
        nng_aio *aio = NULL;
        if ((rv = nng_stream_dialer_alloc(&d, to)) != 0 ||
            (rv = nng_aio_alloc(&aio, NULL, NULL)) != 0) {
            nng_stream_dialer_free(d);
            break;
        }
        nng_aio_set_timeout(aio, WAIT_MS);
        nng_stream_dialer_dial(d, aio);
        nng_aio_wait(aio);
        rv = nng_aio_result(aio);
        nng_stream *s = rv == 0 ? nng_aio_get_output(aio, 0) : NULL;
        nng_stream_dialer_free(d); /* before the aio: as stream_testutil.c */
        nng_aio_free(aio);
        if (rv == 0)
            return s;
        rt_sleep(MS(5));
    } while (dctx_now() < until);
    snprintf(err, n, "could not dial %s (%s): %s", url, to, nng_strerror(rv));
    return NULL;
}

static uint8_t *pack_hello(size_t *len)
{
    Dctx__Wire__Hello h;
    Dctx__Wire__Frame f;
    st_hello(&f, &h, 1, RAW_MAX_FRAME_BYTES, "rt_raw");
    return rt_pack(&f, len);
}

/* ===== Raw sessions ===== */

struct rt_raw {
    struct rt_end end;
    uint32_t peer_max_frame_bytes, peer_max_calls;
};

rt_raw *rt_raw_dial(const char *url)
{
    rt_raw *r = calloc(1, sizeof *r);
    assert_non_null(r);
    char err[256];
    nng_stream *s = dial_stream(url, err, sizeof err);
    if (s == NULL)
        fail_msg("%s", err);
    end_init(&r->end, s);
    rt_track_raw(r);
    return r;
}

rt_raw *rt_raw_open(const char *url)
{
    rt_raw *r = rt_raw_dial(url);
    size_t len;
    uint8_t *hello = pack_hello(&len);
    rt_raw_send(r, hello, len);
    Dctx__Wire__Frame *f = rt_raw_recv_frame(r);
    if (f == NULL || f->body_case != DCTX__WIRE__FRAME__BODY_HELLO)
        fail_msg("%s answered a hello with %s%s%s", url, rt_frame_kind(f),
                 f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY ? ": " : "",
                 f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY &&
                         f->goaway->message != NULL
                     ? f->goaway->message
                     : "");
    r->peer_max_frame_bytes = f->hello->max_frame_bytes;
    r->peer_max_calls = f->hello->max_calls;
    dctx__wire__frame__free_unpacked(f, NULL);
    return r;
}

nng_stream_listener *rt_raw_listen(const char *url)
{
    char to[DCTX__STREAM_URL_BYTES];
    assert_int_equal(dctx__stream_url(url, to), 0);
    nng_stream_listener *l = NULL;
    assert_int_equal(nng_stream_listener_alloc(&l, to), 0);
    assert_int_equal(nng_stream_listener_listen(l), 0);
    return l;
}

rt_raw *rt_raw_accept(nng_stream_listener *l)
{
    rt_raw *r = rt_raw_accept_bare(l);
    size_t len;
    uint8_t *hello = pack_hello(&len);
    rt_raw_send(r, hello, len);
    return r;
}

rt_raw *rt_raw_accept_bare(nng_stream_listener *l)
{
    nng_aio *aio = NULL;
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_aio_set_timeout(aio, WAIT_MS);
    nng_stream_listener_accept(l, aio);
    nng_aio_wait(aio);
    int rv = nng_aio_result(aio);
    nng_stream *s = rv == 0 ? nng_aio_get_output(aio, 0) : NULL;
    nng_aio_free(aio);
    if (s == NULL)
        fail_msg("no connection came: %s", nng_strerror(rv));
    rt_raw *r = calloc(1, sizeof *r);
    assert_non_null(r);
    end_init(&r->end, s);
    rt_track_raw(r);
    Dctx__Wire__Frame *f = rt_raw_recv_frame(r);
    if (f == NULL || f->body_case != DCTX__WIRE__FRAME__BODY_HELLO)
        fail_msg("the client's first frame is %s, not a hello", rt_frame_kind(f));
    r->peer_max_frame_bytes = f->hello->max_frame_bytes;
    dctx__wire__frame__free_unpacked(f, NULL);
    return r;
}

uint32_t rt_raw_peer_max_frame_bytes(const rt_raw *r)
{
    return r->peer_max_frame_bytes;
}

uint32_t rt_raw_peer_max_calls(const rt_raw *r)
{
    return r->peer_max_calls;
}

void rt_raw_close(rt_raw *r)
{
    if (r == NULL)
        return;
    rt_untrack_raw(r);
    end_fini(&r->end);
    free(r);
}

void rt_raw_send(rt_raw *r, uint8_t *buf, size_t len)
{
    int rv = end_write_frame(&r->end, buf, len, WAIT_MS);
    free(buf);
    if (rv != 0)
        fail_msg("could not send a frame of %zu bytes: %s", len, nng_strerror(rv));
}

int rt_raw_write_frame(rt_raw *r, uint8_t *buf, size_t len)
{
    int rv = end_write_frame(&r->end, buf, len, WAIT_MS);
    free(buf);
    return rv;
}

int rt_raw_write(rt_raw *r, const void *bytes, size_t n, int timeout_ms)
{
    return end_write(&r->end, bytes, n, timeout_ms);
}

static void answer_ping(struct rt_end *e, const Dctx__Wire__Frame *ping)
{
    Dctx__Wire__Pong pong = DCTX__WIRE__PONG__INIT;
    pong.has_data = ping->ping->has_data;
    pong.data = ping->ping->data;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_PONG;
    f.pong = &pong;
    size_t len;
    uint8_t *b = rt_pack(&f, &len);
    (void)end_write_frame(e, b, len, WAIT_MS); /* a peer gone: the next read says so */
    free(b);
}

Dctx__Wire__Frame *rt_raw_recv_frame(rt_raw *r)
{
    int64_t until = dctx_now() + MS(FRAME_WAIT_MS);
    for (;;) {
        uint8_t *body = NULL;
        size_t len = 0;
        int64_t left_ms = (until - dctx_now()) / MS(1);
        if (end_read_frame(&r->end, left_ms > 0 ? (int)left_ms : 0, &body, &len) != 0)
            return NULL;
        Dctx__Wire__Frame *f = dctx__wire__frame__unpack(NULL, len, body);
        free(body);
        if (f == NULL)
            fail_msg("the server sent a frame of %zu bytes that does not parse", len);
        if (f->body_case != DCTX__WIRE__FRAME__BODY_PING)
            return f;
        answer_ping(&r->end, f);
        dctx__wire__frame__free_unpacked(f, NULL);
    }
}

/* The next frame, which must be of kind want: NULL if none came; another
 * kind fails the test. */
static Dctx__Wire__Frame *recv_kind(rt_raw *r, Dctx__Wire__Frame__BodyCase want, const char *what)
{
    Dctx__Wire__Frame *f = rt_raw_recv_frame(r);
    if (f == NULL || f->body_case == want)
        return f;
    char why[DCTX_WIRE_MESSAGE_BYTES_MAX + 64] = "";
    if (f->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY)
        snprintf(why, sizeof why, " %s \"%s\"", dctx_code_name((int)f->goaway->code),
                 f->goaway->message ? f->goaway->message : "");
    else if (f->body_case == DCTX__WIRE__FRAME__BODY_REPLY)
        snprintf(why, sizeof why, " %s \"%s\" for call %u", dctx_code_name((int)f->reply->code),
                 f->reply->message ? f->reply->message : "", f->call_id);
    else if (f->has_call_id)
        snprintf(why, sizeof why, " for call %u", f->call_id);
    const char *kind = rt_frame_kind(f);
    dctx__wire__frame__free_unpacked(f, NULL);
    fail_msg("expected %s, the server sent %s%s", what, kind, why);
    return NULL;
}

int rt_raw_recv_reply(rt_raw *r, uint32_t *call_id, char *msg, size_t msg_len)
{
    Dctx__Wire__Frame *f = recv_kind(r, DCTX__WIRE__FRAME__BODY_REPLY, "a reply");
    if (f == NULL)
        return -1;
    int code = (int)f->reply->code; /* absent: 0, OK */
    if (call_id != NULL)
        *call_id = f->call_id;
    if (msg != NULL)
        snprintf(msg, msg_len, "%s", f->reply->message ? f->reply->message : "");
    dctx__wire__frame__free_unpacked(f, NULL);
    return code;
}

int rt_raw_recv_cancel_ack(rt_raw *r, uint32_t *call_id)
{
    Dctx__Wire__Frame *f = recv_kind(r, DCTX__WIRE__FRAME__BODY_CANCEL_ACK, "a cancel_ack");
    if (f == NULL)
        return -1;
    int outcome = (int)f->cancel_ack->outcome;
    if (call_id != NULL)
        *call_id = f->call_id;
    dctx__wire__frame__free_unpacked(f, NULL);
    return outcome;
}

int rt_raw_recv_goaway(rt_raw *r, char *msg, size_t msg_len)
{
    Dctx__Wire__Frame *f = recv_kind(r, DCTX__WIRE__FRAME__BODY_GOAWAY, "a goaway");
    if (f == NULL)
        return -1;
    int code = (int)f->goaway->code;
    if (msg != NULL)
        snprintf(msg, msg_len, "%s", f->goaway->message ? f->goaway->message : "");
    dctx__wire__frame__free_unpacked(f, NULL);
    return code;
}

bool rt_raw_closed(rt_raw *r)
{
    struct rt_end *e = &r->end;
    pthread_mutex_lock(&e->rlock);
    bool closed = false;
    if (e->len == 0) {
        int rv = end_read_some(e, FRAME_WAIT_MS);
        closed = rv != 0 && rv != NNG_ETIMEDOUT && e->len == 0;
    }
    pthread_mutex_unlock(&e->rlock);
    return closed;
}

/* ===== The relay ===== */

void rt_frame_free(rt_frame *fr)
{
    if (fr == NULL)
        return;
    if (fr->f != NULL)
        dctx__wire__frame__free_unpacked(fr->f, NULL);
    free(fr->body);
    free(fr);
}

struct rt_relay_impl {
    char server_url[256];
    nng_stream_listener *l;
    pthread_t connector;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool connected, closing; /* under mu */
    char error[320];         /* why it could not connect; under mu */
    struct rt_end channel, server;
};

/* Read the next frame from `from` within WAIT_MS, passing pings and pongs
 * on to `to` (if not NULL) at once. NULL: none came, or the stream ended. */
static rt_frame *relay_read(struct rt_end *from, struct rt_end *to)
{
    int64_t until = dctx_now() + MS(WAIT_MS);
    for (;;) {
        rt_frame *fr = calloc(1, sizeof *fr);
        if (fr == NULL)
            return NULL;
        int64_t left_ms = (until - dctx_now()) / MS(1);
        if (end_read_frame(from, left_ms > 0 ? (int)left_ms : 0, &fr->body, &fr->len) != 0) {
            free(fr);
            return NULL;
        }
        fr->f = dctx__wire__frame__unpack(NULL, fr->len, fr->body);
        if (to == NULL || fr->f == NULL ||
            (fr->f->body_case != DCTX__WIRE__FRAME__BODY_PING &&
             fr->f->body_case != DCTX__WIRE__FRAME__BODY_PONG))
            return fr;
        (void)end_write_frame(to, fr->body, fr->len, WAIT_MS);
        rt_frame_free(fr);
    }
}

/* Write fr (taken over) to the stream e of the relay; false if it was
 * lost (the peer is gone, say). */
static bool relay_send(struct rt_end *e, rt_frame *fr)
{
    int rv = end_write_frame(e, fr->body, fr->len, WAIT_MS);
    rt_frame_free(fr);
    return rv == 0;
}

/* The relay's connector thread: accept the channel (it dials when it is
 * opened, and waits for the hellos before its first call can go), dial the
 * server, and pass the hellos both ways. What went wrong goes into error,
 * for the test's thread to fail with (cmocka asserts here only where
 * memory runs out). */
static void *relay_connector(void *arg)
{
    struct rt_relay_impl *m = arg;
    char err[sizeof m->error] = "";
    nng_aio *aio = NULL;
    nng_stream *cs = NULL, *ss = NULL;
    int rv = nng_aio_alloc(&aio, NULL, NULL);
    if (rv == 0) {
        nng_stream_listener_accept(m->l, aio); /* until a channel comes, or the close */
        nng_aio_wait(aio);
        rv = nng_aio_result(aio);
        cs = rv == 0 ? nng_aio_get_output(aio, 0) : NULL;
        nng_aio_free(aio);
    }
    if (rv != 0)
        snprintf(err, sizeof err, "no channel connected: %s", nng_strerror(rv));
    else
        ss = dial_stream(m->server_url, err, sizeof err);
    pthread_mutex_lock(&m->mu);
    if (cs != NULL && ss != NULL && !m->closing) {
        end_init(&m->channel, cs);
        end_init(&m->server, ss);
        cs = ss = NULL;
    }
    pthread_mutex_unlock(&m->mu);
    if (cs != NULL || ss != NULL) { /* closing, or the dial failed */
        if (cs != NULL)
            nng_stream_free(cs);
        if (ss != NULL)
            nng_stream_free(ss);
        if (err[0] == '\0')
            snprintf(err, sizeof err, "closed while connecting");
    } else if (err[0] == '\0') {
        rt_frame *hello = relay_read(&m->channel, NULL);
        if (hello == NULL || hello->f == NULL ||
            hello->f->body_case != DCTX__WIRE__FRAME__BODY_HELLO) {
            snprintf(err, sizeof err, "the channel's first frame is %s, not a hello",
                     hello == NULL ? "(nothing in 5 s)" : rt_frame_kind(hello->f));
            rt_frame_free(hello);
        } else if (!relay_send(&m->server, hello)) {
            snprintf(err, sizeof err, "the channel's hello could not go to the server");
        } else if ((hello = relay_read(&m->server, NULL)) == NULL) {
            snprintf(err, sizeof err, "the server answered the channel's hello with nothing");
        } else if (!relay_send(&m->channel, hello)) { /* a GoAway too: the channel is told */
            snprintf(err, sizeof err, "the server's hello could not go to the channel");
        }
    }
    pthread_mutex_lock(&m->mu);
    snprintf(m->error, sizeof m->error, "%s", err);
    m->connected = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

rt_relay *rt_relay_open(const char *server_url)
{
    rt_relay *r = calloc(1, sizeof *r);
    assert_non_null(r);
    r->impl = calloc(1, sizeof *r->impl);
    assert_non_null(r->impl);
    struct rt_relay_impl *m = r->impl;
    snprintf(m->server_url, sizeof m->server_url, "%s", server_url);
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    rt_url(RT_IPC, r->url, sizeof r->url);
    assert_int_equal(nng_stream_listener_alloc(&m->l, r->url), 0);
    assert_int_equal(nng_stream_listener_listen(m->l), 0);
    assert_int_equal(pthread_create(&m->connector, NULL, relay_connector, m), 0);
    rt_track_relay(r);
    return r;
}

void rt_relay_close(rt_relay *r)
{
    rt_untrack_relay(r);
    struct rt_relay_impl *m = r->impl;
    pthread_mutex_lock(&m->mu);
    m->closing = true;
    if (m->channel.s != NULL) /* ends a read of the hellos under way */
        nng_stream_close(m->channel.s);
    if (m->server.s != NULL)
        nng_stream_close(m->server.s);
    pthread_mutex_unlock(&m->mu);
    nng_stream_listener_close(m->l); /* ends the accept */
    pthread_join(m->connector, NULL);
    end_fini(&m->channel);
    end_fini(&m->server);
    nng_stream_listener_free(m->l);
    pthread_cond_destroy(&m->cv);
    pthread_mutex_destroy(&m->mu);
    free(m);
    free(r);
}

/* Wait (5 s at most) until the connector is done; fail the test if it
 * could not connect. */
static void relay_connected(rt_relay *r)
{
    struct rt_relay_impl *m = r->impl;
    char err[sizeof m->error] = "";
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += WAIT_MS / 1000;
    pthread_mutex_lock(&m->mu);
    while (!m->connected && pthread_cond_timedwait(&m->cv, &m->mu, &until) != ETIMEDOUT) {
    }
    if (!m->connected)
        snprintf(err, sizeof err, "no channel connected in 5 s");
    else
        snprintf(err, sizeof err, "%s", m->error);
    pthread_mutex_unlock(&m->mu);
    if (err[0] != '\0')
        fail_msg("relay at %s: %s", r->url, err);
}

rt_frame *rt_relay_from_channel(rt_relay *r)
{
    relay_connected(r);
    return relay_read(&r->impl->channel, &r->impl->server);
}

rt_frame *rt_relay_from_server(rt_relay *r)
{
    relay_connected(r);
    return relay_read(&r->impl->server, &r->impl->channel);
}

void rt_relay_to_server(rt_relay *r, rt_frame *fr)
{
    relay_connected(r);
    const char *kind = rt_frame_kind(fr->f);
    if (!relay_send(&r->impl->server, fr))
        print_message("relay: a %s to the server was lost\n", kind);
}

void rt_relay_to_channel(rt_relay *r, rt_frame *fr)
{
    relay_connected(r);
    const char *kind = rt_frame_kind(fr->f);
    if (!relay_send(&r->impl->channel, fr))
        print_message("relay: a %s to the channel was lost\n", kind);
}
