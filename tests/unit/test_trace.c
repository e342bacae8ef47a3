/*
 * test_trace.c - W3C traceparent: the parser against the spec's cases, new
 * traces and spans, and what a hop does with a received one (through the
 * wire codec): continue it under a new span, or drop it with tracestate.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <dctx/trace.h>

#include "testutil.h"
#include "wire_impl.h"

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void parser_accepts_and_refuses_as_w3c_says(void **state)
{
    (void)state;
    dctx_trace t;
    assert_true(dctx_trace_parse(GOOD, strlen(GOOD), &t));
    assert_string_equal(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(t.span_id, "00f067aa0ba902b7");
    assert_int_equal(t.flags, 1);
    /* a higher version is read by its version-00 prefix, with more fields after a dash */
    const char *future =
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
    assert_true(dctx_trace_parse(future, strlen(future), NULL));
    const char *bad[] = {
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* version ff */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero parent id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",  /* 00 with more */
        "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",   /* dashes moved */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",   /* flags not hex */
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.x", /* no dash after */
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (dctx_trace_parse(bad[i], strlen(bad[i]), NULL))
            fail_msg("accepted %s", bad[i]);
}

/* A traceparent off the wire has no NUL after it: the parser reads only
 * its len bytes. Each text ends where a page no one may read begins, so a
 * read past it faults (fuzz_traceparent found one: sscanf on the flags
 * read on to a NUL). */
static void parser_reads_no_byte_past_the_text(void **state)
{
    (void)state;
    static const char *texts[] = {
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"};
    long page = sysconf(_SC_PAGESIZE);
    char *pages =
        mmap(NULL, 2 * (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(pages != MAP_FAILED);
    assert_int_equal(mprotect(pages + page, (size_t)page, PROT_NONE), 0);
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        size_t len = strlen(texts[i]);
        char *at = pages + page - len; /* the last byte of the text is the page's */
        memcpy(at, texts[i], len);
        dctx_trace t;
        assert_true(dctx_trace_parse(at, len, &t));
        assert_int_equal(t.flags, 1);
        dctx *ctx = NULL;
        assert_int_equal(dctx__trace_continue(dctx_background(), at, len, &ctx), 0);
        dctx_release(ctx);
    }
    munmap(pages, 2 * (size_t)page);
}

static void new_traces_and_spans_chain_by_parent(void **state)
{
    (void)state;
    dctx *root = NULL, *child = NULL;
    assert_int_equal(dctx_trace_start(dctx_background(), DCTX_TRACE_SAMPLED, &root), 0);
    dctx_trace a, b;
    assert_true(dctx_trace_get(root, &a));
    assert_string_equal(a.parent_span_id, "");
    assert_int_equal(a.flags, DCTX_TRACE_SAMPLED);
    assert_int_equal(dctx_trace_span(root, &child), 0);
    assert_true(dctx_trace_get(child, &b));
    assert_string_equal(b.trace_id, a.trace_id);
    assert_string_equal(b.parent_span_id, a.span_id);
    assert_string_not_equal(b.span_id, a.span_id);
    dctx *plain = (dctx *)&plain;
    assert_int_equal(dctx_trace_span(dctx_background(), &plain), DCTX_FAILED_PRECONDITION);
    assert_null(plain);
    assert_false(dctx_trace_get(dctx_background(), &a));
    dctx_release(child);
    dctx_release(root);
}

/* A header with the given traceparent and tracestate (NULL: absent). */
static dctx *arrive(const char *traceparent, const char *tracestate, bool *dropped)
{
    uint8_t token[DCTX_TOKEN_BYTES] = {1};
    Dctx__Wire__Value v[2] = {DCTX__WIRE__VALUE__INIT, DCTX__WIRE__VALUE__INIT};
    Dctx__Wire__Value *vp[2];
    size_t n = 0;
    const char *names[2] = {"traceparent", "tracestate"}, *vals[2] = {traceparent, tracestate};
    for (int i = 0; i < 2; i++) {
        if (vals[i] == NULL)
            continue;
        v[n].key = (char *)names[i];
        v[n].has_value = 1;
        v[n].value.data = (uint8_t *)vals[i];
        v[n].value.len = strlen(vals[i]);
        vp[n] = &v[n];
        n++;
    }
    Dctx__Wire__ContextHeader h = DCTX__WIRE__CONTEXT_HEADER__INIT;
    h.has_cancel_token = 1;
    h.cancel_token.data = token;
    h.cancel_token.len = sizeof token;
    h.values = vp;
    h.n_values = n;
    char err[DCTX__WIRE_ERR_BYTES];
    dctx *ctx = NULL;
    assert_int_equal(dctx__wire_decode(dctx_background(), &h, dctx_now(), 0, 0, &ctx, err, dropped),
                     0);
    return ctx;
}

static const char *sent_value(const dctx *ctx, const char *name, struct dctx__wire_out *out)
{
    char err[DCTX__WIRE_ERR_BYTES];
    assert_int_equal(dctx__wire_encode(ctx, NULL, dctx_now(), out, err), 0);
    for (size_t i = 0; i < out->hdr.n_values; i++)
        if (strcmp(out->hdr.values[i]->key, name) == 0)
            return (const char *)out->hdr.values[i]->value.data;
    return NULL;
}

static void a_hop_continues_the_trace_under_a_new_span(void **state)
{
    (void)state;
    bool dropped = true;
    dctx *hop = arrive(GOOD, "vendor=x", &dropped);
    assert_false(dropped);
    dctx_trace t;
    assert_true(dctx_trace_get(hop, &t));
    assert_string_equal(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(t.parent_span_id, "00f067aa0ba902b7");
    assert_string_not_equal(t.span_id, "00f067aa0ba902b7");
    assert_int_equal(t.flags, 1);
    /* onward: its own span as the parent, tracestate untouched */
    struct dctx__wire_out out;
    const char *tp = sent_value(hop, "traceparent", &out);
    assert_non_null(tp);
    assert_memory_equal(tp + 36, t.span_id, 16);
    assert_memory_equal(sent_value(hop, "tracestate", &out), "vendor=x", 8);
    dctx_release(hop);

    /* a future version is re-emitted as version 00 */
    hop = arrive("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", NULL, &dropped);
    assert_false(dropped);
    assert_memory_equal(sent_value(hop, "traceparent", &out), "00-", 3);
    dctx_release(hop);
}

static void a_malformed_traceparent_is_dropped_with_tracestate(void **state)
{
    (void)state;
    bool dropped = false;
    dctx *hop = arrive("00-zz-bad", "vendor=x", &dropped);
    assert_true(dropped);
    assert_false(dctx_trace_get(hop, NULL));
    struct dctx__wire_out out;
    assert_null(sent_value(hop, "traceparent", &out));
    assert_null(sent_value(hop, "tracestate", &out));
    dctx_release(hop);
    /* a tracestate alone means nothing: dropped, not reported */
    hop = arrive(NULL, "vendor=x", &dropped);
    assert_false(dropped);
    assert_null(sent_value(hop, "tracestate", &out));
    dctx_release(hop);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parser_accepts_and_refuses_as_w3c_says),
        cmocka_unit_test(parser_reads_no_byte_past_the_text),
        cmocka_unit_test(new_traces_and_spans_chain_by_parent),
        cmocka_unit_test(a_hop_continues_the_trace_under_a_new_span),
        cmocka_unit_test(a_malformed_traceparent_is_dropped_with_tracestate),
    };
    return cmocka_run_group_tests_name("trace", tests, NULL, NULL);
}
