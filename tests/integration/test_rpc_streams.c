/*
 * test_rpc_streams.c - streaming calls (stream.h) over real sockets:
 * server, client and bidirectional streams with their messages in order,
 * flow control that stops a writer whose reader stops (its memory within
 * the window), and the context covering the whole stream: a cancel or a
 * deadline mid-stream ends it on both sides, and a cancel goes through
 * every hop of a relayed stream.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/stream.h>

#include "rpc_testutil.h"

#define COUNT "/it.Streams/Count"
#define SUM "/it.Streams/Sum"
#define ECHO "/it.Streams/Echo"
#define FLOOD "/it.Streams/Flood"
#define FAIL_AT "/it.Streams/FailAt"

/* What the flood handler saw: messages sent, and how its stream ended. */
struct flood {
    atomic_int sent, done, err;
};

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

/* FailAt: takes 10 messages, then fails the stream. */
static int fail_at_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)ctx;
    dctx_rpc_message m;
    for (int i = 0; i < 10 && dctx_rpc_stream_recv(st, &m); i++)
        dctx_rpc_message_free(&m);
    dctx_rpc_reply_set_message(reply, "enough after 10");
    return DCTX_FAILED_PRECONDITION;
}

static struct flood flood;

/* Echo, recording the error its context ended with (-1: not ended yet). */
static atomic_int echo_ended_with;

static int recording_echo(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    int code = rt_echo_stream_handler(arg, ctx, st, reply);
    atomic_store(&echo_ended_with, dctx_err(ctx));
    return code;
}

/* A hop of a relayed stream: Relay opens Relay (or, at the last hop,
 * Flood) on next with its own context and passes every message back;
 * each hop records the error its context ended with. */
#define RELAY "/it.Streams/Relay"
struct hop {
    dctx_rpc_channel *next; /* NULL: the last hop */
    atomic_int ended_with;  /* dctx_err of the handler's context at its return; -1 before */
};

static int relay_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    struct hop *h = arg;
    dctx_rpc_stream *up = NULL;
    int rc = dctx_rpc_stream_open(h->next, ctx, RELAY, &up);
    if (rc != 0)
        return rc;
    dctx_rpc_message m;
    while (rc == 0 && dctx_rpc_stream_recv(up, &m)) {
        rc = dctx_rpc_stream_send(st, m.data, m.len);
        dctx_rpc_message_free(&m);
    }
    dctx_rpc_result res;
    int code = dctx_rpc_stream_finish(up, &res);
    dctx_rpc_reply_set_message(reply, "%s", res.message != NULL ? res.message : "");
    dctx_rpc_result_free(&res);
    dctx_rpc_stream_release(up);
    atomic_store(&h->ended_with, dctx_err(ctx));
    return rc != 0 ? rc : code;
}

static int last_hop_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    struct hop *h = arg;
    int rc = 0;
    for (int i = 0; i < 1000000 && rc == 0; i++)
        rc = dctx_rpc_stream_send(st, "tick", 4);
    (void)reply;
    atomic_store(&h->ended_with, dctx_err(ctx));
    return rc != 0 ? rc : DCTX_OK;
}

static dctx_rpc_server *streams_server_workers(enum rt_transport t, int workers, char *url)
{
    dctx_rpc_server_options so = rt_server_options(workers);
    struct rt_method m[] = {
        {.name = COUNT, .stream_fn = rt_count_stream_handler},
        {.name = SUM, .stream_fn = sum_handler},
        {.name = ECHO, .stream_fn = recording_echo},
        {.name = FLOOD, .stream_fn = flood_handler, .arg = &flood},
        {.name = FAIL_AT, .stream_fn = fail_at_handler},
        {.name = "/it.Streams/Unary", .fn = rt_echo_handler},
    };
    return rt_server_open(t, &so, m, sizeof m / sizeof m[0], url, 256);
}

static dctx_rpc_server *streams_server(enum rt_transport t, char *url)
{
    return streams_server_workers(t, 4, url);
}

static int finish_code(dctx_rpc_stream *st, char *msg, size_t len)
{
    dctx_rpc_result res;
    int code = dctx_rpc_stream_finish(st, &res);
    snprintf(msg, len, "%s", res.message != NULL ? res.message : "");
    dctx_rpc_result_free(&res);
    return code;
}

/* A fresh streams server on t and a stream of method on it (ctx may be
 * NULL), the channel into *ch. */
static dctx_rpc_stream *open_on(enum rt_transport t, dctx *ctx, const char *method,
                                dctx_rpc_channel **ch)
{
    char url[256];
    streams_server(t, url);
    *ch = rt_channel_open(url, NULL);
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(*ch, ctx, method, &st), 0);
    return st;
}

/* The stream's end status (its message into msg); st released and ch
 * closed. */
static int end_and_close(dctx_rpc_stream *st, dctx_rpc_channel *ch, char *msg, size_t len)
{
    int code = finish_code(st, msg, len);
    dctx_rpc_stream_release(st);
    rt_channel_close(ch);
    return code;
}

/* Server streaming on each transport: one request, 200 messages in order
 * (past the window: credit flows back), then OK. */
static void server_stream_delivers_every_message_in_order(void **state)
{
    (void)state;
    enum rt_transport ts[] = {RT_INPROC, RT_IPC, RT_TCP};
    for (size_t t = 0; t < 3; t++) {
        char msg[256];
        dctx_rpc_channel *ch = NULL;
        dctx_rpc_stream *st = open_on(ts[t], NULL, COUNT, &ch);
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
        assert_int_equal(end_and_close(st, ch, msg, sizeof msg), DCTX_OK);
    }
}

/* Client streaming: 1,000 integers (past the window), their sum back. */
static void client_stream_sums_what_it_sent(void **state)
{
    (void)state;
    char msg[256];
    dctx_rpc_channel *ch = NULL;
    dctx_rpc_stream *st = open_on(RT_TCP, NULL, SUM, &ch);
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
    char msg[256];
    dctx_rpc_channel *ch = NULL;
    dctx_rpc_stream *st = open_on(RT_IPC, NULL, ECHO, &ch);
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
    assert_int_equal(end_and_close(st, ch, msg, sizeof msg), DCTX_OK);
}

/* A window of messages and bytes in the flood's 100-byte messages: its
 * messages, or its bytes (the last message may pass them). */
static int flood_window(int messages, int bytes)
{
    int by_bytes = (bytes + 99) / 100;
    return by_bytes < messages ? by_bytes : messages;
}

/* A flood stream on tcp with ctx, its request sent. */
static dctx_rpc_stream *flood_open(dctx *ctx, dctx_rpc_channel **ch)
{
    memset(&flood, 0, sizeof flood);
    dctx_rpc_stream *st = open_on(RT_TCP, ctx, FLOOD, ch);
    assert_int_equal(dctx_rpc_stream_close_send(st), 0);
    return st;
}

/* The flood's writer is blocked for credit; the reader's cancel ends its
 * send with the cancel, and the stream with it. */
static void cancel_ends_the_blocked_flood(dctx *ctx, dctx_rpc_stream *st, dctx_rpc_channel *ch)
{
    char msg[256];
    assert_int_equal(atomic_load(&flood.done), 0);
    dctx_cancel(ctx);
    assert_true(WAIT_FOR(atomic_load(&flood.done), SEC(5)));
    assert_int_equal(atomic_load(&flood.err), DCTX_CANCELED);
    assert_int_equal(end_and_close(st, ch, msg, sizeof msg), DCTX_CANCELED);
    rt_ctx_release(ctx);
}

/* A reader that stops reading stops its writer within the window (the
 * server sends no more than the window however long it waits); the
 * reader's cancel then ends the writer's send with the cancel. */
static void reader_that_stops_stops_its_writer_and_cancel_ends_it(void **state)
{
    (void)state;
    dctx *ctx = rt_with_cancel();
    dctx_rpc_channel *ch = NULL;
    dctx_rpc_stream *st = flood_open(ctx, &ch);
    /* a reader that never took a message never grew its first window */
    int window =
        flood_window(DCTX_RPC_STREAM_FIRST_WINDOW_MESSAGES, DCTX_RPC_STREAM_FIRST_WINDOW_BYTES);
    assert_true(WAIT_FOR(atomic_load(&flood.sent) >= window, SEC(5)));
    rt_sleep(MS(200));
    assert_int_equal(atomic_load(&flood.sent), window);
    cancel_ends_the_blocked_flood(ctx, st, ch);
}

/* A reader that read for a while (its window grew to the most) and then
 * stops: the writer stops with at most the largest window unread (its
 * bytes in 100-byte messages, the last may pass) and at least half of it
 * (the window did grow); the reader's cancel ends the writer's send. */
static void reader_that_read_then_stops_holds_at_most_the_largest_window(void **state)
{
    (void)state;
    dctx *ctx = rt_with_cancel();
    dctx_rpc_channel *ch = NULL;
    dctx_rpc_stream *st = flood_open(ctx, &ch);
    enum { READ = 5000 };
    dctx_rpc_message m;
    for (int i = 0; i < READ; i++) {
        assert_true(dctx_rpc_stream_recv(st, &m));
        dctx_rpc_message_free(&m);
    }
    int most = flood_window(DCTX_RPC_STREAM_WINDOW_MESSAGES, DCTX_RPC_STREAM_WINDOW_BYTES);
    assert_true(WAIT_FOR(atomic_load(&flood.sent) - READ >= most / 2, SEC(5)));
    int sent = -1;
    for (int tries = 0; tries < 50 && sent != atomic_load(&flood.sent); tries++) {
        sent = atomic_load(&flood.sent); /* until it stays put for 100 ms */
        rt_sleep(MS(100));
    }
    int unread = atomic_load(&flood.sent) - READ;
    if (unread > most || unread < most / 2)
        fail_msg("%d messages unread, expected %d..%d", unread, most / 2, most);
    cancel_ends_the_blocked_flood(ctx, st, ch);
}

/* A reader that reads takes everything a writer sends: credit flows. */
static void reader_that_reads_takes_everything(void **state)
{
    (void)state;
    memset(&flood, 0, sizeof flood);
    char msg[256];
    dctx_rpc_channel *ch = NULL;
    dctx_rpc_stream *st = open_on(RT_IPC, NULL, FLOOD, &ch);
    int got = 0;
    dctx_rpc_message m;
    while (dctx_rpc_stream_recv(st, &m)) {
        got++;
        dctx_rpc_message_free(&m);
    }
    assert_int_equal(got, 100000);
    assert_int_equal(end_and_close(st, ch, msg, sizeof msg), DCTX_OK);
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
    atomic_store(&echo_ended_with, -1);
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
    assert_true(WAIT_FOR(atomic_load(&echo_ended_with) != -1, SEC(5))); /* the server's side */
    assert_int_equal(atomic_load(&echo_ended_with), DCTX_DEADLINE_EXCEEDED);
    dctx_rpc_stream_release(st);
    rt_ctx_release(ctx);
    rt_channel_close(ch);
}

/* A stream the server ended OK takes no more messages: send says
 * FAILED_PRECONDITION (stream.h), not the stream's status. */
static void send_after_the_stream_ended_ok_is_a_failed_precondition(void **state)
{
    (void)state;
    char msg[256];
    dctx_rpc_channel *ch = NULL;
    dctx_rpc_stream *st = open_on(RT_IPC, NULL, COUNT, &ch);
    assert_int_equal(dctx_rpc_stream_send(st, "3", 1), 0);
    dctx_rpc_message m;
    for (int i = 0; i < 3; i++) {
        assert_true(dctx_rpc_stream_recv(st, &m));
        dctx_rpc_message_free(&m);
    }
    assert_int_equal(finish_code(st, msg, sizeof msg), DCTX_OK);
    assert_int_equal(dctx_rpc_stream_send(st, "more", 4), DCTX_FAILED_PRECONDITION);
    assert_int_equal(dctx_rpc_stream_close_send(st), 0); /* nothing to close: no error */
    dctx_rpc_stream_release(st);
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

/* A client stream its server fails mid-way: the client's sends return the
 * server's status once it has come (none hangs for credit). */
static void client_stream_failed_mid_way_returns_the_status_to_send(void **state)
{
    (void)state;
    char msg[256];
    dctx_rpc_channel *ch = NULL;
    dctx_rpc_stream *st = open_on(RT_TCP, NULL, FAIL_AT, &ch);
    int rc = 0, sent = 0;
    while (rc == 0 && sent < 100000)
        if ((rc = dctx_rpc_stream_send(st, "x", 1)) == 0)
            sent++;
    assert_int_equal(rc, DCTX_FAILED_PRECONDITION);
    assert_true(sent >= 10);
    assert_int_equal(finish_code(st, msg, sizeof msg), DCTX_FAILED_PRECONDITION);
    assert_string_equal(msg, "enough after 10");
    dctx_rpc_stream_release(st);
    rt_channel_close(ch);
}

/* Many streams on one channel, a third canceled by their caller: 1,000 in
 * all, 100 open at once from 10 threads; each ends exactly once, with OK
 * or CANCELLED, and nothing stays (ASan) or races (TSan). A stream
 * handler holds a worker while it runs: the server has 100. */
/* 1,000 streams open at once on one channel, each read by asynchronous
 * receives: its echo, then its end. */
#define CONCURRENT 1000
struct concurrent {
    atomic_int echoes, ends[CONCURRENT], other;
};
static struct concurrent conc;

static void on_concurrent(void *arg, dctx_rpc_stream *st, dctx_rpc_message *m)
{
    int i = (int)(intptr_t)arg;
    if (m == NULL) {
        atomic_fetch_add(&conc.ends[i], 1);
        return;
    }
    dctx_rpc_message_free(m);
    atomic_fetch_add(&conc.echoes, 1);
    if (dctx_rpc_stream_recv_start(st, on_concurrent, arg) != 0)
        atomic_fetch_add(&conc.other, 1);
}

/* All open at once (the server runs 1,000 handlers: a stream handler
 * holds a worker), a third, picked at random, canceled, the rest
 * half-closed: each ends exactly once, with CANCELLED or OK; nothing is
 * left in flight, nothing leaks (ASan) or races (TSan). */
static void thousand_streams_a_third_canceled_each_end_once(void **state)
{
    (void)state;
    char url[256];
    dctx_rpc_server *srv = streams_server_workers(RT_TCP, CONCURRENT, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    memset(&conc, 0, sizeof conc);
    static dctx *ctx[CONCURRENT];
    static dctx_rpc_stream *st[CONCURRENT];
    static bool cancel[CONCURRENT];
    for (int i = 0; i < CONCURRENT; i++) {
        assert_int_equal(dctx_with_cancel(dctx_background(), &ctx[i]), 0); /* more than tracked */
        assert_int_equal(dctx_rpc_stream_open(ch, ctx[i], ECHO, &st[i]), 0);
        assert_int_equal(dctx_rpc_stream_send(st[i], "hi", 2), 0);
        assert_int_equal(dctx_rpc_stream_recv_start(st[i], on_concurrent, (void *)(intptr_t)i), 0);
    }
    assert_true(WAIT_FOR(atomic_load(&conc.echoes) == CONCURRENT, SEC(30)));
    assert_int_equal(rt_server_stats(srv).in_flight, CONCURRENT); /* all running at once */
    /* A third, at random: a shuffle's first 333 (seed printed). */
    unsigned seed = (unsigned)dctx_now();
    print_message("# concurrent streams: cancel pick seed %u\n", seed);
    int order[CONCURRENT];
    for (int i = 0; i < CONCURRENT; i++)
        order[i] = i;
    for (int i = CONCURRENT - 1; i > 0; i--) {
        int j = (int)(rand_r(&seed) % (unsigned)(i + 1)), t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int k = 0; k < CONCURRENT / 3; k++)
        cancel[order[k]] = true;
    for (int i = 0; i < CONCURRENT; i++) {
        if (cancel[i])
            dctx_cancel(ctx[i]);
        else
            assert_int_equal(dctx_rpc_stream_close_send(st[i]), 0);
    }
    for (int i = 0; i < CONCURRENT; i++) {
        assert_int_equal(dctx_rpc_stream_finish(st[i], NULL), cancel[i] ? DCTX_CANCELED : DCTX_OK);
        assert_true(WAIT_FOR(atomic_load(&conc.ends[i]) > 0, SEC(10)));
    }
    rt_sleep(MS(50)); /* a second end would come now */
    for (int i = 0; i < CONCURRENT; i++) {
        assert_int_equal(atomic_load(&conc.ends[i]), 1);
        dctx_rpc_stream_release(st[i]);
        dctx_release(ctx[i]);
        cancel[i] = false;
    }
    assert_int_equal(atomic_load(&conc.other), 0);
    assert_int_equal(atomic_load(&conc.echoes), CONCURRENT);
    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(10)));
    rt_channel_close(ch);
}

/* An idle timeout: a stream whose peer sends nothing for 100 ms ends
 * DEADLINE_EXCEEDED on both sides, saying it was idle; each message
 * received carries the budget the stream had left. */
static void idle_stream_ends_deadline_exceeded_saying_so(void **state)
{
    (void)state;
    memset(&flood, 0, sizeof flood);
    char url[256], msg[256];
    streams_server(RT_TCP, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx *ctx = rt_with_timeout(SEC(10));
    dctx_rpc_stream *st = NULL;
    atomic_store(&echo_ended_with, -1);
    assert_int_equal(dctx_rpc_stream_open(ch, ctx, ECHO, &st), 0);
    assert_int_equal(dctx_rpc_stream_set_idle_timeout(st, MS(100)), 0);
    assert_int_equal(dctx_rpc_stream_send(st, "one", 3), 0);
    dctx_rpc_message m;
    assert_true(dctx_rpc_stream_recv(st, &m));
    assert_true(m.budget_ns > SEC(9) && m.budget_ns <= SEC(10));
    dctx_rpc_message_free(&m);
    int64_t t0 = dctx_now();
    assert_false(dctx_rpc_stream_recv(st, &m)); /* nothing sent: nothing comes */
    assert_true(dctx_now() - t0 >= MS(100));
    assert_int_equal(finish_code(st, msg, sizeof msg), DCTX_DEADLINE_EXCEEDED);
    assert_contains(msg, "stream idle for 100 ms");
    assert_true(WAIT_FOR(atomic_load(&echo_ended_with) != -1, SEC(5))); /* the server's side */
    assert_int_equal(atomic_load(&echo_ended_with), DCTX_DEADLINE_EXCEEDED);
    const char *why = NULL;
    assert_int_equal(dctx_cause(ctx, &why), 0); /* the caller's own context lives on */
    dctx_rpc_stream_release(st);
    rt_ctx_release(ctx);
    rt_channel_close(ch);
}

/* A message over the peer's frame limit is refused at once, nothing
 * sent, and the stream goes on with its credit whole. */
static void message_over_the_limit_is_refused_and_the_stream_goes_on(void **state)
{
    (void)state;
    char msg[256];
    dctx_rpc_channel *ch = NULL;
    dctx_rpc_stream *st = open_on(RT_IPC, NULL, ECHO, &ch);
    size_t big = DCTX_RPC_DEFAULT_RECV_MAX_BYTES + 64 * 1024;
    char *huge = calloc(1, big);
    assert_non_null(huge);
    for (int i = 0; i < DCTX_RPC_STREAM_WINDOW_MESSAGES + 10; i++) /* past the window if kept */
        assert_int_equal(dctx_rpc_stream_send(st, huge, big), DCTX_RESOURCE_EXHAUSTED);
    free(huge);
    assert_int_equal(dctx_rpc_stream_send(st, "small", 5), 0);
    dctx_rpc_message m;
    assert_true(dctx_rpc_stream_recv(st, &m));
    assert_int_equal(m.len, 5);
    dctx_rpc_message_free(&m);
    assert_int_equal(dctx_rpc_stream_close_send(st), 0);
    assert_int_equal(end_and_close(st, ch, msg, sizeof msg), DCTX_OK);
}

/* A server stream relayed through three hops (A and B relay, C sends),
 * canceled by the caller mid-way: every hop's handler sees CANCELED. */
static void relayed_stream_canceled_mid_way_reaches_every_hop(void **state)
{
    (void)state;
    static struct hop hops[3];
    char urls[3][256];
    for (int i = 2; i >= 0; i--) {
        hops[i].next = NULL;
        atomic_init(&hops[i].ended_with, -1);
        if (i < 2)
            hops[i].next = rt_channel_open(urls[i + 1], NULL);
        struct rt_method m = {
            .name = RELAY, .stream_fn = i < 2 ? relay_handler : last_hop_handler, .arg = &hops[i]};
        dctx_rpc_server_options so = rt_server_options(4);
        rt_server_open(i == 1 ? RT_IPC : RT_TCP, &so, &m, 1, urls[i], sizeof urls[i]);
    }
    dctx_rpc_channel *ch = rt_channel_open(urls[0], NULL);
    dctx *ctx = rt_with_cancel();
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, ctx, RELAY, &st), 0);
    dctx_rpc_message m;
    for (int i = 0; i < 100; i++) {
        assert_true(dctx_rpc_stream_recv(st, &m));
        assert_int_equal(m.len, 4);
        dctx_rpc_message_free(&m);
    }
    for (int i = 0; i < 3; i++)
        assert_int_equal(atomic_load(&hops[i].ended_with), -1); /* all three still streaming */
    dctx_cancel(ctx);
    for (int i = 0; i < 3; i++) {
        assert_true(WAIT_FOR(atomic_load(&hops[i].ended_with) != -1, SEC(5)));
        assert_int_equal(atomic_load(&hops[i].ended_with), DCTX_CANCELED);
    }
    char msg[256];
    assert_int_equal(end_and_close(st, ch, msg, sizeof msg), DCTX_CANCELED);
    rt_ctx_release(ctx);
    for (int i = 0; i < 2; i++)
        rt_channel_close(hops[i].next);
}

int main(void)
{
    rt_init("rpc_streams", RT_PORTS_STREAMS);
    const struct CMUnitTest tests[] = {
        RT_TEST(server_stream_delivers_every_message_in_order),
        RT_TEST(client_stream_sums_what_it_sent),
        RT_TEST(bidi_stream_echoes_each_message),
        RT_TEST(reader_that_stops_stops_its_writer_and_cancel_ends_it),
        RT_TEST(reader_that_read_then_stops_holds_at_most_the_largest_window),
        RT_TEST(reader_that_reads_takes_everything),
        RT_TEST(deadline_ends_a_long_stream_on_both_sides),
        RT_TEST(kinds_must_match),
        RT_TEST(client_stream_failed_mid_way_returns_the_status_to_send),
        RT_TEST(thousand_streams_a_third_canceled_each_end_once),
        RT_TEST(idle_stream_ends_deadline_exceeded_saying_so),
        RT_TEST(message_over_the_limit_is_refused_and_the_stream_goes_on),
        RT_TEST(relayed_stream_canceled_mid_way_reaches_every_hop),
        RT_TEST(send_after_the_stream_ended_ok_is_a_failed_precondition),
    };
    return cmocka_run_group_tests_name("rpc_streams", tests, rt_group_setup, NULL);
}
