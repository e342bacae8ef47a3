/*
 * test_session.c - the session protocol's connection-level rules
 * (lib/rpc/session.c) over real nng streams: hellos open a session and
 * tell each side the other's limits; pings are answered by the session
 * itself; a frame over the peer's limit is refused before it is sent and
 * the session goes on; and every protocol error a raw peer commits (no
 * hello first, a version this side does not speak, a second hello, an
 * unknown kind, a body that does not parse, a frame for the other side, a
 * call without an id) is answered with a GoAway naming it, ends the
 * session once, and is counted.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include "frame.h"
#include "framing.h"
#include "session.h"
#include "stream_testutil.h"
#include "testutil.h"

/* What a session's owner saw (static: callbacks write it). */
struct seen {
    atomic_int ready, frames, ends, pongs, calls;
    atomic_int end_code;
    struct dctx__session_peer peer;
    char why[256];
    uint64_t pong_data;
    uint32_t last_call_id;
};

static void on_ready(void *owner, struct dctx__session *s, const struct dctx__session_peer *peer)
{
    (void)s;
    struct seen *w = owner;
    w->peer = *peer;
    atomic_fetch_add(&w->ready, 1);
}

static bool on_frame(void *owner, struct dctx__session *s, Dctx__Wire__Frame *f)
{
    (void)s;
    struct seen *w = owner;
    if (f->body_case == DCTX__WIRE__FRAME__BODY_PONG) {
        w->pong_data = f->pong->data;
        atomic_fetch_add(&w->pongs, 1);
    } else if (f->body_case == DCTX__WIRE__FRAME__BODY_CALL) {
        w->last_call_id = f->call_id;
        atomic_fetch_add(&w->calls, 1);
    }
    atomic_fetch_add(&w->frames, 1);
    return false;
}

static void on_end(void *owner, struct dctx__session *s, int code, const char *why)
{
    (void)s;
    struct seen *w = owner;
    snprintf(w->why, sizeof w->why, "%s", why);
    atomic_store(&w->end_code, code);
    atomic_fetch_add(&w->ends, 1);
}

static struct dctx__session *open_session(nng_stream *st, bool server, struct seen *w,
                                          uint32_t max_frame)
{
    struct dctx__session_options o = {.server = server,
                                      .max_frame_bytes = max_frame,
                                      .max_calls = 100,
                                      .name = server ? "srv" : "cli",
                                      .on_ready = on_ready,
                                      .on_frame = on_frame,
                                      .on_end = on_end,
                                      .owner = w};
    struct dctx__session *s = NULL;
    assert_int_equal(dctx__session_open(st, &o, &s), 0);
    dctx__session_start(s);
    return s;
}

static bool wait_for(atomic_int *v, int want)
{
    int64_t until = dctx_now() + 5000000000LL;
    while (atomic_load(v) < want && dctx_now() < until)
        nng_msleep(1);
    return atomic_load(v) >= want;
}

static struct seen srv_seen, cli_seen;

/* A connected pair of sessions, both ready. */
static void open_pair(struct st_place *p, struct dctx__session **srv, struct dctx__session **cli,
                      uint32_t srv_max, uint32_t cli_max)
{
    memset(&srv_seen, 0, sizeof srv_seen);
    memset(&cli_seen, 0, sizeof cli_seen);
    st_listen(ST_IPC, p);
    nng_stream *cs = st_dial(p->url);
    *srv = open_session(st_accept(p), true, &srv_seen, srv_max);
    *cli = open_session(cs, false, &cli_seen, cli_max);
    assert_true(wait_for(&srv_seen.ready, 1));
    assert_true(wait_for(&cli_seen.ready, 1));
}

static int send_call(struct dctx__session *s, uint32_t id, size_t payload_len)
{
    Dctx__Wire__Call c = DCTX__WIRE__CALL__INIT;
    c.has_method = 1;
    c.method.data = (uint8_t *)"/t.S/M";
    c.method.len = strlen("/t.S/M");
    unsigned char *payload = calloc(1, payload_len + 1);
    c.has_payload = 1;
    c.payload.data = payload;
    c.payload.len = payload_len;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &c;
    f.has_call_id = 1;
    f.call_id = id;
    int rc = dctx__session_send(s, &f);
    free(payload);
    return rc;
}

static void hellos_tell_each_side_the_others_limits_and_name(void **state)
{
    (void)state;
    struct st_place p;
    struct dctx__session *srv, *cli;
    open_pair(&p, &srv, &cli, 65536, 8192);
    assert_int_equal(srv_seen.peer.version, 1);
    assert_int_equal(srv_seen.peer.max_frame_bytes, 8192);
    assert_string_equal(srv_seen.peer.name, "cli");
    assert_int_equal(cli_seen.peer.max_frame_bytes, 65536);
    assert_int_equal(cli_seen.peer.max_calls, 100);
    assert_string_equal(cli_seen.peer.name, "srv");
    assert_non_null(dctx__session_peer_hello(cli));
    assert_int_equal(send_call(cli, 7, 10), 0);
    assert_true(wait_for(&srv_seen.calls, 1));
    assert_int_equal(srv_seen.last_call_id, 7);
    dctx__session_close(cli);
    dctx__session_close(srv);
    nng_stream_listener_free(p.l);
}

static void ping_is_answered_by_the_session_with_its_data(void **state)
{
    (void)state;
    struct st_place p;
    struct dctx__session *srv, *cli;
    open_pair(&p, &srv, &cli, 65536, 65536);
    assert_int_equal(dctx__session_ping(cli, 0xfeedfacecafeULL), 0);
    assert_true(wait_for(&cli_seen.pongs, 1));
    assert_int_equal(cli_seen.pong_data, 0xfeedfacecafeULL);
    assert_int_equal(atomic_load(&srv_seen.frames), 0); /* the server's owner saw nothing */
    assert_int_equal(dctx__session_ping(srv, 42), 0);   /* and the other way */
    assert_true(wait_for(&srv_seen.pongs, 1));
    dctx__session_close(cli);
    dctx__session_close(srv);
    nng_stream_listener_free(p.l);
}

static void frame_over_the_peers_limit_is_refused_before_sending(void **state)
{
    (void)state;
    struct st_place p;
    struct dctx__session *srv, *cli;
    open_pair(&p, &srv, &cli, 8192, 65536);
    assert_int_equal(send_call(cli, 1, 9000), DCTX_RESOURCE_EXHAUSTED);
    assert_int_equal(send_call(cli, 2, 100), 0); /* the session goes on */
    assert_true(wait_for(&srv_seen.calls, 1));
    assert_int_equal(srv_seen.last_call_id, 2);
    assert_int_equal(atomic_load(&srv_seen.ends), 0);
    assert_int_equal(atomic_load(&cli_seen.ends), 0);
    dctx__session_close(cli);
    dctx__session_close(srv);
    nng_stream_listener_free(p.l);
}

/* ===== Raw peers ===== */

static void raw_send_frame(nng_stream *s, const Dctx__Wire__Frame *f)
{
    size_t n = dctx__wire__frame__get_packed_size(f);
    unsigned char *b = malloc(n ? n : 1);
    assert_non_null(b);
    dctx__wire__frame__pack(f, b);
    st_send_body(s, b, n);
    free(b);
}

static void raw_send_hello(nng_stream *s, uint32_t version)
{
    Dctx__Wire__Hello h;
    Dctx__Wire__Frame f;
    st_hello(&f, &h, version, 65536, NULL);
    raw_send_frame(s, &f);
}

/* Read frames from a raw peer's stream until a GoAway (or 5 s); its code,
 * and its message into msg; -1 if none came. */
static int raw_read_goaway(nng_stream *s, char *msg, size_t msg_len)
{
    struct dctx__frame_reader r;
    dctx__frame_reader_init(&r, 1 << 20);
    nng_aio *aio;
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    unsigned char buf[4096];
    int code = -1;
    int64_t until = dctx_now() + 5000000000LL;
    while (code < 0 && dctx_now() < until) {
        nng_iov iov = {.iov_buf = buf, .iov_len = sizeof buf};
        nng_aio_set_iov(aio, 1, &iov);
        nng_aio_set_timeout(aio, 5000);
        nng_stream_recv(s, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0)
            break;
        const unsigned char *p = buf;
        size_t left = nng_aio_count(aio);
        const unsigned char *body;
        size_t len;
        while (code < 0 &&
               dctx__frame_reader_next(&r, &p, &left, &body, &len) == DCTX__FRAME_READY) {
            Dctx__Wire__Frame *f = dctx__frame_unpack_bytes(body, len);
            if (f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY) {
                code = (int)f->goaway->code;
                snprintf(msg, msg_len, "%s", f->goaway->message ? f->goaway->message : "");
            }
            dctx__frame_free(f);
        }
    }
    nng_aio_free(aio);
    dctx__frame_reader_fini(&r);
    return code;
}

/* A raw client that says hello (or not: version 0) and then sends what
 * misbehave writes; the server must answer with a GoAway of code naming
 * why, end its session once with it, and count one bad frame. */
static void server_answers_with_goaway(uint32_t hello_version, void (*misbehave)(nng_stream *s),
                                       int code, const char *why)
{
    memset(&srv_seen, 0, sizeof srv_seen);
    struct st_place p;
    st_listen(ST_IPC, &p);
    nng_stream *raw = st_dial(p.url);
    struct dctx__session *srv = open_session(st_accept(&p), true, &srv_seen, 65536);
    if (hello_version != 0)
        raw_send_hello(raw, hello_version);
    if (misbehave != NULL)
        misbehave(raw);
    char msg[256] = "";
    assert_int_equal(raw_read_goaway(raw, msg, sizeof msg), code);
    if (strstr(msg, why) == NULL)
        fail_msg("goaway says \"%s\", not \"%s\"", msg, why);
    assert_true(wait_for(&srv_seen.ends, 1));
    assert_int_equal(atomic_load(&srv_seen.end_code), code);
    assert_int_equal(dctx__session_bad_frames(srv), 1);
    nng_msleep(10);
    assert_int_equal(atomic_load(&srv_seen.ends), 1);
    dctx__session_close(srv);
    nng_stream_close(raw);
    nng_stream_free(raw);
    nng_stream_listener_free(p.l);
}

static void send_ping(nng_stream *s)
{
    Dctx__Wire__Ping ping = DCTX__WIRE__PING__INIT;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_PING;
    f.ping = &ping;
    raw_send_frame(s, &f);
}

static void send_second_hello(nng_stream *s)
{
    raw_send_hello(s, 1);
}

static void send_unknown_kind(nng_stream *s)
{
    const unsigned char field15[] = {0x7a, 0x00}; /* Frame field 15, empty bytes */
    st_send_body(s, field15, sizeof field15);
}

static void send_garbage(nng_stream *s)
{
    const unsigned char garbage[] = {0xff, 0xff, 0xff, 0xff, 0xff};
    st_send_body(s, garbage, sizeof garbage);
}

static void send_reply(nng_stream *s)
{
    Dctx__Wire__Reply r = DCTX__WIRE__REPLY__INIT;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_REPLY;
    f.reply = &r;
    f.has_call_id = 1;
    f.call_id = 1;
    raw_send_frame(s, &f);
}

static void send_call_without_id(nng_stream *s)
{
    Dctx__Wire__Call c = DCTX__WIRE__CALL__INIT;
    c.has_method = 1;
    c.method.data = (uint8_t *)"/t.S/M";
    c.method.len = strlen("/t.S/M");
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &c;
    raw_send_frame(s, &f);
}

static void send_big_first_frame(nng_stream *s)
{
    unsigned char *b = calloc(1, 5000);
    assert_non_null(b);
    st_send_body(s, b, 5000);
    free(b);
}

/* A client whose server says hello in another version answers with a
 * GoAway, ends FAILED_PRECONDITION and never becomes ready. */
static void client_whose_server_speaks_another_version_refuses_it_and_ends(void **state)
{
    (void)state;
    memset(&cli_seen, 0, sizeof cli_seen);
    struct st_place p;
    st_listen(ST_IPC, &p);
    nng_stream *cs = st_dial(p.url);
    nng_stream *raw = st_accept(&p);
    struct dctx__session *cli = open_session(cs, false, &cli_seen, 65536);
    raw_send_hello(raw, 9);
    assert_true(wait_for(&cli_seen.ends, 1));
    assert_int_equal(atomic_load(&cli_seen.end_code), DCTX_FAILED_PRECONDITION);
    assert_int_equal(atomic_load(&cli_seen.ready), 0);
    assert_int_equal(send_call(cli, 1, 1), DCTX_UNAVAILABLE);
    dctx__session_close(cli);
    nng_stream_close(raw);
    nng_stream_free(raw);
    nng_stream_listener_free(p.l);
}

/* A raw server that says hello, then sends the client a call: the client
 * answers with a GoAway and ends. */
static void call_sent_to_a_client_is_refused(void **state)
{
    (void)state;
    memset(&cli_seen, 0, sizeof cli_seen);
    struct st_place p;
    st_listen(ST_IPC, &p);
    nng_stream *cs = st_dial(p.url);
    nng_stream *raw = st_accept(&p);
    struct dctx__session *cli = open_session(cs, false, &cli_seen, 65536);
    raw_send_hello(raw, 1);
    assert_true(wait_for(&cli_seen.ready, 1));
    Dctx__Wire__Call c = DCTX__WIRE__CALL__INIT;
    c.has_method = 1;
    c.method.data = (uint8_t *)"/t.S/M";
    c.method.len = strlen("/t.S/M");
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &c;
    f.has_call_id = 1;
    f.call_id = 3;
    raw_send_frame(raw, &f);
    char msg[256] = "";
    assert_int_equal(raw_read_goaway(raw, msg, sizeof msg), DCTX_INVALID_ARGUMENT);
    assert_non_null(strstr(msg, "call sent to the client"));
    assert_true(wait_for(&cli_seen.ends, 1));
    assert_int_equal(atomic_load(&cli_seen.calls), 0);
    dctx__session_close(cli);
    nng_stream_close(raw);
    nng_stream_free(raw);
    nng_stream_listener_free(p.l);
}

static void send_length_zero(nng_stream *s)
{
    const unsigned char zero[4] = {0};
    st_send(s, zero, sizeof zero);
}

static void send_length_over_the_limit(nng_stream *s)
{
    unsigned char h[DCTX__FRAME_HEADER_BYTES];
    dctx__frame_header(65537, h); /* the server takes 65536 */
    st_send(s, h, sizeof h);
}

/* A call packed with 30,000 empty values: 60 KB on the wire that would
 * unpack into some 2 MB of structs. */
static void send_call_of_empty_values(nng_stream *s)
{
    enum { N = 30000 };
    size_t n = 2 + 3 + 2 * (size_t)N + 16;
    unsigned char *b = malloc(n), *q = b;
    assert_non_null(b);
    /* Frame.call (1) { Call.context (2) { ContextHeader.values (3) {} x N } } */
    size_t hdr_len = 2 * (size_t)N;
    size_t ctx_field = 1 + 3 + hdr_len; /* tag, 3-byte varint length, values */
    *q++ = 0x0a;                        /* Frame.call, length-delimited */
    *q++ = (unsigned char)(0x80 | (ctx_field & 0x7f));
    *q++ = (unsigned char)(0x80 | ((ctx_field >> 7) & 0x7f));
    *q++ = (unsigned char)(ctx_field >> 14);
    *q++ = 0x12; /* Call.context */
    *q++ = (unsigned char)(0x80 | (hdr_len & 0x7f));
    *q++ = (unsigned char)(0x80 | ((hdr_len >> 7) & 0x7f));
    *q++ = (unsigned char)(hdr_len >> 14);
    for (int i = 0; i < N; i++) {
        *q++ = 0x1a; /* ContextHeader.values, empty */
        *q++ = 0x00;
    }
    st_send_body(s, b, (size_t)(q - b));
    free(b);
}

/* The first frame's length alone, over a hello's 4096, is refused: the
 * server does not wait for (or keep) the body. */
static void first_frame_announced_over_a_hello_is_refused_from_its_length(void **state)
{
    (void)state;
    memset(&srv_seen, 0, sizeof srv_seen);
    struct st_place p;
    st_listen(ST_IPC, &p);
    nng_stream *raw = st_dial(p.url);
    struct dctx__session *srv = open_session(st_accept(&p), true, &srv_seen, 65536);
    unsigned char h[DCTX__FRAME_HEADER_BYTES + 100] = {0};
    dctx__frame_header(65000, h);
    st_send(raw, h, sizeof h); /* the length and 100 bytes of a 65000-byte body */
    char msg[256] = "";
    assert_int_equal(raw_read_goaway(raw, msg, sizeof msg), DCTX_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(msg, "a hello has at most 4096"));
    assert_int_equal(dctx__session_bad_frames(srv), 1);
    dctx__session_close(srv);
    st_close(raw);
    nng_stream_listener_free(p.l);
}

/* Sessions opened against a peer that already closed: each ends once,
 * after start, and closes cleanly (the owner had it before any callback). */
static void sessions_to_a_peer_that_left_end_once_after_start(void **state)
{
    (void)state;
    enum { N = 200 };
    struct st_place p;
    st_listen(ST_IPC, &p);
    static struct seen w;
    for (int i = 0; i < N; i++) {
        memset(&w, 0, sizeof w);
        nng_stream *cs = st_dial(p.url);
        st_close(st_accept(&p));
        struct dctx__session_options o = {.max_frame_bytes = 65536,
                                          .on_ready = on_ready,
                                          .on_frame = on_frame,
                                          .on_end = on_end,
                                          .owner = &w};
        struct dctx__session *s = NULL;
        assert_int_equal(dctx__session_open(cs, &o, &s), 0);
        assert_int_equal(atomic_load(&w.ends), 0); /* nothing before start */
        dctx__session_start(s);
        assert_true(wait_for(&w.ends, 1));
        assert_int_equal(atomic_load(&w.end_code), DCTX_UNAVAILABLE);
        dctx__session_close(s);
        assert_int_equal(atomic_load(&w.ends), 1);
    }
    nng_stream_listener_free(p.l);
}

/* The protocol errors a raw client commits, each a row: the name of the
 * test, the hello it sends first (0: none), what it sends then, and the
 * GoAway's code and words. */
struct goaway_case {
    uint32_t hello_version;
    void (*misbehave)(nng_stream *s);
    int code;
    const char *why;
};

static void goaway_case_runs(void **state)
{
    const struct goaway_case *c = *state;
    server_answers_with_goaway(c->hello_version, c->misbehave, c->code, c->why);
}

static const struct goaway_case case_first_frame_that_is_not_a_hello_is_refused = {
    0, send_ping, DCTX_INVALID_ARGUMENT, "not a hello"};
static const struct goaway_case case_hello_of_another_version_is_refused = {
    2, NULL, DCTX_FAILED_PRECONDITION, "version 2 not supported"};
static const struct goaway_case case_second_hello_is_refused = {
    1, send_second_hello, DCTX_INVALID_ARGUMENT, "second hello"};
static const struct goaway_case case_unknown_frame_kind_is_unimplemented = {
    1, send_unknown_kind, DCTX_UNIMPLEMENTED, "kind 15 not understood"};
static const struct goaway_case case_body_that_does_not_parse_is_refused = {
    1, send_garbage, DCTX_INVALID_ARGUMENT, "does not parse"};
static const struct goaway_case case_reply_sent_to_a_server_is_refused = {
    1, send_reply, DCTX_INVALID_ARGUMENT, "reply sent to the server"};
static const struct goaway_case case_call_without_an_id_is_refused = {
    1, send_call_without_id, DCTX_INVALID_ARGUMENT, "without a call id"};
static const struct goaway_case case_first_frame_larger_than_a_hello_is_refused = {
    0, send_big_first_frame, DCTX_RESOURCE_EXHAUSTED, "a hello has at most 4096"};
static const struct goaway_case case_frame_of_length_zero_is_answered_with_goaway = {
    1, send_length_zero, DCTX_INVALID_ARGUMENT, "length 0"};
static const struct goaway_case case_frame_over_the_limit_is_answered_with_goaway = {
    1, send_length_over_the_limit, DCTX_RESOURCE_EXHAUSTED, "longer than this side's limit"};
static const struct goaway_case case_frame_that_would_unpack_many_times_its_size_is_refused = {
    1, send_call_of_empty_values, DCTX_INVALID_ARGUMENT, "does not parse"};

int main(void)
{
    st_init("session");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hellos_tell_each_side_the_others_limits_and_name),
        cmocka_unit_test(ping_is_answered_by_the_session_with_its_data),
        cmocka_unit_test(frame_over_the_peers_limit_is_refused_before_sending),
        {"first_frame_that_is_not_a_hello_is_refused", goaway_case_runs, NULL, NULL,
         (void *)&case_first_frame_that_is_not_a_hello_is_refused},
        {"hello_of_another_version_is_refused", goaway_case_runs, NULL, NULL,
         (void *)&case_hello_of_another_version_is_refused},
        {"second_hello_is_refused", goaway_case_runs, NULL, NULL,
         (void *)&case_second_hello_is_refused},
        {"unknown_frame_kind_is_unimplemented", goaway_case_runs, NULL, NULL,
         (void *)&case_unknown_frame_kind_is_unimplemented},
        {"body_that_does_not_parse_is_refused", goaway_case_runs, NULL, NULL,
         (void *)&case_body_that_does_not_parse_is_refused},
        {"reply_sent_to_a_server_is_refused", goaway_case_runs, NULL, NULL,
         (void *)&case_reply_sent_to_a_server_is_refused},
        {"call_without_an_id_is_refused", goaway_case_runs, NULL, NULL,
         (void *)&case_call_without_an_id_is_refused},
        {"first_frame_larger_than_a_hello_is_refused", goaway_case_runs, NULL, NULL,
         (void *)&case_first_frame_larger_than_a_hello_is_refused},
        cmocka_unit_test(client_whose_server_speaks_another_version_refuses_it_and_ends),
        cmocka_unit_test(call_sent_to_a_client_is_refused),
        {"frame_of_length_zero_is_answered_with_goaway", goaway_case_runs, NULL, NULL,
         (void *)&case_frame_of_length_zero_is_answered_with_goaway},
        {"frame_over_the_limit_is_answered_with_goaway", goaway_case_runs, NULL, NULL,
         (void *)&case_frame_over_the_limit_is_answered_with_goaway},
        cmocka_unit_test(first_frame_announced_over_a_hello_is_refused_from_its_length),
        {"frame_that_would_unpack_many_times_its_size_is_refused", goaway_case_runs, NULL, NULL,
         (void *)&case_frame_that_would_unpack_many_times_its_size_is_refused},
        cmocka_unit_test(sessions_to_a_peer_that_left_end_once_after_start),
    };
    int rc = cmocka_run_group_tests_name("session", tests, NULL, NULL);
    st_fini();
    return rc;
}
