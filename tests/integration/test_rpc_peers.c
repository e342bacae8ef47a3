/*
 * test_rpc_peers.c - peers that vanish or misbehave: a caller that goes
 * away (its handler is canceled), a server killed mid-call (the call fails
 * at once) or killed and back on the same address (the call still ran at
 * most once), a replayed Call frame, malformed frames of every kind, and a
 * peer that floods garbage without ever reading. Servers to kill run in
 * re-executed children of this program (rt_child_server).
 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

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
    assert_true(RT_WAIT_FOR(atomic_load(&p.started), SEC(5)));

    rt_channel_close(ch); /* ends the call and waits for its callback */
    assert_int_equal(atomic_load(&o.callbacks), 1);
    assert_int_equal(o.code, DCTX_UNAVAILABLE);
    assert_true(dctx_rpc_handle_wait(h, 0));
    rt_handle_release(h);

    assert_true(RT_WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.err, DCTX_CANCELED);
    assert_contains(p.cause_msg, "caller lost");
    assert_true(RT_WAIT_FOR(rt_server_stats(srv).calls_canceled_by_peer_loss == 1, SEC(5)));
    dctx_rpc_server_stats st = rt_server_stats(srv);
    assert_int_equal(st.peers_lost, 1);
    assert_int_equal(st.calls_canceled_by_peer_loss, 1);
    assert_true(RT_WAIT_FOR(rt_server_stats(srv).in_flight == 0, SEC(5)));
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
    assert_true(RT_WAIT_FOR(atomic_load(&sh->block_runs) == 1, SEC(10)));
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
    assert_true(RT_WAIT_FOR(atomic_load(&sh->block_runs) == 1, SEC(10)));
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

/* The same Call bytes twice on one socket: the token is known, so the
 * second is refused and the handler runs once. */
static void replayed_call_is_refused_and_runs_once(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    rt_serve(RT_TCP, NULL, "/it.Raw/Probe", rt_probe_handler, &p, url);
    nng_socket s = rt_raw_req(url);
    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t len;
    uint8_t *buf = rt_pack_call("/it.Raw/Probe", token, 0, NULL, 0, &len);
    assert_int_equal(nng_send(s, buf, len, 0), 0);
    assert_int_equal(rt_recv_reply(s, NULL, 0), DCTX_OK);
    rt_send_bytes(s, buf, len); /* the same bytes again: a replay */
    int code = rt_recv_reply(s, NULL, 0);
    assert_int_not_equal(code, DCTX_OK);
    assert_int_equal(code, DCTX_ALREADY_EXISTS);
    assert_int_equal(atomic_load(&p.runs), 1);
}

static void malformed_frames_are_refused_counted_and_the_server_keeps_serving(void **state)
{
    (void)state;
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_IPC, NULL, "/it.Echo/Echo", rt_echo_handler, NULL, url);
    nng_socket s = rt_raw_req(url);

    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    uint8_t payload[100];
    memset(payload, 'p', sizeof payload);
    size_t call_len;
    uint8_t *call = rt_pack_call("/it.Echo/Echo", token, 0, payload, sizeof payload, &call_len);

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

    /* well-formed protobuf, bad dctx: a Call without a context, a token of
     * 8 bytes, a value under a key name with a space */
    size_t no_ctx_len, short_tok_len, bad_key_len;
    uint8_t *no_ctx, *short_tok, *bad_key;
    {
        Dctx__Wire__Call c = DCTX__WIRE__CALL__INIT;
        c.method = (char *)"/it.Echo/Echo";
        Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
        f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
        f.call = &c;
        no_ctx = rt_pack(&f, &no_ctx_len);
        Dctx__Wire__ContextHeader h = DCTX__WIRE__CONTEXT_HEADER__INIT;
        h.has_cancel_token = 1;
        h.cancel_token.data = token;
        h.cancel_token.len = 8;
        c.context = &h;
        short_tok = rt_pack(&f, &short_tok_len);
        h.cancel_token.len = DCTX_TOKEN_BYTES;
        Dctx__Wire__Value v = DCTX__WIRE__VALUE__INIT, *vp = &v;
        v.key = (char *)"bad key";
        h.values = &vp;
        h.n_values = 1;
        bad_key = rt_pack(&f, &bad_key_len);
    }

    struct {
        const char *name;
        const uint8_t *bytes;
        size_t len;
    } bad[] = {
        {"empty", (const uint8_t *)"", 0},
        {"random bytes", random_bytes, sizeof random_bytes},
        {"truncated Call", call, call_len / 2},
        {"Frame.call as varint", wrong_types_1, sizeof wrong_types_1},
        {"Frame.cancel as fixed32", wrong_types_2, sizeof wrong_types_2},
        {"Call.context as varint", wrong_types_3, sizeof wrong_types_3},
        {"Frame.call of 4 GiB", huge_1, sizeof huge_1},
        {"Call.method of 2 GiB", huge_2, sizeof huge_2},
        {"Call without context", no_ctx, no_ctx_len},
        {"8-byte token", short_tok, short_tok_len},
        {"key name with a space", bad_key, bad_key_len},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t before = rt_server_stats(srv).bad_frames;
        assert_int_equal(nng_send(s, (void *)bad[i].bytes, bad[i].len, 0), 0);
        int code = rt_recv_reply(s, NULL, 0); /* -1: dropped (no answer in 2 s) */
        if (code != DCTX_INVALID_ARGUMENT && code != -1)
            fail_msg("%s: answered %s", bad[i].name, dctx_code_name(code));
        if (!RT_WAIT_FOR(rt_server_stats(srv).bad_frames == before + 1, SEC(2)))
            fail_msg("%s: bad_frames went from %llu to %llu", bad[i].name,
                     (unsigned long long)before,
                     (unsigned long long)rt_server_stats(srv).bad_frames);
    }
    free(no_ctx);
    free(short_tok);
    free(bad_key);

    /* the whole Call still works on the same socket, and a channel too */
    rt_send_bytes(s, call, call_len);
    assert_int_equal(rt_recv_reply(s, NULL, 0), DCTX_OK);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Echo/Echo", "hi", 2, &res), DCTX_OK);
    assert_int_equal(res.payload_len, 2);
    assert_memory_equal(res.payload, "hi", 2);
    dctx_rpc_result_free(&res);
}

struct flood {
    nng_socket sock;
    int frames;
    atomic_int sent;
    atomic_int failed;
};

static void *flood_thread(void *arg)
{
    struct flood *f = arg;
    static const uint8_t garbage[] = {0xde, 0xad, 0xbe, 0xef, 0x0f, 0x1e, 0x2d, 0x3c,
                                      0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4};
    for (int i = 0; i < f->frames; i++) {
        nng_msg *m = NULL;
        /* raw REQ: we write the request id ourselves; replies are never read */
        if (nng_msg_alloc(&m, 0) != 0 ||
            nng_msg_header_append_u32(m, 0x80000000u | (uint32_t)(i + 1)) != 0 ||
            nng_msg_append(m, garbage, sizeof garbage) != 0 || nng_sendmsg(f->sock, m, 0) != 0) {
            if (m != NULL)
                nng_msg_free(m);
            atomic_fetch_add(&f->failed, 1);
            break;
        }
        atomic_fetch_add(&f->sent, 1);
    }
    return NULL;
}

/* Replies to a peer that never reads would pile up, each holding a pooled
 * nng context until REPLY_SEND_TIMEOUT_MS (5 s) ends its send; the pool
 * is one for all peers and capped, and with it empty the server (server.c,
 * on_receive) would drop every incoming message, from anyone. Malformed
 * frames are dropped unanswered, so a peer flooding garbage holds no
 * context, and other channels' calls keep being answered. */
static void peer_flooding_garbage_without_reading_does_not_stall_the_server(void **state)
{
    (void)state;
    char url[256];
    /* ipc: a local peer; the kernel buffers about 200 KiB of replies for
     * it, then its connection pushes back. (Over loopback tcp the buffers
     * grow to several MiB and swallow these 30,000 replies.) */
    dctx_rpc_server *srv = rt_serve(RT_IPC, NULL, "/it.Echo/Echo", rt_echo_handler, NULL, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Echo/Echo", "warm", 4, NULL), DCTX_OK);

    static struct flood f;
    memset(&f, 0, sizeof f);
    f.frames = 30000;
    assert_int_equal(nng_req0_open_raw(&f.sock), 0);
    rt_track_sock(f.sock);
    assert_int_equal(nng_socket_set_ms(f.sock, NNG_OPT_SENDTIMEO, 5000), 0);
    assert_int_equal(nng_dial(f.sock, url, NULL, 0), 0);
    pthread_t t = start_thread(flood_thread, &f);

    /* normal calls while the flood runs and right after it */
    int slow = 0, failed = 0;
    int64_t worst = 0;
    char first_failure[DCTX_WIRE_MESSAGE_BYTES_MAX + 64] = "";
    for (int i = 0; i < 40; i++) {
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
        rt_sleep(MS(25));
    }
    join_thread(t);
    int sent = atomic_load(&f.sent);
    dctx_rpc_server_stats st = rt_server_stats(srv);
    print_message("flood: %d garbage frames sent, %llu counted bad; normal calls: %d failed, "
                  "%d over 1 s, worst %.1f ms\n",
                  sent, (unsigned long long)st.bad_frames, failed, slow, worst / 1e6);
    assert_true(sent >= 1000);
    if (failed > 0 || slow > 0)
        fail_msg("the flood stalled other callers: %d of 40 calls failed, %d took over 1 s "
                 "(first: %s)",
                 failed, slow, first_failure);
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
        RT_TEST(call_runs_at_most_once_when_its_connection_drops_and_returns),
        RT_TEST(replayed_call_is_refused_and_runs_once),
        RT_TEST(malformed_frames_are_refused_counted_and_the_server_keeps_serving),
        RT_TEST(peer_flooding_garbage_without_reading_does_not_stall_the_server),
    };
    return cmocka_run_group_tests_name("rpc_peers", tests, rt_group_setup, NULL);
}
