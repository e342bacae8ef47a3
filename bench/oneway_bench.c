/*
 * oneway_bench.c - the floors under a cancel's way to a handler: how long
 * one small message takes from one process to another over tcp on
 * 127.0.0.1 (nng REQ -> REP, nng's stream API, a bare kernel socket), and
 * how long a thread waiting on a context takes to wake once another thread
 * cancels it. Each sample is taken after the machine sat idle for a while
 * (5 ms by default, as rpc_bench's cancel), as a cancel is: the receiving
 * side is asleep when the message comes.
 *
 *   oneway_bench [N] [--delay-ms D] [--port P]
 *
 * A cancel over dctx is a push (the caller's thread sends), one nng message
 * per hop (REQ -> REP, read by the server from its receive aio's
 * callback), and a wake (the handler's thread). So "nng-rep" times hops
 * plus "wake" is what dctx would cost if it added nothing of its own: the
 * figure bench/rpc-compare sets against grpc-go's cancel.
 *
 * Output: one line per floor, "oneway kind=K n=... p50_us=... ...".
 * The receiving side takes the time; both sides read CLOCK_MONOTONIC, which
 * processes on one machine share. Ports: P (nng REP), P+1 (nng stream),
 * P+2 (kernel socket); 47341 by default.
 */
#include <dctx/dctx.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "samples.h"

#define MS_NS INT64_C(1000000)

/* Samples, shared by the sender and the receiving process. */
struct shared {
    atomic_long got;        /* samples taken by the receiver */
    atomic_int ready;       /* the receiver is listening */
    atomic_int sender_done; /* the sender exited: the receiver stops waiting */
    long cap;               /* room in ns */
    int64_t ns[];           /* receive time - send time, per sample */
};

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "oneway_bench: FAIL ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static void report(const char *kind, int64_t *xs, size_t n)
{
    samples_sort(xs, n);
    printf("oneway kind=%s n=%zu p50_us=%.1f p90_us=%.1f p99_us=%.1f min_us=%.1f\n", kind, n,
           samples_pct_us(xs, n, .5), samples_pct_us(xs, n, .9), samples_pct_us(xs, n, .99),
           samples_pct_us(xs, n, 0));
    fflush(stdout);
}

static void record(struct shared *sh, int64_t sent)
{
    long i = atomic_load(&sh->got);
    if (i >= sh->cap)
        return; /* only the sender's n messages are timed */
    sh->ns[i] = dctx_now() - sent;
    atomic_store(&sh->got, i + 1);
}

/* Wait (sleeping) until the receiver took sample i, at most 2 s. */
static void await_sample(struct shared *sh, long i)
{
    for (int k = 0; k < 20000 && atomic_load(&sh->got) <= i; k++)
        samples_sleep_ns(100 * 1000);
    if (atomic_load(&sh->got) <= i)
        fail("sample %ld never arrived", i);
}

static void await_ready(struct shared *sh)
{
    for (int k = 0; k < 5000 && !atomic_load(&sh->ready); k++)
        samples_sleep_ns(1000 * 1000);
    if (!atomic_load(&sh->ready))
        fail("the receiver did not start");
}

/* ===== nng REQ -> REP: read from a REP context's aio callback, as
 * dctx's server reads a Cancel frame ===== */

struct rep_state {
    struct shared *sh;
    nng_ctx ctx;
    nng_aio *aio;
    int sending;
};

static void rep_cb(void *arg)
{
    struct rep_state *r = arg;
    if (nng_aio_result(r->aio) != 0)
        return;
    if (r->sending) { /* the reply went: receive the next one */
        r->sending = 0;
        nng_ctx_recv(r->ctx, r->aio);
        return;
    }
    nng_msg *m = nng_aio_get_msg(r->aio);
    int64_t sent = 0;
    if (nng_msg_len(m) == sizeof sent)
        memcpy(&sent, nng_msg_body(m), sizeof sent);
    record(r->sh, sent);
    nng_msg_clear(m);
    r->sending = 1;
    nng_ctx_send(r->ctx, r->aio);
}

static void rep_receiver(struct shared *sh, const char *url, long n)
{
    nng_socket s;
    struct rep_state r = {.sh = sh};
    if (nng_rep0_open(&s) != 0 || nng_listen(s, url, NULL, 0) != 0 ||
        nng_ctx_open(&r.ctx, s) != 0 || nng_aio_alloc(&r.aio, rep_cb, &r) != 0)
        fail("nng REP on %s", url);
    atomic_store(&sh->ready, 1);
    nng_ctx_recv(r.ctx, r.aio);
    while (atomic_load(&sh->got) < n && !atomic_load(&sh->sender_done))
        samples_sleep_ns(10 * MS_NS);
    samples_sleep_ns(20 * MS_NS); /* the last reply */
    nng_close(s);
    nng_aio_free(r.aio);
}

static void rep_sender(struct shared *sh, const char *url, long n, int64_t delay)
{
    nng_socket s;
    if (nng_req0_open(&s) != 0 || nng_dial(s, url, NULL, 0) != 0)
        fail("nng REQ to %s", url);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 2000);
    for (long i = 0; i < n; i++) {
        samples_sleep_ns(delay);
        nng_msg *m;
        int64_t t0 = dctx_now();
        if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, &t0, sizeof t0) != 0 ||
            nng_sendmsg(s, m, 0) != 0)
            fail("nng send");
        if (nng_recvmsg(s, &m, 0) != 0)
            fail("nng reply");
        nng_msg_free(m);
        await_sample(sh, i);
    }
    nng_close(s);
}

/* ===== nng's stream API: no SP protocol, read from the aio callback ===== */

struct stream_state {
    struct shared *sh;
    nng_stream *conn;
    nng_aio *aio;
    int64_t buf;
    size_t have;
};

static void stream_post(struct stream_state *st)
{
    nng_iov iov = {.iov_buf = (char *)&st->buf + st->have, .iov_len = sizeof st->buf - st->have};
    nng_aio_set_iov(st->aio, 1, &iov);
    nng_stream_recv(st->conn, st->aio);
}

static void stream_cb(void *arg)
{
    struct stream_state *st = arg;
    if (nng_aio_result(st->aio) != 0)
        return;
    st->have += nng_aio_count(st->aio);
    if (st->have == sizeof st->buf) {
        record(st->sh, st->buf);
        st->have = 0;
    }
    stream_post(st);
}

static void stream_receiver(struct shared *sh, const char *url, long n)
{
    nng_stream_listener *l;
    nng_aio *acc;
    struct stream_state st = {.sh = sh};
    if (nng_stream_listener_alloc(&l, url) != 0 || nng_stream_listener_listen(l) != 0 ||
        nng_aio_alloc(&acc, NULL, NULL) != 0 || nng_aio_alloc(&st.aio, stream_cb, &st) != 0)
        fail("nng stream listener on %s", url);
    atomic_store(&sh->ready, 1);
    nng_stream_listener_accept(l, acc);
    nng_aio_wait(acc);
    if (nng_aio_result(acc) != 0)
        fail("nng stream accept");
    st.conn = nng_aio_get_output(acc, 0);
    stream_post(&st);
    while (atomic_load(&sh->got) < n && !atomic_load(&sh->sender_done))
        samples_sleep_ns(10 * MS_NS);
    nng_stream_close(st.conn);
    nng_aio_stop(st.aio);
    nng_stream_free(st.conn);
    nng_stream_listener_free(l);
    nng_aio_free(st.aio);
    nng_aio_free(acc);
}

static void stream_sender(struct shared *sh, const char *url, long n, int64_t delay)
{
    nng_stream_dialer *d;
    nng_aio *aio;
    if (nng_stream_dialer_alloc(&d, url) != 0 || nng_aio_alloc(&aio, NULL, NULL) != 0)
        fail("nng stream dialer to %s", url);
    nng_stream_dialer_dial(d, aio);
    nng_aio_wait(aio);
    if (nng_aio_result(aio) != 0)
        fail("nng stream dial %s", url);
    nng_stream *c = nng_aio_get_output(aio, 0);
    for (long i = 0; i < n; i++) {
        samples_sleep_ns(delay);
        int64_t t0 = dctx_now();
        nng_iov iov = {.iov_buf = &t0, .iov_len = sizeof t0};
        nng_aio_set_iov(aio, 1, &iov);
        nng_stream_send(c, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0 || nng_aio_count(aio) != sizeof t0)
            fail("nng stream send");
        await_sample(sh, i);
    }
    nng_stream_close(c);
    nng_stream_free(c);
    nng_stream_dialer_free(d);
    nng_aio_free(aio);
}

/* ===== A bare kernel socket: a thread blocked in read() ===== */

static void socket_receiver(struct shared *sh, int port, long n)
{
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0)
        fail("socket listen on port %d", port);
    atomic_store(&sh->ready, 1);
    int c = accept(l, NULL, NULL);
    if (c < 0)
        fail("accept");
    for (long i = 0; i < n; i++) {
        int64_t sent;
        size_t have = 0;
        while (have < sizeof sent) {
            ssize_t k = read(c, (char *)&sent + have, sizeof sent - have);
            if (k <= 0)
                fail("socket read");
            have += (size_t)k;
        }
        record(sh, sent);
    }
    close(c);
    close(l);
}

static void socket_sender(struct shared *sh, int port, long n, int64_t delay)
{
    int s = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof a) != 0)
        fail("socket connect to port %d", port);
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (long i = 0; i < n; i++) {
        samples_sleep_ns(delay);
        int64_t t0 = dctx_now();
        if (write(s, &t0, sizeof t0) != (ssize_t)sizeof t0)
            fail("socket write");
        await_sample(sh, i);
    }
    close(s);
}

/* ===== Two processes per kind ===== */

enum kind { NNG_REP, NNG_STREAM, KERNEL_SOCKET };

static void run_pair(enum kind k, int port, long n, int64_t delay)
{
    size_t bytes = sizeof(struct shared) + (size_t)n * sizeof(int64_t);
    struct shared *sh =
        mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED)
        fail("mmap");
    sh->cap = n;
    char url[64];
    /* nng is used only in the two children: it may not be used across a fork. */
    pid_t pid = fork();
    if (pid < 0)
        fail("fork");
    if (pid == 0) {
        if (k == NNG_REP) {
            snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
            rep_receiver(sh, url, n);
        } else if (k == NNG_STREAM) {
            snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port + 1);
            stream_receiver(sh, url, n);
        } else {
            socket_receiver(sh, port + 2, n);
        }
        _exit(0);
    }
    pid_t sender = fork();
    if (sender < 0)
        fail("fork");
    if (sender == 0) {
        await_ready(sh);
        samples_sleep_ns(50 * MS_NS);
        if (k == NNG_REP) {
            snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
            rep_sender(sh, url, n, delay);
        } else if (k == NNG_STREAM) {
            snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port + 1);
            stream_sender(sh, url, n, delay);
        } else {
            socket_sender(sh, port + 2, n, delay);
        }
        _exit(0);
    }
    int st;
    bool sent = waitpid(sender, &st, 0) == sender && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    atomic_store(&sh->sender_done, 1);
    if (!sent) {
        kill(pid, SIGKILL); /* it may be blocked in accept or read */
        waitpid(pid, &st, 0);
        fail("the sender of kind %d failed", (int)k);
    }
    if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail("the receiver of kind %d failed", (int)k);
    static const char *names[] = {"nng-rep", "nng-stream", "socket"};
    report(names[k], sh->ns, (size_t)n);
    munmap(sh, bytes);
}

/* ===== wake: a thread waiting on a context, canceled by another ===== */

struct waiter {
    dctx *ctx;
    atomic_long woke_at;
};

static void *wait_thread(void *arg)
{
    struct waiter *w = arg;
    dctx_wait(w->ctx, -1);
    atomic_store(&w->woke_at, dctx_now());
    return NULL;
}

static void run_wake(long n, int64_t delay)
{
    int64_t *xs = malloc((size_t)n * sizeof *xs);
    if (xs == NULL)
        fail("out of memory");
    for (long i = 0; i < n; i++) {
        struct waiter w = {.woke_at = 0};
        if (dctx_with_cancel(dctx_background(), &w.ctx) != 0)
            fail("dctx_with_cancel");
        pthread_t t;
        if (pthread_create(&t, NULL, wait_thread, &w) != 0)
            fail("pthread_create");
        samples_sleep_ns(delay);
        int64_t t0 = dctx_now();
        dctx_cancel(w.ctx);
        pthread_join(t, NULL);
        xs[i] = atomic_load(&w.woke_at) - t0;
        dctx_release(w.ctx);
    }
    report("wake", xs, (size_t)n);
    free(xs);
}

int main(int argc, char **argv)
{
    long n = 1000;
    int64_t delay = 5 * MS_NS;
    int port = 47341;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--delay-ms") == 0 && i + 1 < argc)
            delay = (int64_t)(atof(argv[++i]) * 1e6);
        else if (strcmp(argv[i], "--port") == 0 && i + 1 < argc)
            port = atoi(argv[++i]);
        else if (argv[i][0] != '-')
            n = atol(argv[i]);
        else
            fail("usage: oneway_bench [N] [--delay-ms D] [--port P]");
    }
    if (n < 1 || n > 10000000 || delay < 0 || port < 1 || port > 65533)
        fail("N must be 1..1e7, D >= 0, P 1..65533");
    signal(SIGPIPE, SIG_IGN);
    printf("# oneway_bench n=%ld delay_ms=%.1f: one message across processes after idle, "
           "received time - sent time\n",
           n, (double)delay / 1e6);
    run_pair(NNG_REP, port, n, delay);
    run_pair(NNG_STREAM, port, n, delay);
    run_pair(KERNEL_SOCKET, port, n, delay);
    run_wake(n, delay);
    return 0;
}
