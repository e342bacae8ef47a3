/*
 * test_rpc_stream_frames.c - a dctx server's side of streams on the wire
 * (proto/PROTOCOL.md section 10), seen by raw client sessions (rt_raw_*)
 * that write the frames themselves: a stream frame (message, half-close,
 * credit) for a unary call's id is a protocol error, and so is a message
 * past the credit window, each ending its connection with a GoAway that
 * says why; stream frames for ids the server does not know (never used,
 * or a call that ended) are dropped and the connection goes on; a raw
 * client opens a stream, gets the handler's messages and the Reply; the
 * server sends no more than its window until granted credit, and grants
 * credit once its handler took half a window.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/stream.h>

#include "rpc_testutil.h"

#define WAIT "/it.Frames/Wait"   /* unary: rt_probes_handler on waits[] */
#define UNARY "/it.Frames/Unary" /* unary: echo */
#define ECHO "/it.Frames/Echo"   /* stream: every message back until the half-close */
#define HOLD "/it.Frames/Hold"   /* stream: never reads; waits on its context */
#define COUNT "/it.Frames/Count" /* stream: first message N, sends "1" .. "N" */
#define TALLY "/it.Frames/Tally" /* stream: reads to the half-close, answers the count */

#define WINDOW DCTX_RPC_STREAM_FIRST_WINDOW_MESSAGES /* each side's first */

/* What the handlers write (static: see rpc_testutil.h). */
static rt_probe waits[3], hold;

static int hold_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)st;
    (void)reply;
    return rt_probe_run(arg, ctx);
}

static int tally_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    long n = 0;
    dctx_rpc_message m;
    while (dctx_rpc_stream_recv(st, &m)) {
        n++;
        dctx_rpc_message_free(&m);
    }
    dctx_rpc_reply_set_message(reply, "%ld", n);
    return dctx_err(ctx) != 0 ? dctx_err(ctx) : DCTX_OK;
}

/* A started, tracked server with every method above, on t (url: 256 bytes). */
static dctx_rpc_server *frames_server(enum rt_transport t, char *url)
{
    dctx_rpc_server_options so = rt_server_options(4);
    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(&so, &srv), 0);
    rt_track_server(srv);
    assert_int_equal(dctx_rpc_server_register(srv, WAIT, rt_probes_handler, waits), 0);
    assert_int_equal(dctx_rpc_server_register(srv, UNARY, rt_echo_handler, NULL), 0);
    assert_int_equal(dctx_rpc_server_register_stream(srv, ECHO, rt_echo_stream_handler, NULL), 0);
    assert_int_equal(dctx_rpc_server_register_stream(srv, HOLD, hold_handler, &hold), 0);
    assert_int_equal(dctx_rpc_server_register_stream(srv, COUNT, rt_count_stream_handler, NULL), 0);
    assert_int_equal(dctx_rpc_server_register_stream(srv, TALLY, tally_handler, NULL), 0);
    rt_server_listen(srv, t, url, 256);
    assert_int_equal(dctx_rpc_server_start(srv), 0);
    return srv;
}

/* ===== Frames to send ===== */

static void send_call(rt_raw *r, uint32_t id, const char *method, const void *req, size_t len)
{
    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t n;
    uint8_t *buf = rt_pack_call(id, method, token, 0, req, len, &n);
    rt_raw_send(r, buf, n);
}

static void send_stream_call(rt_raw *r, uint32_t id, const char *method)
{
    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t n;
    uint8_t *buf = rt_pack_stream_call(id, method, token, 0, &n);
    rt_raw_send(r, buf, n);
}

static void send_message(rt_raw *r, uint32_t id, const void *data, size_t len)
{
    size_t n;
    uint8_t *buf = rt_pack_stream_message(id, data, len, &n);
    rt_raw_send(r, buf, n);
}

static void send_half_close(rt_raw *r, uint32_t id)
{
    size_t n;
    uint8_t *buf = rt_pack_half_close(id, &n);
    rt_raw_send(r, buf, n);
}

static void send_credit(rt_raw *r, uint32_t id, uint32_t messages, uint32_t bytes)
{
    size_t n;
    uint8_t *buf = rt_pack_credit(id, messages, bytes, &n);
    rt_raw_send(r, buf, n);
}

/* count one-byte messages for id, framed into one write. */
static void send_messages(rt_raw *r, uint32_t id, int count)
{
    size_t one;
    uint8_t *body = rt_pack_stream_message(id, "m", 1, &one);
    size_t total = (size_t)count * (4 + one);
    uint8_t *all = malloc(total);
    assert_non_null(all);
    for (int i = 0; i < count; i++) {
        uint8_t *p = all + (size_t)i * (4 + one);
        p[0] = (uint8_t)(one >> 24);
        p[1] = (uint8_t)(one >> 16);
        p[2] = (uint8_t)(one >> 8);
        p[3] = (uint8_t)one;
        memcpy(p + 4, body, one);
    }
    free(body);
    int rv = rt_raw_write(r, all, total, 5000);
    free(all);
    if (rv != 0)
        fail_msg("could not write %d messages: %s", count, nng_strerror(rv));
}

/* ===== Frames to read ===== */

/* A ping with data, and its pong as the next frame: the server read all
 * that came before the ping and kept the connection. */
static void expect_pong(rt_raw *r, uint64_t data)
{
    size_t n;
    uint8_t *buf = rt_pack_ping(data, &n);
    rt_raw_send(r, buf, n);
    Dctx__Wire__Frame *f = rt_raw_recv_frame(r);
    if (f == NULL || f->body_case != DCTX__WIRE__FRAME__BODY_PONG)
        fail_msg("a ping was answered with %s%s%s", rt_frame_kind(f),
                 f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY ? ": " : "",
                 f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY &&
                         f->goaway->message != NULL
                     ? f->goaway->message
                     : "");
    assert_int_equal(f->pong->data, data);
    dctx__wire__frame__free_unpacked(f, NULL);
}

/* The next frame that is not a Credit (those are counted into *credits,
 * if not NULL); fails the test if none came. */
static Dctx__Wire__Frame *next_frame(rt_raw *r, int *credits)
{
    for (int i = 0; i < 64; i++) {
        Dctx__Wire__Frame *f = rt_raw_recv_frame(r);
        if (f == NULL)
            fail_msg("no frame came in 2 s");
        if (f->body_case != DCTX__WIRE__FRAME__BODY_CREDIT)
            return f;
        if (credits != NULL)
            (*credits)++;
        dctx__wire__frame__free_unpacked(f, NULL);
    }
    fail_msg("64 credits in a row");
    return NULL;
}

/* The next frame must be a Message of stream id with payload want. */
static void expect_message(rt_raw *r, uint32_t id, const char *want)
{
    Dctx__Wire__Frame *f = next_frame(r, NULL);
    if (f->body_case != DCTX__WIRE__FRAME__BODY_MESSAGE)
        fail_msg("expected the message \"%s\", the server sent %s%s%s", want, rt_frame_kind(f),
                 f->body_case == DCTX__WIRE__FRAME__BODY_REPLY ? " with " : "",
                 f->body_case == DCTX__WIRE__FRAME__BODY_REPLY && f->reply->message != NULL
                     ? f->reply->message
                     : "");
    assert_int_equal(f->call_id, id);
    char got[64];
    size_t len = f->message->has_payload ? f->message->payload.len : 0;
    snprintf(got, sizeof got, "%.*s", (int)len, len ? (const char *)f->message->payload.data : "");
    assert_string_equal(got, want);
    dctx__wire__frame__free_unpacked(f, NULL);
}

/* The next frame must be the Reply for id with code; its message into msg. */
static void expect_reply(rt_raw *r, uint32_t id, int code, char *msg, size_t msg_len)
{
    Dctx__Wire__Frame *f = next_frame(r, NULL);
    if (f->body_case != DCTX__WIRE__FRAME__BODY_REPLY)
        fail_msg("expected the reply for %u, the server sent %s%s%s", id, rt_frame_kind(f),
                 f->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY ? ": " : "",
                 f->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY && f->goaway->message != NULL
                     ? f->goaway->message
                     : "");
    assert_int_equal(f->call_id, id);
    if ((int)f->reply->code != code)
        fail_msg("reply %u: code %d \"%s\", expected %d", id, (int)f->reply->code,
                 f->reply->message ? f->reply->message : "", code);
    if (msg != NULL)
        snprintf(msg, msg_len, "%s", f->reply->message ? f->reply->message : "");
    dctx__wire__frame__free_unpacked(f, NULL);
}

/* A unary echo of text as call id on r, answered OK with text. */
static void unary_echo(rt_raw *r, uint32_t id, const char *text)
{
    send_call(r, id, UNARY, text, strlen(text));
    Dctx__Wire__Frame *f = next_frame(r, NULL);
    if (f->body_case != DCTX__WIRE__FRAME__BODY_REPLY)
        fail_msg("a unary call was answered with %s%s%s", rt_frame_kind(f),
                 f->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY ? ": " : "",
                 f->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY && f->goaway->message != NULL
                     ? f->goaway->message
                     : "");
    assert_int_equal(f->call_id, id);
    assert_int_equal(f->reply->code, DCTX_OK);
    assert_true(f->reply->has_payload);
    assert_int_equal(f->reply->payload.len, strlen(text));
    assert_memory_equal(f->reply->payload.data, text, strlen(text));
    dctx__wire__frame__free_unpacked(f, NULL);
}

/* ===== Tests ===== */

/* A Message, HalfClose or Credit naming a unary call in flight is a
 * protocol error: GoAway INVALID_ARGUMENT saying so, the connection
 * closed and counted, the call's handler canceled (its caller is lost);
 * the server serves other connections. */
static void stream_frame_for_a_unary_call_ends_the_connection(void **state)
{
    (void)state;
    for (int k = 0; k < 3; k++)
        rt_probe_init(&waits[k], RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    dctx_rpc_server *srv = frames_server(RT_IPC, url);
    const char *kinds[] = {"message", "half_close", "credit"};
    for (int k = 0; k < 3; k++) {
        rt_raw *r = rt_raw_open(url);
        uint32_t id = 70 + (uint32_t)k;
        uint8_t which = (uint8_t)k;
        send_call(r, id, WAIT, &which, 1);
        assert_true(WAIT_FOR(atomic_load(&waits[k].started), SEC(5)));
        uint64_t before = rt_server_stats(srv).bad_frames;
        if (k == 0)
            send_message(r, id, "x", 1);
        else if (k == 1)
            send_half_close(r, id);
        else
            send_credit(r, id, 10, 100);
        char msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1] = "";
        int code = rt_raw_recv_goaway(r, msg, sizeof msg);
        if (code != DCTX_INVALID_ARGUMENT)
            fail_msg("%s for unary call %u: goaway %d \"%s\"", kinds[k], id, code, msg);
        assert_contains(msg, "stream frame for a unary call");
        assert_true(rt_raw_closed(r));
        assert_true(WAIT_FOR(rt_server_stats(srv).bad_frames == before + 1, SEC(2)));
        assert_true(WAIT_FOR(atomic_load(&waits[k].finished), SEC(5)));
        assert_int_equal(waits[k].err, DCTX_CANCELED);
        assert_contains(waits[k].cause_msg, "caller lost");
        rt_raw_close(r);
    }
    rt_raw *other = rt_raw_open(url);
    unary_echo(other, 1, "still serving");
    rt_raw_close(other);
}

/* A client may send the first window of messages
 * (DCTX_RPC_STREAM_FIRST_WINDOW_MESSAGES) before any Credit; the server,
 * whose handler reads none, grants none, and the next message is a
 * protocol error: GoAway RESOURCE_EXHAUSTED "... past the credit
 * granted". */
static void messages_past_the_credit_window_end_the_connection(void **state)
{
    (void)state;
    rt_probe_init(&hold, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    dctx_rpc_server *srv = frames_server(RT_IPC, url);
    rt_raw *r = rt_raw_open(url);
    send_stream_call(r, 3, HOLD);
    assert_true(WAIT_FOR(atomic_load(&hold.started), SEC(5)));
    send_messages(r, 3, WINDOW);
    expect_pong(r, 0xfeed); /* a whole window: taken, no credit, no goaway */
    uint64_t before = rt_server_stats(srv).bad_frames;

    send_message(r, 3, "one too many", 12);
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1] = "";
    assert_int_equal(rt_raw_recv_goaway(r, msg, sizeof msg), DCTX_RESOURCE_EXHAUSTED);
    assert_contains(msg, "past the credit");
    assert_true(rt_raw_closed(r));
    assert_true(WAIT_FOR(rt_server_stats(srv).bad_frames == before + 1, SEC(2)));
    assert_true(WAIT_FOR(atomic_load(&hold.finished), SEC(5)));
    assert_int_equal(hold.err, DCTX_CANCELED);
    assert_contains(hold.cause_msg, "caller lost");
    rt_raw_close(r);
}

/* The byte window (DCTX_RPC_STREAM_FIRST_WINDOW_BYTES) may be passed by one
 * message; after it, a message of one byte is past the credit. */
static void one_message_may_pass_the_byte_window_once(void **state)
{
    (void)state;
    rt_probe_init(&hold, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    frames_server(RT_TCP, url);
    rt_raw *r = rt_raw_open(url);
    send_stream_call(r, 5, HOLD);
    assert_true(WAIT_FOR(atomic_load(&hold.started), SEC(5)));
    size_t big = DCTX_RPC_STREAM_FIRST_WINDOW_BYTES + 1024;
    assert_true(big + 64 < rt_raw_peer_max_frame_bytes(r));
    uint8_t *data = calloc(1, big);
    assert_non_null(data);
    send_message(r, 5, data, big);
    free(data);
    expect_pong(r, 0xb16);
    send_message(r, 5, "b", 1);
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1] = "";
    assert_int_equal(rt_raw_recv_goaway(r, msg, sizeof msg), DCTX_RESOURCE_EXHAUSTED);
    assert_contains(msg, "past the credit");
    assert_true(rt_raw_closed(r));
    assert_true(WAIT_FOR(atomic_load(&hold.finished), SEC(5)));
    rt_raw_close(r);
}

/* Stream frames for an id the server does not know, one never used or
 * one whose call ended (a unary call's or a stream's), are dropped
 * without a word: the connection goes on and its next call is answered. */
static void stream_frames_for_unknown_ids_are_dropped(void **state)
{
    (void)state;
    char url[256];
    dctx_rpc_server *srv = frames_server(RT_IPC, url);
    rt_raw *r = rt_raw_open(url);
    uint64_t before = rt_server_stats(srv).bad_frames;

    send_message(r, 901, "nobody", 6); /* never used */
    send_half_close(r, 902);
    send_credit(r, 903, 100, 1000);
    unary_echo(r, 1, "first");

    send_message(r, 1, "late", 4); /* the unary call that just ended */
    send_half_close(r, 1);
    send_credit(r, 1, 1, 1);
    unary_echo(r, 2, "second");

    send_stream_call(r, 3, ECHO); /* a stream that ends */
    send_half_close(r, 3);
    expect_reply(r, 3, DCTX_OK, NULL, 0);
    send_message(r, 3, "after the reply", 15);
    send_credit(r, 3, 5, 5);
    unary_echo(r, 4, "third");

    expect_pong(r, 42);
    assert_int_equal(rt_server_stats(srv).bad_frames, before);
    rt_raw_close(r);
}

/* A raw client opens a stream (a Call with stream set, no payload),
 * sends messages that come back one by one before it half-closes, then
 * half-closes and gets the Reply OK, after the last message. */
static void raw_client_stream_gets_the_messages_and_the_reply(void **state)
{
    (void)state;
    char url[256];
    frames_server(RT_TCP, url);
    rt_raw *r = rt_raw_open(url);
    send_stream_call(r, 11, ECHO);
    const char *words[] = {"one", "two", "three"};
    for (int i = 0; i < 3; i++) {
        send_message(r, 11, words[i], strlen(words[i]));
        expect_message(r, 11, words[i]); /* before the half-close: a stream both ways */
    }
    send_message(r, 11, "four", 4);
    send_message(r, 11, "", 0); /* an empty message is a message */
    send_half_close(r, 11);
    expect_message(r, 11, "four");
    expect_message(r, 11, "");
    expect_reply(r, 11, DCTX_OK, NULL, 0);
    unary_echo(r, 12, "after");
    rt_raw_close(r);
}

/* The server sends a window of messages and no more until the client
 * grants credit; then the rest, and the Reply. */
static void server_waits_for_credit_past_its_window(void **state)
{
    (void)state;
    char url[256];
    frames_server(RT_IPC, url);
    rt_raw *r = rt_raw_open(url);
    enum { N = WINDOW + 500 };
    send_stream_call(r, 21, COUNT);
    char n[16];
    snprintf(n, sizeof n, "%d", N);
    send_message(r, 21, n, strlen(n));
    char want[16];
    for (int i = 1; i <= WINDOW; i++) {
        snprintf(want, sizeof want, "%d", i);
        expect_message(r, 21, want);
    }
    expect_pong(r, 7); /* and nothing more: the window is spent */
    send_credit(r, 21, 500, 0);
    for (int i = WINDOW + 1; i <= N; i++) {
        snprintf(want, sizeof want, "%d", i);
        expect_message(r, 21, want);
    }
    expect_reply(r, 21, DCTX_OK, NULL, 0);
    rt_raw_close(r);
}

/* The server grants credit once its handler took half a window: what it
 * took, and the window again (a reader that reads has it doubled). A
 * client that sends a window, then what the first Credit grants, stays
 * within the protocol, and the handler gets every message. */
static void server_grants_credit_as_its_handler_reads(void **state)
{
    (void)state;
    char url[256];
    dctx_rpc_server *srv = frames_server(RT_IPC, url);
    rt_raw *r = rt_raw_open(url);
    send_stream_call(r, 31, TALLY);
    send_messages(r, 31, WINDOW);
    Dctx__Wire__Frame *f = rt_raw_recv_frame(r);
    if (f == NULL || f->body_case != DCTX__WIRE__FRAME__BODY_CREDIT)
        fail_msg("a window sent to a reading handler was answered with %s", rt_frame_kind(f));
    assert_int_equal(f->call_id, 31);
    uint32_t granted = f->credit->messages;
    dctx__wire__frame__free_unpacked(f, NULL);
    if (granted != WINDOW / 2 + WINDOW) /* what it took, and the window again: it doubles */
        fail_msg("a credit of %u messages, expected %d", granted, WINDOW / 2 + WINDOW);
    send_messages(r, 31, (int)granted);
    send_half_close(r, 31);
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
    char total[16];
    snprintf(total, sizeof total, "%u", WINDOW + granted);
    expect_reply(r, 31, DCTX_OK, msg, sizeof msg);
    assert_string_equal(msg, total);
    assert_int_equal(rt_server_stats(srv).bad_frames, 0);
    rt_raw_close(r);
}

int main(void)
{
    rt_init("rpc_stream_frames", RT_PORTS_STREAM_FRAMES);
    const struct CMUnitTest tests[] = {
        RT_TEST(stream_frame_for_a_unary_call_ends_the_connection),
        RT_TEST(messages_past_the_credit_window_end_the_connection),
        RT_TEST(one_message_may_pass_the_byte_window_once),
        RT_TEST(stream_frames_for_unknown_ids_are_dropped),
        RT_TEST(raw_client_stream_gets_the_messages_and_the_reply),
        RT_TEST(server_waits_for_credit_past_its_window),
        RT_TEST(server_grants_credit_as_its_handler_reads),
    };
    return cmocka_run_group_tests_name("rpc_stream_frames", tests, rt_group_setup, NULL);
}
