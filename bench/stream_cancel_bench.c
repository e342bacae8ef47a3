/*
 * stream_cancel_bench.c - how long a cancel takes to reach the handler
 * that does the work, mid-stream and for a unary call, through 1 and 3
 * hops, in one run (bench/stream-compare prints the ratios):
 *
 *   stream_cancel_bench N
 *
 * Three servers in this process on tcp loopback (ports 47339-47341);
 * hops 1 and 2 relay (a stream opened onward with the handler's context,
 * or a unary call made so), the last one works: its stream handler sends
 * until its send fails, as fast as credit allows (a download) or one
 * message per millisecond (a tail of events), its unary handler waits for
 * its context. The caller reads 10 messages (or waits until the unary
 * handler started), cancels, and the figure is the time until the last
 * hop's handler saw it, read from the same clock. A steady stream is the
 * fast one read for STEADY_READ messages first: every hop's window has
 * grown to the most, and the cancel meets the stream at full speed.
 * Caller and handlers sleep while they wait: on 2 cores a spinning side
 * would take the servers' core.
 *
 * Output: "stream-cancel hops=H n=N p50_us=.. p99_us=.." and the same with
 * steady-stream-cancel, paced-stream-cancel, unary-cancel and
 * loaded-unary-cancel: a unary cancel while a steady stream runs beside
 * it on the same channel (the load the steady stream's cancel meets).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/stream.h>

#include "samples.h"

#define STREAM "/bench.Cancel/Stream"
#define PACED "/bench.Cancel/Paced"
#define UNARY "/bench.Cancel/Unary"
#define PACE_NS 1000000
#define STEADY_READ 5000
#define HOPS_MAX 3

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int64_t saw_ns; /* when the working handler saw the cancel */
static bool started;   /* the working unary handler is waiting */

static void die(const char *what, int rc)
{
    fprintf(stderr, "stream_cancel_bench: %s: %s\n", what, dctx_strerror(rc));
    exit(1);
}

static void mark(int64_t *at_ns, bool *flag)
{
    pthread_mutex_lock(&mu);
    if (at_ns != NULL)
        *at_ns = dctx_now();
    if (flag != NULL)
        *flag = true;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&mu);
}

/* arg: non-NULL to send one message per PACE_NS (a tail of events),
 * else as fast as credit allows. */
static int stream_work(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)reply;
    static const char msg[64];
    int rc = 0;
    while (rc == 0) {
        rc = dctx_rpc_stream_send(st, msg, sizeof msg);
        if (arg != NULL && rc == 0 && dctx_wait(ctx, PACE_NS))
            break;
    }
    mark(&saw_ns, NULL);
    return dctx_err(ctx) != 0 ? dctx_err(ctx) : rc;
}

struct relay {
    dctx_rpc_channel *next;
    const char *method;
};

static int stream_relay(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)reply;
    const struct relay *r = arg;
    dctx_rpc_stream *up = NULL;
    int rc = dctx_rpc_stream_open(r->next, ctx, r->method, &up);
    if (rc != 0)
        return rc;
    dctx_rpc_message m;
    while (rc == 0 && dctx_rpc_stream_recv(up, &m)) {
        rc = dctx_rpc_stream_send(st, m.data, m.len);
        dctx_rpc_message_free(&m);
    }
    int code = dctx_rpc_stream_finish(up, NULL);
    dctx_rpc_stream_release(up);
    return rc != 0 ? rc : code;
}

static int unary_work(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)req;
    (void)len;
    (void)reply;
    mark(NULL, &started);
    dctx_wait(ctx, -1);
    mark(&saw_ns, NULL);
    return dctx_err(ctx);
}

static int unary_relay(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)reply;
    dctx_rpc_result res;
    int code = dctx_rpc_call_raw(arg, ctx, UNARY, req, len, &res);
    dctx_rpc_result_free(&res);
    return code;
}

/* Hop i of n on its port; next is the channel to hop i+1 (NULL: works). */
static dctx_rpc_server *serve(int port, dctx_rpc_channel *next, struct relay relays[2])
{
    relays[0] = (struct relay){.next = next, .method = STREAM};
    relays[1] = (struct relay){.next = next, .method = PACED};
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    dctx_rpc_server_options so;
    dctx_rpc_server_options_init(&so);
    so.workers = 8;
    dctx_rpc_server *srv = NULL;
    int rc = dctx_rpc_server_open(&so, &srv);
    static int paced = 1;
    if (rc == 0)
        rc = dctx_rpc_server_register_stream(srv, STREAM, next ? stream_relay : stream_work,
                                             next ? (void *)&relays[0] : NULL);
    if (rc == 0)
        rc = dctx_rpc_server_register_stream(srv, PACED, next ? stream_relay : stream_work,
                                             next ? (void *)&relays[1] : (void *)&paced);
    if (rc == 0)
        rc = dctx_rpc_server_register(srv, UNARY, next ? unary_relay : unary_work, next);
    if (rc == 0)
        rc = dctx_rpc_server_listen(srv, url);
    if (rc == 0)
        rc = dctx_rpc_server_start(srv);
    if (rc != 0)
        die("server", rc);
    return srv;
}

static dctx_rpc_channel *channel(int port)
{
    char url[64];
    snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
    dctx_rpc_channel *ch = NULL;
    int rc = dctx_rpc_channel_open(url, NULL, &ch);
    if (rc != 0)
        die("channel", rc);
    return ch;
}

/* Wait for the working handler's mark; the time from t0. */
static int64_t wait_saw(int64_t t0)
{
    pthread_mutex_lock(&mu);
    while (saw_ns == 0)
        pthread_cond_wait(&cv, &mu);
    int64_t took = saw_ns - t0;
    pthread_mutex_unlock(&mu);
    return took;
}

static void reset(void)
{
    pthread_mutex_lock(&mu);
    saw_ns = 0;
    started = false;
    pthread_mutex_unlock(&mu);
}

/* Open a stream of method, read `read` messages, cancel: the time until
 * the working handler saw it. */
static int64_t one_stream(dctx_rpc_channel *ch, const char *method, int read)
{
    dctx *ctx = NULL;
    if (dctx_with_cancel(dctx_background(), &ctx) != 0)
        die("context", DCTX_RESOURCE_EXHAUSTED);
    reset();
    dctx_rpc_stream *st = NULL;
    int rc = dctx_rpc_stream_open(ch, ctx, method, &st);
    if (rc != 0)
        die("stream", rc);
    dctx_rpc_message m;
    for (int j = 0; j < read; j++) {
        if (!dctx_rpc_stream_recv(st, &m))
            die("stream ended early", dctx_rpc_stream_finish(st, NULL));
        dctx_rpc_message_free(&m);
    }
    int64_t t0 = dctx_now();
    dctx_cancel(ctx);
    int64_t took = wait_saw(t0);
    dctx_rpc_stream_finish(st, NULL);
    dctx_rpc_stream_release(st);
    dctx_release(ctx);
    return took;
}

static void *unary_caller(void *arg)
{
    dctx_rpc_channel *ch = ((void **)arg)[0];
    dctx *ctx = ((void **)arg)[1];
    dctx_rpc_result res;
    dctx_rpc_call_raw(ch, ctx, UNARY, "x", 1, &res);
    dctx_rpc_result_free(&res);
    return NULL;
}

static int64_t one_unary(dctx_rpc_channel *ch)
{
    dctx *ctx = NULL;
    if (dctx_with_cancel(dctx_background(), &ctx) != 0)
        die("context", DCTX_RESOURCE_EXHAUSTED);
    reset();
    void *args[2] = {ch, ctx};
    pthread_t t;
    pthread_create(&t, NULL, unary_caller, args);
    pthread_mutex_lock(&mu);
    while (!started)
        pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
    int64_t t0 = dctx_now();
    dctx_cancel(ctx);
    int64_t took = wait_saw(t0);
    pthread_join(t, NULL);
    dctx_release(ctx);
    return took;
}

/* A stream read as fast as it comes on a thread of its own, until stop:
 * the load a steady stream puts on the machine, beside other calls. */
struct background {
    dctx_rpc_channel *ch;
    atomic_bool stop;
    pthread_t t;
};

static void *background_main(void *arg)
{
    struct background *b = arg;
    dctx *ctx = NULL;
    if (dctx_with_cancel(dctx_background(), &ctx) != 0)
        die("context", DCTX_RESOURCE_EXHAUSTED);
    dctx_rpc_stream *st = NULL;
    int rc = dctx_rpc_stream_open(b->ch, ctx, STREAM, &st);
    if (rc != 0)
        die("stream", rc);
    dctx_rpc_message m;
    while (!atomic_load(&b->stop) && dctx_rpc_stream_recv(st, &m))
        dctx_rpc_message_free(&m);
    dctx_cancel(ctx);
    dctx_rpc_stream_finish(st, NULL);
    dctx_rpc_stream_release(st);
    dctx_release(ctx);
    return NULL;
}

/* n unary cancels while a steady stream runs on the same channel. */
static void unary_beside_a_stream(dctx_rpc_channel *ch, int64_t *took, int n)
{
    struct background b = {.ch = ch};
    pthread_create(&b.t, NULL, background_main, &b);
    samples_sleep_ns(50000000); /* its windows grown */
    for (int i = 0; i < n; i++) {
        took[i] = one_unary(ch);
        samples_sleep_ns(1000000);
    }
    atomic_store(&b.stop, true);
    pthread_join(b.t, NULL);
    samples_sleep_ns(20000000); /* its handler's mark is over */
}

static void report(const char *kind, int hops, int64_t *took, int n)
{
    samples_sort(took, (size_t)n);
    printf("%s hops=%d n=%d p50_us=%.1f p99_us=%.1f\n", kind, hops, n,
           samples_pct_us(took, (size_t)n, 0.5), samples_pct_us(took, (size_t)n, 0.99));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: stream_cancel_bench N\n");
        return 2;
    }
    int n = (int)samples_num_arg("stream_cancel_bench", argv[1], 1, 100000, "N", 0);
    /* The chain, from its end: 47341 works, 47340 and 47339 relay. */
    dctx_rpc_server *srv[HOPS_MAX];
    dctx_rpc_channel *next[HOPS_MAX] = {NULL};
    struct relay relays[HOPS_MAX][2];
    srv[2] = serve(47341, NULL, relays[2]);
    next[1] = channel(47341);
    srv[1] = serve(47340, next[1], relays[1]);
    next[0] = channel(47340);
    srv[0] = serve(47339, next[0], relays[0]);
    int64_t *took = calloc((size_t)n, sizeof *took);
    int ports[] = {47341, 47339}, hops[] = {1, 3};
    for (int h = 0; h < 2; h++) {
        dctx_rpc_channel *ch = channel(ports[h]);
        /* Alternate the kinds so that both see the same machine. */
        int64_t *steady = calloc((size_t)n, sizeof *steady);
        int64_t *paced = calloc((size_t)n, sizeof *paced);
        int64_t *unary = calloc((size_t)n, sizeof *unary);
        for (int i = 0; i < n; i++) {
            took[i] = one_stream(ch, STREAM, 10);
            steady[i] = one_stream(ch, STREAM, STEADY_READ);
            paced[i] = one_stream(ch, PACED, 10);
            unary[i] = one_unary(ch);
            samples_sleep_ns(1000000);
        }
        report("stream-cancel", hops[h], took, n);
        report("steady-stream-cancel", hops[h], steady, n);
        report("paced-stream-cancel", hops[h], paced, n);
        report("unary-cancel", hops[h], unary, n);
        unary_beside_a_stream(ch, unary, n);
        report("loaded-unary-cancel", hops[h], unary, n);
        free(steady);
        free(paced);
        free(unary);
        dctx_rpc_channel_close(ch);
    }
    free(took);
    for (int i = 0; i < HOPS_MAX; i++) {
        dctx_rpc_server_close(srv[i]);
        dctx_rpc_channel_close(next[i]);
    }
    return 0;
}
