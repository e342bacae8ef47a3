/*
 * test_wire.c - a context on the wire: encode, pack with protobuf-c, unpack,
 * decode under a server root, and every limit on both sides. Ends with a
 * committed byte vector of a Call frame, so a change of the wire format
 * fails here first.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/trace.h>

#include "testutil.h"
#include "wire_impl.h"

static const dctx_key tenant = {"tenant", DCTX_KEY_PROPAGATE};
#define trace dctx_traceparent_key            /* the library's own key for this name */
static const dctx_key secret = {"secret", 0}; /* never leaves */
static const dctx_key unknown_here = {"x-upstream-only", DCTX_KEY_PROPAGATE};

static int setup(void **state)
{
    (void)state;
    /* the callee side knows tenant and traceparent, not x-upstream-only */
    assert_int_equal(dctx_wire_register_key(&tenant), 0);
    assert_int_equal(dctx_wire_register_key(&trace), 0);
    return 0;
}

static dctx *value(dctx *parent, const dctx_key *key, const char *s)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_value(parent, key, s, strlen(s), &c), 0);
    dctx_release(parent); /* the child holds it */
    return c;
}

static const char *header_value(const Dctx__Wire__ContextHeader *h, const char *key, size_t *len)
{
    for (size_t i = 0; i < h->n_values; i++)
        if (strcmp(h->values[i]->key, key) == 0) {
            *len = h->values[i]->value.len;
            return (const char *)h->values[i]->value.data;
        }
    return NULL;
}

/* Pack hdr into a Call frame and unpack it again, as the callee sees it. */
static Dctx__Wire__Frame *over_the_wire(Dctx__Wire__ContextHeader *hdr)
{
    Dctx__Wire__Call call = DCTX__WIRE__CALL__INIT;
    call.has_method = 1;
    call.method.data = (uint8_t *)"/t.T/M";
    call.method.len = strlen("/t.T/M");
    call.context = hdr;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &call;
    size_t n = dctx__wire__frame__get_packed_size(&f);
    uint8_t *buf = malloc(n);
    assert_int_equal(dctx__wire__frame__pack(&f, buf), n);
    Dctx__Wire__Frame *got = dctx__wire__frame__unpack(NULL, n, buf);
    free(buf);
    assert_non_null(got);
    assert_int_equal(got->body_case, DCTX__WIRE__FRAME__BODY_CALL);
    return got;
}

static void only_propagated_values_are_sent_nearest_first(void **state)
{
    (void)state;
    dctx *ctx = value(dctx_background(), &tenant, "far");
    ctx = value(ctx, &secret, "hunter2");
    ctx = value(ctx, &tenant, "near"); /* shadows "far" */
    ctx = value(ctx, &trace, "00-abc");
    struct dctx__wire_out out;
    char err[DCTX__WIRE_ERR_BYTES];
    assert_int_equal(dctx__wire_encode(ctx, NULL, dctx_now(), &out, err), 0);
    assert_int_equal(out.hdr.n_values, 2);
    /* the registry keeps the library's trace key name for it */
    static const dctx_key impostor = {"traceparent", DCTX_KEY_PROPAGATE};
    assert_int_equal(dctx_wire_register_key(&impostor), DCTX_ALREADY_EXISTS);
    size_t len = 0;
    const char *t = header_value(&out.hdr, "tenant", &len);
    assert_non_null(t);
    assert_int_equal(len, 4);
    assert_memory_equal(t, "near", 4);
    assert_null(header_value(&out.hdr, "secret", &len));
    assert_false(out.hdr.has_budget_us); /* no deadline, no budget */
    assert_true(out.hdr.has_cancel_token);
    assert_int_equal(out.hdr.cancel_token.len, DCTX_TOKEN_BYTES);
    assert_int_equal(out.hdr.hops, 0);
    /* a fresh token every time */
    struct dctx__wire_out again;
    assert_int_equal(dctx__wire_encode(ctx, NULL, dctx_now(), &again, err), 0);
    assert_memory_not_equal(out.token, again.token, DCTX_TOKEN_BYTES);
    dctx_release(ctx);
}

static void budget_is_the_time_left_minus_the_reserve(void **state)
{
    (void)state;
    dctx *ctx = NULL;
    int64_t now = dctx_now();
    assert_int_equal(dctx_with_deadline(dctx_background(), now + MS(100), &ctx), 0);
    struct dctx__wire_out out;
    char err[DCTX__WIRE_ERR_BYTES];
    assert_int_equal(dctx__wire_encode(ctx, NULL, now, &out, err), 0);
    assert_true(out.hdr.has_budget_us);
    assert_int_equal(out.hdr.budget_us, 100000);

    dctx_wire_policy reserve = {.reserve_ns = MS(10)};
    assert_int_equal(dctx__wire_encode(ctx, &reserve, now + MS(50), &out, err), 0);
    assert_int_equal(out.hdr.budget_us, 40000);

    /* under the minimum: not sent, and the message says why */
    dctx_wire_policy minimum = {.reserve_ns = MS(10), .min_budget_ns = MS(45)};
    assert_int_equal(dctx__wire_encode(ctx, &minimum, now + MS(50), &out, err),
                     DCTX_DEADLINE_EXCEEDED);
    assert_non_null(strstr(err, "minimum"));
    /* expired: never a zero budget on the wire */
    assert_int_equal(dctx__wire_encode(ctx, NULL, now + MS(100), &out, err),
                     DCTX_DEADLINE_EXCEEDED);
    assert_int_equal(dctx__wire_encode(ctx, NULL, now + MS(100) - 999, &out, err),
                     DCTX_DEADLINE_EXCEEDED);
    dctx_release(ctx);
}

static void policy_filters_values_per_destination(void **state)
{
    (void)state;
    dctx *ctx = value(dctx_background(), &tenant, "acme");
    ctx = value(ctx, &trace, "00-abc");
    struct dctx__wire_out out;
    char err[DCTX__WIRE_ERR_BYTES];
    dctx_wire_policy none = {.send = DCTX_WIRE_SEND_NONE};
    assert_int_equal(dctx__wire_encode(ctx, &none, dctx_now(), &out, err), 0);
    assert_int_equal(out.hdr.n_values, 0);
    const char *only_trace[] = {"traceparent", "tracestate"};
    dctx_wire_policy listed = {.send = DCTX_WIRE_SEND_LISTED, .listed = only_trace, .n_listed = 2};
    assert_int_equal(dctx__wire_encode(ctx, &listed, dctx_now(), &out, err), 0);
    assert_int_equal(out.hdr.n_values, 1);
    assert_string_equal(out.hdr.values[0]->key, "traceparent");
    dctx_release(ctx);
}

static void sender_refuses_values_over_the_limits(void **state)
{
    (void)state;
    static dctx_key keys[DCTX_WIRE_VALUES_MAX + 1];
    static char names[DCTX_WIRE_VALUES_MAX + 1][16];
    dctx *ctx = dctx_background();
    for (int i = 0; i <= DCTX_WIRE_VALUES_MAX; i++) {
        snprintf(names[i], sizeof names[i], "k%d", i);
        keys[i] = (dctx_key){names[i], DCTX_KEY_PROPAGATE};
        ctx = value(ctx, &keys[i], "v");
    }
    struct dctx__wire_out out;
    char err[DCTX__WIRE_ERR_BYTES];
    assert_int_equal(dctx__wire_encode(ctx, NULL, dctx_now(), &out, err), DCTX_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err, "64"));
    dctx_release(ctx);

    static char big[DCTX_WIRE_VALUE_BYTES_MAX];
    memset(big, 'b', sizeof big);
    dctx *b = NULL;
    assert_int_equal(dctx_with_value(dctx_background(), &tenant, big, sizeof big, &b), 0);
    assert_int_equal(dctx__wire_encode(b, NULL, dctx_now(), &out, err), DCTX_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err, "8192"));
    assert_non_null(strstr(err, "tenant"));
    dctx_release(b);

    static const dctx_key spaced = {"has space", DCTX_KEY_PROPAGATE};
    dctx *s = value(dctx_background(), &spaced, "v");
    assert_int_equal(dctx__wire_encode(s, NULL, dctx_now(), &out, err), DCTX_INVALID_ARGUMENT);
    assert_non_null(strstr(err, "has space"));
    dctx_release(s);
}

static void callee_rebuilds_deadline_values_and_hops(void **state)
{
    (void)state;
    dctx *edge = NULL;
    assert_int_equal(dctx_with_timeout(dctx_background(), MS(100), &edge), 0);
    dctx *ctx = value(dctx_retain(edge), &tenant, "acme");
    ctx = value(ctx, &unknown_here, "opaque\x01bytes");
    ctx = value(ctx, &secret, "hunter2");
    int64_t sent_at = dctx_now();
    struct dctx__wire_out out;
    char err[DCTX__WIRE_ERR_BYTES];
    assert_int_equal(dctx__wire_encode(ctx, NULL, sent_at, &out, err), 0);
    Dctx__Wire__Frame *f = over_the_wire(&out.hdr);

    dctx *root = NULL;
    assert_int_equal(dctx_with_cancel(dctx_background(), &root), 0);
    dctx *hop = NULL;
    int64_t now = dctx_now();
    assert_int_equal(dctx__wire_decode(root, f->call->context, now, 0, 0, &hop, err, NULL), 0);
    dctx__wire__frame__free_unpacked(f, NULL);

    /* the deadline is now + budget: never later than the caller's */
    int64_t d_edge = 0, d_hop = 0;
    assert_true(dctx_deadline(edge, &d_edge));
    assert_true(dctx_deadline(hop, &d_hop));
    assert_true(d_hop <= now + MS(100));
    assert_true(d_hop - now <= d_edge - sent_at);
    /* a registered key comes back as itself; the secret stayed home */
    size_t len = 0;
    const char *t = dctx_value(hop, &tenant, &len);
    assert_non_null(t);
    assert_memory_equal(t, "acme", len);
    assert_null(dctx_value(hop, &secret, NULL));
    assert_null(dctx_value(hop, &unknown_here, NULL)); /* not registered here... */
    assert_int_equal(dctx__wire_hops(hop), 1);

    /* ...but passes through to the next hop, with the hop count */
    struct dctx__wire_out next;
    assert_int_equal(dctx__wire_encode(hop, NULL, dctx_now(), &next, err), 0);
    assert_int_equal(next.hdr.hops, 1);
    assert_true(next.hdr.budget_us <= out.hdr.budget_us);
    const char *p = header_value(&next.hdr, "x-upstream-only", &len);
    assert_non_null(p);
    assert_int_equal(len, strlen("opaque\x01bytes"));
    assert_memory_equal(p, "opaque\x01bytes", len);
    assert_non_null(header_value(&next.hdr, "tenant", &len));

    /* canceling the server root reaches the call */
    dctx_cancel_cause(root, DCTX_UNAVAILABLE, "shutting down");
    assert_int_equal(dctx_err(hop), DCTX_CANCELED);
    assert_int_equal(dctx_cause(hop, NULL), DCTX_UNAVAILABLE);
    dctx_release(hop);
    dctx_release(root);
    dctx_release(ctx);
    dctx_release(edge);
}

static void callee_caps_the_budget(void **state)
{
    (void)state;
    Dctx__Wire__ContextHeader h = DCTX__WIRE__CONTEXT_HEADER__INIT;
    uint8_t token[DCTX_TOKEN_BYTES] = {1};
    h.has_cancel_token = 1;
    h.cancel_token.data = token;
    h.cancel_token.len = sizeof token;
    char err[DCTX__WIRE_ERR_BYTES];
    dctx *hop = NULL;
    int64_t now = dctx_now();
    h.has_budget_us = 1;
    h.budget_us = UINT64_MAX; /* absurd budgets do not overflow */
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, now, MS(250), 0, &hop, err, NULL), 0);
    int64_t d = 0;
    assert_true(dctx_deadline(hop, &d));
    assert_int_equal(d, now + MS(250));
    dctx_release(hop);
    /* no cap and no budget: no deadline */
    h.has_budget_us = 0;
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, now, 0, 0, &hop, err, NULL), 0);
    assert_false(dctx_deadline(hop, NULL));
    dctx_release(hop);
    /* a cap bounds a call without a deadline too */
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, now, SEC(1), 0, &hop, err, NULL), 0);
    assert_true(dctx_deadline(hop, &d));
    assert_int_equal(d, now + SEC(1));
    dctx_release(hop);
}

static void callee_refuses_malformed_headers(void **state)
{
    (void)state;
    uint8_t token[DCTX_TOKEN_BYTES + 1] = {7};
    Dctx__Wire__Value v[DCTX_WIRE_VALUES_MAX + 1];
    Dctx__Wire__Value *vp[DCTX_WIRE_VALUES_MAX + 1];
    static uint8_t big[DCTX_WIRE_VALUE_BYTES_MAX];
    char names[DCTX_WIRE_VALUES_MAX + 1][8];
    for (int i = 0; i <= DCTX_WIRE_VALUES_MAX; i++) {
        dctx__wire__value__init(&v[i]);
        snprintf(names[i], sizeof names[i], "n%d", i);
        v[i].key = names[i];
        vp[i] = &v[i];
    }
    char err[DCTX__WIRE_ERR_BYTES];
    dctx *hop = (dctx *)&hop;
    Dctx__Wire__ContextHeader h = DCTX__WIRE__CONTEXT_HEADER__INIT;

    /* no token, short token, long token */
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, 0, 0, 0, &hop, err, NULL),
                     DCTX_INVALID_ARGUMENT);
    assert_null(hop);
    assert_non_null(strstr(err, "token"));
    h.has_cancel_token = 1;
    h.cancel_token.data = token;
    h.cancel_token.len = DCTX_TOKEN_BYTES - 1;
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, 0, 0, 0, &hop, err, NULL),
                     DCTX_INVALID_ARGUMENT);
    h.cancel_token.len = DCTX_TOKEN_BYTES + 1;
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, 0, 0, 0, &hop, err, NULL),
                     DCTX_INVALID_ARGUMENT);
    h.cancel_token.len = DCTX_TOKEN_BYTES;

    /* a zero budget, too many hops */
    h.has_budget_us = 1;
    h.budget_us = 0;
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, 0, 0, 0, &hop, err, NULL),
                     DCTX_DEADLINE_EXCEEDED);
    h.has_budget_us = 0;
    h.has_hops = 1;
    h.hops = DCTX_WIRE_HOPS_MAX;
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, 0, 0, 0, &hop, err, NULL),
                     DCTX_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err, "hops"));
    h.hops = 3;

    /* too many values, too many bytes, bad names */
    h.values = vp;
    h.n_values = DCTX_WIRE_VALUES_MAX + 1;
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, 0, 0, 0, &hop, err, NULL),
                     DCTX_RESOURCE_EXHAUSTED);
    h.n_values = 1;
    v[0].has_value = 1;
    v[0].value.data = big;
    v[0].value.len = sizeof big;
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, 0, 0, 0, &hop, err, NULL),
                     DCTX_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err, "8192"));
    v[0].value.len = 1;
    const char *bad_names[] = {"", "has space", "tab\there", "\x7f", NULL};
    for (int i = 0; bad_names[i]; i++) {
        v[0].key = (char *)bad_names[i];
        assert_int_equal(dctx__wire_decode(dctx_background(), &h, 0, 0, 0, &hop, err, NULL),
                         DCTX_INVALID_ARGUMENT);
    }
    char long_name[DCTX_WIRE_KEY_BYTES_MAX + 2];
    memset(long_name, 'k', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    v[0].key = long_name;
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, 0, 0, 0, &hop, err, NULL),
                     DCTX_INVALID_ARGUMENT);
    long_name[DCTX_WIRE_KEY_BYTES_MAX] = '\0'; /* exactly the limit is fine */
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, 0, 0, 0, &hop, err, NULL), 0);
    dctx_release(hop);
}

static void repeated_names_keep_the_first(void **state)
{
    (void)state;
    uint8_t token[DCTX_TOKEN_BYTES] = {9};
    Dctx__Wire__Value a = DCTX__WIRE__VALUE__INIT, b = DCTX__WIRE__VALUE__INIT;
    a.key = (char *)"tenant";
    a.has_value = 1;
    a.value.data = (uint8_t *)"first";
    a.value.len = 5;
    b.key = (char *)"tenant";
    b.has_value = 1;
    b.value.data = (uint8_t *)"second";
    b.value.len = 6;
    Dctx__Wire__Value *vp[] = {&a, &b};
    Dctx__Wire__ContextHeader h = DCTX__WIRE__CONTEXT_HEADER__INIT;
    h.has_cancel_token = 1;
    h.cancel_token.data = token;
    h.cancel_token.len = sizeof token;
    h.values = vp;
    h.n_values = 2;
    char err[DCTX__WIRE_ERR_BYTES];
    dctx *hop = NULL;
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, 0, 0, 0, &hop, err, NULL), 0);
    size_t len = 0;
    const char *t = dctx_value(hop, &tenant, &len);
    assert_int_equal(len, 5);
    assert_memory_equal(t, "first", 5);
    dctx_release(hop);
}

static void registry_refuses_bad_and_clashing_keys(void **state)
{
    (void)state;
    static const dctx_key local = {"local", 0};
    static const dctx_key bad = {"bad name", DCTX_KEY_PROPAGATE};
    static const dctx_key other_tenant = {"tenant", DCTX_KEY_PROPAGATE};
    assert_int_equal(dctx_wire_register_key(&local), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_wire_register_key(&bad), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_wire_register_key(NULL), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_wire_register_key(&tenant), 0); /* again: fine */
    assert_int_equal(dctx_wire_register_key(&other_tenant), DCTX_ALREADY_EXISTS);
    assert_true(dctx_wire_key_name_valid("x-request-id"));
    assert_false(dctx_wire_key_name_valid(NULL));
}

/* The committed vector: a Call frame with a fixed token, budget, values
 * and payload. If this changes, the wire format changed: old peers will
 * not understand new ones. */
static void call_frame_bytes_are_stable(void **state)
{
    (void)state;
    static const uint8_t expected[] = {
        0x0a, 0x45, /* Frame.call, 69 bytes */
        0x0a, 0x14, '/',  'd',  'c',  't',  'x',  '.',  'd',  'e',  'm',
        'o',  '.',  'D',  'e',  'm',  'o',  '/',  'E',  'c',  'h',  'o', /* Call.method */
        0x12, 0x28,             /* Call.context, 40 bytes */
        0x08, 0xa0, 0x8d, 0x06, /* budget_us 100000 */
        0x12, 0x10, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
        0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, /* cancel_token */
        0x1a, 0x0e, 0x0a, 0x06, 't',  'e',  'n',  'a',  'n',  't',  0x12,
        0x04, 'a',  'c',  'm',  'e',  /* values[0] */
        0x20, 0x02,                   /* hops 2 */
        0x1a, 0x03, 'h',  'i',  '!'}; /* Call.payload */
    uint8_t token[DCTX_TOKEN_BYTES];
    for (int i = 0; i < DCTX_TOKEN_BYTES; i++)
        token[i] = (uint8_t)i;
    Dctx__Wire__Value v = DCTX__WIRE__VALUE__INIT;
    v.key = (char *)"tenant";
    v.has_value = 1;
    v.value.data = (uint8_t *)"acme";
    v.value.len = 4;
    Dctx__Wire__Value *vp[] = {&v};
    Dctx__Wire__ContextHeader h = DCTX__WIRE__CONTEXT_HEADER__INIT;
    h.has_budget_us = 1;
    h.budget_us = 100000;
    h.has_cancel_token = 1;
    h.cancel_token.data = token;
    h.cancel_token.len = sizeof token;
    h.values = vp;
    h.n_values = 1;
    h.has_hops = 1;
    h.hops = 2;
    Dctx__Wire__Call call = DCTX__WIRE__CALL__INIT;
    call.has_method = 1;
    call.method.data = (uint8_t *)"/dctx.demo.Demo/Echo";
    call.method.len = strlen("/dctx.demo.Demo/Echo");
    call.context = &h;
    call.has_payload = 1;
    call.payload.data = (uint8_t *)"hi!";
    call.payload.len = 3;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &call;
    uint8_t buf[256];
    size_t n = dctx__wire__frame__pack(&f, buf);
    if (n != sizeof expected || memcmp(buf, expected, n) != 0) {
        for (size_t i = 0; i < n; i++)
            print_message("0x%02x,%s", buf[i], i % 16 == 15 ? "\n" : " ");
        fail_msg("the Call frame's bytes changed (%zu bytes, expected %zu)", n, sizeof expected);
    }
}

/* The registry holds DCTX_WIRE_REGISTERED_KEYS_MAX keys; one more is
 * RESOURCE_EXHAUSTED, and the keys it holds still register and resolve.
 * Keys live as long as the process: these are never freed. */
static void registry_full_refuses_new_keys_with_resource_exhausted(void **state)
{
    (void)state;
    int rc = 0, added = 0;
    for (int i = 0; i < 2 * DCTX_WIRE_REGISTERED_KEYS_MAX && rc == 0; i++) {
        char *name = malloc(32);
        dctx_key *k = malloc(sizeof *k);
        assert_non_null(name);
        assert_non_null(k);
        snprintf(name, 32, "filler-%d", i);
        *k = (dctx_key){name, DCTX_KEY_PROPAGATE};
        rc = dctx_wire_register_key(k);
        if (rc == 0) {
            added++;
        } else {
            free(name);
            free(k);
        }
    }
    assert_int_equal(rc, DCTX_RESOURCE_EXHAUSTED);
    assert_true(added <= DCTX_WIRE_REGISTERED_KEYS_MAX);
    assert_true(added >= DCTX_WIRE_REGISTERED_KEYS_MAX - 16); /* the suite's own keys */
    assert_int_equal(dctx_wire_register_key(&tenant), 0);
}

/* Each server that rebuilds a call adds its instance id to the route the
 * calls it makes carry; a call that comes back to a server on its route
 * is refused FAILED_PRECONDITION, and a route at the hop limit is refused
 * as too long. */
static void route_grows_hop_by_hop_and_a_loop_is_refused(void **state)
{
    (void)state;
    char err[DCTX__WIRE_ERR_BYTES];
    struct dctx__wire_out out;
    const uint64_t a = 0xa1, b = 0xb2, c = 0xc3;
    /* the edge: no route */
    assert_int_equal(dctx__wire_encode(dctx_background(), NULL, dctx_now(), &out, err), 0);
    assert_int_equal(out.hdr.n_route, 0);
    Dctx__Wire__Frame *f = over_the_wire(&out.hdr);
    dctx *at_a = NULL, *at_b = NULL, *again = NULL;
    assert_int_equal(
        dctx__wire_decode(dctx_background(), f->call->context, dctx_now(), 0, a, &at_a, err, NULL),
        0);
    dctx__wire__frame__free_unpacked(f, NULL);
    /* A calls on: the route is [A] */
    assert_int_equal(dctx__wire_encode(at_a, NULL, dctx_now(), &out, err), 0);
    assert_int_equal(out.hdr.n_route, 1);
    assert_true(out.hdr.route[0] == a);
    f = over_the_wire(&out.hdr);
    assert_int_equal(
        dctx__wire_decode(dctx_background(), f->call->context, dctx_now(), 0, b, &at_b, err, NULL),
        0);
    dctx__wire__frame__free_unpacked(f, NULL);
    /* B calls on: [A, B]; arriving at C is fine, arriving at A is a loop */
    assert_int_equal(dctx__wire_encode(at_b, NULL, dctx_now(), &out, err), 0);
    assert_int_equal(out.hdr.n_route, 2);
    assert_true(out.hdr.route[0] == a && out.hdr.route[1] == b);
    f = over_the_wire(&out.hdr);
    assert_int_equal(
        dctx__wire_decode(dctx_background(), f->call->context, dctx_now(), 0, c, &again, err, NULL),
        0);
    dctx_release(again);
    again = NULL;
    assert_int_equal(
        dctx__wire_decode(dctx_background(), f->call->context, dctx_now(), 0, a, &again, err, NULL),
        DCTX_FAILED_PRECONDITION);
    assert_null(again);
    assert_non_null(strstr(err, "loop"));
    dctx__wire__frame__free_unpacked(f, NULL);
    /* a route of DCTX_WIRE_HOPS_MAX servers is over the limit */
    uint64_t long_route[DCTX_WIRE_HOPS_MAX];
    for (int i = 0; i < DCTX_WIRE_HOPS_MAX; i++)
        long_route[i] = (uint64_t)i + 100;
    out.hdr.route = long_route;
    out.hdr.n_route = DCTX_WIRE_HOPS_MAX;
    f = over_the_wire(&out.hdr);
    assert_int_equal(
        dctx__wire_decode(dctx_background(), f->call->context, dctx_now(), 0, c, &again, err, NULL),
        DCTX_RESOURCE_EXHAUSTED);
    dctx__wire__frame__free_unpacked(f, NULL);
    dctx_release(at_a);
    dctx_release(at_b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(only_propagated_values_are_sent_nearest_first),
        cmocka_unit_test(budget_is_the_time_left_minus_the_reserve),
        cmocka_unit_test(policy_filters_values_per_destination),
        cmocka_unit_test(sender_refuses_values_over_the_limits),
        cmocka_unit_test(callee_rebuilds_deadline_values_and_hops),
        cmocka_unit_test(callee_caps_the_budget),
        cmocka_unit_test(callee_refuses_malformed_headers),
        cmocka_unit_test(repeated_names_keep_the_first),
        cmocka_unit_test(registry_refuses_bad_and_clashing_keys),
        cmocka_unit_test(call_frame_bytes_are_stable),
        cmocka_unit_test(route_grows_hop_by_hop_and_a_loop_is_refused),
        /* last: it fills the process's registry */
        cmocka_unit_test(registry_full_refuses_new_keys_with_resource_exhausted),
    };
    return cmocka_run_group_tests_name("wire", tests, setup, NULL);
}
