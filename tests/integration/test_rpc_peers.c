/*
 * test_rpc_peers.c - peers that vanish or misbehave: a caller that goes
 * away (its handler is canceled), a server killed mid-call (the call fails
 * at once) or killed and back on the same address (the call still ran at
 * most once), a replayed Call frame, a call id reused while in flight,
 * malformed frames of every kind (per-call errors answered, protocol
 * errors ending their connection), and peers that flood calls or garbage
 * without ever reading. Servers to kill run in
 * re-executed children of this program (rt_child_server).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <stdlib.h>

#include <nng/nng.h>

#include "framing.h"
#include "rpc_testutil.h"

static void lost_caller_cancels_the_handler_and_is_counted(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_TCP, NULL, "/it.Loss/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, NULL, "/it.Loss/Wait", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));

    rt_channel_close(ch); /* ends the call and waits for its callback */
    assert_int_equal(atomic_load(&o.callbacks), 1);
    assert_int_equal(o.code, DCTX_UNAVAILABLE);
    assert_true(dctx_rpc_handle_wait(h, 0));
    rt_handle_release(h);

    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_contains(p.cause_msg, "caller lost");
    assert_true(WAIT_FOR(rt_server_stats(srv).calls_canceled_by_peer_loss == 1, SEC(5)));
    dctx_rpc_server_stats st = rt_server_stats(srv);
    assert_int_equal(st.peers_lost, 1);
    assert_int_equal(st.calls_canceled_by_peer_loss, 1);
    assert_true(WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));
}

/* A server that stops answering without closing (a cut link, a stopped
 * process: here a raw server that no longer reads) is found by the
 * channel's keepalive: the call in flight, with no deadline, fails
 * UNAVAILABLE saying the peer stopped answering, after at least one
 * interval and long before any deadline would; the channel dials again. */
static void server_that_stops_answering_is_found_by_keepalive(void **state)
{
    (void)state;
    char url[256];
    rt_url(RT_IPC, url, sizeof url);
    nng_stream_listener *l = rt_raw_listen(url);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.keepalive_ns = MS(100);
    co.keepalive_timeout_ns = MS(100);
    dctx_rpc_channel *ch = rt_channel_open(url, &co);
    rt_raw *srv = rt_raw_accept(l); /* hellos exchanged; it reads nothing more */

    static rt_outcome o;
    int64_t t0 = dctx_now();
    dctx_rpc_handle *h = rt_start(ch, NULL, "/it.Silent/Call", NULL, 0, &o);
    rt_finish(h, SEC(10));
    int64_t took = dctx_now() - t0;
    assert_int_equal(o.code, DCTX_UNAVAILABLE);
    assert_contains(o.message, "stopped answering");
    assert_true(took >= MS(100));
    rt_handle_release(h);
    rt_raw *again = rt_raw_accept(l); /* it dialed again */
    rt_channel_close(ch);
    rt_raw_close(srv);
    rt_raw_close(again);
    nng_stream_listener_free(l);
}

/* The server watches its callers the same way: a caller that goes silent
 * with a call in flight (it neither reads nor closes) is lost; its call's
 * context is canceled and the connection closed. So is a peer that
 * connects and never says hello. */
static void caller_that_stops_answering_is_found_by_keepalive(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    dctx_rpc_server_options so = rt_server_options(2);
    so.keepalive_ns = MS(100);
    so.keepalive_timeout_ns = MS(100);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_TCP, &so, "/it.Silent/Wait", rt_probe_handler, &p, url);
    rt_raw *mute = rt_raw_dial(url); /* connects and never says hello */
    rt_raw *r = rt_raw_open(url);
    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t len;
    uint8_t *buf = rt_pack_call(1, "/it.Silent/Wait", token, 0, NULL, 0, &len);
    rt_raw_send(r, buf, len); /* then it reads nothing: pings go unanswered */
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_contains(p.cause_msg, "caller lost");
    assert_true(WAIT_FOR(rt_server_stats(srv).peers_lost == 2, SEC(5)));
    /* counted once call_cancel returned, which may be after the handler woke */
    assert_true(WAIT_FOR(rt_server_stats(srv).calls_canceled_by_peer_loss == 1, SEC(5)));
    assert_true(rt_raw_closed(mute));
    rt_raw_close(mute);
    rt_raw_close(r);
}

/* A peer that sends part of a frame and trickles the rest (a byte every
 * 20 ms, far under the 256 bytes/s a frame in progress must keep) cannot
 * answer a ping, and is dropped as a silent one is; a peer that sends a
 * large call slowly but steadily (64 bytes every 10 ms, over several
 * keepalive looks) is not: its call is answered. */
static void peer_trickling_a_frame_is_dropped_a_slow_steady_one_is_not(void **state)
{
    (void)state;
    dctx_rpc_server_options so = rt_server_options(1);
    so.keepalive_ns = MS(100);
    so.keepalive_timeout_ns = MS(100);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_TCP, &so, "/it.Echo/Echo", rt_echo_handler, NULL, url);

    rt_raw *steady = rt_raw_open(url);
    enum { PAYLOAD = 3000, CHUNK = 64 };
    static uint8_t payload[PAYLOAD];
    memset(payload, 'p', sizeof payload);
    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t len;
    uint8_t *body = rt_pack_call(1, "/it.Echo/Echo", token, 0, payload, sizeof payload, &len);
    uint8_t header[DCTX__FRAME_HEADER_BYTES];
    dctx__frame_header((uint32_t)len, header);
    assert_int_equal(rt_raw_write(steady, header, sizeof header, 1000), 0);
    for (size_t at = 0; at < len; at += CHUNK) {
        assert_int_equal(rt_raw_write(steady, body + at, len - at < CHUNK ? len - at : CHUNK, 1000),
                         0);
        rt_sleep(MS(10));
    }
    free(body);
    uint32_t id = 0;
    assert_int_equal(rt_raw_recv_reply(steady, &id, NULL, 0), DCTX_OK);
    assert_int_equal(id, 1);
    assert_int_equal(rt_server_stats(srv).peers_lost, 0);

    rt_raw *trickler = rt_raw_open(url);
    uint8_t announce[DCTX__FRAME_HEADER_BYTES]; /* a 1024-byte frame, sent a byte at a time */
    dctx__frame_header(1024, announce);
    assert_int_equal(rt_raw_write(trickler, announce, sizeof announce, 1000), 0);
    int writes = 0;
    uint8_t byte = 0x0a;
    while (writes < 250 && rt_raw_write(trickler, &byte, 1, 1000) == 0) { /* 5 s at most */
        writes++;
        rt_sleep(MS(20));
    }
    assert_in_range(writes, 1, 249); /* the server closed it: a write failed */
    /* counted lost (the steady one, reading nothing since, may be too) */
    assert_true(WAIT_FOR(rt_server_stats(srv).peers_lost >= 1, SEC(5)));
    rt_raw_close(trickler);
    rt_raw_close(steady);
}

/* A cancel is honoured only from the connection its call came on: a peer
 * that learned a call's token (it crosses tcp in the clear) and sends a
 * Cancel naming it from another connection is answered as for an unknown
 * token and stops nothing; the caller's own cancel then stops it. */
static void cancel_from_another_connection_stops_nothing(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_TCP, NULL, "/it.Wait/Wait", rt_probe_handler, &p, url);
    rt_raw *caller = rt_raw_open(url), *thief = rt_raw_open(url);
    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t len;
    uint8_t *buf = rt_pack_call(1, "/it.Wait/Wait", token, 0, NULL, 0, &len);
    rt_raw_send(caller, buf, len);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));
    for (uint32_t id = 1; id <= 2; id++) { /* its own call id 1, or any other */
        buf = rt_pack_cancel(id, token, DCTX_CANCELED, "stolen", 0, &len);
        rt_raw_send(thief, buf, len);
    }
    uint32_t acked = 0;
    assert_int_equal(rt_raw_recv_cancel_ack(thief, &acked), DCTX_RPC_CANCEL_PREVENTED);
    assert_int_equal(rt_raw_recv_cancel_ack(thief, &acked), DCTX_RPC_CANCEL_PREVENTED);
    rt_sleep(MS(100));
    assert_int_equal(atomic_load(&p.finished), 0); /* still running */
    buf = rt_pack_cancel(1, token, DCTX_CANCELED, "mine", 0, &len);
    rt_raw_send(caller, buf, len);
    int outcome = -1, replied = -1; /* its CancelAck and its Reply, in either order */
    for (int i = 0; i < 2; i++) {
        Dctx__Wire__Frame *got = rt_raw_recv_frame(caller);
        assert_non_null(got);
        assert_int_equal(got->call_id, 1);
        if (got->body_case == DCTX__WIRE__FRAME__BODY_CANCEL_ACK)
            outcome = (int)got->cancel_ack->outcome;
        else if (got->body_case == DCTX__WIRE__FRAME__BODY_REPLY)
            replied = (int)got->reply->code;
        dctx__wire__frame__free_unpacked(got, NULL);
    }
    assert_int_equal(outcome, DCTX_RPC_CANCEL_STOPPED);
    assert_int_equal(replied, DCTX_CANCELED); /* the caller gets its call's end */
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_contains(p.cause_msg, "mine");
    assert_int_equal(rt_server_stats(srv).cancel_outcomes[DCTX_RPC_CANCEL_STOPPED], 1);
    rt_raw_close(thief);
    rt_raw_close(caller);
}

/* A caller that pings more often than the server's minimum interval is
 * told so and closed: the third strike gets GoAway RESOURCE_EXHAUSTED "too
 * many pings", counted as a bad frame. Pings at the pace allowed are
 * answered. */
static void caller_pinging_too_often_is_closed(void **state)
{
    (void)state;
    dctx_rpc_server_options so = rt_server_options(1);
    so.keepalive_min_interval_ns = SEC(1);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_IPC, &so, "/it.Echo/Echo", rt_echo_handler, NULL, url);
    rt_raw *r = rt_raw_open(url);
    int pongs = 0, goaway = -1;
    int64_t min_ms = -1;
    char why[DCTX_WIRE_MESSAGE_BYTES_MAX + 1] = "";
    for (int i = 0; i < 5; i++) {
        size_t len;
        uint8_t *buf = rt_pack_ping((uint64_t)i, &len);
        if (rt_raw_write_frame(r, buf, len) != 0)
            break; /* closed already */
    }
    for (int i = 0; i < 10 && goaway < 0; i++) {
        Dctx__Wire__Frame *got = rt_raw_recv_frame(r);
        if (got == NULL)
            break;
        if (got->body_case == DCTX__WIRE__FRAME__BODY_PONG)
            pongs++;
        if (got->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY) {
            goaway = (int)got->goaway->code;
            min_ms = got->goaway->has_min_ping_interval_ms
                         ? (int64_t)got->goaway->min_ping_interval_ms
                         : -1;
            snprintf(why, sizeof why, "%s", got->goaway->message ? got->goaway->message : "");
        }
        dctx__wire__frame__free_unpacked(got, NULL);
    }
    assert_int_equal(goaway, DCTX_RESOURCE_EXHAUSTED);
    assert_contains(why, "too many pings");
    assert_int_equal(min_ms, 1000); /* how often it may: the channel's cue to slow down */
    assert_int_equal(pongs, 3);     /* the first, and two strikes */
    assert_true(rt_raw_closed(r));
    assert_true(WAIT_FOR(rt_server_stats(srv).bad_frames == 1, SEC(5)));
    rt_raw_close(r);
}

/* Strikes count in a row: a caller whose pings now and then come too soon
 * (a timer's jitter), each pair followed by one at the pace allowed, is
 * never closed, though it earns more than three strikes in all. */
static void caller_pinging_too_soon_now_and_then_is_not_closed(void **state)
{
    (void)state;
    dctx_rpc_server_options so = rt_server_options(1);
    so.keepalive_min_interval_ns = MS(200);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_IPC, &so, "/it.Echo/Echo", rt_echo_handler, NULL, url);
    rt_raw *r = rt_raw_open(url);
    enum { ROUNDS = 4 };
    int pongs = 0;
    for (int round = 0; round < ROUNDS; round++) {
        if (round > 0)
            rt_sleep(MS(250));        /* the first ping of a round comes at the pace allowed */
        for (int i = 0; i < 2; i++) { /* the second too soon: a strike */
            size_t len;
            uint8_t *buf = rt_pack_ping((uint64_t)(round * 2 + i), &len);
            assert_int_equal(rt_raw_write_frame(r, buf, len), 0);
        }
        for (int i = 0; i < 2; i++) {
            Dctx__Wire__Frame *got = rt_raw_recv_frame(r);
            assert_non_null(got);
            if (got->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY)
                fail_msg("round %d: GoAway \"%s\"", round, got->goaway->message);
            pongs += got->body_case == DCTX__WIRE__FRAME__BODY_PONG;
            dctx__wire__frame__free_unpacked(got, NULL);
        }
    }
    assert_int_equal(pongs, 2 * ROUNDS);
    assert_int_equal(rt_server_stats(srv).bad_frames, 0);
    rt_raw_close(r);
}

/* A GoAway is read before the close behind it, also by a peer that goes
 * on sending: closing with its bytes unread would make the peer's kernel
 * reset the connection, and nng 1.5.2 then fails the peer's read without
 * the GoAway that came first. So after a protocol error the server reads
 * and drops what comes until the peer closes (or LINGER_NS, 500 ms, passes:
 * caller_pinging_too_often_is_closed). Here a thread pings without pause
 * (the third ping under the server's minimum interval gets the GoAway)
 * while the test reads; the pings still go in 100 ms after the GoAway. */
struct pinger {
    rt_raw *r;
    atomic_bool stop;
    atomic_long sent;
    atomic_int failed; /* nng's error of the write that failed; 0: none */
};

static void *ping_without_pause(void *arg)
{
    struct pinger *p = arg;
    while (!atomic_load(&p->stop)) {
        size_t len;
        uint8_t *ping = rt_pack_ping(0, &len);
        int rv = rt_raw_write_frame(p->r, ping, len); /* frees ping */
        if (rv != 0) {
            atomic_store(&p->failed, rv);
            break;
        }
        atomic_fetch_add(&p->sent, 1);
    }
    return NULL;
}

static void goaway_reaches_a_peer_that_goes_on_sending(void **state)
{
    (void)state;
    const int transports[] = {RT_IPC, RT_TCP};
    for (size_t t = 0; t < sizeof transports / sizeof transports[0]; t++) {
        char url[256];
        dctx_rpc_server *srv =
            rt_serve(transports[t], NULL, "/it.Echo/Echo", rt_echo_handler, NULL, url);
        int rounds = 10;
        for (int i = 0; i < rounds; i++) {
            static struct pinger p;
            memset(&p, 0, sizeof p);
            p.r = rt_raw_open(url);
            pthread_t th;
            assert_int_equal(pthread_create(&th, NULL, ping_without_pause, &p), 0);
            int code = -1;
            for (int k = 0; k < 10 && code < 0; k++) {
                Dctx__Wire__Frame *got = rt_raw_recv_frame(p.r);
                if (got == NULL)
                    break;
                if (got->body_case == DCTX__WIRE__FRAME__BODY_GOAWAY)
                    code = (int)got->goaway->code;
                dctx__wire__frame__free_unpacked(got, NULL);
            }
            long before = atomic_load(&p.sent);
            rt_sleep(MS(100));
            long after = atomic_load(&p.sent);
            atomic_store(&p.stop, true);
            pthread_join(th, NULL);
            rt_raw_close(p.r); /* the server closes once this side has */
            assert_int_equal(code, DCTX_RESOURCE_EXHAUSTED);
            assert_int_equal(atomic_load(&p.failed), 0);
            assert_true(after > before); /* read and dropped: never a full buffer */
        }
        assert_true(WAIT_FOR(rt_server_stats(srv).bad_frames == (uint64_t)rounds, SEC(5)));
        rt_server_close(srv);
    }
}

/* A channel whose keepalive is below the server's minimum is told "too
 * many pings" and doubles its interval for its next connection, until the
 * server is content: the GoAways stop, and calls go through. */
static void channel_told_too_many_pings_slows_down(void **state)
{
    (void)state;
    dctx_rpc_server_options so = rt_server_options(1);
    so.keepalive_min_interval_ns = MS(200);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_IPC, &so, "/it.Echo/Echo", rt_echo_handler, NULL, url);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    /* A ping every interval + timeout: 70, 90, 130 ms apart, too often;
     * then 210 ms, fine. */
    co.keepalive_ns = MS(20);
    co.keepalive_timeout_ns = MS(50);
    dctx_rpc_channel *ch = rt_channel_open(url, &co);
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Echo/Echo", "x", 1, NULL), DCTX_OK);
    assert_true(WAIT_FOR(rt_server_stats(srv).bad_frames >= 3, SEC(10)));
    uint64_t told = rt_server_stats(srv).bad_frames;
    rt_sleep(MS(1500)); /* some seven pings, each far enough apart */
    assert_int_equal(rt_server_stats(srv).bad_frames, told);
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Echo/Echo", "x", 1, NULL), DCTX_OK);
}

/* A server that drains tells its callers so: a call in flight still gets
 * its reply, and a new call fails at once UNAVAILABLE "draining" without
 * reaching the server (a raw server here, so only the channel decides). */
static void drained_channel_fails_new_calls_at_once_and_finishes_the_rest(void **state)
{
    (void)state;
    char url[256];
    rt_url(RT_IPC, url, sizeof url);
    nng_stream_listener *l = rt_raw_listen(url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    rt_raw *srv = rt_raw_accept(l);
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, NULL, "/it.Drain/Call", "x", 1, &o);
    Dctx__Wire__Frame *f = rt_raw_recv_frame(srv);
    assert_non_null(f);
    uint32_t id = f->call_id;
    dctx__wire__frame__free_unpacked(f, NULL);

    /* The Drain, then the reply: read in that order, so the call ending
     * means the channel knows it drains. */
    Dctx__Wire__Drain d = DCTX__WIRE__DRAIN__INIT;
    d.has_grace_ms = 1;
    d.grace_ms = 5000;
    Dctx__Wire__Frame drain = DCTX__WIRE__FRAME__INIT;
    drain.body_case = DCTX__WIRE__FRAME__BODY_DRAIN;
    drain.drain = &d;
    size_t len;
    uint8_t *buf = rt_pack(&drain, &len);
    rt_raw_send(srv, buf, len);
    buf = rt_pack_reply(id, DCTX_OK, &len);
    rt_raw_send(srv, buf, len);
    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_OK); /* in flight: it finished */
    rt_handle_release(h);

    dctx_rpc_result res;
    int64_t t0 = dctx_now();
    /* a deadline, so that a channel that sent it anyway fails here, not hangs */
    dctx *ctx = rt_with_timeout(SEC(2));
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Drain/Call", "y", 1, &res), DCTX_UNAVAILABLE);
    assert_ns_in(dctx_now() - t0, 0, SEC(1)); /* at once, no connection wait */
    assert_contains(res.message, "is draining");
    dctx_rpc_result_free(&res);
    assert_null(rt_raw_recv_frame(srv)); /* it never went out */
    rt_channel_close(ch);
    rt_raw_close(srv);
    nng_stream_listener_free(l);
}

static void server_killed_mid_call_fails_the_call_unavailable_at_once(void **state)
{
    (void)state;
    char url[256], shared[256];
    rt_child_shared *sh = NULL;
    pid_t pid = rt_child_server(url, shared, &sh);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    dctx *ctx = rt_with_timeout(SEC(10));
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/rt.Child/Block", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&sh->block_runs) == 1, SEC(10)));
    int64_t t_kill = dctx_now();
    rt_child_kill(pid);

    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_UNAVAILABLE);
    assert_ns_in(o.ended_ns - t_kill, 0, SEC(2)); /* well before the 10 s deadline */
    rt_handle_release(h);
    rt_ctx_release(ctx);
    munmap(sh, sizeof *sh);
}

static void call_runs_at_most_once_when_its_connection_drops_and_returns(void **state)
{
    (void)state;
    char url[256], shared[256];
    rt_child_shared *sh = NULL;
    pid_t pid = rt_child_server(url, shared, &sh);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    dctx *ctx = rt_with_timeout(SEC(10));
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/rt.Child/Block", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&sh->block_runs) == 1, SEC(10)));
    rt_child_kill(pid);

    /* the server comes back on the same address, the channel redials */
    bool up = false;
    for (int tries = 0; tries < 50 && !up; tries++)
        if (!(up = rt_child_start(url, shared, sh, &pid)))
            rt_sleep(MS(100));
    assert_true(up);
    int rc = DCTX_UNAVAILABLE;
    int64_t until = dctx_now() + SEC(10);
    while (rc != DCTX_OK && dctx_now() < until) {
        dctx *ping = rt_with_timeout(SEC(1));
        rc = dctx_rpc_call_raw(ch, ping, "/rt.Child/Ping", NULL, 0, NULL);
        rt_ctx_release(ping);
    }
    assert_int_equal(rc, DCTX_OK); /* the connection is back */

    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_UNAVAILABLE);
    rt_sleep(MS(200)); /* room for a resend to land, were there one */
    assert_int_equal(atomic_load(&sh->block_runs), 1);
    rt_handle_release(h);
    rt_ctx_release(ctx);
    rt_child_kill(pid);
    munmap(sh, sizeof *sh);
}

/* A call's token is its identity: the same Call bytes again after its
 * reply (on its connection or another), or a Call whose token is still
 * running on another connection, is refused ALREADY_EXISTS and never runs;
 * the handler runs once. */
static void replayed_call_is_refused_and_runs_once(void **state)
{
    (void)state;
    static rt_probe p, hold;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    rt_probe_init(&hold, RT_PROBE_HOLD, SEC(10));
    struct rt_method m[] = {{"/it.Raw/Probe", rt_probe_handler, &p, NULL},
                            {"/it.Raw/Hold", rt_probe_handler, &hold, NULL}};
    char url[256];
    rt_server_open(RT_TCP, NULL, m, 2, url, sizeof url);
    rt_raw *r = rt_raw_open(url);
    rt_raw *other = rt_raw_open(url);
    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t len;
    uint32_t id = 0;
    uint8_t *buf = rt_pack_call(1, "/it.Raw/Probe", token, 0, NULL, 0, &len);
    uint8_t *again = malloc(len), *again2 = malloc(len);
    assert_non_null(again);
    assert_non_null(again2);
    memcpy(again, buf, len);
    memcpy(again2, buf, len);
    rt_raw_send(r, buf, len);
    assert_int_equal(rt_raw_recv_reply(r, &id, NULL, 0), DCTX_OK);
    assert_int_equal(id, 1);
    rt_raw_send(r, again, len); /* the same bytes again: a replay, id 1 free again */
    assert_int_equal(rt_raw_recv_reply(r, &id, NULL, 0), DCTX_ALREADY_EXISTS);
    assert_int_equal(id, 1);
    rt_raw_send(other, again2, len); /* and on another connection */
    assert_int_equal(rt_raw_recv_reply(other, &id, NULL, 0), DCTX_ALREADY_EXISTS);
    assert_int_equal(id, 1);
    assert_int_equal(atomic_load(&p.runs), 1);

    /* a token running on one connection, sent again on another */
    rt_token(token);
    buf = rt_pack_call(2, "/it.Raw/Hold", token, 0, NULL, 0, &len);
    rt_raw_send(r, buf, len);
    assert_true(WAIT_FOR(atomic_load(&hold.started), SEC(5)));
    buf = rt_pack_call(2, "/it.Raw/Hold", token, 0, NULL, 0, &len);
    rt_raw_send(other, buf, len);
    assert_int_equal(rt_raw_recv_reply(other, &id, NULL, 0), DCTX_ALREADY_EXISTS);
    assert_int_equal(id, 2);
    atomic_store(&hold.release, 1);
    assert_int_equal(rt_raw_recv_reply(r, &id, NULL, 0), DCTX_OK);
    assert_int_equal(id, 2);
    assert_int_equal(atomic_load(&hold.runs), 1);
}

/* A Call whose id is in flight on its connection is a protocol error: the
 * server says so in a GoAway naming the id, closes that connection (its
 * running call is canceled, the caller being lost) and counts it; another
 * connection using the same id is served. */
static void call_whose_id_is_in_flight_ends_its_connection_only(void **state)
{
    (void)state;
    static rt_probe wait, quick;
    rt_probe_init(&wait, RT_PROBE_WAIT_CTX, SEC(10));
    rt_probe_init(&quick, RT_PROBE_RETURN, 0);
    struct rt_method m[] = {{"/it.Raw/Wait", rt_probe_handler, &wait, NULL},
                            {"/it.Raw/Probe", rt_probe_handler, &quick, NULL}};
    char url[256];
    dctx_rpc_server *srv = rt_server_open(RT_IPC, NULL, m, 2, url, sizeof url);
    rt_raw *r = rt_raw_open(url);
    rt_raw *other = rt_raw_open(url);
    uint8_t token[DCTX_TOKEN_BYTES];
    size_t len;
    rt_token(token);
    uint8_t *buf = rt_pack_call(4242, "/it.Raw/Wait", token, 0, NULL, 0, &len);
    rt_raw_send(r, buf, len);
    assert_true(WAIT_FOR(atomic_load(&wait.started), SEC(5)));

    uint64_t before = rt_server_stats(srv).bad_frames;
    rt_token(token);
    buf = rt_pack_call(4242, "/it.Raw/Probe", token, 0, NULL, 0, &len);
    rt_raw_send(r, buf, len);
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1] = "";
    assert_int_equal(rt_raw_recv_goaway(r, msg, sizeof msg), DCTX_INVALID_ARGUMENT);
    assert_contains(msg, "4242");
    assert_true(rt_raw_closed(r));
    assert_true(WAIT_FOR(rt_server_stats(srv).bad_frames == before + 1, SEC(2)));
    assert_true(WAIT_FOR(atomic_load(&wait.finished), SEC(5)));
    assert_int_equal(wait.err, DCTX_CANCELED);
    assert_contains(wait.cause_msg, "caller lost");
    assert_int_equal(atomic_load(&quick.runs), 0);

    rt_token(token);
    buf = rt_pack_call(4242, "/it.Raw/Probe", token, 0, NULL, 0, &len);
    rt_raw_send(other, buf, len);
    uint32_t id = 0;
    assert_int_equal(rt_raw_recv_reply(other, &id, NULL, 0), DCTX_OK);
    assert_int_equal(id, 4242);
    assert_int_equal(atomic_load(&quick.runs), 1);
}

/* A Call frame for id with the method (its bytes up to the last NUL of
 * method_size, so a name may hold one) and context header given (NULL:
 * none), packed. */
static uint8_t *pack_call_with(uint32_t id, const char *method, size_t method_size,
                               Dctx__Wire__ContextHeader *h, size_t *len)
{
    Dctx__Wire__Call c = DCTX__WIRE__CALL__INIT;
    c.has_method = method != NULL;
    c.method.data = (uint8_t *)method;
    c.method.len = method != NULL ? method_size - 1 : 0;
    c.context = h;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &c;
    f.has_call_id = 1;
    f.call_id = id;
    return rt_pack(&f, len);
}

/* Errors of one call are answered by that call's Reply and the connection
 * goes on; protocol errors end the connection with a GoAway saying why.
 * Each is counted in bad_frames (per-call errors: a method name that is
 * missing or not text, a call without a context), and the server keeps
 * serving. */
/* A server that answers a call id the channel has not in flight breaks
 * the protocol: the channel says so in a GoAway naming the id, counts it,
 * and fails the call in flight on that connection UNAVAILABLE at once
 * (never a wrong call's answer); it dials again and a later call is
 * served by whoever answers properly. */
static void reply_for_a_call_not_in_flight_ends_the_connection(void **state)
{
    (void)state;
    char url[256];
    rt_url(RT_IPC, url, sizeof url);
    nng_stream_listener *l = rt_raw_listen(url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    rt_raw *srv = rt_raw_accept(l);

    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, rt_with_timeout(SEC(10)), "/it.Raw/Call", "x", 1, &o);
    Dctx__Wire__Frame *f = rt_raw_recv_frame(srv);
    assert_non_null(f);
    assert_int_equal(f->body_case, DCTX__WIRE__FRAME__BODY_CALL);
    uint32_t id = f->call_id;
    dctx__wire__frame__free_unpacked(f, NULL);

    size_t len;
    uint8_t *buf = rt_pack_reply(id + 1000, DCTX_OK, &len);
    rt_raw_send(srv, buf, len);

    char why[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
    assert_int_equal(rt_raw_recv_goaway(srv, why, sizeof why), DCTX_INVALID_ARGUMENT);
    char named[32];
    snprintf(named, sizeof named, "%u", id + 1000);
    assert_non_null(strstr(why, named));
    assert_true(rt_raw_closed(srv));
    rt_finish(h, SEC(5));
    assert_int_equal(o.code, DCTX_UNAVAILABLE);
    assert_int_equal(rt_channel_stats(ch).bad_frames, 1);
    rt_handle_release(h);

    /* it dials again; this time the server answers the call it was sent */
    rt_raw *again = rt_raw_accept(l);
    static rt_outcome o2;
    h = rt_start(ch, rt_with_timeout(SEC(10)), "/it.Raw/Call", "x", 1, &o2);
    f = rt_raw_recv_frame(again);
    assert_non_null(f);
    buf = rt_pack_reply(f->call_id, DCTX_OK, &len);
    dctx__wire__frame__free_unpacked(f, NULL);
    rt_raw_send(again, buf, len);
    rt_finish(h, SEC(5));
    assert_int_equal(o2.code, DCTX_OK);
    rt_handle_release(h);
    rt_channel_close(ch);
    rt_raw_close(srv);
    rt_raw_close(again);
    nng_stream_listener_free(l);
}

static void malformed_frames_are_refused_counted_and_the_server_keeps_serving(void **state)
{
    (void)state;
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_IPC, NULL, "/it.Echo/Echo", rt_echo_handler, NULL, url);
    rt_raw *s = rt_raw_open(url);

    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    uint8_t payload[100];
    memset(payload, 'p', sizeof payload);
    size_t call_len;
    uint8_t *call = rt_pack_call(1, "/it.Echo/Echo", token, 0, payload, sizeof payload, &call_len);

    /* Per-call errors, on one connection: each with a token of its own. */
    struct {
        const char *name, *method;
        size_t method_size; /* sizeof the literal: a NUL inside is sent */
        bool context;
        size_t token_len;
        const char *key; /* a value under this key name, if not NULL */
        int code;
        bool counted; /* in bad_frames */
    } per_call[] = {
        {"Call without a method", NULL, 0, true, DCTX_TOKEN_BYTES, NULL, DCTX_INVALID_ARGUMENT,
         true},
        {"method name not UTF-8", "/it.Echo/\xff\xfe", sizeof "/it.Echo/\xff\xfe", true,
         DCTX_TOKEN_BYTES, NULL, DCTX_INVALID_ARGUMENT, true},
        /* read as "/it.Echo/Echo" it would run: refused instead */
        {"method name with a NUL", "/it.Echo/Echo\0x", sizeof "/it.Echo/Echo\0x", true,
         DCTX_TOKEN_BYTES, NULL, DCTX_INVALID_ARGUMENT, true},
        {"Call without a context", "/it.Echo/Echo", sizeof "/it.Echo/Echo", false, 0, NULL,
         DCTX_INVALID_ARGUMENT, true},
        {"unknown method", "/it.Echo/Nope", sizeof "/it.Echo/Nope", true, DCTX_TOKEN_BYTES, NULL,
         DCTX_UNIMPLEMENTED, false},
        {"8-byte token", "/it.Echo/Echo", sizeof "/it.Echo/Echo", true, 8, NULL,
         DCTX_INVALID_ARGUMENT, false},
        {"key name with a space", "/it.Echo/Echo", sizeof "/it.Echo/Echo", true, DCTX_TOKEN_BYTES,
         "bad key", DCTX_INVALID_ARGUMENT, false},
    };
    for (size_t i = 0; i < sizeof per_call / sizeof per_call[0]; i++) {
        uint8_t tok[DCTX_TOKEN_BYTES];
        rt_token(tok);
        Dctx__Wire__ContextHeader h = DCTX__WIRE__CONTEXT_HEADER__INIT;
        h.has_cancel_token = 1;
        h.cancel_token.data = tok;
        h.cancel_token.len = per_call[i].token_len;
        Dctx__Wire__Value v = DCTX__WIRE__VALUE__INIT, *vp = &v;
        if (per_call[i].key != NULL) {
            v.key = (char *)per_call[i].key;
            h.values = &vp;
            h.n_values = 1;
        }
        uint32_t id = 100 + (uint32_t)i;
        size_t len;
        uint8_t *buf = pack_call_with(id, per_call[i].method, per_call[i].method_size,
                                      per_call[i].context ? &h : NULL, &len);
        uint64_t before = rt_server_stats(srv).bad_frames;
        rt_raw_send(s, buf, len);
        uint32_t got_id = 0;
        char msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1] = "";
        int code = rt_raw_recv_reply(s, &got_id, msg, sizeof msg);
        if (!rt_utf8_valid(msg, strlen(msg)))
            fail_msg("%s: answered with a message that is not UTF-8", per_call[i].name);
        if (code != per_call[i].code || got_id != id)
            fail_msg("%s: answered %s \"%s\" for call %u, not %s for call %u", per_call[i].name,
                     code < 0 ? "nothing" : dctx_code_name(code), msg, got_id,
                     dctx_code_name(per_call[i].code), id);
        if (per_call[i].counted && !WAIT_FOR(rt_server_stats(srv).bad_frames == before + 1, SEC(2)))
            fail_msg("%s: bad_frames went from %llu to %llu", per_call[i].name,
                     (unsigned long long)before,
                     (unsigned long long)rt_server_stats(srv).bad_frames);
    }
    /* the whole Call still works on the same connection */
    uint8_t *call_copy = malloc(call_len);
    assert_non_null(call_copy);
    memcpy(call_copy, call, call_len);
    rt_raw_send(s, call_copy, call_len);
    uint32_t id = 0;
    assert_int_equal(rt_raw_recv_reply(s, &id, NULL, 0), DCTX_OK);
    assert_int_equal(id, 1);

    /* Protocol errors, each on a connection of its own. */
    uint8_t random_bytes[200];
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < sizeof random_bytes; i++)
        random_bytes[i] = (uint8_t)rt_next(&seed);
    /* Frame.call (field 1) as a varint; Frame.cancel (3) as fixed32;
     * Call.context (2) as a varint inside a well-formed Frame.call */
    static const uint8_t wrong_types_1[] = {0x08, 0x01};
    static const uint8_t wrong_types_2[] = {0x1d, 1, 2, 3, 4};
    static const uint8_t wrong_types_3[] = {0x0a, 0x02, 0x10, 0x05};
    /* Frame.call claiming 2^32-1 bytes; a Call whose method claims 2^31-1 */
    static const uint8_t huge_1[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 'a', 'b', 'c'};
    static const uint8_t huge_2[] = {0x0a, 0x08, 0x0a, 0xff, 0xff, 0xff, 0xff, 0x07, 'a', 'b'};
    /* Frame field 15 (a kind from the future); only a call id (no kind) */
    static const uint8_t unknown_kind[] = {0x7a, 0x00};
    static const uint8_t no_kind[] = {0xa0, 0x01, 0x05};
    static const uint8_t length_0[] = {0, 0, 0, 0};
    uint8_t over_limit[4];
    uint32_t over = rt_raw_peer_max_frame_bytes(s) + 1;
    over_limit[0] = (uint8_t)(over >> 24);
    over_limit[1] = (uint8_t)(over >> 16);
    over_limit[2] = (uint8_t)(over >> 8);
    over_limit[3] = (uint8_t)over;

    size_t reply_len, hello_len, no_id_len, cancel_no_id_len, short_cancel_len;
    uint8_t *reply, *hello, *no_id, *cancel_no_id, *short_cancel;
    {
        Dctx__Wire__Reply rp = DCTX__WIRE__REPLY__INIT;
        Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
        f.body_case = DCTX__WIRE__FRAME__BODY_REPLY;
        f.reply = &rp;
        f.has_call_id = 1;
        f.call_id = 1;
        reply = rt_pack(&f, &reply_len);
        Dctx__Wire__Hello he = DCTX__WIRE__HELLO__INIT;
        he.has_version = 1;
        he.version = 1;
        he.has_max_frame_bytes = 1;
        he.max_frame_bytes = 65536;
        Dctx__Wire__Frame g = DCTX__WIRE__FRAME__INIT;
        g.body_case = DCTX__WIRE__FRAME__BODY_HELLO;
        g.hello = &he;
        hello = rt_pack(&g, &hello_len);
        no_id = rt_pack_call(0, "/it.Echo/Echo", token, 0, NULL, 0, &no_id_len);
        cancel_no_id = rt_pack_cancel(0, token, DCTX_CANCELED, "", 0, &cancel_no_id_len);
        Dctx__Wire__Cancel c = DCTX__WIRE__CANCEL__INIT;
        c.has_cancel_token = 1;
        c.cancel_token.data = token;
        c.cancel_token.len = 8;
        Dctx__Wire__Frame k = DCTX__WIRE__FRAME__INIT;
        k.body_case = DCTX__WIRE__FRAME__BODY_CANCEL;
        k.cancel = &c;
        k.has_call_id = 1;
        k.call_id = 9; /* not in flight: the token is looked up */
        short_cancel = rt_pack(&k, &short_cancel_len);
    }

    struct {
        const char *name;
        const uint8_t *bytes;
        size_t len;
        bool raw; /* written as they are, no header added */
        int code, or_code;
    } bad[] = {
        {"random bytes", random_bytes, sizeof random_bytes, false, DCTX_INVALID_ARGUMENT,
         DCTX_UNIMPLEMENTED},
        {"truncated Call", call, call_len / 2, false, DCTX_INVALID_ARGUMENT, -1},
        {"Frame.call as varint", wrong_types_1, sizeof wrong_types_1, false, DCTX_INVALID_ARGUMENT,
         -1},
        {"Frame.cancel as fixed32", wrong_types_2, sizeof wrong_types_2, false,
         DCTX_INVALID_ARGUMENT, -1},
        {"Call.context as varint", wrong_types_3, sizeof wrong_types_3, false,
         DCTX_INVALID_ARGUMENT, -1},
        {"Frame.call of 4 GiB", huge_1, sizeof huge_1, false, DCTX_INVALID_ARGUMENT, -1},
        {"Call.method of 2 GiB", huge_2, sizeof huge_2, false, DCTX_INVALID_ARGUMENT, -1},
        {"unknown kind", unknown_kind, sizeof unknown_kind, false, DCTX_UNIMPLEMENTED, -1},
        {"no kind", no_kind, sizeof no_kind, false, DCTX_INVALID_ARGUMENT, -1},
        {"Reply sent to the server", reply, reply_len, false, DCTX_INVALID_ARGUMENT, -1},
        {"Call without a call id", no_id, no_id_len, false, DCTX_INVALID_ARGUMENT, -1},
        {"Cancel without a call id", cancel_no_id, cancel_no_id_len, false, DCTX_INVALID_ARGUMENT,
         -1},
        {"Cancel with an 8-byte token", short_cancel, short_cancel_len, false,
         DCTX_INVALID_ARGUMENT, -1},
        {"a second hello", hello, hello_len, false, DCTX_INVALID_ARGUMENT, -1},
        {"length 0", length_0, sizeof length_0, true, DCTX_INVALID_ARGUMENT, -1},
        {"length over the limit", over_limit, sizeof over_limit, true, DCTX_RESOURCE_EXHAUSTED, -1},
    };
    /* All at once: each server side waits up to its linger for its peer
     * to close before it closes itself. */
    enum { N_BAD = sizeof bad / sizeof bad[0] };
    rt_raw *x[N_BAD];
    uint64_t before = rt_server_stats(srv).bad_frames;
    for (size_t i = 0; i < N_BAD; i++) {
        x[i] = rt_raw_open(url);
        if (bad[i].raw) {
            assert_int_equal(rt_raw_write(x[i], bad[i].bytes, bad[i].len, 5000), 0);
        } else {
            uint8_t *b = malloc(bad[i].len + 1);
            assert_non_null(b);
            memcpy(b, bad[i].bytes, bad[i].len);
            rt_raw_send(x[i], b, bad[i].len);
        }
    }
    for (size_t i = 0; i < N_BAD; i++) {
        char msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1] = "";
        int code = rt_raw_recv_goaway(x[i], msg, sizeof msg);
        if (code != bad[i].code && code != bad[i].or_code)
            fail_msg("%s: a goaway %s \"%s\", not %s", bad[i].name,
                     code < 0 ? "that never came" : dctx_code_name(code), msg,
                     dctx_code_name(bad[i].code));
    }
    for (size_t i = 0; i < N_BAD; i++) {
        if (!rt_raw_closed(x[i]))
            fail_msg("%s: the connection stayed open after the goaway", bad[i].name);
        rt_raw_close(x[i]);
    }
    if (!WAIT_FOR(rt_server_stats(srv).bad_frames == before + N_BAD, SEC(2)))
        fail_msg("bad_frames went from %llu to %llu, not up by %d", (unsigned long long)before,
                 (unsigned long long)rt_server_stats(srv).bad_frames, (int)N_BAD);
    free(call);
    free(reply);
    free(hello);
    free(no_id);
    free(cancel_no_id);
    free(short_cancel);

    /* the first connection was never touched by them, and a channel works */
    rt_token(token);
    call = rt_pack_call(2, "/it.Echo/Echo", token, 0, payload, sizeof payload, &call_len);
    rt_raw_send(s, call, call_len);
    assert_int_equal(rt_raw_recv_reply(s, &id, NULL, 0), DCTX_OK);
    assert_int_equal(id, 2);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Echo/Echo", "hi", 2, &res), DCTX_OK);
    assert_int_equal(res.payload_len, 2);
    assert_memory_equal(res.payload, "hi", 2);
    dctx_rpc_result_free(&res);
}

#define FLOOD_CALLS 2000
#define FLOOD_PAYLOAD 65536
#define GARBAGE_PEERS 20

struct flood {
    rt_raw *calls;                  /* sends calls, never reads */
    rt_raw *garbage[GARBAGE_PEERS]; /* write garbage, never read */
    atomic_int sent, pushed_back, garbage_bytes, done;
    char why[128];
};

/* Write Echo calls of 64 KiB to f->calls, never reading a reply, until a
 * write does not finish in 1 s (the server stopped reading: its queue of
 * replies to this peer is full) or FLOOD_CALLS went. Then garbage on each
 * garbage peer, never reading either. A thread: no cmocka asserts of its
 * own (rt_pack_call's fail only without memory). */
static void *flood_thread(void *arg)
{
    struct flood *f = arg;
    static uint8_t payload[FLOOD_PAYLOAD];
    memset(payload, 'f', sizeof payload);
    for (uint32_t i = 0; i < FLOOD_CALLS; i++) {
        uint8_t token[DCTX_TOKEN_BYTES];
        memcpy(token, &i, sizeof i);
        memset(token + sizeof i, 0xf1, sizeof token - sizeof i);
        size_t len;
        uint8_t *body =
            rt_pack_call(i + 1, "/it.Echo/Echo", token, 0, payload, sizeof payload, &len);
        uint8_t *frame = malloc(4 + len);
        if (frame == NULL) {
            free(body);
            break;
        }
        frame[0] = (uint8_t)(len >> 24);
        frame[1] = (uint8_t)(len >> 16);
        frame[2] = (uint8_t)(len >> 8);
        frame[3] = (uint8_t)len;
        memcpy(frame + 4, body, len);
        free(body);
        int rv = rt_raw_write(f->calls, frame, 4 + len, 1000);
        free(frame);
        if (rv != 0) {
            snprintf(f->why, sizeof f->why, "call %u: %s", i + 1, nng_strerror(rv));
            atomic_store(&f->pushed_back, 1);
            break;
        }
        atomic_fetch_add(&f->sent, 1);
    }
    /* a header claiming 3.7 GB, then more of the same, until refused */
    static const uint8_t garbage[] = {0xde, 0xad, 0xbe, 0xef, 0x0f, 0x1e, 0x2d, 0x3c,
                                      0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4};
    for (int p = 0; p < GARBAGE_PEERS; p++)
        for (int i = 0; i < 4096; i++) {
            if (rt_raw_write(f->garbage[p], garbage, sizeof garbage, 200) != 0)
                break;
            atomic_fetch_add(&f->garbage_bytes, (int)sizeof garbage);
        }
    atomic_store(&f->done, 1);
    return NULL;
}

/* A peer that sends calls and never reads their replies holds only its
 * own connection: once its queue of replies is full the server stops
 * reading it (the peer's writes stall), and peers writing garbage without
 * reading are each ended by a GoAway. Meanwhile other channels' calls are
 * answered, each well within a second. */
static void peer_flooding_garbage_without_reading_does_not_stall_the_server(void **state)
{
    (void)state;
    char url[256];
    /* ipc: a local peer, whose kernel buffers are small (about 200 KiB), so
     * the server's own queue is what fills */
    dctx_rpc_server *srv = rt_serve(RT_IPC, NULL, "/it.Echo/Echo", rt_echo_handler, NULL, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Echo/Echo", "warm", 4, NULL), DCTX_OK);

    static struct flood f;
    memset(&f, 0, sizeof f);
    f.calls = rt_raw_open(url);
    for (int p = 0; p < GARBAGE_PEERS; p++)
        f.garbage[p] = rt_raw_open(url);
    uint64_t bad_before = rt_server_stats(srv).bad_frames;
    pthread_t t = start_thread(flood_thread, &f);

    /* normal calls while the flood runs (both parts) and 20 after it */
    int slow = 0, failed = 0, calls = 0, after = 0;
    int64_t worst = 0;
    char first_failure[DCTX_WIRE_MESSAGE_BYTES_MAX + 64] = "";
    for (int i = 0; after < 20 && i < 1000; i++, calls++) {
        if (atomic_load(&f.done))
            after++;
        dctx *ctx = rt_with_timeout(SEC(3));
        dctx_rpc_result res;
        int64_t t0 = dctx_now();
        int rc = dctx_rpc_call_raw(ch, ctx, "/it.Echo/Echo", "hi", 2, &res);
        int64_t took = dctx_now() - t0;
        if (took > worst)
            worst = took;
        if (rc != DCTX_OK && failed++ == 0)
            snprintf(first_failure, sizeof first_failure, "call %d: %s %s", i, dctx_code_name(rc),
                     res.message);
        if (took > SEC(1))
            slow++;
        dctx_rpc_result_free(&res);
        rt_ctx_release(ctx);
        rt_sleep(MS(25)); /* pacing: calls spread over the flood */
    }
    join_thread(t);
    int sent = atomic_load(&f.sent);
    dctx_rpc_server_stats st = rt_server_stats(srv);
    print_message("flood: %d calls of 64 KiB sent unread (%s), %d garbage bytes on %d peers, "
                  "%llu counted bad; normal calls: %d, %d failed, %d over 1 s, worst %.1f ms\n",
                  sent, atomic_load(&f.pushed_back) ? f.why : "never pushed back",
                  atomic_load(&f.garbage_bytes), GARBAGE_PEERS,
                  (unsigned long long)(st.bad_frames - bad_before), calls, failed, slow,
                  worst / 1e6);
    if (failed > 0 || slow > 0)
        fail_msg("the flood stalled other callers: %d of %d calls failed, %d took over 1 s "
                 "(first: %s)",
                 failed, calls, slow, first_failure);
    assert_true(sent >= 10);
    if (!atomic_load(&f.pushed_back))
        fail_msg("%d calls of 64 KiB went to a peer that reads nothing, and the server never "
                 "stopped reading it",
                 sent);
    assert_true(WAIT_FOR(rt_server_stats(srv).bad_frames >= bad_before + GARBAGE_PEERS, SEC(5)));
    for (int p = 0; p < GARBAGE_PEERS; p++) {
        char msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1] = "";
        assert_int_equal(rt_raw_recv_goaway(f.garbage[p], msg, sizeof msg),
                         DCTX_RESOURCE_EXHAUSTED);
        assert_true(rt_raw_closed(f.garbage[p]));
    }
    /* the flooder's connection is closed by its teardown; calls still go */
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Echo/Echo", "hi", 2, NULL), DCTX_OK);
}

int main(int argc, char **argv)
{
    rt_init("rpc_peers", RT_PORTS_PEERS);
    int child = rt_child_main(argc, argv);
    if (child >= 0)
        return child;
    const struct CMUnitTest tests[] = {
        RT_TEST(lost_caller_cancels_the_handler_and_is_counted),
        RT_TEST(server_killed_mid_call_fails_the_call_unavailable_at_once),
        RT_TEST(server_that_stops_answering_is_found_by_keepalive),
        RT_TEST(caller_that_stops_answering_is_found_by_keepalive),
        RT_TEST(peer_trickling_a_frame_is_dropped_a_slow_steady_one_is_not),
        RT_TEST(cancel_from_another_connection_stops_nothing),
        RT_TEST(caller_pinging_too_often_is_closed),
        RT_TEST(caller_pinging_too_soon_now_and_then_is_not_closed),
        RT_TEST(goaway_reaches_a_peer_that_goes_on_sending),
        RT_TEST(channel_told_too_many_pings_slows_down),
        RT_TEST(drained_channel_fails_new_calls_at_once_and_finishes_the_rest),
        RT_TEST(call_runs_at_most_once_when_its_connection_drops_and_returns),
        RT_TEST(replayed_call_is_refused_and_runs_once),
        RT_TEST(call_whose_id_is_in_flight_ends_its_connection_only),
        RT_TEST(reply_for_a_call_not_in_flight_ends_the_connection),
        RT_TEST(malformed_frames_are_refused_counted_and_the_server_keeps_serving),
        RT_TEST(peer_flooding_garbage_without_reading_does_not_stall_the_server),
    };
    return cmocka_run_group_tests_name("rpc_peers", tests, rt_group_setup, NULL);
}
