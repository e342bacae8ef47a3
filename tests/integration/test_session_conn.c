/*
 * test_session_conn.c - one connection of the session protocol
 * (lib/rpc/conn.c) over real nng streams, ipc and tcp: frames of every size
 * echo back whole and in order, many queued frames go out in few writes;
 * a frame over the limit, a peer that closes between frames or in the
 * middle of one, each end the connection once with the status that says
 * why; a peer that never reads makes the sender refuse frames past its
 * queue's bound, not buffer without end. Raw nng streams stand in for
 * peers that misbehave.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include "conn.h"
#include "framing.h"
#include "stream_testutil.h"
#include "testutil.h"

#define QUEUE_MAX (8u << 20)

/* What one side of a test saw: written by the connection's callbacks. */
struct seen {
    atomic_int frames, ends, bad, after_end;
    atomic_int end_code;
    char why[128];
    bool echo; /* send every frame back */
};

static void on_frame(void *owner, struct dctx__conn *c, unsigned char *body, size_t len)
{
    struct seen *s = owner;
    if (atomic_load(&s->ends) > 0)
        atomic_fetch_add(&s->after_end, 1); /* conn.h: none after on_end */
    int i = atomic_load(&s->frames);
    /* Frame i holds len bytes of (i + k) & 0xff, its first the low byte of i. */
    for (size_t k = 0; k < len; k++)
        if (body[k] != (unsigned char)(i + k)) {
            atomic_fetch_add(&s->bad, 1);
            break;
        }
    if (s->echo && dctx__conn_send(c, body, len) != 0)
        atomic_fetch_add(&s->bad, 1);
    atomic_fetch_add(&s->frames, 1);
}

static void on_end(void *owner, struct dctx__conn *c, int code, const char *why)
{
    (void)c;
    struct seen *s = owner;
    snprintf(s->why, sizeof s->why, "%s", why);
    atomic_store(&s->end_code, code);
    atomic_fetch_add(&s->ends, 1);
}

static struct dctx__conn *open_conn(nng_stream *st, struct seen *s, uint32_t max_body)
{
    struct dctx__conn_options o = {.max_body = max_body,
                                   .send_queue_max = QUEUE_MAX,
                                   .pause_reads_when_full = s->echo,
                                   .on_frame = on_frame,
                                   .on_end = on_end,
                                   .owner = s};
    struct dctx__conn *c = NULL;
    assert_int_equal(dctx__conn_open(st, &o, &c), 0);
    dctx__conn_start(c);
    return c;
}

static bool wait_for(atomic_int *v, int want, int64_t timeout_ns)
{
    int64_t until = dctx_now() + timeout_ns;
    while (atomic_load(v) < want && dctx_now() < until)
        nng_msleep(1);
    return atomic_load(v) >= want;
}

static unsigned char *pattern(int i, size_t len)
{
    unsigned char *b = malloc(len);
    assert_non_null(b);
    for (size_t k = 0; k < len; k++)
        b[k] = (unsigned char)(i + k);
    return b;
}

static void frames_of_every_size_echo_back_whole_and_in_order(enum st_transport t)
{
    static const size_t sizes[] = {1, 2, 63, 64, 4096, 65535, 65536, 65537, 300000, 1 << 20};
    enum { N = 400, KINDS = sizeof sizes / sizeof sizes[0] };
    struct st_place p;
    st_listen(t, &p);
    nng_stream *cs = st_dial(p.url);
    static struct seen srv_seen, cli_seen;
    memset(&srv_seen, 0, sizeof srv_seen);
    memset(&cli_seen, 0, sizeof cli_seen);
    srv_seen.echo = true;
    struct dctx__conn *srv = open_conn(st_accept(&p), &srv_seen, 2u << 20);
    struct dctx__conn *cli = open_conn(cs, &cli_seen, 2u << 20);
    for (int i = 0; i < N; i++) {
        size_t len = sizes[i % KINDS];
        unsigned char *b = pattern(i, len);
        int rc;
        /* a full queue only waits here: the echo drains it */
        for (int tries = 0;
             (rc = dctx__conn_send(cli, b, len)) == DCTX_RESOURCE_EXHAUSTED && tries < 5000;
             tries++)
            nng_msleep(1);
        assert_int_equal(rc, 0);
        free(b);
    }
    bool all = wait_for(&cli_seen.frames, N, SEC(20));
    print_message("server: %d frames, %d bad; client: %d frames, %d bad\n",
                  atomic_load(&srv_seen.frames), atomic_load(&srv_seen.bad),
                  atomic_load(&cli_seen.frames), atomic_load(&cli_seen.bad));
    assert_true(all);
    assert_int_equal(atomic_load(&srv_seen.bad), 0);
    assert_int_equal(atomic_load(&cli_seen.bad), 0);
    assert_int_equal(atomic_load(&srv_seen.ends), 0);
    assert_int_equal(atomic_load(&cli_seen.ends), 0);
    struct dctx__conn_stats st;
    dctx__conn_stats_get(cli, &st);
    assert_int_equal(st.frames_written, N);
    dctx__conn_close(cli);
    dctx__conn_close(srv);
    nng_stream_listener_free(p.l);
}

static void frames_of_every_size_echo_back_whole_and_in_order_over_ipc(void **state)
{
    (void)state;
    frames_of_every_size_echo_back_whole_and_in_order(ST_IPC);
}

static void frames_of_every_size_echo_back_whole_and_in_order_over_tcp(void **state)
{
    (void)state;
    frames_of_every_size_echo_back_whole_and_in_order(ST_TCP);
}

/* Frames queued while a write is under way go out together: a thousand
 * small ones queued behind a large frame the peer is not reading yet go
 * out in far fewer writes once it reads, and it reads many in one read.
 * (A frame queued while no write is under way is written at once.) */
static void queued_frames_go_out_together(void **state)
{
    (void)state;
    enum { N = 1000, BIG = 1 << 20 };
    struct st_place p;
    st_listen(ST_IPC, &p);
    nng_stream *cs = st_dial(p.url);
    nng_stream *ss = st_accept(&p); /* not read from until the frames are queued */
    static struct seen srv_seen, cli_seen;
    memset(&srv_seen, 0, sizeof srv_seen);
    memset(&cli_seen, 0, sizeof cli_seen);
    struct dctx__conn *cli = open_conn(cs, &cli_seen, 1024);
    unsigned char *big = pattern(0, BIG);
    assert_int_equal(dctx__conn_send(cli, big, BIG), 0); /* more than the socket takes */
    free(big);
    for (int i = 1; i <= N; i++) {
        unsigned char *b = pattern(i, 32);
        assert_int_equal(dctx__conn_send(cli, b, 32), 0);
        free(b);
    }
    struct dctx__conn *srv = open_conn(ss, &srv_seen, BIG);
    assert_true(wait_for(&srv_seen.frames, N + 1, SEC(10)));
    assert_int_equal(atomic_load(&srv_seen.bad), 0);
    struct dctx__conn_stats cst, sst;
    dctx__conn_stats_get(cli, &cst);
    dctx__conn_stats_get(srv, &sst);
    print_message("%d frames behind a large one: %llu writes, %llu reads\n", N,
                  (unsigned long long)cst.writes, (unsigned long long)sst.reads);
    assert_int_equal(cst.frames_written, N + 1);
    assert_true(cst.writes < N / 4);
    assert_true(sst.reads < N / 4 + BIG / (64 * 1024) + 1);
    dctx__conn_close(cli);
    dctx__conn_close(srv);
    nng_stream_listener_free(p.l);
}

/* Three frames written by a raw peer in pieces that cut through headers
 * and bodies arrive whole. */
static void frames_cut_across_writes_arrive_whole(void **state)
{
    (void)state;
    struct st_place p;
    st_listen(ST_TCP, &p);
    nng_stream *raw = st_dial(p.url);
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    struct dctx__conn *c = open_conn(st_accept(&p), &seen, 1 << 20);
    unsigned char stream[3 * 4 + 10 + 1 + 70000];
    size_t at = 0;
    const size_t lens[] = {10, 1, 70000};
    for (int i = 0; i < 3; i++) {
        unsigned char *b = pattern(i, lens[i]);
        dctx__frame_header((uint32_t)lens[i], stream + at);
        memcpy(stream + at + 4, b, lens[i]);
        at += 4 + lens[i];
        free(b);
    }
    const size_t cuts[] = {2, 5, 9, 15, 17, 1000, 40000, sizeof stream};
    size_t from = 0;
    for (size_t k = 0; k < sizeof cuts / sizeof cuts[0]; k++) {
        st_send(raw, stream + from, cuts[k] - from);
        from = cuts[k];
        nng_msleep(2); /* each piece its own read */
    }
    assert_true(wait_for(&seen.frames, 3, SEC(5)));
    assert_int_equal(atomic_load(&seen.bad), 0);
    assert_int_equal(atomic_load(&seen.ends), 0);
    dctx__conn_close(c);
    nng_stream_close(raw);
    nng_stream_free(raw);
    nng_stream_listener_free(p.l);
}

static void ended_by_raw_bytes(const unsigned char *bytes, size_t n, bool then_close, int code,
                               const char *why)
{
    struct st_place p;
    st_listen(ST_IPC, &p);
    nng_stream *raw = st_dial(p.url);
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    struct dctx__conn *c = open_conn(st_accept(&p), &seen, 1000);
    if (n > 0)
        st_send(raw, bytes, n);
    if (then_close)
        nng_stream_close(raw);
    assert_true(wait_for(&seen.ends, 1, SEC(5)));
    assert_int_equal(atomic_load(&seen.end_code), code);
    assert_non_null(strstr(seen.why, why));
    assert_int_equal(dctx__conn_send(c, "x", 1), DCTX_UNAVAILABLE);
    nng_msleep(20);
    assert_int_equal(atomic_load(&seen.ends), 1); /* once */
    dctx__conn_close(c);
    nng_stream_close(raw);
    nng_stream_free(raw);
    nng_stream_listener_free(p.l);
}

static void frame_over_the_limit_ends_the_connection_resource_exhausted(void **state)
{
    (void)state;
    const unsigned char over[] = {0, 0, 0x03, 0xe9, 'x'}; /* 1001 > 1000 */
    ended_by_raw_bytes(over, sizeof over, false, DCTX_RESOURCE_EXHAUSTED, "limit");
}

static void frame_of_length_zero_ends_the_connection_invalid_argument(void **state)
{
    (void)state;
    const unsigned char zero[] = {0, 0, 0, 0};
    ended_by_raw_bytes(zero, sizeof zero, false, DCTX_INVALID_ARGUMENT, "length 0");
}

static void peer_closing_between_frames_ends_it_unavailable(void **state)
{
    (void)state;
    const unsigned char one[] = {0, 0, 0, 1, 0};
    ended_by_raw_bytes(one, sizeof one, true, DCTX_UNAVAILABLE, "closed by the peer");
}

static void peer_closing_mid_frame_ends_it_unavailable_and_says_so(void **state)
{
    (void)state;
    const unsigned char half[] = {0, 0, 0, 100, 1, 2, 3};
    ended_by_raw_bytes(half, sizeof half, true, DCTX_UNAVAILABLE, "mid-frame");
}

/* A peer that never reads: the sender queues up to its bound, then refuses
 * with RESOURCE_EXHAUSTED; what it holds never passes the bound. */
static void peer_that_never_reads_meets_the_send_queue_bound(void **state)
{
    (void)state;
    enum { FRAME = 64 * 1024, MAX_SENDS = 4096 }; /* 256 MiB: far past any socket buffer */
    struct st_place p;
    st_listen(ST_TCP, &p);
    nng_stream *cs = st_dial(p.url);
    nng_stream *raw = st_accept(&p); /* never read */
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    struct dctx__conn *c = open_conn(cs, &seen, 1024);
    unsigned char *b = pattern(0, FRAME);
    int rc = 0, sent = 0;
    for (; sent < MAX_SENDS; sent++) {
        rc = dctx__conn_send(c, b, FRAME);
        if (rc != 0)
            break;
        if (sent % 64 == 0)
            nng_msleep(1); /* let the kernel's buffers fill */
    }
    assert_int_equal(rc, DCTX_RESOURCE_EXHAUSTED);
    struct dctx__conn_stats st;
    dctx__conn_stats_get(c, &st);
    print_message("refused after %d frames of 64 KiB; queued at most %llu bytes\n", sent,
                  (unsigned long long)st.bytes_queued_max);
    assert_true(st.bytes_queued_max > QUEUE_MAX - 2 * (FRAME + 4)); /* it met the bound */
    free(b);
    dctx__conn_close(c);
    nng_stream_close(raw);
    nng_stream_free(raw);
    nng_stream_listener_free(p.l);
}

/* A server (reads paused when full) whose client sends and never reads:
 * it echoes until its queue is near the bound, then stops reading, so the
 * client's writes stall; no echo is refused, and the queue stays under
 * the bound. */
static void server_stops_reading_a_client_that_does_not_read_its_replies(void **state)
{
    (void)state;
    enum { FRAME = 32 * 1024, MAX_FRAMES = 8192 }; /* 256 MiB: far past the bound */
    struct st_place p;
    st_listen(ST_TCP, &p);
    nng_stream *raw = st_dial(p.url);
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    seen.echo = true;
    struct dctx__conn *srv = open_conn(st_accept(&p), &seen, 1 << 20);
    nng_aio *aio;
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    unsigned char *frame = malloc(4 + FRAME);
    assert_non_null(frame);
    int written = 0;
    for (; written < MAX_FRAMES; written++) {
        unsigned char *b = pattern(written, FRAME);
        dctx__frame_header(FRAME, frame);
        memcpy(frame + 4, b, FRAME);
        free(b);
        size_t left = 4 + FRAME, off = 0;
        while (left > 0) {
            nng_iov iov = {.iov_buf = frame + off, .iov_len = left};
            nng_aio_set_iov(aio, 1, &iov);
            nng_aio_set_timeout(aio, 300);
            nng_stream_send(raw, aio);
            nng_aio_wait(aio);
            if (nng_aio_result(aio) != 0)
                break;
            off += nng_aio_count(aio);
            left -= nng_aio_count(aio);
        }
        if (left > 0)
            break; /* stalled: the server stopped reading */
    }
    struct dctx__conn_stats st;
    dctx__conn_stats_get(srv, &st);
    print_message("client stalled after %d frames of 32 KiB; server read %d, queued at most "
                  "%llu bytes\n",
                  written, atomic_load(&seen.frames), (unsigned long long)st.bytes_queued_max);
    assert_true(written < MAX_FRAMES);
    assert_int_equal(atomic_load(&seen.bad), 0); /* no echo refused, none out of order */
    assert_true(st.pauses >= 1);                 /* it stalled because the server paused */
    assert_int_equal(atomic_load(&seen.ends), 0);
    nng_aio_free(aio);
    free(frame);
    dctx__conn_close(srv);
    nng_stream_close(raw);
    nng_stream_free(raw);
    nng_stream_listener_free(p.l);
}

static void too_small_a_send_queue_is_refused(void **state)
{
    (void)state;
    struct st_place p;
    st_listen(ST_IPC, &p);
    nng_stream *cs = st_dial(p.url);
    struct dctx__conn_options o = {.max_body = 1 << 20,
                                   .send_queue_max = DCTX__CONN_QUEUE_MIN(1 << 20) - 1};
    struct dctx__conn *c = (struct dctx__conn *)&o;
    assert_int_equal(dctx__conn_open(cs, &o, &c), DCTX_INVALID_ARGUMENT);
    assert_null(c);
    nng_stream *ss = st_accept(&p);
    nng_stream_close(ss);
    nng_stream_free(ss);
    nng_stream_listener_free(p.l);
}

/* A reader that starts late: the frames echoed meanwhile were held back by
 * the paused server, not lost; once it reads, every one arrives in order. */
struct late_reader {
    nng_stream *s;
    int want; /* frames to read; 0: 1500 */
    int frames, bad;
};

static void *read_late(void *arg)
{
    struct late_reader *r = arg;
    nng_msleep(1500);
    struct dctx__frame_reader fr;
    dctx__frame_reader_init(&fr, 1 << 20);
    nng_aio *aio;
    if (nng_aio_alloc(&aio, NULL, NULL) != 0)
        return NULL;
    unsigned char *buf = malloc(65536);
    int64_t until = dctx_now() + SEC(20);
    int want = r->want != 0 ? r->want : 1500;
    while (r->frames < want && buf != NULL && dctx_now() < until) {
        nng_iov iov = {.iov_buf = buf, .iov_len = 65536};
        nng_aio_set_iov(aio, 1, &iov);
        nng_aio_set_timeout(aio, 5000);
        nng_stream_recv(r->s, aio);
        nng_aio_wait(aio);
        if (nng_aio_result(aio) != 0)
            break;
        const unsigned char *p = buf, *body;
        size_t left = nng_aio_count(aio), len;
        while (dctx__frame_reader_next(&fr, &p, &left, &body, &len) == DCTX__FRAME_READY) {
            for (size_t k = 0; k < len; k++)
                if (body[k] != (unsigned char)(r->frames + k)) {
                    r->bad++;
                    break;
                }
            r->frames++;
        }
    }
    free(buf);
    nng_aio_free(aio);
    dctx__frame_reader_fini(&fr);
    return NULL;
}

static void paused_server_resumes_once_its_client_reads(void **state)
{
    (void)state;
    enum { N = 1500, FRAME = 16 * 1024 };
    struct st_place p;
    st_listen(ST_TCP, &p);
    nng_stream *raw = st_dial(p.url);
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    seen.echo = true;
    struct dctx__conn *srv = open_conn(st_accept(&p), &seen, 1 << 20);
    struct late_reader r = {.s = raw};
    pthread_t t = start_thread(read_late, &r);
    unsigned char *f = malloc(4 + FRAME);
    assert_non_null(f);
    for (int i = 0; i < N; i++) {
        unsigned char *b = pattern(i, FRAME);
        dctx__frame_header(FRAME, f);
        memcpy(f + 4, b, FRAME);
        free(b);
        st_send(raw, f, 4 + FRAME); /* stalls while the server is paused */
    }
    join_thread(t);
    struct dctx__conn_stats st;
    dctx__conn_stats_get(srv, &st);
    print_message("%d frames echoed; the server paused %llu times\n", r.frames,
                  (unsigned long long)st.pauses);
    assert_int_equal(r.frames, N);
    assert_int_equal(r.bad, 0);
    assert_int_equal(atomic_load(&seen.bad), 0);
    assert_true(st.pauses >= 1);
    free(f);
    dctx__conn_close(srv);
    st_close(raw);
    nng_stream_listener_free(p.l);
}

/* A peer that sends 3000 frames, then resets without reading its echoes:
 * a write fails on the server while frames are still being handed out.
 * on_end comes once, from the receive side, and no frame comes after it. */
static void failed_write_ends_once_and_no_frame_follows(void **state)
{
    (void)state;
    enum { N = 3000, L = 16 };
    struct st_place p;
    st_listen(ST_TCP, &p);
    nng_stream *raw = st_dial(p.url);
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    seen.echo = true;
    struct dctx__conn *srv = open_conn(st_accept(&p), &seen, 1 << 20);
    unsigned char *buf = malloc(N * (4 + L)), *q = buf;
    assert_non_null(buf);
    for (int i = 0; i < N; i++, q += 4 + L) {
        dctx__frame_header(L, q);
        for (int k = 0; k < L; k++)
            q[4 + k] = (unsigned char)(i + k);
    }
    st_send(raw, buf, N * (4 + L));
    nng_msleep(100);
    nng_stream_close(raw); /* echoes unread: the kernel resets */
    assert_true(wait_for(&seen.ends, 1, SEC(10)));
    nng_msleep(100);
    assert_int_equal(atomic_load(&seen.ends), 1);
    assert_int_equal(atomic_load(&seen.after_end), 0);
    assert_int_equal(atomic_load(&seen.end_code), DCTX_UNAVAILABLE);
    assert_int_equal(dctx__conn_send(srv, "x", 1), DCTX_UNAVAILABLE);
    dctx__conn_close(srv);
    nng_stream_free(raw);
    nng_stream_listener_free(p.l);
    free(buf);
}

static void pack_copy(const void *arg, unsigned char *out)
{
    memset(out, *(const unsigned char *)arg, 1000);
}

/* With the queue full of data for a peer that never reads, a control frame
 * still goes in (the reserve), and data is still refused. */
static void control_frames_pass_a_queue_full_of_data(void **state)
{
    (void)state;
    enum { FRAME = 64 * 1024, MAX_SENDS = 4096 };
    struct st_place p;
    st_listen(ST_TCP, &p);
    nng_stream *cs = st_dial(p.url);
    nng_stream *raw = st_accept(&p); /* never read */
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    struct dctx__conn *c = open_conn(cs, &seen, 1024);
    unsigned char *b = pattern(0, FRAME);
    int rc = 0;
    for (int i = 0; i < MAX_SENDS && rc == 0; i++) {
        rc = dctx__conn_send(c, b, FRAME);
        if (i % 64 == 0)
            nng_msleep(1);
    }
    assert_int_equal(rc, DCTX_RESOURCE_EXHAUSTED);
    /* The kernel's buffers may take more for a while (TCP grows its
     * window): fill with small data frames again after each pause until a
     * pause frees no room, so the queue is full and stays so. */
    unsigned char fill = 7;
    for (int round = 0, added = 1; round < 100 && added > 0; round++) {
        nng_msleep(20);
        added = 0;
        while (added < 100000 && dctx__conn_send_packed(c, 1000, pack_copy, &fill, 0) == 0)
            added++;
    }
    assert_int_equal(dctx__conn_send_packed(c, 1000, pack_copy, &fill, 0), DCTX_RESOURCE_EXHAUSTED);
    assert_int_equal(dctx__conn_send_packed(c, 1000, pack_copy, &fill, DCTX__CONN_CONTROL), 0);
    int taken = 1;
    while (dctx__conn_send_packed(c, 1000, pack_copy, &fill, DCTX__CONN_CONTROL) == 0 &&
           taken < 1000)
        taken++;
    assert_true(taken < 1000); /* the reserve is bounded too */
    assert_true((size_t)taken * 1004 <= DCTX__CONN_CONTROL_RESERVE + 1004);
    free(b);
    dctx__conn_close(c);
    st_close(raw);
    nng_stream_listener_free(p.l);
}

/* Frames queued behind a slow reader all reach it when the sender closes
 * after a flush, the last one included; then the stream ends. */
static void close_after_flush_delivers_every_queued_frame(void **state)
{
    (void)state;
    enum { N = 300, FRAME = 16 * 1024 };
    struct st_place p;
    st_listen(ST_TCP, &p);
    nng_stream *cs = st_dial(p.url);
    nng_stream *raw = st_accept(&p);
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    struct dctx__conn *c = open_conn(cs, &seen, 1024);
    for (int i = 0; i < N; i++) {
        unsigned char *b = pattern(i, FRAME);
        assert_int_equal(dctx__conn_send(c, b, FRAME), 0);
        free(b);
    }
    struct late_reader r = {.s = raw, .want = N};
    pthread_t t = start_thread(read_late, &r);
    assert_true(dctx__conn_close_after_flush(c, SEC(20)));
    join_thread(t);
    assert_int_equal(r.frames, N);
    assert_int_equal(r.bad, 0);
    st_close(raw);
    nng_stream_listener_free(p.l);
}

int main(void)
{
    st_init("session-conn");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(frames_of_every_size_echo_back_whole_and_in_order_over_ipc),
        cmocka_unit_test(frames_of_every_size_echo_back_whole_and_in_order_over_tcp),
        cmocka_unit_test(queued_frames_go_out_together),
        cmocka_unit_test(frames_cut_across_writes_arrive_whole),
        cmocka_unit_test(frame_over_the_limit_ends_the_connection_resource_exhausted),
        cmocka_unit_test(frame_of_length_zero_ends_the_connection_invalid_argument),
        cmocka_unit_test(peer_closing_between_frames_ends_it_unavailable),
        cmocka_unit_test(peer_closing_mid_frame_ends_it_unavailable_and_says_so),
        cmocka_unit_test(peer_that_never_reads_meets_the_send_queue_bound),
        cmocka_unit_test(server_stops_reading_a_client_that_does_not_read_its_replies),
        cmocka_unit_test(too_small_a_send_queue_is_refused),
        cmocka_unit_test(paused_server_resumes_once_its_client_reads),
        cmocka_unit_test(failed_write_ends_once_and_no_frame_follows),
        cmocka_unit_test(control_frames_pass_a_queue_full_of_data),
        cmocka_unit_test(close_after_flush_delivers_every_queued_frame),
    };
    int rc = cmocka_run_group_tests_name("session_conn", tests, NULL, NULL);
    st_fini();
    return rc;
}
