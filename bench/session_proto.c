/*
 * session_proto.c - a PROTOTYPE of a session protocol for dctx on nng's
 * stream API (nng_stream_dialer / nng_stream_listener, ipc:// and tcp://),
 * to be measured against REQ/REP in one run (bench/session-compare). It is
 * not the library: it exists to learn what a transport of our own would
 * cost and where nng's stream layer bites.
 *
 *   session_proto server URL [--workers N]   serve until SIGTERM/SIGINT (or 900 s)
 *   session_proto lat URL N [warm]           N sequential 64-byte echo calls
 *   session_proto tput URL SECS [conc]       conc (64) blocking callers on one connection
 *   session_proto cancel URL N [--delay-ms D] start a sleep, cancel it after D (2) ms
 *   session_proto check URL                  protocol checks against a running server
 *
 * Output: one line per figure, "NAME url=... key=value ..." (times in us),
 * as bench/rpc_bench.c prints them; all times are CLOCK_MONOTONIC, which
 * the processes on one machine share (the cancel figure sets a time taken
 * in the server against one taken in the client, as rpc_bench does).
 *
 * ===== Wire =====
 *
 * A connection carries frames both ways, each side sending whenever it has
 * something: u32 little-endian body length, then the body: u8 kind, u32
 * call id (little-endian), payload. The length is checked against BODY_MAX
 * before anything is allocated for the frame. The first payload byte is a
 * code: the method of a CALL (1 echo, 2 sleep), the status of a REPLY
 * (dctx's status codes), 1/0 (found or not) in a CANCEL_ACK. Many calls
 * are in flight at once on one connection; the client picks the ids and
 * never reuses one while it is in flight. A CANCEL names the call by its
 * id; the server answers it with a CANCEL_ACK of that id, and the call
 * itself then ends with its REPLY.
 *
 * ===== One connection (struct conn, both sides) =====
 *
 * Receive: ONE receive aio, always posted while the connection lives. It
 * reads as much as is there into a 64 KiB buffer (rbuf); the callback
 * parses every whole frame in it (many frames per read), keeps a partial
 * one for the next read (a frame split across reads), and re-posts. A
 * frame bigger than rbuf gets a buffer of its own (after the length
 * check) and the next reads go straight into it. Frames are handed to the
 * side's on_frame from the receive callback, in place (no copy).
 *
 * Send: a queue of frames (one allocation each) under the connection's
 * mutex, and ONE send aio. Whoever queues a frame and finds no send in
 * flight takes the "sending" token and starts one with every queued frame
 * at once: one iov per frame. An nng 1.5.2 aio holds at most 8 iovs
 * (nni_aio's a_iov[8]; more is NNG_EINVAL), so beyond 7 frames the rest are
 * copied into one coalescing buffer that is the 8th iov. The send callback
 * holds the token: on a partial write (nng_aio_count short of the iovs'
 * total) it advances the iovs and sends the rest; when all went, it frees
 * the frames and starts the next batch or drops the token.
 *
 * States: live -> dead (an aio failed: the peer went, or broke the
 * protocol; set once, by conn_fail) -> closed (the closer began closing:
 * nothing new is queued or started) -> freed (last reference).
 *
 * ===== Who frees what, and when =====
 *
 * Never free an aio or close a stream from inside that aio's callback:
 * nng 1.5.2's nni_task_exec re-locks a mutex that lives inside the aio
 * after the callback returns (taskq.c), so freeing it there is a
 * use-after-free (the "corrupt mutex under churn" of DESIGN.md), and
 * nng_aio_stop from its own callback would wait for itself. So callbacks
 * only mark a connection dead (conn_fail); the CLOSER closes it: on the
 * server the main thread (the reaper, which also closes every connection
 * at shutdown), on the client the thread that opened it. conn_close: set
 * closed under the mutex, nng_stream_close, nng_aio_stop on both aios
 * (after which no callback runs, and a post on them is refused without a
 * callback), cancel or fail the calls in flight, drop the connection's own
 * reference.
 *
 * References: the connection holds one (dropped by its closer); each server
 * handler in flight holds one (dropped by its worker after its reply was
 * queued). The last one frees: queued and in-flight frames, the
 * coalescing and big-frame buffers, nng_stream_free, nng_aio_free of both
 * aios. No nng callback ever holds or drops a reference, so the last one
 * is never dropped inside a callback.
 *
 * Frames: a queued frame belongs to the queue; taken into a batch, to the
 * token holder, who frees it once written (the send callback) or leaves it
 * to the last reference when the send failed. A received frame lives in
 * rbuf (or the big buffer, freed by the receive callback once handled).
 * Server handler: a job (context + table entry) made by the receive
 * callback, freed by the worker that ran it. Client call: the caller's
 * (its stack); the receive callback copies the reply into the caller's
 * buffer before it marks the call done, and touches it no more after.
 */
#include <dctx/dctx.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "samples.h"

#define MS_NS INT64_C(1000000)
#define S_NS INT64_C(1000000000)
#define MSG_SIZE 64

/* ===== Wire constants ===== */

#define LEN_FIELD 4 /* u32 body length */
#define BODY_MIN 5  /* kind + id */
#define HDR_LEN (LEN_FIELD + BODY_MIN)
#define BODY_MAX (8u << 20)    /* checked before any allocation */
#define RBUF_CAP (64 * 1024)   /* one read's room */
#define COAL_CAP (64 * 1024)   /* the 8th iov of a send */
#define SEND_IOV_MAX 8         /* nng 1.5.2: nni_aio a_iov[8] */
#define TABLE_BUCKETS 1024     /* power of two */
#define MAX_INFLIGHT 4096      /* server: handlers per connection */
#define SLEEP_DEFAULT_MS 10000 /* the sleep handler's own limit: 10 s */

enum kind { K_CALL = 1, K_REPLY = 2, K_CANCEL = 3, K_CANCEL_ACK = 4 };
enum method { M_ECHO = 1, M_SLEEP = 2 };

/* What a sleep call answers: when its handler began waiting and when it
 * saw its context done (0 if it was not), and dctx_err then. */
struct sleep_rec {
    int64_t arrive_ns;
    int64_t seen_ns;
    int32_t err;
    int32_t pad;
};

/* ===== Small helpers ===== */

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fputs("session_proto: FAIL ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (p == NULL)
        fail("out of memory");
    return p;
}

static void put_u32le(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32le(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Sort xs and print " n= p50_us= p90_us= p99_us= p999_us= max_us= mean_us= min_us=". */
static void print_dist(int64_t *xs, size_t n)
{
    double sum = 0;
    if (n > 0)
        samples_sort(xs, n);
    for (size_t i = 0; i < n; i++)
        sum += (double)xs[i];
    printf(" n=%zu p50_us=%.1f p90_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f "
           "min_us=%.1f",
           n, samples_pct_us(xs, n, .50), samples_pct_us(xs, n, .90), samples_pct_us(xs, n, .99),
           samples_pct_us(xs, n, .999), samples_pct_us(xs, n, 1.0), n ? sum / (double)n / 1e3 : 0.0,
           samples_pct_us(xs, n, 0));
}

/* A growable array of samples. */
struct series {
    int64_t *v;
    size_t n, cap;
};

static void series_add(struct series *s, int64_t x)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        if (s->v == NULL)
            fail("out of memory");
    }
    s->v[s->n++] = x;
}

/* ===== Frames ===== */

struct frame {
    struct frame *next;
    size_t len; /* of b: header and payload */
    unsigned char b[];
};

/* A frame: kind, id, then the payload: code, then data. */
static struct frame *frame_new(uint8_t kind, uint32_t id, uint8_t code, const void *data,
                               size_t dlen)
{
    size_t body = BODY_MIN + 1 + dlen;
    struct frame *f = malloc(sizeof *f + LEN_FIELD + body);
    if (f == NULL)
        fail("out of memory");
    f->next = NULL;
    f->len = LEN_FIELD + body;
    put_u32le(f->b, (uint32_t)body);
    f->b[4] = kind;
    put_u32le(f->b + 5, id);
    f->b[HDR_LEN] = code;
    if (dlen > 0)
        memcpy(f->b + HDR_LEN + 1, data, dlen);
    return f;
}

static void frames_free(struct frame *f)
{
    while (f != NULL) {
        struct frame *next = f->next;
        free(f);
        f = next;
    }
}

/* ===== A table of calls by id (chained; the caller holds the lock) ===== */

struct entry {
    struct entry *next;
    uint32_t id;
};

struct table {
    struct entry *b[TABLE_BUCKETS];
    size_t n;
};

static struct entry **table_slot(struct table *t, uint32_t id)
{
    struct entry **pp = &t->b[(id * 2654435761u) & (TABLE_BUCKETS - 1)];
    while (*pp != NULL && (*pp)->id != id)
        pp = &(*pp)->next;
    return pp;
}

static struct entry *table_find(struct table *t, uint32_t id)
{
    return *table_slot(t, id);
}

static void table_insert(struct table *t, struct entry *e)
{
    struct entry **head = &t->b[(e->id * 2654435761u) & (TABLE_BUCKETS - 1)];
    e->next = *head;
    *head = e;
    t->n++;
}

static struct entry *table_remove(struct table *t, uint32_t id)
{
    struct entry **pp = table_slot(t, id);
    struct entry *e = *pp;
    if (e != NULL) {
        *pp = e->next;
        e->next = NULL;
        t->n--;
    }
    return e;
}

/* Take every entry out: a list linked by next. */
static struct entry *table_drain(struct table *t)
{
    struct entry *all = NULL;
    for (size_t i = 0; i < TABLE_BUCKETS; i++)
        while (t->b[i] != NULL) {
            struct entry *e = t->b[i];
            t->b[i] = e->next;
            e->next = all;
            all = e;
        }
    t->n = 0;
    return all;
}

/* ===== One connection ===== */

struct conn;

struct conn_ops {
    /* A frame came (the receive callback, in place). */
    void (*on_frame)(struct conn *c, uint8_t kind, uint32_t id, const unsigned char *p, size_t n);
    /* The connection died (once; from a callback or the closer). */
    void (*on_dead)(struct conn *c);
};

struct conn_stats {
    uint64_t reads, frames_in;                 /* receive side */
    uint64_t sends, frames_out, partial_sends; /* send side */
    uint64_t proto_errors;
};

struct conn {
    nng_stream *s;
    nng_aio *rx, *tx;
    const struct conn_ops *ops;
    void *owner;                       /* the server or the client */
    struct conn *next_all, *next_dead; /* server lists (under the server's mutex) */

    pthread_mutex_t mu; /* from here to the token's state */
    int refs;
    bool dead, closed;
    struct table calls; /* server: handlers; client: calls waiting */
    struct frame *q_head, **q_tail;
    bool sending; /* the token: a send is in flight or about to be */

    /* The token holder's (no lock): the batch being written. */
    struct frame *batch[SEND_IOV_MAX];
    int nbatch;
    nng_iov iov[SEND_IOV_MAX];
    int niov, iov_off;
    unsigned char *coal;
    /* Counters: one writer each (the token holder, the receive callback),
     * read by anyone at any time, so relaxed atomics (bump). */
    atomic_ullong sends, frames_out, partial_sends;

    /* The receive callback's (no lock): one receive in flight at a time. */
    size_t r_start, r_end;
    unsigned char *big;
    size_t big_len, big_have;
    atomic_ullong reads, frames_in, proto_errors;
    unsigned char rbuf[RBUF_CAP];
};

static void conn_fail(struct conn *c);
static void rx_cb(void *arg);

/* One writer per counter: a plain load and store, no locked instruction. */
static void bump(atomic_ullong *x)
{
    atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

static uint64_t peek(atomic_ullong *x)
{
    return atomic_load_explicit(x, memory_order_relaxed);
}
static void tx_cb(void *arg);

static struct conn *conn_new(nng_stream *s, const struct conn_ops *ops, void *owner)
{
    struct conn *c = xcalloc(1, sizeof *c);
    c->s = s;
    c->ops = ops;
    c->owner = owner;
    c->refs = 1; /* the connection's own: its closer's */
    c->q_tail = &c->q_head;
    pthread_mutex_init(&c->mu, NULL);
    if (nng_aio_alloc(&c->rx, rx_cb, c) != 0 || nng_aio_alloc(&c->tx, tx_cb, c) != 0)
        fail("nng_aio_alloc");
    return c;
}

/* The last reference: nothing of c runs any more (its aios were stopped by
 * its closer before it dropped its reference). */
static void conn_free(struct conn *c)
{
    frames_free(c->q_head);
    for (int i = 0; i < c->nbatch; i++)
        free(c->batch[i]);
    free(c->coal);
    free(c->big);
    nng_stream_free(c->s);
    nng_aio_free(c->rx);
    nng_aio_free(c->tx);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void conn_unref(struct conn *c)
{
    pthread_mutex_lock(&c->mu);
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0)
        conn_free(c);
}

/* ----- send ----- */

/* With the token and c->mu held: move the queued frames into the batch,
 * one iov each; past 7 of them the rest (as many as fit) are copied into
 * the coalescing buffer, the 8th iov. Returns the frames so copied, for
 * the caller to free once it let go of the lock. */
static struct frame *tx_take(struct conn *c)
{
    struct frame *copied = NULL, **ctail = &copied;
    c->nbatch = c->niov = c->iov_off = 0;
    while (c->q_head != NULL && c->niov < SEND_IOV_MAX) {
        struct frame *f = c->q_head;
        bool last_iov = c->niov == SEND_IOV_MAX - 1;
        if (last_iov && f->next != NULL && f->len <= COAL_CAP) {
            if (c->coal == NULL && (c->coal = malloc(COAL_CAP)) == NULL)
                fail("out of memory");
            size_t used = 0;
            while (c->q_head != NULL && used + c->q_head->len <= COAL_CAP) {
                f = c->q_head;
                c->q_head = f->next;
                memcpy(c->coal + used, f->b, f->len);
                used += f->len;
                bump(&c->frames_out);
                *ctail = f;
                ctail = &f->next;
            }
            *ctail = NULL;
            c->iov[c->niov++] = (nng_iov){.iov_buf = c->coal, .iov_len = used};
            break;
        }
        c->q_head = f->next;
        f->next = NULL;
        c->batch[c->nbatch++] = f;
        bump(&c->frames_out);
        c->iov[c->niov++] = (nng_iov){.iov_buf = f->b, .iov_len = f->len};
    }
    if (c->q_head == NULL)
        c->q_tail = &c->q_head;
    return copied;
}

/* The token holder: write what is left of the batch. */
static void tx_start(struct conn *c)
{
    bump(&c->sends);
    if (nng_aio_set_iov(c->tx, (unsigned)(c->niov - c->iov_off), &c->iov[c->iov_off]) != 0)
        fail("nng_aio_set_iov");
    nng_stream_send(c->s, c->tx);
}

/* n bytes of the batch went: drop the iovs written, trim a partial one.
 * True once the whole batch went. */
static bool tx_advance(struct conn *c, size_t n)
{
    while (n > 0 && c->iov_off < c->niov) {
        nng_iov *v = &c->iov[c->iov_off];
        if (n >= v->iov_len) {
            n -= v->iov_len;
            c->iov_off++;
        } else {
            v->iov_buf = (char *)v->iov_buf + n;
            v->iov_len -= n;
            n = 0;
        }
    }
    return c->iov_off == c->niov;
}

/* Queue f and start a send unless one is in flight. False (f freed) once
 * the connection is dead or closing. */
static bool conn_send(struct conn *c, struct frame *f)
{
    pthread_mutex_lock(&c->mu);
    if (c->dead || c->closed) {
        pthread_mutex_unlock(&c->mu);
        free(f);
        return false;
    }
    *c->q_tail = f;
    c->q_tail = &f->next;
    bool start = !c->sending;
    struct frame *copied = NULL;
    if (start) {
        c->sending = true;
        copied = tx_take(c);
    }
    pthread_mutex_unlock(&c->mu);
    frames_free(copied);
    if (start)
        tx_start(c); /* outside the lock: nng may take its own locks */
    return true;
}

static void tx_cb(void *arg)
{
    struct conn *c = arg;
    if (nng_aio_result(c->tx) != 0) {
        conn_fail(c); /* keeps the token: nothing more starts; the last ref frees */
        return;
    }
    if (!tx_advance(c, nng_aio_count(c->tx))) {
        bump(&c->partial_sends);
        tx_start(c);
        return;
    }
    for (int i = 0; i < c->nbatch; i++)
        free(c->batch[i]);
    c->nbatch = 0;
    struct frame *copied = NULL;
    pthread_mutex_lock(&c->mu);
    bool more = c->q_head != NULL && !c->dead && !c->closed;
    if (more)
        copied = tx_take(c);
    else
        c->sending = false;
    pthread_mutex_unlock(&c->mu);
    frames_free(copied);
    if (more)
        tx_start(c);
}

/* ----- receive ----- */

static void rx_post(struct conn *c)
{
    nng_iov iov;
    if (c->big != NULL)
        iov = (nng_iov){.iov_buf = c->big + c->big_have, .iov_len = c->big_len - c->big_have};
    else
        iov = (nng_iov){.iov_buf = c->rbuf + c->r_end, .iov_len = RBUF_CAP - c->r_end};
    nng_aio_set_iov(c->rx, 1, &iov);
    nng_stream_recv(c->s, c->rx);
}

/* One whole frame: body points at its kind byte, n is its body length. */
static void rx_dispatch(struct conn *c, const unsigned char *body, size_t n)
{
    bump(&c->frames_in);
    c->ops->on_frame(c, body[0], get_u32le(body + 1), body + BODY_MIN, n - BODY_MIN);
}

/* Handle every whole frame in rbuf; keep a partial one (moved to the front
 * when room runs short) or start a big buffer for a frame rbuf cannot
 * hold. False: the peer broke the protocol. */
static bool rx_parse(struct conn *c)
{
    while (c->r_end - c->r_start >= LEN_FIELD) {
        const unsigned char *p = c->rbuf + c->r_start;
        size_t avail = c->r_end - c->r_start;
        uint32_t body = get_u32le(p);
        if (body < BODY_MIN || body > BODY_MAX)
            return false; /* before any allocation */
        size_t total = LEN_FIELD + (size_t)body;
        if (avail >= total) {
            rx_dispatch(c, p + LEN_FIELD, body);
            c->r_start += total;
            continue;
        }
        if (total > RBUF_CAP) {
            if ((c->big = malloc(total)) == NULL)
                return false;
            memcpy(c->big, p, avail);
            c->big_len = total;
            c->big_have = avail;
            c->r_start = c->r_end = 0;
            return true;
        }
        break;
    }
    if (c->r_start == c->r_end) {
        c->r_start = c->r_end = 0;
    } else if (RBUF_CAP - c->r_end < RBUF_CAP / 2) {
        /* A partial frame near the end: move it to the front so the rest
         * fits (any frame that fits rbuf fits once at the front). */
        memmove(c->rbuf, c->rbuf + c->r_start, c->r_end - c->r_start);
        c->r_end -= c->r_start;
        c->r_start = 0;
    }
    return true;
}

static void rx_cb(void *arg)
{
    struct conn *c = arg;
    if (nng_aio_result(c->rx) != 0) {
        conn_fail(c);
        return;
    }
    size_t n = nng_aio_count(c->rx);
    bump(&c->reads);
    if (c->big != NULL) {
        c->big_have += n;
        if (c->big_have < c->big_len) {
            rx_post(c);
            return;
        }
        rx_dispatch(c, c->big + LEN_FIELD, c->big_len - LEN_FIELD);
        free(c->big);
        c->big = NULL;
    } else {
        c->r_end += n;
    }
    if (!rx_parse(c)) {
        bump(&c->proto_errors);
        conn_fail(c);
        return;
    }
    rx_post(c);
}

/* ----- states ----- */

/* Mark c dead (first time only: tell its side). Callbacks call this; it
 * never frees or closes anything. */
static void conn_fail(struct conn *c)
{
    pthread_mutex_lock(&c->mu);
    bool first = !c->dead;
    c->dead = true;
    pthread_mutex_unlock(&c->mu);
    if (first)
        c->ops->on_dead(c);
}

/* The closer, never an nng callback of c: after this no callback of c runs,
 * and none will. The caller then settles the calls and drops its ref. */
static void conn_close(struct conn *c)
{
    pthread_mutex_lock(&c->mu);
    c->closed = true;
    pthread_mutex_unlock(&c->mu);
    nng_stream_close(c->s);
    nng_aio_stop(c->rx);
    nng_aio_stop(c->tx);
}

/* Its counters (exact once closed, a snapshot before). */
static struct conn_stats conn_stats_of(struct conn *c)
{
    struct conn_stats st = {peek(&c->reads),      peek(&c->frames_in),     peek(&c->sends),
                            peek(&c->frames_out), peek(&c->partial_sends), peek(&c->proto_errors)};
    return st;
}

static void stats_add(struct conn_stats *to, const struct conn_stats *x)
{
    to->reads += x->reads;
    to->frames_in += x->frames_in;
    to->sends += x->sends;
    to->frames_out += x->frames_out;
    to->partial_sends += x->partial_sends;
    to->proto_errors += x->proto_errors;
}

/* TCP_NODELAY: nng 1.5.2's POSIX stream dialers and listeners leave it off
 * (the SP sockets turn it on); ipc has no such option. */
static void set_nodelay_dialer(nng_stream_dialer *d)
{
    (void)nng_stream_dialer_set_bool(d, NNG_OPT_TCP_NODELAY, true);
}

static void set_nodelay_listener(nng_stream_listener *l)
{
    (void)nng_stream_listener_set_bool(l, NNG_OPT_TCP_NODELAY, true);
}

/* ===== Server ===== */

struct job {
    struct entry e;   /* in its connection's table while it runs */
    struct job *next; /* in the pool's queue */
    struct conn *c;   /* a reference */
    dctx *ctx;
    int64_t sleep_ns;
};

struct server {
    nng_stream_listener *l;
    nng_aio *acc;
    pthread_mutex_t mu; /* the lists and totals */
    struct conn *all, *dead;
    struct conn_stats totals;
    uint64_t conns;
    /* The worker pool. */
    pthread_mutex_t pmu;
    pthread_cond_t pcv;
    struct job *jhead, **jtail;
    bool pstop;
    pthread_t *workers;
    int nworkers;
    atomic_ulong echoes, sleeps, cancels, cancel_hits, accept_errors;
};

static void srv_reply(struct conn *c, uint32_t id, uint8_t status, const void *d, size_t n)
{
    conn_send(c, frame_new(K_REPLY, id, status, d, n));
}

static void pool_push(struct server *srv, struct job *j)
{
    pthread_mutex_lock(&srv->pmu);
    *srv->jtail = j;
    srv->jtail = &j->next;
    pthread_cond_signal(&srv->pcv);
    pthread_mutex_unlock(&srv->pmu);
}

/* The sleep handler on a worker: wait on the call's context up to its
 * limit, take the time it saw done, leave the table, reply. */
static void job_run(struct job *j)
{
    struct sleep_rec rec = {.arrive_ns = dctx_now()};
    dctx_wait(j->ctx, j->sleep_ns);
    int64_t now = dctx_now();
    rec.err = dctx_err(j->ctx);
    rec.seen_ns = rec.err != 0 ? now : 0;
    pthread_mutex_lock(&j->c->mu);
    table_remove(&j->c->calls, j->e.id);
    pthread_mutex_unlock(&j->c->mu);
    dctx_release(j->ctx); /* out of the table: the cancel path cannot see it any more */
    srv_reply(j->c, j->e.id, (uint8_t)rec.err, &rec, sizeof rec);
    conn_unref(j->c);
    free(j);
}

static void *worker_main(void *arg)
{
    struct server *srv = arg;
    for (;;) {
        pthread_mutex_lock(&srv->pmu);
        while (srv->jhead == NULL && !srv->pstop)
            pthread_cond_wait(&srv->pcv, &srv->pmu);
        struct job *j = srv->jhead;
        if (j != NULL && (srv->jhead = j->next) == NULL)
            srv->jtail = &srv->jhead;
        pthread_mutex_unlock(&srv->pmu);
        if (j == NULL)
            return NULL; /* stopping, and nothing left */
        job_run(j);
    }
}

/* A sleep call: its context is made and registered HERE, in the receive
 * callback, not by the worker, so that a CANCEL read right after it finds
 * it even if no worker has picked the call up yet. */
static void srv_sleep(struct server *srv, struct conn *c, uint32_t id, const unsigned char *d,
                      size_t n)
{
    uint32_t ms = n >= 4 ? get_u32le(d) : SLEEP_DEFAULT_MS;
    struct job *j = xcalloc(1, sizeof *j);
    j->e.id = id;
    j->c = c;
    j->sleep_ns = (int64_t)(ms < SLEEP_DEFAULT_MS ? ms : SLEEP_DEFAULT_MS) * MS_NS;
    if (dctx_with_cancel(dctx_background(), &j->ctx) != 0) {
        free(j);
        srv_reply(c, id, DCTX_INTERNAL, NULL, 0);
        return;
    }
    uint8_t refuse = DCTX_OK;
    pthread_mutex_lock(&c->mu);
    if (c->dead || c->closed)
        refuse = DCTX_UNAVAILABLE;
    else if (table_find(&c->calls, id) != NULL)
        refuse = DCTX_ALREADY_EXISTS;
    else if (c->calls.n >= MAX_INFLIGHT)
        refuse = DCTX_RESOURCE_EXHAUSTED;
    if (refuse == DCTX_OK) {
        table_insert(&c->calls, &j->e);
        c->refs++; /* the job's, dropped by its worker */
    }
    pthread_mutex_unlock(&c->mu);
    if (refuse != DCTX_OK) {
        dctx_release(j->ctx);
        free(j);
        srv_reply(c, id, refuse, NULL, 0);
        return;
    }
    atomic_fetch_add(&srv->sleeps, 1);
    pool_push(srv, j);
}

/* CANCEL: cancel the handler's context first (that is the latency that
 * counts), then acknowledge. Under c->mu, so the worker cannot release the
 * context meanwhile (it leaves the table under it first). */
static void srv_cancel(struct server *srv, struct conn *c, uint32_t id)
{
    pthread_mutex_lock(&c->mu);
    struct entry *e = table_find(&c->calls, id);
    if (e != NULL)
        dctx_cancel(((struct job *)e)->ctx);
    pthread_mutex_unlock(&c->mu);
    atomic_fetch_add(&srv->cancels, 1);
    if (e != NULL)
        atomic_fetch_add(&srv->cancel_hits, 1);
    conn_send(c, frame_new(K_CANCEL_ACK, id, e != NULL, NULL, 0));
}

static void srv_on_frame(struct conn *c, uint8_t kind, uint32_t id, const unsigned char *p,
                         size_t n)
{
    struct server *srv = c->owner;
    uint8_t code = n > 0 ? p[0] : 0;
    const unsigned char *d = n > 0 ? p + 1 : p;
    size_t dn = n > 0 ? n - 1 : 0;
    if (kind == K_CANCEL) {
        srv_cancel(srv, c, id);
    } else if (kind == K_CALL && code == M_ECHO) {
        atomic_fetch_add(&srv->echoes, 1);
        srv_reply(c, id, DCTX_OK, d, dn); /* inline, as raw nng's server answers */
    } else if (kind == K_CALL && code == M_SLEEP) {
        srv_sleep(srv, c, id, d, dn);
    } else if (kind == K_CALL) {
        srv_reply(c, id, DCTX_UNIMPLEMENTED, NULL, 0);
    }
    /* Other kinds are a newer peer's: ignored. */
}

/* A connection died (a callback saw it): queue it for the reaper. */
static void srv_on_dead(struct conn *c)
{
    struct server *srv = c->owner;
    pthread_mutex_lock(&srv->mu);
    c->next_dead = srv->dead;
    srv->dead = c;
    pthread_mutex_unlock(&srv->mu);
}

static const struct conn_ops srv_ops = {srv_on_frame, srv_on_dead};

static void accept_cb(void *arg)
{
    struct server *srv = arg;
    int rv = nng_aio_result(srv->acc);
    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return; /* shutting down */
    if (rv != 0) {
        atomic_fetch_add(&srv->accept_errors, 1);
        nng_stream_listener_accept(srv->l, srv->acc);
        return;
    }
    struct conn *c = conn_new(nng_aio_get_output(srv->acc, 0), &srv_ops, srv);
    pthread_mutex_lock(&srv->mu);
    c->next_all = srv->all;
    srv->all = c;
    srv->conns++;
    pthread_mutex_unlock(&srv->mu);
    rx_post(c);
    nng_stream_listener_accept(srv->l, srv->acc);
}

/* The reaper (the main thread): close every dead connection, cancel the
 * handlers still running on it (peer loss is a cancel), drop its ref. */
static void srv_reap(struct server *srv)
{
    pthread_mutex_lock(&srv->mu);
    struct conn *dead = srv->dead;
    srv->dead = NULL;
    for (struct conn *c = dead; c != NULL; c = c->next_dead)
        for (struct conn **pp = &srv->all; *pp != NULL; pp = &(*pp)->next_all)
            if (*pp == c) {
                *pp = c->next_all;
                break;
            }
    pthread_mutex_unlock(&srv->mu);
    while (dead != NULL) {
        struct conn *c = dead;
        dead = c->next_dead;
        conn_close(c);
        pthread_mutex_lock(&c->mu);
        for (size_t i = 0; i < TABLE_BUCKETS; i++)
            for (struct entry *e = c->calls.b[i]; e != NULL; e = e->next)
                dctx_cancel(((struct job *)e)->ctx);
        pthread_mutex_unlock(&c->mu);
        struct conn_stats st = conn_stats_of(c);
        pthread_mutex_lock(&srv->mu);
        stats_add(&srv->totals, &st);
        pthread_mutex_unlock(&srv->mu);
        conn_unref(c);
    }
}

static void srv_start_pool(struct server *srv, int n)
{
    pthread_mutex_init(&srv->pmu, NULL);
    pthread_cond_init(&srv->pcv, NULL);
    srv->jtail = &srv->jhead;
    srv->nworkers = n;
    srv->workers = xcalloc((size_t)n, sizeof *srv->workers);
    for (int i = 0; i < n; i++)
        if (pthread_create(&srv->workers[i], NULL, worker_main, srv) != 0)
            fail("pthread_create");
}

/* Shutdown: no new connections, every live one failed and reaped (which
 * cancels its handlers), then the workers finish what is queued. */
static void srv_stop(struct server *srv)
{
    nng_stream_listener_close(srv->l);
    nng_aio_stop(srv->acc);
    pthread_mutex_lock(&srv->mu);
    size_t n = 0;
    for (struct conn *c = srv->all; c != NULL; c = c->next_all)
        n++;
    struct conn **live = xcalloc(n + 1, sizeof *live);
    n = 0;
    for (struct conn *c = srv->all; c != NULL; c = c->next_all)
        live[n++] = c;
    pthread_mutex_unlock(&srv->mu);
    for (size_t i = 0; i < n; i++)
        conn_fail(live[i]); /* only this thread frees conns: they are still there */
    free(live);
    srv_reap(srv);
    pthread_mutex_lock(&srv->pmu);
    srv->pstop = true;
    pthread_cond_broadcast(&srv->pcv);
    pthread_mutex_unlock(&srv->pmu);
    for (int i = 0; i < srv->nworkers; i++)
        pthread_join(srv->workers[i], NULL);
    nng_stream_listener_free(srv->l);
    nng_aio_free(srv->acc);
}

static int run_server(const char *url, int workers)
{
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL); /* before any thread, nng's too */
    signal(SIGPIPE, SIG_IGN);
    struct server *srv = xcalloc(1, sizeof *srv);
    pthread_mutex_init(&srv->mu, NULL);
    srv_start_pool(srv, workers);
    int rv;
    if ((rv = nng_stream_listener_alloc(&srv->l, url)) != 0)
        fail("nng_stream_listener_alloc %s: %s", url, nng_strerror(rv));
    set_nodelay_listener(srv->l);
    if ((rv = nng_stream_listener_listen(srv->l)) != 0)
        fail("cannot listen on %s: %s", url, nng_strerror(rv));
    if (nng_aio_alloc(&srv->acc, accept_cb, srv) != 0)
        fail("nng_aio_alloc");
    nng_stream_listener_accept(srv->l, srv->acc);
    fprintf(stderr, "session_proto server pid %d listening on %s, %d workers\n", (int)getpid(), url,
            workers);
    alarm(900); /* a safety bound: never outlive a benchmark run by much */
    struct timespec tick = {0, 20 * MS_NS};
    for (;;) {
        int sig = sigtimedwait(&stop, NULL, &tick);
        srv_reap(srv);
        if (sig > 0)
            break;
    }
    srv_stop(srv);
    struct conn_stats *t = &srv->totals;
    printf("server url=%s conns=%llu echo=%lu sleep=%lu cancels=%lu cancel_hits=%lu "
           "accept_errors=%lu reads=%llu frames_in=%llu frames_per_read=%.2f sends=%llu "
           "frames_out=%llu frames_per_send=%.2f partial_sends=%llu proto_errors=%llu\n",
           url, (unsigned long long)srv->conns, atomic_load(&srv->echoes),
           atomic_load(&srv->sleeps), atomic_load(&srv->cancels), atomic_load(&srv->cancel_hits),
           atomic_load(&srv->accept_errors), (unsigned long long)t->reads,
           (unsigned long long)t->frames_in,
           t->reads ? (double)t->frames_in / (double)t->reads : 0.0, (unsigned long long)t->sends,
           (unsigned long long)t->frames_out,
           t->sends ? (double)t->frames_out / (double)t->sends : 0.0,
           (unsigned long long)t->partial_sends, (unsigned long long)t->proto_errors);
    fflush(stdout);
    return 0;
}

/* ===== Client ===== */

/* A call, the caller's (its stack). done is a futex word: 0 pending, 2 the
 * caller sleeps on it, 1 done. */
struct call {
    struct entry e;
    atomic_int done;
    int status;         /* the reply's, or DCTX_UNAVAILABLE */
    unsigned char *out; /* the reply's data go here, up to out_cap */
    size_t out_cap, out_len;
    int64_t done_ns; /* when the receive callback completed it */
};

struct client {
    struct conn *c;
    uint32_t next_id; /* under c->mu */
    /* The last CANCEL_ACK (under c->mu). */
    uint32_t ack_id;
    int64_t ack_ns;
    int ack_found;
    atomic_ulong stray; /* replies for no call */
};

static long futex(atomic_int *addr, int op, int val, const struct timespec *rel)
{
    return syscall(SYS_futex, addr, op, val, rel, NULL, 0);
}

/* The reply is in: mark done (release: the data are visible), and wake the
 * caller if it sleeps. The caller may return at once, so the call is not
 * touched after the exchange; the wake may then hit a word that is
 * something else by now, which costs its owner a spurious wake-up, never
 * memory (the stack stays mapped). */
static void call_complete(struct call *k, int status)
{
    k->status = status;
    k->done_ns = dctx_now();
    if (atomic_exchange_explicit(&k->done, 1, memory_order_acq_rel) == 2)
        futex(&k->done, FUTEX_WAKE_PRIVATE, 1, NULL);
}

static void cli_on_frame(struct conn *c, uint8_t kind, uint32_t id, const unsigned char *p,
                         size_t n)
{
    struct client *cl = c->owner;
    if (kind == K_CANCEL_ACK) {
        pthread_mutex_lock(&c->mu);
        cl->ack_id = id;
        cl->ack_ns = dctx_now();
        cl->ack_found = n > 0 && p[0] != 0;
        pthread_mutex_unlock(&c->mu);
        return;
    }
    if (kind != K_REPLY)
        return;
    pthread_mutex_lock(&c->mu);
    struct entry *e = table_remove(&c->calls, id);
    pthread_mutex_unlock(&c->mu);
    if (e == NULL) {
        atomic_fetch_add(&cl->stray, 1);
        return;
    }
    struct call *k = (struct call *)e;
    size_t dn = n > 0 ? n - 1 : 0;
    k->out_len = dn < k->out_cap ? dn : k->out_cap;
    if (k->out_len > 0)
        memcpy(k->out, p + 1, k->out_len);
    call_complete(k, n > 0 ? p[0] : DCTX_UNKNOWN);
}

/* Every call still waiting fails with UNAVAILABLE. */
static void cli_fail_all(struct conn *c)
{
    pthread_mutex_lock(&c->mu);
    struct entry *e = table_drain(&c->calls);
    pthread_mutex_unlock(&c->mu);
    while (e != NULL) {
        struct entry *next = e->next;
        call_complete((struct call *)e, DCTX_UNAVAILABLE);
        e = next;
    }
}

static const struct conn_ops cli_ops = {cli_on_frame, cli_fail_all};

/* Dial url, retrying for up to timeout_ns (the server may still be
 * starting); the stream. The dialer is freed at once, before the stream
 * can be: nng 1.5.2 counts the stream's hold on its dialer with its own
 * atomics, and whichever of nng_stream_dialer_free and the reap of the
 * stream drops the last one destroys the dialer's mutex; freed in this
 * order, nng's reap-list lock orders the two (ThreadSanitizer, which does
 * not see the atomics of an uninstrumented libnng, can then check it). */
static nng_stream *dial(const char *url, int64_t timeout_ns)
{
    nng_stream_dialer *d;
    nng_aio *aio;
    int rv = nng_stream_dialer_alloc(&d, url);
    if (rv != 0)
        fail("nng_stream_dialer_alloc %s: %s", url, nng_strerror(rv));
    set_nodelay_dialer(d);
    if (nng_aio_alloc(&aio, NULL, NULL) != 0)
        fail("nng_aio_alloc");
    nng_aio_set_timeout(aio, 1000);
    int64_t until = dctx_now() + timeout_ns;
    for (;;) {
        nng_stream_dialer_dial(d, aio);
        nng_aio_wait(aio);
        if ((rv = nng_aio_result(aio)) == 0 || dctx_now() >= until)
            break;
        samples_sleep_ns(20 * MS_NS);
    }
    if (rv != 0)
        fail("cannot dial %s: %s", url, nng_strerror(rv));
    nng_stream *s = nng_aio_get_output(aio, 0);
    nng_aio_free(aio);
    nng_stream_dialer_free(d);
    return s;
}

static struct client *client_open(const char *url)
{
    signal(SIGPIPE, SIG_IGN);
    struct client *cl = xcalloc(1, sizeof *cl);
    cl->c = conn_new(dial(url, 5 * S_NS), &cli_ops, cl);
    rx_post(cl->c);
    return cl;
}

static void client_close(struct client *cl)
{
    conn_close(cl->c);
    cli_fail_all(cl->c);
    conn_unref(cl->c);
    free(cl);
}

/* Start a call: take an id not in flight, register k, send. False if the
 * connection is gone (k->status is then UNAVAILABLE and k done). */
static bool call_start(struct client *cl, struct call *k, uint8_t method, const void *d, size_t n)
{
    struct conn *c = cl->c;
    struct frame *f = frame_new(K_CALL, 0, method, d, n);
    atomic_store_explicit(&k->done, 0, memory_order_relaxed);
    k->status = DCTX_UNKNOWN;
    pthread_mutex_lock(&c->mu);
    bool up = !c->dead && !c->closed;
    if (up) {
        do /* ids wrap after 2^32 calls: skip 0 and any still in flight */
            k->e.id = ++cl->next_id;
        while (k->e.id == 0 || table_find(&c->calls, k->e.id) != NULL);
        table_insert(&c->calls, &k->e);
    }
    pthread_mutex_unlock(&c->mu);
    if (!up) {
        free(f);
        call_complete(k, DCTX_UNAVAILABLE);
        return false;
    }
    put_u32le(f->b + 5, k->e.id);
    if (!conn_send(c, f)) {
        pthread_mutex_lock(&c->mu);
        struct entry *e = table_remove(&c->calls, k->e.id);
        pthread_mutex_unlock(&c->mu);
        if (e != NULL)
            call_complete(k, DCTX_UNAVAILABLE); /* else on_dead completed it */
        return false;
    }
    return true;
}

/* Wait for k up to timeout_ns; its status, or DCTX_DEADLINE_EXCEEDED (k
 * then taken out of the table: a late reply is a stray). */
static int call_wait(struct client *cl, struct call *k, int64_t timeout_ns)
{
    int64_t until = dctx_now() + timeout_ns;
    for (;;) {
        int v = atomic_load_explicit(&k->done, memory_order_acquire);
        if (v == 1)
            return k->status;
        int64_t left = until - dctx_now();
        if (left <= 0) {
            pthread_mutex_lock(&cl->c->mu);
            struct entry *e = table_remove(&cl->c->calls, k->e.id);
            pthread_mutex_unlock(&cl->c->mu);
            if (e != NULL)
                return DCTX_DEADLINE_EXCEEDED;
            continue; /* completing right now */
        }
        int zero = 0;
        if (v == 2 || atomic_compare_exchange_strong(&k->done, &zero, 2)) {
            struct timespec ts = {left / S_NS, left % S_NS};
            futex(&k->done, FUTEX_WAIT_PRIVATE, 2, &ts);
        }
    }
}

static void call_cancel(struct client *cl, uint32_t id)
{
    conn_send(cl->c, frame_new(K_CANCEL, id, 0, NULL, 0));
}

/* A blocking echo of n bytes; the number of bytes back, or -1. */
static long echo(struct client *cl, const void *d, size_t n, void *out, size_t cap)
{
    struct call k = {.out = out, .out_cap = cap};
    call_start(cl, &k, M_ECHO, d, n);
    if (call_wait(cl, &k, 15 * S_NS) != DCTX_OK)
        return -1;
    return (long)k.out_len;
}

static struct conn_stats client_stats(struct client *cl)
{
    return conn_stats_of(cl->c);
}

/* ===== lat: sequential echo calls ===== */

static int run_lat(const char *url, size_t n, size_t warm)
{
    struct client *cl = client_open(url);
    char buf[MSG_SIZE], in[MSG_SIZE * 2];
    memset(buf, 'x', sizeof buf);
    int64_t *ns = xcalloc(n, sizeof *ns);
    for (size_t i = 0; i < warm + n; i++) {
        int64_t t0 = dctx_now();
        long got = echo(cl, buf, sizeof buf, in, sizeof in);
        int64_t t1 = dctx_now();
        if (got != MSG_SIZE || memcmp(in, buf, MSG_SIZE) != 0)
            fail("lat call %zu: %ld bytes back", i, got);
        if (i >= warm)
            ns[i - warm] = t1 - t0;
    }
    client_close(cl);
    printf("session-lat url=%s", url);
    print_dist(ns, n);
    printf("\n");
    fflush(stdout);
    free(ns);
    return 0;
}

/* ===== tput: blocking callers sharing one connection ===== */

static atomic_int tput_stop, tput_measuring;

struct caller {
    struct client *cl;
    pthread_t th;
    struct series lat;
    long errors;
};

static void *caller_main(void *arg)
{
    struct caller *w = arg;
    char buf[MSG_SIZE], in[MSG_SIZE * 2];
    memset(buf, 'x', sizeof buf);
    while (!atomic_load_explicit(&tput_stop, memory_order_acquire)) {
        int64_t t0 = dctx_now();
        long got = echo(w->cl, buf, sizeof buf, in, sizeof in);
        int64_t dt = dctx_now() - t0;
        if (got != MSG_SIZE) {
            w->errors++;
            break;
        }
        if (atomic_load_explicit(&tput_measuring, memory_order_acquire))
            series_add(&w->lat, dt);
    }
    return NULL;
}

static int run_tput(const char *url, double secs, int conc)
{
    struct client *cl = client_open(url);
    struct caller *w = xcalloc((size_t)conc, sizeof *w);
    for (int i = 0; i < conc; i++) {
        w[i].cl = cl;
        if (pthread_create(&w[i].th, NULL, caller_main, &w[i]) != 0)
            fail("pthread_create");
    }
    /* A warm-up (not counted), then count the calls that end in secs. */
    samples_sleep_ns(secs >= 1 ? 500 * MS_NS : 100 * MS_NS);
    struct conn_stats s0 = client_stats(cl);
    int64_t t0 = dctx_now();
    atomic_store_explicit(&tput_measuring, 1, memory_order_release);
    samples_sleep_ns((int64_t)(secs * 1e9));
    atomic_store_explicit(&tput_measuring, 0, memory_order_release);
    int64_t t1 = dctx_now();
    struct conn_stats s1 = client_stats(cl);
    atomic_store_explicit(&tput_stop, 1, memory_order_release);
    for (int i = 0; i < conc; i++)
        pthread_join(w[i].th, NULL);
    client_close(cl);
    size_t calls = 0;
    long errors = 0;
    for (int i = 0; i < conc; i++) {
        calls += w[i].lat.n;
        errors += w[i].errors;
    }
    int64_t *all = xcalloc(calls + 1, sizeof *all);
    size_t k = 0;
    for (int i = 0; i < conc; i++) {
        memcpy(all + k, w[i].lat.v, w[i].lat.n * sizeof *all);
        k += w[i].lat.n;
        free(w[i].lat.v);
    }
    double el = (double)(t1 - t0) / 1e9;
    uint64_t sends = s1.sends - s0.sends, reads = s1.reads - s0.reads;
    printf("session-tput url=%s conc=%d secs=%.2f calls=%zu calls_per_s=%.0f errors=%ld "
           "client_frames_per_send=%.2f client_frames_per_read=%.2f\n",
           url, conc, el, calls, (double)calls / el, errors,
           sends ? (double)(s1.frames_out - s0.frames_out) / (double)sends : 0.0,
           reads ? (double)(s1.frames_in - s0.frames_in) / (double)reads : 0.0);
    printf("session-tput-lat url=%s", url);
    print_dist(all, k);
    printf("\n");
    fflush(stdout);
    free(all);
    free(w);
    return errors > 0;
}

/* ===== cancel: CANCEL frame -> the handler sees its context done ===== */

/* Per sample: start a sleep call, wait delay (the handler is then waiting
 * on its context), t0 = dctx_now(), send CANCEL; the reply carries when
 * the handler saw done (seen - t0: "session-cancel"); the call returning
 * to its caller ("-return") and the CANCEL_ACK's arrival ("-ack") are
 * timed from t0 too. Samples whose handler had not started by t0 are
 * "early" and left out, as rpc_bench does. */
struct cancel_sample {
    int64_t seen, ret, ack; /* -1: none */
    bool early, other;
};

static int64_t wait_ack(struct client *cl, uint32_t id, int64_t timeout_ns)
{
    int64_t until = dctx_now() + timeout_ns;
    for (;;) {
        pthread_mutex_lock(&cl->c->mu);
        int64_t ns = cl->ack_id == id ? cl->ack_ns : -1;
        pthread_mutex_unlock(&cl->c->mu);
        if (ns >= 0 || dctx_now() >= until)
            return ns;
        samples_sleep_ns(20 * 1000);
    }
}

static struct cancel_sample cancel_once(struct client *cl, int64_t delay_ns)
{
    struct sleep_rec rec = {0};
    struct call k = {.out = (unsigned char *)&rec, .out_cap = sizeof rec};
    unsigned char ms[4];
    put_u32le(ms, SLEEP_DEFAULT_MS);
    if (!call_start(cl, &k, M_SLEEP, ms, sizeof ms))
        fail("sleep call: the connection is gone");
    samples_sleep_ns(delay_ns);
    int64_t t0 = dctx_now();
    call_cancel(cl, k.e.id);
    int st = call_wait(cl, &k, 15 * S_NS);
    int64_t t_ret = dctx_now();
    int64_t ack = wait_ack(cl, k.e.id, S_NS);
    struct cancel_sample s = {.seen = -1, .ret = t_ret - t0, .ack = ack >= 0 ? ack - t0 : -1};
    if (st != DCTX_CANCELED || k.out_len != sizeof rec || rec.err != DCTX_CANCELED)
        s.other = true;
    else if (rec.arrive_ns > t0)
        s.early = true;
    else
        s.seen = rec.seen_ns - t0;
    return s;
}

static int run_cancel(const char *url, size_t n, int64_t delay_ns)
{
    struct client *cl = client_open(url);
    char buf[MSG_SIZE], in[MSG_SIZE];
    memset(buf, 'x', sizeof buf);
    for (int i = 0; i < 100; i++) /* warm the connection up */
        if (echo(cl, buf, sizeof buf, in, sizeof in) != MSG_SIZE)
            fail("warm-up echo");
    struct series seen = {0}, ret = {0}, ack = {0};
    size_t early = 0, other = 0, noack = 0;
    for (size_t i = 0; i < n; i++) {
        struct cancel_sample s = cancel_once(cl, delay_ns);
        early += s.early;
        other += s.other;
        if (s.seen >= 0)
            series_add(&seen, s.seen);
        series_add(&ret, s.ret);
        if (s.ack >= 0)
            series_add(&ack, s.ack);
        else
            noack++;
    }
    unsigned long stray = atomic_load(&cl->stray);
    client_close(cl);
    printf("session-cancel url=%s delay_ms=%.1f early=%zu other=%zu", url, (double)delay_ns / 1e6,
           early, other);
    print_dist(seen.v, seen.n);
    printf("\nsession-cancel-return url=%s", url);
    print_dist(ret.v, ret.n);
    printf("\nsession-cancel-ack url=%s noack=%zu stray=%lu", url, noack, stray);
    print_dist(ack.v, ack.n);
    printf("\n");
    fflush(stdout);
    free(seen.v);
    free(ret.v);
    free(ack.v);
    return seen.n == 0 || other > 0;
}

/* ===== check: the protocol's edges, against a running server ===== */

/* Raw, synchronous stream helpers: crafted bytes the client would never send. */
struct raw {
    nng_stream *s;
    nng_aio *aio;
};

static struct raw raw_open(const char *url)
{
    struct raw r = {.s = dial(url, 2 * S_NS)};
    if (nng_aio_alloc(&r.aio, NULL, NULL) != 0)
        fail("nng_aio_alloc");
    nng_aio_set_timeout(r.aio, 2000);
    return r;
}

static void raw_close(struct raw *r)
{
    nng_stream_close(r->s);
    nng_aio_stop(r->aio);
    nng_stream_free(r->s);
    nng_aio_free(r->aio);
}

/* Write or read exactly n bytes (a loop: the stream may do part of it).
 * 0, or nng's error. */
static int raw_io(struct raw *r, void *buf, size_t n, bool write)
{
    for (size_t done = 0; done < n;) {
        nng_iov iov = {.iov_buf = (char *)buf + done, .iov_len = n - done};
        nng_aio_set_iov(r->aio, 1, &iov);
        if (write)
            nng_stream_send(r->s, r->aio);
        else
            nng_stream_recv(r->s, r->aio);
        nng_aio_wait(r->aio);
        int rv = nng_aio_result(r->aio);
        if (rv != 0)
            return rv;
        done += nng_aio_count(r->aio);
    }
    return 0;
}

/* Read one frame: its kind, id and payload (up to cap). */
static int raw_read_frame(struct raw *r, uint8_t *kind, uint32_t *id, unsigned char *p, size_t cap,
                          size_t *n)
{
    unsigned char h[HDR_LEN];
    int rv = raw_io(r, h, sizeof h, false);
    if (rv != 0)
        return rv;
    uint32_t body = get_u32le(h);
    if (body < BODY_MIN || body - BODY_MIN > cap)
        fail("check: a reply frame of %u bytes", body);
    *kind = h[4];
    *id = get_u32le(h + 5);
    *n = body - BODY_MIN;
    return raw_io(r, p, *n, false);
}

/* Many frames in one write: each answered, in order, intact. */
static void check_many_per_write(const char *url)
{
    struct raw r = raw_open(url);
    unsigned char *out = xcalloc(200, 400), in[400];
    size_t len = 0;
    for (uint32_t i = 1; i <= 200; i++) {
        unsigned char data[300];
        memset(data, (int)i, sizeof data);
        struct frame *f = frame_new(K_CALL, i, M_ECHO, data, i % 300);
        memcpy(out + len, f->b, f->len);
        len += f->len;
        free(f);
    }
    if (raw_io(&r, out, len, true) != 0)
        fail("check many: write");
    for (uint32_t i = 1; i <= 200; i++) {
        uint8_t kind;
        uint32_t id;
        size_t n;
        if (raw_read_frame(&r, &kind, &id, in, sizeof in, &n) != 0)
            fail("check many: reply %u missing", i);
        if (kind != K_REPLY || id != i || n != 1 + i % 300 || in[0] != DCTX_OK)
            fail("check many: reply %u: kind %u id %u len %zu", i, kind, id, n);
        for (size_t j = 1; j < n; j++)
            if (in[j] != (unsigned char)i)
                fail("check many: reply %u corrupt", i);
    }
    raw_close(&r);
    free(out);
    printf("check many-frames-per-write ok (200 frames in one write)\n");
}

/* A frame split across reads: written a byte at a time, 1 ms apart
 * (TCP_NODELAY is on, so each byte is its own segment). */
static void check_split(const char *url)
{
    struct raw r = raw_open(url);
    struct frame *f = frame_new(K_CALL, 7, M_ECHO, "split-across-reads", 18);
    for (size_t i = 0; i < f->len; i++) {
        if (raw_io(&r, f->b + i, 1, true) != 0)
            fail("check split: write");
        samples_sleep_ns(MS_NS);
    }
    uint8_t kind;
    uint32_t id;
    unsigned char in[64];
    size_t n;
    if (raw_read_frame(&r, &kind, &id, in, sizeof in, &n) != 0)
        fail("check split: no reply");
    if (kind != K_REPLY || id != 7 || n != 19 || memcmp(in + 1, "split-across-reads", 18) != 0)
        fail("check split: a bad reply");
    free(f);
    raw_close(&r);
    printf("check split-across-reads ok (a %zu-byte frame, one byte per write)\n", n + HDR_LEN);
}

/* A length over the limit: the server drops the connection (and stays up). */
static void check_oversize(const char *url)
{
    struct raw r = raw_open(url);
    unsigned char h[HDR_LEN] = {0};
    put_u32le(h, BODY_MAX + 1);
    h[4] = K_CALL;
    if (raw_io(&r, h, sizeof h, true) != 0)
        fail("check oversize: write");
    unsigned char in[16];
    int rv = raw_io(&r, in, 1, false);
    if (rv == 0 || rv == NNG_ETIMEDOUT)
        fail("check oversize: the server kept the connection (%s)", nng_strerror(rv));
    raw_close(&r);
    printf("check oversize ok (the server closed: %s)\n", nng_strerror(rv));
}

struct big_call {
    struct client *cl;
    pthread_t th;
    size_t n;
    int ok;
};

static void *big_main(void *arg)
{
    struct big_call *b = arg;
    unsigned char *out = malloc(b->n), *in = malloc(b->n);
    if (out == NULL || in == NULL)
        fail("out of memory");
    for (size_t i = 0; i < b->n; i++)
        out[i] = (unsigned char)(i * 7 + b->n);
    long got = echo(b->cl, out, b->n, in, b->n);
    b->ok = got == (long)b->n && memcmp(in, out, b->n) == 0;
    free(out);
    free(in);
    return NULL;
}

/* Frames bigger than a read buffer, several at once both ways: partial
 * writes (the socket buffer fills) and big-frame reads on both sides,
 * small calls interleaved. */
static void check_big(const char *url)
{
    struct client *cl = client_open(url);
    struct big_call b[6];
    for (int i = 0; i < 6; i++) {
        b[i] = (struct big_call){.cl = cl, .n = (size_t)(i + 1) * 700 * 1024 + (size_t)i};
        if (pthread_create(&b[i].th, NULL, big_main, &b[i]) != 0)
            fail("pthread_create");
    }
    char small[MSG_SIZE], in[MSG_SIZE];
    memset(small, 's', sizeof small);
    for (int i = 0; i < 50; i++)
        if (echo(cl, small, sizeof small, in, sizeof in) != MSG_SIZE)
            fail("check big: a small echo among big ones");
    for (int i = 0; i < 6; i++) {
        pthread_join(b[i].th, NULL);
        if (!b[i].ok)
            fail("check big: echo of %zu bytes", b[i].n);
    }
    struct conn_stats st = client_stats(cl);
    client_close(cl);
    printf("check big-frames ok (6 echoes of 0.7-4.1 MiB at once, 50 small ones among them; "
           "client: %llu sends, %llu of them partial, %llu reads)\n",
           (unsigned long long)st.sends, (unsigned long long)st.partial_sends,
           (unsigned long long)st.reads);
}

/* Cancel of an id not in flight: acknowledged as not found. A sleep with
 * its own short limit ends by itself, OK. */
static void check_cancel_edges(const char *url)
{
    struct client *cl = client_open(url);
    call_cancel(cl, 999999);
    if (wait_ack(cl, 999999, 2 * S_NS) < 0)
        fail("check cancel: no ack for an unknown id");
    pthread_mutex_lock(&cl->c->mu);
    int found = cl->ack_found;
    pthread_mutex_unlock(&cl->c->mu);
    if (found)
        fail("check cancel: an unknown id was found");
    struct sleep_rec rec = {0};
    struct call k = {.out = (unsigned char *)&rec, .out_cap = sizeof rec};
    unsigned char ms[4];
    put_u32le(ms, 30);
    int64_t t0 = dctx_now();
    call_start(cl, &k, M_SLEEP, ms, sizeof ms);
    int st = call_wait(cl, &k, 5 * S_NS);
    int64_t took = dctx_now() - t0;
    if (st != DCTX_OK || rec.err != 0 || took < 25 * MS_NS)
        fail("check cancel: a 30 ms sleep gave %d after %.1f ms", st, (double)took / 1e6);
    client_close(cl);
    printf("check cancel-edges ok (unknown id acked not-found; 30 ms sleep ended OK)\n");
}

/* Peer loss is a cancel: a client goes away with 16 sleeps (10 s each) in
 * flight, more than the server has workers, three times over. The server
 * must cancel them all (its workers then reply into a closed connection
 * and the last of them frees it), or the 30 ms sleep that follows would
 * queue behind them for 10 s and fail. */
static void check_peer_loss(const char *url)
{
    for (int round = 0; round < 3; round++) {
        struct client *cl = client_open(url);
        struct call k[16];
        unsigned char ms[4];
        put_u32le(ms, SLEEP_DEFAULT_MS);
        for (int i = 0; i < 16; i++) {
            k[i] = (struct call){.out = NULL};
            call_start(cl, &k[i], M_SLEEP, ms, sizeof ms);
        }
        samples_sleep_ns(20 * MS_NS);
        client_close(cl); /* fails them here: UNAVAILABLE */
        for (int i = 0; i < 16; i++)
            if (k[i].status != DCTX_UNAVAILABLE)
                fail("check peer loss: a call gave %d, not UNAVAILABLE", k[i].status);
    }
    struct client *cl = client_open(url);
    struct sleep_rec rec = {0};
    struct call k = {.out = (unsigned char *)&rec, .out_cap = sizeof rec};
    unsigned char ms[4];
    put_u32le(ms, 30);
    call_start(cl, &k, M_SLEEP, ms, sizeof ms);
    int st = call_wait(cl, &k, 3 * S_NS);
    if (st != DCTX_OK)
        fail("check peer loss: the server's handlers were not canceled (%d)", st);
    client_close(cl);
    printf("check peer-loss ok (3 x 16 sleeps in flight dropped; their handlers canceled)\n");
}

static int run_check(const char *url)
{
    signal(SIGPIPE, SIG_IGN);
    check_many_per_write(url);
    check_split(url);
    check_big(url);
    check_oversize(url);
    check_many_per_write(url); /* the server still takes new connections */
    check_cancel_edges(url);
    check_peer_loss(url);
    printf("check ok\n");
    return 0;
}

/* ===== main ===== */

static void usage(FILE *to)
{
    fputs("usage: session_proto server URL [--workers N]\n"
          "       session_proto lat URL N [warm]\n"
          "       session_proto tput URL SECS [conc]\n"
          "       session_proto cancel URL N [--delay-ms D]\n"
          "       session_proto check URL\n"
          "URL: ipc://PATH or tcp://127.0.0.1:PORT\n",
          to);
}

static double num_arg(const char *s, double lo, double hi, const char *what)
{
    return samples_num_arg("session_proto", s, lo, hi, what, usage);
}

int main(int argc, char **argv)
{
    const char *pos[6];
    int npos = 0, workers = 4;
    int64_t delay_ns = 2 * MS_NS;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strncmp(argv[i], "--", 2) != 0) {
            if (npos == 6) {
                usage(stderr);
                return 2;
            }
            pos[npos++] = argv[i];
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "session_proto: %s needs a value\n", argv[i]);
            return 2;
        }
        if (strcmp(argv[i], "--workers") == 0)
            workers = (int)num_arg(argv[++i], 1, 1024, "--workers");
        else if (strcmp(argv[i], "--delay-ms") == 0)
            delay_ns = (int64_t)(num_arg(argv[++i], 0, 10000, "--delay-ms") * 1e6);
        else {
            fprintf(stderr, "session_proto: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (npos < 2) {
        usage(stderr);
        return 2;
    }
    const char *mode = pos[0], *url = pos[1];
    if (strcmp(mode, "server") == 0)
        return run_server(url, workers);
    if (strcmp(mode, "lat") == 0)
        return run_lat(url, npos > 2 ? (size_t)num_arg(pos[2], 1, 1e8, "N") : 20000,
                       npos > 3 ? (size_t)num_arg(pos[3], 0, 1e8, "warm") : 1000);
    if (strcmp(mode, "tput") == 0)
        return run_tput(url, npos > 2 ? num_arg(pos[2], 0.01, 3600, "SECS") : 10.0,
                        npos > 3 ? (int)num_arg(pos[3], 1, 4096, "conc") : 64);
    if (strcmp(mode, "cancel") == 0)
        return run_cancel(url, npos > 2 ? (size_t)num_arg(pos[2], 1, 1e7, "N") : 1000, delay_ns);
    if (strcmp(mode, "check") == 0)
        return run_check(url);
    fprintf(stderr, "session_proto: unknown mode %s\n", mode);
    usage(stderr);
    return 2;
}
