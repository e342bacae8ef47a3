/*
 * test_tls.c - calls over tls+tcp://: a server with a certificate, a
 * client that trusts it (the call succeeds, and carries its context), and
 * a client that does not (it never connects: UNAVAILABLE).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/rpc.h>

#include "testutil.h"

#ifndef TLS_DIR
#error "TLS_DIR must name tests/tls"
#endif

static const dctx_key tenant = {"tenant", DCTX_KEY_PROPAGATE};

static int echo_tenant(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)req;
    (void)len;
    size_t n = 0;
    const char *t = dctx_value(ctx, &tenant, &n);
    int64_t d;
    if (!dctx_deadline(ctx, &d))
        return DCTX_FAILED_PRECONDITION; /* the deadline must travel too */
    return dctx_rpc_reply_set_payload(reply, t ? t : "", t ? n : 0);
}

static char url[64];
static dctx_rpc_server *srv;

static int start_server(void **state)
{
    (void)state;
    assert_int_equal(dctx_wire_register_key(&tenant), 0);
    dctx_rpc_server_options o;
    dctx_rpc_server_options_init(&o);
    o.tls_cert_key_file = TLS_DIR "/cert_key.pem";
    assert_int_equal(dctx_rpc_server_open(&o, &srv), 0);
    assert_int_equal(dctx_rpc_server_register(srv, "/t.T/Echo", echo_tenant, NULL), 0);
    /* a free port: try a few from a random start */
    srand((unsigned)dctx_now());
    int rc = -1;
    for (int i = 0; i < 50 && rc != 0; i++) {
        snprintf(url, sizeof url, "tls+tcp://127.0.0.1:%d", 20000 + rand() % 20000);
        rc = dctx_rpc_server_listen(srv, url);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(dctx_rpc_server_start(srv), 0);
    return 0;
}

static int stop_server(void **state)
{
    (void)state;
    return dctx_rpc_server_close(srv);
}

static void trusted_server_answers_over_tls(void **state)
{
    (void)state;
    dctx_rpc_channel_options o;
    dctx_rpc_channel_options_init(&o);
    o.tls_ca_file = TLS_DIR "/cert.pem";
    o.tls_server_name = "localhost";
    o.connect_wait_ns = SEC(5);
    dctx_rpc_channel *ch = NULL;
    assert_int_equal(dctx_rpc_channel_open(url, &o, &ch), 0);
    dctx *ctx = NULL, *v = NULL;
    assert_int_equal(dctx_with_timeout(dctx_background(), SEC(10), &ctx), 0);
    assert_int_equal(dctx_with_value(ctx, &tenant, "acme", 4, &v), 0);
    dctx_rpc_result res;
    int rc = dctx_rpc_call_raw(ch, v, "/t.T/Echo", "x", 1, &res);
    if (rc != DCTX_OK)
        fail_msg("call over TLS: %s: %s", dctx_code_name(rc), res.message);
    assert_int_equal(res.payload_len, 4);
    assert_memory_equal(res.payload, "acme", 4);
    dctx_rpc_result_free(&res);
    dctx_release(v);
    dctx_release(ctx);
    dctx_rpc_channel_close(ch);
}

static void untrusted_server_is_never_reached(void **state)
{
    (void)state;
    dctx_rpc_channel_options o;
    dctx_rpc_channel_options_init(&o);
    o.connect_wait_ns = MS(500);
    o.tls_server_name = "localhost"; /* no CA: the certificate cannot verify */
    dctx_rpc_channel *ch = NULL;
    assert_int_equal(dctx_rpc_channel_open(url, &o, &ch), 0);
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_timeout(dctx_background(), SEC(10), &ctx), 0);
    assert_int_equal(dctx_rpc_call_raw(ch, ctx, "/t.T/Echo", "x", 1, NULL), DCTX_UNAVAILABLE);
    dctx_release(ctx);
    dctx_rpc_channel_close(ch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trusted_server_answers_over_tls),
        cmocka_unit_test(untrusted_server_is_never_reached),
    };
    return cmocka_run_group_tests_name("tls", tests, start_server, stop_server);
}
