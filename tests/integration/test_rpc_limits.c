/*
 * test_rpc_limits.c - the wire's limits: values past DCTX_WIRE_VALUES_MAX
 * or DCTX_WIRE_VALUE_BYTES_MAX refused before they are sent; status and
 * cancel-cause messages cut to DCTX_WIRE_MESSAGE_BYTES_MAX with one rule on
 * client and server: whole at the limit, and past it on the last
 * character boundary at or before the limit, so the text stays UTF-8; a
 * request over the server's frame limit or a reply over the caller's
 * refused alone, the connection going on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_testutil.h"

static void values_over_the_limits_are_refused_before_sending(void **state)
{
    (void)state;
    static dctx_key many[DCTX_WIRE_VALUES_MAX + 1];
    static char names[DCTX_WIRE_VALUES_MAX + 1][16];
    for (int i = 0; i <= DCTX_WIRE_VALUES_MAX; i++) {
        snprintf(names[i], sizeof names[i], "it-v%02d", i);
        many[i].name = names[i];
        many[i].flags = DCTX_KEY_PROPAGATE;
    }
    static struct rt_seen_values seen;
    memset(&seen, 0, sizeof seen);
    char url[256];
    dctx_rpc_server *srv =
        rt_serve(RT_INPROC, NULL, "/it.Values/Record", rt_values_handler, &seen, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_result res;

    /* 64 values: the limit itself is fine */
    dctx *ctx = rt_with_cancel();
    for (int i = 0; i < DCTX_WIRE_VALUES_MAX; i++)
        ctx = rt_with_value(ctx, &many[i], "");
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Values/Record", NULL, 0, NULL), DCTX_OK);
    /* 65: refused, naming the limit */
    ctx = rt_with_value(ctx, &many[DCTX_WIRE_VALUES_MAX], "");
    int rc = dctx_rpc_call_raw(ch, ctx, "/it.Values/Record", NULL, 0, &res);
    assert_true(rc == DCTX_RESOURCE_EXHAUSTED || rc == DCTX_INVALID_ARGUMENT);
    assert_contains(res.message, "64");
    dctx_rpc_result_free(&res);
    rt_ctx_release(ctx);

    /* bytes: key and value together, 8192 at most */
    size_t room = DCTX_WIRE_VALUE_BYTES_MAX - strlen(rt_key_tenant.name);
    char *big = malloc(9000);
    assert_non_null(big);
    memset(big, 'v', 9000);
    dctx *fits = NULL, *over = NULL, *huge = NULL;
    assert_int_equal(dctx_with_value(dctx_background(), &rt_key_tenant, big, room, &fits), 0);
    assert_int_equal(dctx_with_value(dctx_background(), &rt_key_tenant, big, room + 1, &over), 0);
    assert_int_equal(dctx_with_value(dctx_background(), &rt_key_tenant, big, 9000, &huge), 0);
    rt_track_ctx(fits);
    rt_track_ctx(over);
    rt_track_ctx(huge);
    free(big);
    assert_int_equal(dctx_rpc_call_raw(ch, fits, "/it.Values/Record", NULL, 0, NULL), DCTX_OK);
    dctx *refused[] = {over, huge};
    for (int i = 0; i < 2; i++) {
        rc = dctx_rpc_call_raw(ch, refused[i], "/it.Values/Record", NULL, 0, &res);
        assert_true(rc == DCTX_RESOURCE_EXHAUSTED || rc == DCTX_INVALID_ARGUMENT);
        assert_contains(res.message, "8192");
        dctx_rpc_result_free(&res);
    }
    rt_ctx_release(fits);
    rt_ctx_release(over);
    rt_ctx_release(huge);

    /* refused before sending: the server saw only the two that fit */
    assert_int_equal(rt_server_stats(srv).calls, 2);
    assert_int_equal(rt_channel_stats(ch).calls, 2);
}

/* A status message over DCTX_WIRE_MESSAGE_BYTES_MAX is cut on a character
 * boundary (dctx_rpc_reply_set_message), never inside a multi-byte
 * character: the Reply's message is a string field, UTF-8 by dctx.proto. */
static void long_status_message_is_cut_to_valid_utf8(void **state)
{
    (void)state;
    char url[256];
    rt_serve(RT_INPROC, NULL, "/it.Status/Code", rt_status_handler, NULL, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    enum { N = 300 };
    uint8_t req[1 + 4 * N];
    req[0] = DCTX_ABORTED;
    for (int i = 0; i < N; i++)
        memcpy(req + 1 + 4 * i, "\xf0\x9f\x98\x88", 4); /* U+1F608, 1200 bytes in all */
    dctx_rpc_result res;
    int rc = dctx_rpc_call_raw(ch, NULL, "/it.Status/Code", req, sizeof req, &res);
    char msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 2];
    snprintf(msg, sizeof msg, "%s", res.message);
    dctx_rpc_result_free(&res);
    assert_int_equal(rc, DCTX_ABORTED);
    size_t n = strlen(msg);
    assert_true(n > 0 && n <= DCTX_WIRE_MESSAGE_BYTES_MAX);
    assert_memory_equal(msg, req + 1, n); /* a prefix */
    if (!rt_utf8_valid(msg, n))
        fail_msg("the %zu-byte message cut from 1200 bytes is not valid UTF-8 (ends inside "
                 "a character)",
                 n);
}

/* The same for a cancel cause, which both the client (client.c,
 * context_done) and the server (server.c, on_cancel) cut to the wire's
 * limit: on a character boundary, not inside a 4-byte one. */
static void long_cancel_cause_is_cut_to_valid_utf8_at_the_handler(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    rt_serve(RT_INPROC, NULL, "/it.Cancel/Wait", rt_probe_handler, &p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    char cause[4 * 300 + 1];
    for (int i = 0; i < 300; i++)
        memcpy(cause + 4 * i, "\xf0\x9f\x98\x88", 4);
    cause[sizeof cause - 1] = '\0';
    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Cancel/Wait", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));
    dctx_cancel_cause(ctx, DCTX_ABORTED, cause);
    rt_finish(h, SEC(5));
    rt_handle_release(h);
    rt_ctx_release(ctx);
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_int_equal(p.cause, DCTX_ABORTED);
    size_t n = p.cause_msg_len;
    assert_true(n > 0 && n <= DCTX_WIRE_MESSAGE_BYTES_MAX);
    assert_memory_equal(p.cause_msg, cause, n);
    if (!rt_utf8_valid(p.cause_msg, n))
        fail_msg("the %zu-byte cause cut from 1200 bytes is not valid UTF-8", n);
}

/* Text of n bytes whose last character is U+263A (3 bytes), the rest
 * ASCII; buf has room for n + 1. At n = limit + 1 the limit falls on the
 * character's last byte, so a cut at the limit would split it. */
static void text_ending_in_a_3_byte_character(char *buf, size_t n)
{
    memset(buf, 'a', n - 3);
    memcpy(buf + n - 3, "\xe2\x98\xba", 3);
    buf[n] = '\0';
}

/* The status message a handler sets to text, as the caller receives it
 * over tcp: its length (its bytes into got, of DCTX_WIRE_MESSAGE_BYTES_MAX
 * + 1). */
static size_t status_message_received(const char *text, char *got)
{
    char url[256];
    rt_serve(RT_TCP, NULL, "/it.Status/Code", rt_status_handler, NULL, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    static uint8_t req[1 + DCTX_WIRE_MESSAGE_BYTES_MAX + 8];
    size_t n = strlen(text);
    assert_true(n < sizeof req);
    req[0] = DCTX_ABORTED;
    memcpy(req + 1, text, n);
    dctx_rpc_result res;
    int rc = dctx_rpc_call_raw(ch, NULL, "/it.Status/Code", req, 1 + n, &res);
    size_t len = strlen(res.message);
    snprintf(got, DCTX_WIRE_MESSAGE_BYTES_MAX + 1, "%s", res.message);
    dctx_rpc_result_free(&res);
    assert_int_equal(rc, DCTX_ABORTED);
    return len;
}

static void status_message_of_exactly_the_limit_arrives_whole(void **state)
{
    (void)state;
    static char text[DCTX_WIRE_MESSAGE_BYTES_MAX + 1], got[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
    text_ending_in_a_3_byte_character(text, DCTX_WIRE_MESSAGE_BYTES_MAX);
    assert_int_equal(status_message_received(text, got), DCTX_WIRE_MESSAGE_BYTES_MAX);
    assert_string_equal(got, text);
}

static void status_message_one_byte_over_is_cut_before_the_character_it_splits(void **state)
{
    (void)state;
    static char text[DCTX_WIRE_MESSAGE_BYTES_MAX + 2], got[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
    text_ending_in_a_3_byte_character(text, DCTX_WIRE_MESSAGE_BYTES_MAX + 1);
    size_t n = status_message_received(text, got);
    /* the 3-byte character ends at byte 1025: all of it goes */
    assert_int_equal(n, DCTX_WIRE_MESSAGE_BYTES_MAX + 1 - 3);
    assert_memory_equal(got, text, n);
    assert_true(rt_utf8_valid(got, n));
}

/* The cause message the handler's context ends with when the caller
 * cancels with cause text (a 10 s wait otherwise); p holds what it saw. */
static void cancel_with_cause_text(rt_probe *p, const char *text)
{
    rt_probe_init(p, RT_PROBE_WAIT_CTX, SEC(10));
    char url[256];
    rt_serve(RT_TCP, NULL, "/it.Cancel/Wait", rt_probe_handler, p, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx *ctx = rt_with_cancel();
    static rt_outcome o;
    dctx_rpc_handle *h = rt_start(ch, ctx, "/it.Cancel/Wait", NULL, 0, &o);
    assert_true(WAIT_FOR(atomic_load(&p->started), SEC(5)));
    dctx_cancel_cause(ctx, DCTX_ABORTED, text);
    rt_finish(h, SEC(5));
    rt_handle_release(h);
    rt_ctx_release(ctx);
    assert_true(WAIT_FOR(atomic_load(&p->finished), SEC(5)));
    assert_int_equal(p->err, DCTX_CANCELED);
    assert_int_equal(p->cause, DCTX_ABORTED);
    assert_true(p->has_cause_msg);
}

static void cancel_cause_of_exactly_the_limit_reaches_the_handler_whole(void **state)
{
    (void)state;
    static rt_probe p;
    static char text[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
    text_ending_in_a_3_byte_character(text, DCTX_WIRE_MESSAGE_BYTES_MAX);
    cancel_with_cause_text(&p, text);
    assert_int_equal(p.cause_msg_len, DCTX_WIRE_MESSAGE_BYTES_MAX);
    assert_string_equal(p.cause_msg, text);
}

static void cancel_cause_one_byte_over_is_cut_before_the_character_it_splits(void **state)
{
    (void)state;
    static rt_probe p;
    static char text[DCTX_WIRE_MESSAGE_BYTES_MAX + 2];
    text_ending_in_a_3_byte_character(text, DCTX_WIRE_MESSAGE_BYTES_MAX + 1);
    cancel_with_cause_text(&p, text);
    size_t n = p.cause_msg_len;
    assert_int_equal(n, DCTX_WIRE_MESSAGE_BYTES_MAX + 1 - 3);
    assert_memory_equal(p.cause_msg, text, n);
    assert_true(rt_utf8_valid(p.cause_msg, n));
}

/* A size refusal's message names the frame's size on the wire (its
 * payload and a little framing, so at least payload bytes) and the
 * peer's frame limit it is over (the payload limit and room for the
 * frame's other fields). */
static void assert_frame_over_limit(const char *msg, size_t payload, size_t limit)
{
    const char *of = strstr(msg, " of ");
    const char *limit_of = strstr(msg, "limit of ");
    assert_non_null(of);
    assert_non_null(limit_of);
    unsigned long long size = strtoull(of + 4, NULL, 10);
    unsigned long long said = strtoull(limit_of + 9, NULL, 10);
    assert_true(said >= limit && said < limit + 64 * 1024);
    assert_true(size > said);
    assert_true(size >= payload && size < payload + 1024);
}
/* A request over the server's frame limit (its hello says it: the
 * payload limit plus room for the frame's own fields) fails alone, before
 * it is sent, with RESOURCE_EXHAUSTED naming the limit; the call held on
 * the same connection goes on, and a request of exactly the payload limit
 * is served. */
static void request_over_the_servers_limit_fails_alone_before_sending(void **state)
{
    (void)state;
    static rt_probe probes[2];
    rt_probe_init(&probes[0], RT_PROBE_HOLD, SEC(10));
    rt_probe_init(&probes[1], RT_PROBE_RETURN, 0);
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_IPC, NULL, "/it.Size/Probe", rt_probes_handler, probes, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);

    static rt_outcome held;
    uint8_t zero = 0;
    dctx_rpc_handle *h = rt_start(ch, NULL, "/it.Size/Probe", &zero, 1, &held);
    assert_true(WAIT_FOR(atomic_load(&probes[0].started), SEC(5)));

    size_t limit = DCTX_RPC_DEFAULT_RECV_MAX_BYTES;
    size_t over = limit + 64 * 1024;
    uint8_t *big = malloc(over);
    assert_non_null(big);
    memset(big, 1, over);
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Size/Probe", big, over, &res),
                     DCTX_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(res.message, "over the server's limit"));
    assert_frame_over_limit(res.message, over, limit);
    dctx_rpc_result_free(&res);
    assert_int_equal(rt_server_stats(srv).calls, 1); /* never sent */

    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Size/Probe", big, limit, NULL), DCTX_OK);
    assert_int_equal(atomic_load(&probes[1].runs), 1);
    free(big);

    atomic_store(&probes[0].release, 1);
    rt_finish(h, SEC(5));
    assert_int_equal(held.code, DCTX_OK); /* its connection was never reset */
    assert_int_equal(rt_server_stats(srv).connections_accepted, 1);
    assert_int_equal(rt_channel_stats(ch).by_code[DCTX_UNAVAILABLE], 0);
    rt_handle_release(h);
}

/* A reply over the caller's limit is not sent: the caller gets
 * RESOURCE_EXHAUSTED naming it, and the connection goes on. */
static void reply_over_the_callers_limit_is_resource_exhausted(void **state)
{
    (void)state;
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_TCP, NULL, "/it.Echo/Echo", rt_echo_handler, NULL, url);
    dctx_rpc_channel_options co;
    dctx_rpc_channel_options_init(&co);
    co.recv_max_bytes = 64 * 1024;
    dctx_rpc_channel *ch = rt_channel_open(url, &co);
    size_t n = 256 * 1024;
    uint8_t *req = malloc(n);
    assert_non_null(req);
    memset(req, 'r', n);
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Echo/Echo", req, n, &res),
                     DCTX_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(res.message, "over the caller's limit"));
    assert_frame_over_limit(res.message, n, 64 * 1024);
    dctx_rpc_result_free(&res);
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Echo/Echo", req, 1000, &res), DCTX_OK);
    assert_int_equal(res.payload_len, 1000);
    dctx_rpc_result_free(&res);
    assert_int_equal(rt_server_stats(srv).connections_accepted, 1);
    free(req);
}

int main(int argc, char **argv)
{
    rt_init("rpc_limits", RT_PORTS_LIMITS);
    int child = rt_child_main(argc, argv);
    if (child >= 0)
        return child;
    const struct CMUnitTest tests[] = {
        RT_TEST(values_over_the_limits_are_refused_before_sending),
        RT_TEST(request_over_the_servers_limit_fails_alone_before_sending),
        RT_TEST(reply_over_the_callers_limit_is_resource_exhausted),
        RT_TEST(long_status_message_is_cut_to_valid_utf8),
        RT_TEST(long_cancel_cause_is_cut_to_valid_utf8_at_the_handler),
        RT_TEST(status_message_of_exactly_the_limit_arrives_whole),
        RT_TEST(status_message_one_byte_over_is_cut_before_the_character_it_splits),
        RT_TEST(cancel_cause_of_exactly_the_limit_reaches_the_handler_whole),
        RT_TEST(cancel_cause_one_byte_over_is_cut_before_the_character_it_splits),
    };
    return cmocka_run_group_tests_name("rpc_limits", tests, rt_group_setup, NULL);
}
