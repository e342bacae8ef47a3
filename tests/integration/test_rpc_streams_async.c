/*
 * test_rpc_streams_async.c - asynchronous receive on streams
 * (dctx_rpc_stream_recv_start) over real sockets: messages in order on a
 * library thread, never inside the call that armed it, one receive at a
 * time, the end (half-close, cancel, release) delivered once, a callback
 * that releases its stream, and a server handler that receives so.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/stream.h>

#include "rpc_testutil.h"

#define COUNT "/it.Async/Count"
#define HOLD "/it.Async/Hold"
#define ASYNC_SUM "/it.Async/Sum"

/* Hold: sends nothing; returns when its stream's context ends. */
static int hold_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)st;
    (void)reply;
    dctx_wait(ctx, -1);
    return dctx_err(ctx);
}

/* What an asynchronous reader saw. */
struct reader {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t armed_by;   /* the thread that armed the first receive */
    int got;              /* messages, in order */
    int out_of_order;     /* messages not the one expected */
    int on_arming_thread; /* deliveries on armed_by (must be none) */
    int ends;             /* NULL deliveries */
    bool release_at_end;  /* the callback releases the stream */
    long sum;             /* the integers received */
};

static void reader_init(struct reader *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->armed_by = pthread_self();
}

static void reader_fini(struct reader *r)
{
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
}

/* Each message: checked against the count, then the next receive armed. */
static void on_message(void *arg, dctx_rpc_stream *st, dctx_rpc_message *m)
{
    struct reader *r = arg;
    pthread_mutex_lock(&r->mu);
    if (pthread_equal(pthread_self(), r->armed_by))
        r->on_arming_thread++;
    if (m == NULL) {
        bool release = r->release_at_end; /* r may be gone once unlocked */
        r->ends++;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
        if (release)
            dctx_rpc_stream_release(st);
        return;
    }
    char text[32], want[32];
    snprintf(text, sizeof text, "%.*s", (int)m->len, (const char *)m->data);
    snprintf(want, sizeof want, "%d", r->got + 1);
    if (strcmp(text, want) != 0)
        r->out_of_order++;
    r->got++;
    r->sum += atol(text);
    pthread_mutex_unlock(&r->mu);
    dctx_rpc_message_free(m);
    int rc = dctx_rpc_stream_recv_start(st, on_message, r);
    if (rc != 0)
        fail_msg("re-arming in the callback: %s", dctx_strerror(rc));
}

/* How many ends the reader saw so far. */
static int ends_of(struct reader *r)
{
    pthread_mutex_lock(&r->mu);
    int n = r->ends;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static atomic_int sum_armed;            /* AsyncSum handlers that armed their receive */
static atomic_int sum_ended_by_context; /* AsyncSum handlers whose wait a cancel ended */

/* Sum, asynchronously: the handler arms a receive and waits for the end. */
static int async_sum_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    struct reader r;
    reader_init(&r);
    r.armed_by = pthread_self();
    int rc = dctx_rpc_stream_recv_start(st, on_message, &r);
    if (rc != 0)
        return rc;
    atomic_fetch_add(&sum_armed, 1);
    pthread_mutex_lock(&r.mu);
    while (r.ends == 0)
        pthread_cond_wait(&r.cv, &r.mu); /* the end always comes: half-close or the context */
    long sum = r.sum;
    int bad = r.out_of_order + r.on_arming_thread;
    pthread_mutex_unlock(&r.mu);
    /* The end was delivered: the callback returned before broadcast's
     * unlock, and it arms nothing after an end. */
    reader_fini(&r);
    if (dctx_err(ctx) != 0) {
        atomic_fetch_add(&sum_ended_by_context, 1);
        return dctx_err(ctx);
    }
    if (bad != 0)
        return DCTX_INTERNAL;
    dctx_rpc_reply_set_message(reply, "%ld", sum);
    return DCTX_OK;
}

static void async_server(enum rt_transport t, char *url)
{
    dctx_rpc_server_options so = rt_server_options(4);
    struct rt_method m[] = {
        {.name = COUNT, .stream_fn = rt_count_stream_handler},
        {.name = HOLD, .stream_fn = hold_handler},
        {.name = ASYNC_SUM, .stream_fn = async_sum_handler},
    };
    rt_server_open(t, &so, m, sizeof m / sizeof m[0], url, 256);
}

static dctx_rpc_stream *open_count(dctx_rpc_channel *ch, const char *n)
{
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, NULL, COUNT, &st), 0);
    assert_int_equal(dctx_rpc_stream_send(st, n, strlen(n)), 0);
    assert_int_equal(dctx_rpc_stream_close_send(st), 0);
    return st;
}

/* 10,000 messages (past the window: credit flows back from callbacks)
 * read by callbacks that arm the next, in order, none on the arming
 * thread, one end; the stream ends OK. */
static void async_reader_gets_every_message_in_order(void **state)
{
    (void)state;
    enum rt_transport ts[] = {RT_INPROC, RT_TCP};
    for (size_t t = 0; t < 2; t++) {
        char url[256];
        async_server(ts[t], url);
        dctx_rpc_channel *ch = rt_channel_open(url, NULL);
        dctx_rpc_stream *st = open_count(ch, "10000");
        static struct reader r;
        reader_init(&r);
        assert_int_equal(dctx_rpc_stream_recv_start(st, on_message, &r), 0);
        assert_true(WAIT_FOR(ends_of(&r) > 0, SEC(10)));
        assert_int_equal(r.got, 10000);
        assert_int_equal(r.out_of_order, 0);
        assert_int_equal(r.on_arming_thread, 0);
        assert_int_equal(r.ends, 1);
        assert_int_equal(dctx_rpc_stream_finish(st, NULL), DCTX_OK);
        dctx_rpc_stream_release(st);
        reader_fini(&r);
        rt_channel_close(ch);
    }
}

/* A message already waiting when the receive is armed is delivered on
 * another thread, after the call returned. */
static void waiting_message_is_delivered_after_the_call(void **state)
{
    (void)state;
    char url[256];
    async_server(RT_IPC, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_stream *st = open_count(ch, "3");
    dctx_rpc_message m;
    assert_true(dctx_rpc_stream_recv(st, &m)); /* "1": the rest follow it */
    dctx_rpc_message_free(&m);
    assert_int_equal(dctx_rpc_stream_finish(st, NULL), DCTX_OK); /* all three are here */
    static struct reader r;
    reader_init(&r);
    r.got = 1;
    assert_int_equal(dctx_rpc_stream_recv_start(st, on_message, &r), 0);
    assert_true(WAIT_FOR(ends_of(&r) > 0, SEC(10)));
    assert_int_equal(r.got, 3);
    assert_int_equal(r.out_of_order, 0);
    assert_int_equal(r.on_arming_thread, 0);
    dctx_rpc_stream_release(st);
    reader_fini(&r);
    rt_channel_close(ch);
}

static void count_end(void *arg, dctx_rpc_stream *st, dctx_rpc_message *m)
{
    (void)st;
    struct reader *r = arg;
    pthread_mutex_lock(&r->mu);
    if (m != NULL) {
        r->got++;
        dctx_rpc_message_free(m);
    } else {
        r->ends++;
    }
    if (pthread_equal(pthread_self(), r->armed_by))
        r->on_arming_thread++;
    pthread_mutex_unlock(&r->mu);
}

/* One receive at a time; a cancel of the stream's context delivers the
 * end (on the library's thread) and the stream ends CANCELED. */
static void second_receive_is_refused_and_cancel_delivers_the_end(void **state)
{
    (void)state;
    char url[256];
    async_server(RT_TCP, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx *ctx = rt_with_cancel();
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, ctx, HOLD, &st), 0);
    static struct reader r;
    reader_init(&r);
    assert_int_equal(dctx_rpc_stream_recv_start(st, count_end, &r), 0);
    assert_int_equal(dctx_rpc_stream_recv_start(st, count_end, &r), DCTX_FAILED_PRECONDITION);
    assert_int_equal(dctx_rpc_stream_recv_start(st, NULL, &r), DCTX_INVALID_ARGUMENT);
    rt_sleep(20 * 1000000);
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.ends, 0); /* nothing came: still armed */
    pthread_mutex_unlock(&r.mu);
    dctx_cancel(ctx);
    assert_true(WAIT_FOR(ends_of(&r) > 0, SEC(10)));
    assert_int_equal(r.got, 0);
    assert_int_equal(r.ends, 1);
    assert_int_equal(r.on_arming_thread, 0); /* not inside dctx_cancel */
    assert_int_equal(dctx_rpc_stream_finish(st, NULL), DCTX_CANCELED);
    dctx_rpc_stream_release(st);
    rt_ctx_release(ctx);
    reader_fini(&r);
    rt_channel_close(ch);
}

/* Released while a receive is armed: the callback still runs once with
 * the end, and nothing leaks (ASan); a callback may release its stream. */
static void release_while_armed_and_release_in_the_callback(void **state)
{
    (void)state;
    char url[256];
    async_server(RT_INPROC, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, NULL, HOLD, &st), 0);
    static struct reader r;
    reader_init(&r);
    assert_int_equal(dctx_rpc_stream_recv_start(st, count_end, &r), 0);
    dctx_rpc_stream_release(st);
    assert_true(WAIT_FOR(ends_of(&r) > 0, SEC(10)));
    assert_int_equal(r.ends, 1);
    reader_fini(&r);

    static struct reader r2;
    reader_init(&r2);
    r2.release_at_end = true;
    st = open_count(ch, "100");
    assert_int_equal(dctx_rpc_stream_recv_start(st, on_message, &r2), 0);
    assert_true(WAIT_FOR(ends_of(&r2) > 0, SEC(10))); /* the callback released st */
    assert_int_equal(r2.got, 100);
    assert_int_equal(r2.out_of_order, 0);
    rt_channel_close(ch);
    reader_fini(&r2);
}

/* A channel closed while a receive is armed: the callback gets the end
 * before close returns, and may release its stream there. */
static void close_with_a_receive_armed_delivers_the_end_first(void **state)
{
    (void)state;
    char url[256];
    async_server(RT_TCP, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, NULL, HOLD, &st), 0);
    static struct reader r;
    reader_init(&r);
    r.release_at_end = true;
    assert_int_equal(dctx_rpc_stream_recv_start(st, on_message, &r), 0);
    rt_channel_close(ch);
    pthread_mutex_lock(&r.mu);
    assert_int_equal(r.ends, 1); /* before close returned */
    pthread_mutex_unlock(&r.mu);
    reader_fini(&r);
}

/* The end's callback may ask for the status: on a channel with an event
 * hook too (its finish is deferred to the library's thread as well). */
struct finisher {
    atomic_int code; /* -1 until the end's callback ran */
};

static void finish_at_end(void *arg, dctx_rpc_stream *st, dctx_rpc_message *m)
{
    struct finisher *f = arg;
    if (m != NULL) {
        dctx_rpc_message_free(m);
        if (dctx_rpc_stream_recv_start(st, finish_at_end, f) != 0)
            atomic_store(&f->code, -2);
        return;
    }
    int code = dctx_rpc_stream_finish(st, NULL);
    /* No receive after the end. */
    if (dctx_rpc_stream_recv_start(st, finish_at_end, f) != DCTX_FAILED_PRECONDITION)
        code = -3;
    atomic_store(&f->code, code);
}

static void on_event_ignored(void *arg, const dctx_rpc_event *ev)
{
    (void)arg;
    (void)ev;
}

static void end_callback_may_call_finish(void **state)
{
    (void)state;
    char url[256];
    async_server(RT_IPC, url);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.on_event = on_event_ignored;
    dctx_rpc_channel *ch = rt_channel_open(url, &co);
    for (int i = 0; i < 2; i++) {
        dctx *ctx = rt_with_cancel();
        dctx_rpc_stream *st = NULL;
        assert_int_equal(dctx_rpc_stream_open(ch, ctx, i == 0 ? HOLD : COUNT, &st), 0);
        if (i == 1) {
            assert_int_equal(dctx_rpc_stream_send(st, "50", 2), 0);
            assert_int_equal(dctx_rpc_stream_close_send(st), 0);
        }
        static struct finisher f;
        atomic_init(&f.code, -1);
        assert_int_equal(dctx_rpc_stream_recv_start(st, finish_at_end, &f), 0);
        if (i == 0)
            dctx_cancel(ctx);
        assert_true(WAIT_FOR(atomic_load(&f.code) != -1, SEC(5)));
        assert_int_equal(atomic_load(&f.code), i == 0 ? DCTX_CANCELED : DCTX_OK);
        dctx_rpc_stream_release(st);
        rt_ctx_release(ctx);
    }
    rt_channel_close(ch);
}

/* While a receive is armed a blocking one returns false at once. */
static void blocking_receive_while_armed_is_refused(void **state)
{
    (void)state;
    char url[256];
    async_server(RT_INPROC, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, NULL, HOLD, &st), 0);
    static struct reader r;
    reader_init(&r);
    assert_int_equal(dctx_rpc_stream_recv_start(st, count_end, &r), 0);
    dctx_rpc_message m;
    int64_t t0 = dctx_now();
    assert_false(dctx_rpc_stream_recv(st, &m));
    assert_null(m.data);
    assert_true(dctx_now() - t0 < SEC(1)); /* refused, not a wait for the stream */
    dctx_rpc_stream_release(st);
    assert_true(WAIT_FOR(ends_of(&r) > 0, SEC(10)));
    rt_channel_close(ch);
    reader_fini(&r);
}

/* A server handler that receives asynchronously: 1,000 integers summed,
 * then a client that cancels one mid-way (the handler's wait ends). */
static void server_handler_receives_asynchronously(void **state)
{
    (void)state;
    char url[256], msg[256];
    async_server(RT_TCP, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, NULL, ASYNC_SUM, &st), 0);
    long want = 0;
    for (int i = 1; i <= 1000; i++) {
        char text[16];
        snprintf(text, sizeof text, "%d", i);
        assert_int_equal(dctx_rpc_stream_send(st, text, strlen(text)), 0);
        want += i;
    }
    assert_int_equal(dctx_rpc_stream_close_send(st), 0);
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_stream_finish(st, &res), DCTX_OK);
    snprintf(msg, sizeof msg, "%ld", want);
    assert_string_equal(res.message, msg);
    dctx_rpc_result_free(&res);
    dctx_rpc_stream_release(st);

    dctx *ctx = rt_with_cancel();
    /* Read before the stream opens: its handler may arm before the open
     * returns. */
    int armed = atomic_load(&sum_armed), before = atomic_load(&sum_ended_by_context);
    assert_int_equal(dctx_rpc_stream_open(ch, ctx, ASYNC_SUM, &st), 0);
    assert_int_equal(dctx_rpc_stream_send(st, "5", 1), 0);
    assert_true(WAIT_FOR(atomic_load(&sum_armed) == armed + 1, SEC(5))); /* the handler waits */
    dctx_cancel(ctx);
    assert_int_equal(dctx_rpc_stream_finish(st, NULL), DCTX_CANCELED);
    assert_true(WAIT_FOR(atomic_load(&sum_ended_by_context) == before + 1, SEC(5)));
    dctx_rpc_stream_release(st);
    rt_ctx_release(ctx);
    rt_channel_close(ch);
}

int main(void)
{
    rt_init("rpc_streams_async", RT_PORTS_STREAMS_ASYNC);
    const struct CMUnitTest tests[] = {
        RT_TEST(async_reader_gets_every_message_in_order),
        RT_TEST(waiting_message_is_delivered_after_the_call),
        RT_TEST(second_receive_is_refused_and_cancel_delivers_the_end),
        RT_TEST(release_while_armed_and_release_in_the_callback),
        RT_TEST(server_handler_receives_asynchronously),
        RT_TEST(close_with_a_receive_armed_delivers_the_end_first),
        RT_TEST(end_callback_may_call_finish),
        RT_TEST(blocking_receive_while_armed_is_refused),
    };
    return cmocka_run_group_tests_name("rpc_streams_async", tests, rt_group_setup, NULL);
}
