/*
 * test_grpc_edge.c - the rules of the gRPC edge that need no peer
 * (lib/grpc/edge.c, health.c): the unit gRPC rounds a timeout up to (3
 * significant digits of milliseconds), a deadline's conversion to a
 * budget and back, which values may go as metadata, and the health
 * service's messages (HealthCheckRequest in, HealthCheckResponse out).
 */
#include <grpc/grpc.h>
#include <grpc/support/time.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>
#include <dctx/grpc.h>

#include "edge.h"
#include "health.h"

#define MS 1000000LL

static void timeout_unit_follows_three_digits(void **state)
{
    (void)state;
    assert_int_equal(dctx__grpc_timeout_unit_ns(0), MS);
    assert_int_equal(dctx__grpc_timeout_unit_ns(200 * MS), MS);
    assert_int_equal(dctx__grpc_timeout_unit_ns(999 * MS), MS);
    assert_int_equal(dctx__grpc_timeout_unit_ns(1000 * MS), 10 * MS);
    assert_int_equal(dctx__grpc_timeout_unit_ns(9999 * MS), 10 * MS);
    assert_int_equal(dctx__grpc_timeout_unit_ns(12345 * MS), 100 * MS);
    assert_int_equal(dctx__grpc_timeout_unit_ns(3600000 * MS), 10000 * MS);
    assert_true(dctx__grpc_timeout_unit_ns(INT64_MAX) > 0);
}

static void deadline_converts_both_ways(void **state)
{
    (void)state;
    assert_int_equal(dctx__grpc_budget_ns(gpr_inf_future(GPR_CLOCK_MONOTONIC)), -1);
    assert_int_equal(dctx__grpc_budget_ns(gpr_inf_future(GPR_CLOCK_REALTIME)), -1);
    assert_int_equal(dctx__grpc_budget_ns(gpr_inf_past(GPR_CLOCK_MONOTONIC)), 0);
    int64_t left = dctx__grpc_budget_ns(dctx__grpc_deadline(500 * MS));
    assert_true(left > 490 * MS && left <= 500 * MS);
    /* A realtime deadline, as a peer's may be, is converted. */
    gpr_timespec rt =
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(300, GPR_TIMESPAN));
    left = dctx__grpc_budget_ns(rt);
    assert_true(left > 290 * MS && left <= 301 * MS);
    assert_int_equal(gpr_time_cmp(dctx__grpc_deadline(-1), gpr_inf_future(GPR_CLOCK_MONOTONIC)), 0);
}

static void only_legal_metadata_is_sent(void **state)
{
    (void)state;
    assert_true(dctx__grpc_key_sendable("baggage", "a=b", 3));
    assert_true(dctx__grpc_key_sendable("x-empty", "", 0));
    assert_true(dctx__grpc_key_sendable("x-blob-bin", "\x00\xff", 2));
    assert_false(dctx__grpc_key_sendable("x-text", "a\x00b", 3)); /* bytes need -bin */
    assert_false(dctx__grpc_key_sendable("x-text", "a\nb", 3));
    assert_false(dctx__grpc_key_sendable("X-Upper", "v", 1));
    assert_false(dctx__grpc_key_sendable("grpc-timeout", "1S", 2));
    assert_false(dctx__grpc_key_sendable(":path", "/x", 2));
    assert_false(dctx__grpc_key_sendable("", "v", 1));
    assert_true(dctx__grpc_key_is_bin("a-bin", 5));
    assert_false(dctx__grpc_key_is_bin("bin", 3));
}

static void forward_keys_are_checked(void **state)
{
    (void)state;
    assert_true(dctx_grpc_forward_key_valid("x-custom"));
    assert_true(dctx_grpc_forward_key_valid("a.b_c-d-bin"));
    assert_false(dctx_grpc_forward_key_valid("X-Custom"));
    assert_false(dctx_grpc_forward_key_valid("grpc-status"));
    assert_false(dctx_grpc_forward_key_valid(""));
    assert_false(dctx_grpc_forward_key_valid("a b"));
    assert_false(dctx_grpc_forward_key_valid(NULL));
}

static int check(const char *req, size_t len, bool serving, unsigned char *out, size_t *out_len,
                 const char **message)
{
    return dctx__health_check((const unsigned char *)req, len, serving, out, out_len, message);
}

static void health_answers_its_own_service(void **state)
{
    (void)state;
    unsigned char out[3];
    size_t n = 0;
    const char *message = NULL;
    assert_int_equal(check("", 0, true, out, &n, &message), DCTX_OK);
    assert_int_equal(n, 2);
    assert_memory_equal(out, "\x08\x01", 2);
    assert_int_equal(check("", 0, false, out, &n, &message), DCTX_OK);
    assert_memory_equal(out, "\x08\x02", 2);
    /* service "" given explicitly */
    assert_int_equal(check("\x0a\x00", 2, true, out, &n, &message), DCTX_OK);
    assert_int_equal(check("\x0a\x03"
                           "foo",
                           5, true, out, &n, &message),
                     DCTX_NOT_FOUND);
    assert_non_null(strstr(message, "unknown service"));
}

static void health_refuses_what_does_not_parse(void **state)
{
    (void)state;
    unsigned char out[3];
    size_t n = 0;
    const char *message = NULL;
    /* A length past the end, a short one, another field, a varint that
     * never ends, a lone tag. */
    assert_int_equal(check("\x0a\x05"
                           "ab",
                           4, true, out, &n, &message),
                     DCTX_INVALID_ARGUMENT);
    assert_int_equal(check("\x0a\x01"
                           "ab",
                           4, true, out, &n, &message),
                     DCTX_INVALID_ARGUMENT);
    assert_int_equal(check("\x10\x01", 2, true, out, &n, &message), DCTX_INVALID_ARGUMENT);
    assert_int_equal(check("\x0a\xff\xff\xff\xff\xff\xff", 7, true, out, &n, &message),
                     DCTX_INVALID_ARGUMENT);
    assert_int_equal(check("\x0a", 1, true, out, &n, &message), DCTX_INVALID_ARGUMENT);
    assert_non_null(message);
}

int main(void)
{
    grpc_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(timeout_unit_follows_three_digits),
        cmocka_unit_test(deadline_converts_both_ways),
        cmocka_unit_test(only_legal_metadata_is_sent),
        cmocka_unit_test(forward_keys_are_checked),
        cmocka_unit_test(health_answers_its_own_service),
        cmocka_unit_test(health_refuses_what_does_not_parse),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    grpc_shutdown();
    return failed;
}
