/*
 * test_rpc_streams.c - streaming calls (stream.h) over real sockets:
 * server, client and bidirectional streams with their messages in order,
 * flow control that stops a writer whose reader stops (its memory within
 * the window), and the context covering the whole stream: a cancel or a
 * deadline mid-stream ends it on both sides.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/stream.h>

#include "rpc_testutil.h"

#define COUNT "/it.Streams/Count"
#define SUM "/it.Streams/Sum"
#define ECHO "/it.Streams/Echo"
#define FLOOD "/it.Streams/Flood"

/* What the flood handler saw: messages sent, and how its stream ended. */
struct flood {
    atomic_int sent, done, err;
};

/* Count: the request message is N; answers 1..N, then OK. */
static int count_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)ctx;
    dctx_rpc_message m;
    if (!dctx_rpc_stream_recv(st, &m))
        return DCTX_INVALID_ARGUMENT;
    char text[32];
    snprintf(text, sizeof text, "%.*s", (int)m.len, (const char *)m.data);
    dctx_rpc_message_free(&m);
    int n = atoi(text);
    for (int i = 1; i <= n; i++) {
        snprintf(text, sizeof text, "%d", i);
        int rc = dctx_rpc_stream_send(st, text, strlen(text));
        if (rc != 0) {
            dctx_rpc_reply_set_message(reply, "send failed at %d", i);
            return rc;
        }
    }
    return DCTX_OK;
}

/* Sum: adds the integers the client sends until it half-closes. */
static int sum_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    long sum = 0;
    dctx_rpc_message m;
    while (dctx_rpc_stream_recv(st, &m)) {
        char text[32];
        snprintf(text, sizeof text, "%.*s", (int)m.len, (const char *)m.data);
        sum += atol(text);
        dctx_rpc_message_free(&m);
    }
    if (dctx_err(ctx) != 0)
        return dctx_err(ctx);
    dctx_rpc_reply_set_message(reply, "%ld", sum);
    return DCTX_OK;
}

/* Echo: every message back as it comes, until the client half-closes. */
static int echo_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)reply;
    dctx_rpc_message m;
    while (dctx_rpc_stream_recv(st, &m)) {
        int rc = dctx_rpc_stream_send(st, m.data, m.len);
        dctx_rpc_message_free(&m);
        if (rc != 0)
            return rc;
    }
    return dctx_err(ctx) != 0 ? dctx_err(ctx) : DCTX_OK;
}

/* Flood: sends 100-byte messages until sending fails (at most 100,000). */
static int flood_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)reply;
    struct flood *fl = arg;
    char msg[100];
    memset(msg, 'f', sizeof msg);
    int rc = 0;
    for (int i = 0; i < 100000 && rc == 0; i++)
        if ((rc = dctx_rpc_stream_send(st, msg, sizeof msg)) == 0)
            atomic_fetch_add(&fl->sent, 1);
    atomic_store(&fl->err, dctx_err(ctx));
    atomic_store(&fl->done, 1);
    return rc != 0 ? rc : DCTX_OK;
}

static struct flood flood;

static dctx_rpc_server *streams_server(enum rt_transport t, char *url)
{
    dctx_rpc_server_options so = rt_server_options(4);
    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(&so, &srv), 0);
    assert_int_equal(dctx_rpc_server_register_stream(srv, COUNT, count_handler, NULL), 0);
    assert_int_equal(dctx_rpc_server_register_stream(srv, SUM, sum_handler, NULL), 0);
    assert_int_equal(dctx_rpc_server_register_stream(srv, ECHO, echo_handler, NULL), 0);
    assert_int_equal(dctx_rpc_server_register_stream(srv, FLOOD, flood_handler, &flood), 0);
    assert_int_equal(dctx_rpc_server_register(srv, "/it.Streams/Unary", rt_echo_handler, NULL), 0);
    rt_server_listen(srv, t, url, 256);
    assert_int_equal(dctx_rpc_server_start(srv), 0);
    rt_track_server(srv);
    return srv;
}

static int finish_code(dctx_rpc_stream *st, char *msg, size_t len)
{
    dctx_rpc_result res;
    int code = dctx_rpc_stream_finish(st, &res);
    snprintf(msg, len, "%s", res.message != NULL ? res.message : "");
    dctx_rpc_result_free(&res);
    return code;
}

/* Server streaming on each transport: one request, 200 messages in order
 * (past the window: credit flows back), then OK. */
static void server_stream_delivers_every_message_in_order(void **state)
{
    (void)state;
    enum rt_transport ts[] = {RT_INPROC, RT_IPC, RT_TCP};
    for (size_t t = 0; t < 3; t++) {
        char url[256], msg[256];
        streams_server(ts[t], url);
        dctx_rpc_channel *ch = rt_channel_open(url, NULL);
        dctx_rpc_stream *st = NULL;
        assert_int_equal(dctx_rpc_stream_open(ch, NULL, COUNT, &st), 0);
        assert_int_equal(dctx_rpc_stream_send(st, "200", 3), 0);
        assert_int_equal(dctx_rpc_stream_close_send(st), 0);
        int got = 0;
        dctx_rpc_message m;
        while (dctx_rpc_stream_recv(st, &m)) {
            char want[16];
            snprintf(want, sizeof want, "%d", ++got);
            assert_int_equal(m.len, strlen(want));
            assert_memory_equal(m.data, want, m.len);
            dctx_rpc_message_free(&m);
        }
        assert_int_equal(got, 200);
        assert_int_equal(finish_code(st, msg, sizeof msg), DCTX_OK);
        dctx_rpc_stream_release(st);
        rt_channel_close(ch);
    }
}

/* Client streaming: 1,000 integers (past the window), their sum back. */
static void client_stream_sums_what_it_sent(void **state)
{
    (void)state;
    char url[256], msg[256];
    streams_server(RT_TCP, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, NULL, SUM, &st), 0);
    for (int i = 1; i <= 1000; i++) {
        char text[16];
        snprintf(text, sizeof text, "%d", i);
        assert_int_equal(dctx_rpc_stream_send(st, text, strlen(text)), 0);
    }
    assert_int_equal(dctx_rpc_stream_close_send(st), 0);
    dctx_rpc_message m;
    assert_false(dctx_rpc_stream_recv(st, &m));
    assert_int_equal(finish_code(st, msg, sizeof msg), DCTX_OK);
    assert_string_equal(msg, "500500");
    dctx_rpc_stream_release(st);
    rt_channel_close(ch);
}

/* Bidirectional: each message comes back, one at a time, in order. */
static void bidi_stream_echoes_each_message(void **state)
{
    (void)state;
    char url[256], msg[256];
    streams_server(RT_IPC, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, NULL, ECHO, &st), 0);
    for (int i = 0; i < 300; i++) {
        char text[16];
        snprintf(text, sizeof text, "m%d", i);
        assert_int_equal(dctx_rpc_stream_send(st, text, strlen(text)), 0);
        dctx_rpc_message m;
        assert_true(dctx_rpc_stream_recv(st, &m));
        assert_int_equal(m.len, strlen(text));
        assert_memory_equal(m.data, text, m.len);
        dctx_rpc_message_free(&m);
    }
    assert_int_equal(dctx_rpc_stream_close_send(st), 0);
    dctx_rpc_message m;
    assert_false(dctx_rpc_stream_recv(st, &m));
    assert_int_equal(finish_code(st, msg, sizeof msg), DCTX_OK);
    dctx_rpc_stream_release(st);
    rt_channel_close(ch);
}

/* A reader that stops reading stops its writer within the window (the
 * server sends no more than the window however long it waits); the
 * reader's cancel then ends the writer's send with the cancel. */
static void reader_that_stops_stops_its_writer_and_cancel_ends_it(void **state)
{
    (void)state;
    memset(&flood, 0, sizeof flood);
    char url[256], msg[256];
    streams_server(RT_TCP, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx *ctx = rt_with_cancel();
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, ctx, FLOOD, &st), 0);
    assert_int_equal(dctx_rpc_stream_close_send(st), 0);
    assert_true(WAIT_FOR(atomic_load(&flood.sent) >= DCTX_RPC_STREAM_WINDOW_MESSAGES, SEC(5)));
    rt_sleep(MS(200));
    assert_int_equal(atomic_load(&flood.sent), DCTX_RPC_STREAM_WINDOW_MESSAGES);
    assert_int_equal(atomic_load(&flood.done), 0); /* blocked for credit */
    dctx_cancel(ctx);
    assert_true(WAIT_FOR(atomic_load(&flood.done), SEC(5)));
    assert_int_equal(atomic_load(&flood.err), DCTX_CANCELED);
    assert_int_equal(finish_code(st, msg, sizeof msg), DCTX_CANCELED);
    dctx_rpc_stream_release(st);
    rt_ctx_release(ctx);
    rt_channel_close(ch);
}

/* A reader that reads takes everything a writer sends: credit flows. */
static void reader_that_reads_takes_everything(void **state)
{
    (void)state;
    memset(&flood, 0, sizeof flood);
    char url[256], msg[256];
    streams_server(RT_IPC, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, NULL, FLOOD, &st), 0);
    int got = 0;
    dctx_rpc_message m;
    while (dctx_rpc_stream_recv(st, &m)) {
        got++;
        dctx_rpc_message_free(&m);
    }
    assert_int_equal(got, 100000);
    assert_int_equal(finish_code(st, msg, sizeof msg), DCTX_OK);
    dctx_rpc_stream_release(st);
    rt_channel_close(ch);
}

/* The context's deadline ends a long bidirectional stream on both sides. */
static void deadline_ends_a_long_stream_on_both_sides(void **state)
{
    (void)state;
    char url[256], msg[256];
    streams_server(RT_TCP, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx *ctx = rt_with_timeout(MS(300));
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, ctx, ECHO, &st), 0);
    int rc = 0, sent = 0;
    for (int i = 0; i < 10000 && rc == 0; i++) {
        rc = dctx_rpc_stream_send(st, "tick", 4);
        dctx_rpc_message m;
        if (rc == 0 && dctx_rpc_stream_recv(st, &m)) {
            dctx_rpc_message_free(&m);
            sent++;
        }
        rt_sleep(MS(5));
    }
    assert_int_equal(rc, DCTX_DEADLINE_EXCEEDED);
    assert_true(sent > 0);
    assert_int_equal(finish_code(st, msg, sizeof msg), DCTX_DEADLINE_EXCEEDED);
    dctx_rpc_stream_release(st);
    rt_ctx_release(ctx);
    rt_channel_close(ch);
}

/* A stream of a unary method, and a unary call of a stream method, are
 * refused UNIMPLEMENTED, saying which. */
static void kinds_must_match(void **state)
{
    (void)state;
    char url[256], msg[256];
    streams_server(RT_IPC, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, NULL, "/it.Streams/Unary", &st), 0);
    assert_int_equal(finish_code(st, msg, sizeof msg), DCTX_UNIMPLEMENTED);
    assert_contains(msg, "not a stream method");
    dctx_rpc_stream_release(st);
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, COUNT, "5", 1, &res), DCTX_UNIMPLEMENTED);
    assert_contains(res.message, "is a stream method");
    dctx_rpc_result_free(&res);
    rt_channel_close(ch);
}

int main(void)
{
    rt_init("rpc_streams", RT_PORTS_STREAMS);
    const struct CMUnitTest tests[] = {
        RT_TEST(server_stream_delivers_every_message_in_order),
        RT_TEST(client_stream_sums_what_it_sent),
        RT_TEST(bidi_stream_echoes_each_message),
        RT_TEST(reader_that_stops_stops_its_writer_and_cancel_ends_it),
        RT_TEST(reader_that_reads_takes_everything),
        RT_TEST(deadline_ends_a_long_stream_on_both_sides),
        RT_TEST(kinds_must_match),
    };
    return cmocka_run_group_tests_name("rpc_streams", tests, rt_group_setup, NULL);
}
