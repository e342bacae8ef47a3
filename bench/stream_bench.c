/*
 * stream_bench.c - dctx's side of bench/stream-compare, the workloads of
 * bench/grpc-go-streams (grpc-go) mode for mode:
 *
 *   stream_bench server URL                Count: request "N" -> N 64-byte messages
 *                                          ("0": until canceled); Hold: sends
 *                                          nothing, returns when canceled
 *   stream_bench tput URL STREAMS SECONDS   server streaming: messages/s over STREAMS
 *                                          streams on one channel
 *   stream_bench idle URL N PID            N open idle streams: the server's
 *                                          (process PID) VmRSS growth per stream
 *
 * Output: one line per figure, "NAME key=value ...", as rpc_bench's.
 * grpc-go's cancel mode has its dctx side in stream_cancel_bench.c.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/stream.h>

#include "samples.h"

#define MSG_BYTES 64
#define BATCH 256

static void die(const char *what, int rc)
{
    fprintf(stderr, "stream_bench: %s: %s\n", what, dctx_strerror(rc));
    exit(1);
}

static int count(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)reply;
    dctx_rpc_message req;
    if (!dctx_rpc_stream_recv(st, &req))
        return DCTX_INVALID_ARGUMENT;
    char text[24]; /* messages are bytes, not C strings */
    snprintf(text, sizeof text, "%.*s", (int)req.len, (const char *)req.data);
    dctx_rpc_message_free(&req);
    long n = strtol(text, NULL, 10);
    char msg[MSG_BYTES] = {0};
    for (long i = 0; n <= 0 || i < n; i++) {
        int rc = dctx_rpc_stream_send(st, msg, sizeof msg);
        if (rc != 0)
            return rc;
    }
    return dctx_err(ctx);
}

static int hold(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)st;
    (void)reply;
    dctx_wait(ctx, -1);
    return dctx_err(ctx);
}

static dctx_rpc_server *serve(const char *url, int workers)
{
    dctx_rpc_server_options so;
    dctx_rpc_server_options_init(&so);
    so.workers = workers;
    so.max_in_flight = 100000;
    dctx_rpc_server *srv = NULL;
    int rc = dctx_rpc_server_open(&so, &srv);
    if (rc == 0)
        rc = dctx_rpc_server_register_stream(srv, "/bench.Stream/Count", count, NULL);
    if (rc == 0)
        rc = dctx_rpc_server_register_stream(srv, "/bench.Stream/Hold", hold, NULL);
    if (rc == 0)
        rc = dctx_rpc_server_listen(srv, url);
    if (rc == 0)
        rc = dctx_rpc_server_start(srv);
    if (rc != 0)
        die("server", rc);
    return srv;
}

static dctx_rpc_stream *open_stream(dctx_rpc_channel *ch, dctx *ctx, const char *method,
                                    const char *req)
{
    dctx_rpc_stream *st = NULL;
    int rc = dctx_rpc_stream_open(ch, ctx, method, &st);
    if (rc == 0)
        rc = dctx_rpc_stream_send(st, req, strlen(req));
    if (rc == 0)
        rc = dctx_rpc_stream_close_send(st);
    if (rc != 0)
        die("open", rc);
    return st;
}

struct reader {
    dctx_rpc_channel *ch;
    int64_t until_ns;
    long long got;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    dctx *ctx = NULL;
    if (dctx_with_cancel(dctx_background(), &ctx) != 0)
        return NULL;
    dctx_rpc_stream *st = open_stream(r->ch, ctx, "/bench.Stream/Count", "0");
    dctx_rpc_message m;
    while (dctx_now() < r->until_ns) {
        for (int i = 0; i < BATCH && dctx_rpc_stream_recv(st, &m); i++, r->got++)
            dctx_rpc_message_free(&m);
    }
    dctx_cancel(ctx);
    dctx_rpc_stream_finish(st, NULL);
    dctx_rpc_stream_release(st);
    dctx_release(ctx);
    return NULL;
}

static int run_tput(const char *url, int streams, double secs)
{
    dctx_rpc_channel *ch = NULL;
    int rc = dctx_rpc_channel_open(url, NULL, &ch);
    if (rc != 0)
        die("channel", rc);
    struct reader *r = calloc((size_t)streams, sizeof *r);
    pthread_t *t = calloc((size_t)streams, sizeof *t);
    int64_t t0 = dctx_now();
    for (int i = 0; i < streams; i++) {
        r[i] = (struct reader){.ch = ch, .until_ns = t0 + (int64_t)(secs * 1e9)};
        pthread_create(&t[i], NULL, reader_main, &r[i]);
    }
    long long total = 0;
    for (int i = 0; i < streams; i++) {
        pthread_join(t[i], NULL);
        total += r[i].got;
    }
    double el = (dctx_now() - t0) / 1e9;
    printf("stream-tput streams=%d msgs=%lld msgs_per_s=%.0f\n", streams, total, total / el);
    free(r);
    free(t);
    dctx_rpc_channel_close(ch);
    return 0;
}

static int run_idle(const char *url, int n, const char *pid)
{
    dctx_rpc_channel *ch = NULL;
    int rc = dctx_rpc_channel_open(url, NULL, &ch);
    if (rc != 0)
        die("channel", rc);
    dctx *ctx = NULL;
    dctx_with_cancel(dctx_background(), &ctx);
    dctx_rpc_stream **st = calloc((size_t)n, sizeof *st);
    dctx_rpc_stream *first = open_stream(ch, ctx, "/bench.Stream/Hold", "x"); /* connected */
    char status[64];
    snprintf(status, sizeof status, "/proc/%s/status", pid);
    samples_sleep_ns(200000000);
    long before = samples_proc_status(status, "VmRSS");
    for (int i = 0; i < n; i++)
        st[i] = open_stream(ch, ctx, "/bench.Stream/Hold", "x");
    samples_sleep_ns(500000000);
    long after = samples_proc_status(status, "VmRSS");
    printf("stream-idle n=%d server_rss_before_kib=%ld after_kib=%ld bytes_per_stream=%.0f\n", n,
           before, after, (after - before) * 1024.0 / n);
    dctx_cancel(ctx);
    for (int i = 0; i < n; i++) {
        dctx_rpc_stream_finish(st[i], NULL);
        dctx_rpc_stream_release(st[i]);
    }
    dctx_rpc_stream_finish(first, NULL);
    dctx_rpc_stream_release(first);
    free(st);
    dctx_release(ctx);
    dctx_rpc_channel_close(ch);
    return 0;
}

static void usage(FILE *to)
{
    fprintf(to, "usage: stream_bench server URL [WORKERS] | tput URL STREAMS SECONDS | "
                "idle URL N PID\n");
}

static int num(const char *s, double lo, double hi, const char *what)
{
    return (int)samples_num_arg("stream_bench", s, lo, hi, what, usage);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "server") == 0) {
        serve(argv[2], argc > 3 ? num(argv[3], 1, 4096, "WORKERS") : 64);
        for (;;)
            samples_sleep_ns(3600000000000LL);
    }
    if (argc >= 5 && strcmp(argv[1], "tput") == 0)
        return run_tput(argv[2], num(argv[3], 1, 4096, "STREAMS"),
                        samples_num_arg("stream_bench", argv[4], 0.1, 3600, "SECONDS", usage));
    if (argc >= 5 && strcmp(argv[1], "idle") == 0)
        return run_idle(argv[2], num(argv[3], 1, 1000000, "N"), argv[4]);
    usage(stderr);
    return 2;
}
