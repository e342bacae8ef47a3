/*
 * session_bench.c - the round trip of the session protocol's own layers
 * (lib/rpc/acceptor.c, dialer.c, session.c, conn.c): a ping answered by
 * the peer's session, timed on the caller's side, beside the raw stream
 * ping-pong and REQ/REP of ../shared/anchors/nng-raw in the same run
 * (bench/session-compare runs them together).
 *
 *   session_bench server URL       accept sessions until killed (or 600 s)
 *   session_bench ping URL N       N pings after 1000 warm-up; p50 / p99 in us
 *
 * The caller sends a ping and sleeps on a futex word its session's
 * on_frame sets when the pong comes: one wake per round trip, as a
 * blocking call will have.
 */
#include <limits.h>
#include <linux/futex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include <dctx/dctx.h>

#include "acceptor.h"
#include "dialer.h"
#include "samples.h"
#include "session.h"

static bool srv_frame(void *owner, struct dctx__session *s, Dctx__Wire__Frame *f)
{
    (void)owner;
    (void)s;
    (void)f;
    return false;
}

static void on_stream(void *owner, nng_stream *st)
{
    (void)owner;
    struct dctx__session_options o = {
        .server = true, .max_frame_bytes = 1 << 20, .max_calls = 100, .on_frame = srv_frame};
    struct dctx__session *s = NULL;
    if (dctx__session_open(st, &o, &s) == 0)
        dctx__session_start(s); /* a benchmark's server: sessions live until exit */
}

static int server(const char *url)
{
    struct dctx__acceptor_options o = {.on_stream = on_stream};
    struct dctx__acceptor *a = NULL;
    int rc = dctx__acceptor_open(url, &o, &a);
    if (rc != 0) {
        fprintf(stderr, "session_bench: cannot listen on %s: %s\n", url, dctx_code_name(rc));
        return 1;
    }
    nng_msleep(600 * 1000);
    dctx__acceptor_close(a);
    return 0;
}

/* The client: one session; the pong's arrival flips a futex word. */
static atomic_int pongs, ready;
static struct dctx__session *cli;

static void cli_ready(void *owner, struct dctx__session *s, const struct dctx__session_peer *p)
{
    (void)owner;
    (void)p;
    cli = s;
    atomic_store(&ready, 1);
}

static bool cli_frame(void *owner, struct dctx__session *s, Dctx__Wire__Frame *f)
{
    (void)owner;
    (void)s;
    if (f->body_case == DCTX__WIRE__FRAME__BODY_PONG) {
        atomic_fetch_add_explicit(&pongs, 1, memory_order_release);
        syscall(SYS_futex, &pongs, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    }
    return false;
}

static void cli_stream(void *owner, nng_stream *st)
{
    (void)owner;
    struct dctx__session_options o = {
        .max_frame_bytes = 1 << 20, .on_ready = cli_ready, .on_frame = cli_frame};
    struct dctx__session *s = NULL;
    if (dctx__session_open(st, &o, &s) == 0)
        dctx__session_start(s);
}

static int ping(const char *url, int n)
{
    struct dctx__dialer_options o = {.backoff_max_ns = 100000000LL, .on_stream = cli_stream};
    struct dctx__dialer *d = NULL;
    if (dctx__dialer_open(url, &o, &d) != 0)
        return 1;
    for (int i = 0; i < 5000 && !atomic_load(&ready); i++)
        nng_msleep(1);
    if (!atomic_load(&ready)) {
        fprintf(stderr, "session_bench: no session with %s\n", url);
        return 1;
    }
    int64_t *lat = malloc((size_t)n * sizeof *lat);
    if (lat == NULL)
        return 1;
    for (int i = -1000; i < n; i++) {
        int before = atomic_load_explicit(&pongs, memory_order_acquire);
        int64_t t0 = dctx_now();
        if (dctx__session_ping(cli, (uint64_t)i) != 0)
            return 2;
        while (atomic_load_explicit(&pongs, memory_order_acquire) == before)
            syscall(SYS_futex, &pongs, FUTEX_WAIT_PRIVATE, before, NULL, NULL, 0);
        if (i >= 0)
            lat[i] = dctx_now() - t0;
    }
    samples_sort(lat, (size_t)n);
    printf("session n=%d p50=%.1f us p99=%.1f us\n", n, samples_pct_us(lat, (size_t)n, 0.50),
           samples_pct_us(lat, (size_t)n, 0.99));
    free(lat);
    return 0; /* the session and dialer go with the process */
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "server") == 0)
        return server(argv[2]);
    if (argc == 4 && strcmp(argv[1], "ping") == 0)
        return ping(argv[2], atoi(argv[3]));
    fprintf(stderr, "usage: session_bench server URL | session_bench ping URL N\n");
    return 2;
}
