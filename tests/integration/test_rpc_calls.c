/*
 * test_rpc_calls.c - calls that complete, over real nng sockets: payloads
 * echoed intact over inproc, ipc and tcp; every status code and a UTF-8
 * status message; an unknown method; the first call to a server that came
 * up after its channel; and protobuf-c calls and services (rpc_pb.h),
 * with dctx_rpc_call's result filled when memory runs out or the request
 * is missing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/rpc_pb.h>

#include "alloc.h"
#include "echo.pb-c.h"
#include "rpc_testutil.h"

/* gRPC's special_status_message (test/core/end2end/tests/...):
 * whitespace, CR/LF, U+263A and U+1F608. */
static const char special_message[] =
    "\t\ntest with whitespace\r\nand Unicode BMP \xe2\x98\xba and non-BMP \xf0\x9f\x98\x88\t\n";

/* 0, 5 and 100 KiB payloads, ten times each, come back as sent. */
static void round_trip(enum rt_transport t)
{
    char url[256];
    dctx_rpc_server *srv = rt_serve(t, NULL, "/it.Echo/Echo", rt_echo_handler, NULL, url);
    assert_non_null(strstr(url, rt_transport_name(t)));
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    size_t sizes[] = {0, 5, 100 * 1024};
    uint8_t *buf = malloc(100 * 1024);
    assert_non_null(buf);
    for (size_t i = 0; i < 100 * 1024; i++)
        buf[i] = (uint8_t)(i * 31 + 7);
    for (int rep = 0; rep < 10; rep++)
        for (size_t k = 0; k < 3; k++) {
            dctx_rpc_result res;
            dctx *ctx = rt_with_timeout(SEC(10));
            assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/it.Echo/Echo", buf, sizes[k], &res),
                             DCTX_OK);
            assert_int_equal(res.payload_len, sizes[k]);
            if (sizes[k] > 0)
                assert_memory_equal(res.payload, buf, sizes[k]);
            assert_string_equal(res.message, "");
            assert_int_equal(res.cancel_outcome, DCTX_RPC_CANCEL_NONE);
            dctx_rpc_result_free(&res);
            rt_ctx_release(ctx);
        }
    free(buf);
    assert_int_equal(rt_channel_stats(ch).by_code[DCTX_OK], 30);
    assert_int_equal(rt_server_stats(srv).by_code[DCTX_OK], 30);
}

static void payloads_up_to_100_kib_echo_intact_over_inproc(void **state)
{
    (void)state;
    round_trip(RT_INPROC);
}

static void payloads_up_to_100_kib_echo_intact_over_ipc(void **state)
{
    (void)state;
    round_trip(RT_IPC);
}

static void payloads_up_to_100_kib_echo_intact_over_tcp(void **state)
{
    (void)state;
    round_trip(RT_TCP);
}

static void unknown_method_is_unimplemented(void **state)
{
    (void)state;
    char url[256];
    rt_serve(RT_INPROC, NULL, "/it.Status/Code", rt_status_handler, NULL, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Nope/Missing", NULL, 0, &res),
                     DCTX_UNIMPLEMENTED);
    assert_contains(res.message, "/it.Nope/Missing");
    dctx_rpc_result_free(&res);
}

static void handler_code_and_utf8_message_arrive_intact(void **state)
{
    (void)state;
    char url[256];
    rt_serve(RT_TCP, NULL, "/it.Status/Code", rt_status_handler, NULL, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    uint8_t req[sizeof special_message];
    req[0] = DCTX_FAILED_PRECONDITION;
    memcpy(req + 1, special_message, sizeof special_message - 1);
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Status/Code", req, sizeof req, &res),
                     DCTX_FAILED_PRECONDITION);
    assert_string_equal(res.message, special_message);
    assert_int_equal(res.payload_len, 0);
    dctx_rpc_result_free(&res);

    /* every code arrives as itself; one out of range as UNKNOWN */
    for (int code = 0; code <= DCTX_CODE_MAX + 1; code++) {
        uint8_t c = code <= DCTX_CODE_MAX ? (uint8_t)code : 0xff;
        int want = code <= DCTX_CODE_MAX ? code : DCTX_UNKNOWN;
        assert_int_equal(dctx_rpc_call_raw(ch, NULL, "/it.Status/Code", &c, 1, &res), want);
        assert_int_equal(res.payload_len, code == DCTX_OK ? 17 : 0);
        dctx_rpc_result_free(&res);
    }
}

/* The channel was opened a while before its server came up: nng's dialer
 * has backed off meanwhile, yet the first call, waiting the default
 * connect_wait (200 ms), reaches the server. */
static void first_call_to_a_server_that_came_up_late_gets_through(void **state)
{
    (void)state;
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_RETURN, 0);
    char url[256];
    rt_url(RT_IPC, url, sizeof url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL); /* nothing listens yet */
    rt_sleep(MS(1500));                                /* the back-off grows to its maximum */
    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(NULL, &srv), 0);
    rt_track_server(srv);
    assert_int_equal(dctx_rpc_server_register(srv, "/it.Late/Probe", rt_probe_handler, &p), 0);
    assert_int_equal(dctx_rpc_server_listen(srv, url), 0);
    assert_int_equal(dctx_rpc_server_start(srv), 0);
    dctx_rpc_result res;
    int rc = dctx_rpc_call_raw(ch, NULL, "/it.Late/Probe", NULL, 0, &res);
    if (rc != DCTX_OK)
        fail_msg("the first call failed: %s: %s", dctx_code_name(rc), res.message);
    dctx_rpc_result_free(&res);
    assert_int_equal(atomic_load(&p.runs), 1);
}

/* A started server with the Echo service on a fresh address of t, and a
 * channel to it. */
static dctx_rpc_channel *echo_service_channel(enum rt_transport t)
{
    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(NULL, &srv), 0);
    rt_track_server(srv);
    assert_int_equal(dctx_rpc_server_register_service(srv, rt_echo_service()), 0);
    char url[256];
    rt_server_listen(srv, t, url, sizeof url);
    assert_int_equal(dctx_rpc_server_start(srv), 0);
    return rt_channel_open(url, NULL);
}

static void protobuf_service_reads_its_context_and_fails_with_a_status(void **state)
{
    (void)state;
    dctx_rpc_channel *ch = echo_service_channel(RT_IPC);
    assert_null(dctx_rpc_service_context()); /* not inside a call here */

    dctx *ctx = rt_with_value(rt_with_timeout(SEC(5)), &rt_key_tenant, "acme");
    Dctx__Itest__EchoRequest req = DCTX__ITEST__ECHO_REQUEST__INIT;
    req.text = (char *)"hello";
    Dctx__Itest__EchoReply *resp = NULL;
    dctx_rpc_result res;
    assert_int_equal(dctx_rpc_call(ch, ctx, "/dctx.itest.Echo/Echo", &req.base,
                                   &dctx__itest__echo_reply__descriptor, (ProtobufCMessage **)&resp,
                                   &res),
                     DCTX_OK);
    assert_non_null(resp);
    assert_string_equal(resp->text, "hello");
    assert_true(resp->saw_context);
    assert_true(resp->saw_deadline);
    assert_true(resp->budget_us > 0 && resp->budget_us <= 5000000);
    assert_non_null(resp->tenant);
    assert_string_equal(resp->tenant, "acme");
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    dctx_rpc_result_free(&res);

    req.has_fail_code = 1;
    req.fail_code = DCTX_PERMISSION_DENIED;
    req.fail_message = (char *)"not for you";
    resp = NULL;
    assert_int_equal(dctx_rpc_call(ch, ctx, "/dctx.itest.Echo/Fail", &req.base,
                                   &dctx__itest__echo_reply__descriptor, (ProtobufCMessage **)&resp,
                                   &res),
                     DCTX_PERMISSION_DENIED);
    assert_null(resp);
    assert_string_equal(res.message, "not for you");
    dctx_rpc_result_free(&res);

    /* bytes that are not an EchoRequest */
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/dctx.itest.Echo/Echo", "\xff\xff\xff", 3, &res),
                     DCTX_INVALID_ARGUMENT);
    assert_contains(res.message, "EchoRequest");
    dctx_rpc_result_free(&res);
    rt_ctx_release(ctx);
}

/* Every byte of res set, as a caller's uninitialized result would be. */
static void poison(dctx_rpc_result *res)
{
    memset(res, 0xA5, sizeof *res);
}

/* res is a whole result: code as returned, a message to read, no
 * payload; freeing it is safe (AddressSanitizer checks that part). */
static void assert_result_filled(dctx_rpc_result *res, int code)
{
    assert_int_equal(res->code, code);
    assert_non_null(res->message);
    assert_true(strlen(res->message) <= DCTX_WIRE_MESSAGE_BYTES_MAX);
    assert_int_equal(res->payload_len, 0);
    dctx_rpc_result_free(res);
    assert_int_equal(res->code, DCTX_OK);
    assert_string_equal(res->message, "");
}

static void pb_call_out_of_memory_is_resource_exhausted_with_its_result_filled(void **state)
{
    (void)state;
    dctx_rpc_channel *ch = echo_service_channel(RT_TCP);
    Dctx__Itest__EchoRequest req = DCTX__ITEST__ECHO_REQUEST__INIT;
    req.text = (char *)"hello";
    Dctx__Itest__EchoReply *resp = (Dctx__Itest__EchoReply *)&resp; /* not NULL */
    dctx_rpc_result res;
    poison(&res);
    /* from the first allocation on: packing the request fails */
    dctx__test_fail_alloc_after(0);
    int rc = dctx_rpc_call(ch, NULL, "/dctx.itest.Echo/Echo", &req.base,
                           &dctx__itest__echo_reply__descriptor, (ProtobufCMessage **)&resp, &res);
    dctx__test_fail_alloc_after(-1);
    assert_int_equal(rc, DCTX_RESOURCE_EXHAUSTED);
    assert_null(resp);
    assert_result_filled(&res, DCTX_RESOURCE_EXHAUSTED);

    /* and with memory back, the same call goes through */
    assert_int_equal(dctx_rpc_call(ch, NULL, "/dctx.itest.Echo/Echo", &req.base,
                                   &dctx__itest__echo_reply__descriptor, (ProtobufCMessage **)&resp,
                                   &res),
                     DCTX_OK);
    assert_non_null(resp);
    assert_string_equal(resp->text, "hello");
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    dctx_rpc_result_free(&res);
}

static void pb_call_without_a_request_is_invalid_argument_with_its_result_filled(void **state)
{
    (void)state;
    dctx_rpc_channel *ch = echo_service_channel(RT_INPROC);
    Dctx__Itest__EchoReply *resp = (Dctx__Itest__EchoReply *)&resp; /* not NULL */
    dctx_rpc_result res;
    poison(&res);
    assert_int_equal(dctx_rpc_call(ch, NULL, "/dctx.itest.Echo/Echo", NULL,
                                   &dctx__itest__echo_reply__descriptor, (ProtobufCMessage **)&resp,
                                   &res),
                     DCTX_INVALID_ARGUMENT);
    assert_null(resp);
    assert_result_filled(&res, DCTX_INVALID_ARGUMENT);
}

int main(int argc, char **argv)
{
    rt_init("rpc_calls", RT_PORTS_CALLS);
    int child = rt_child_main(argc, argv);
    if (child >= 0)
        return child;
    const struct CMUnitTest tests[] = {
        RT_TEST(payloads_up_to_100_kib_echo_intact_over_inproc),
        RT_TEST(payloads_up_to_100_kib_echo_intact_over_ipc),
        RT_TEST(payloads_up_to_100_kib_echo_intact_over_tcp),
        RT_TEST(unknown_method_is_unimplemented),
        RT_TEST(handler_code_and_utf8_message_arrive_intact),
        RT_TEST(first_call_to_a_server_that_came_up_late_gets_through),
        RT_TEST(protobuf_service_reads_its_context_and_fails_with_a_status),
        RT_TEST(pb_call_out_of_memory_is_resource_exhausted_with_its_result_filled),
        RT_TEST(pb_call_without_a_request_is_invalid_argument_with_its_result_filled),
    };
    return cmocka_run_group_tests_name("rpc_calls", tests, rt_group_setup, NULL);
}
