/*
 * test_stream_frames.c - committed byte vectors of the stream frames
 * (proto/PROTOCOL.md section 10), made and checked as test_wire.c's Call
 * vector is: fixed fields packed with protobuf-c must give exactly these
 * bytes, so a change of the wire format fails here first. Each vector is
 * also unpacked, to check the bytes mean the fields they say.
 *
 * The frames: a Call opening a stream (stream true, no payload), a
 * StreamMessage with a payload, a HalfClose, and a Credit of half a
 * window (messages and bytes). Each carries call_id 7, as every stream
 * frame must (session.c refuses one without).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/stream.h>

#include "testutil.h"
#include "wire_impl.h"

#define CALL_ID 7

/* f packed must be expected, byte for byte; on a difference, print what
 * it packs to, to compare. */
static void assert_packs_to(const Dctx__Wire__Frame *f, const uint8_t *expected, size_t len,
                            const char *what)
{
    uint8_t buf[256];
    size_t size = dctx__wire__frame__get_packed_size(f);
    assert_true(size <= sizeof buf);
    size_t n = dctx__wire__frame__pack(f, buf);
    assert_int_equal(n, size);
    if (n != len || memcmp(buf, expected, n) != 0) {
        for (size_t i = 0; i < n; i++)
            print_message("0x%02x,%s", buf[i], i % 16 == 15 ? "\n" : " ");
        fail_msg("the %s frame's bytes changed (%zu bytes, expected %zu)", what, n, len);
    }
}

/* The vector unpacked: a frame of kind k for call CALL_ID (free it). */
static Dctx__Wire__Frame *unpack(const uint8_t *bytes, size_t len, Dctx__Wire__Frame__BodyCase k)
{
    Dctx__Wire__Frame *f = dctx__wire__frame__unpack(NULL, len, bytes);
    assert_non_null(f);
    assert_int_equal(f->body_case, k);
    assert_true(f->has_call_id);
    assert_int_equal(f->call_id, CALL_ID);
    return f;
}

static void stream_call_frame_bytes_are_stable(void **state)
{
    (void)state;
    static const uint8_t expected[] = {
        0x0a, 0x31, /* Frame.call, 49 bytes */
        0x0a, 0x15, '/',    'd',  'c',  't',  'x',  '.',  'd',  'e',  'm',  'o',
        '.',  'D',  'e',    'm',  'o',  '/',  'C',  'o',  'u',  'n',  't', /* Call.method */
        0x12, 0x16,               /* Call.context, 22 bytes */
        0x08, 0xa0, 0x8d,   0x06, /* budget_us 100000 */
        0x12, 0x10, 0x00,   0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09,
        0x0a, 0x0b, 0x0c,   0x0d, 0x0e, 0x0f, /* cancel_token */
        0x20, 0x01,                           /* Call.stream true; no payload */
        0xa0, 0x01, CALL_ID};                 /* Frame.call_id */
    uint8_t token[DCTX_TOKEN_BYTES];
    for (int i = 0; i < DCTX_TOKEN_BYTES; i++)
        token[i] = (uint8_t)i;
    Dctx__Wire__ContextHeader h = DCTX__WIRE__CONTEXT_HEADER__INIT;
    h.has_budget_us = 1;
    h.budget_us = 100000;
    h.has_cancel_token = 1;
    h.cancel_token.data = token;
    h.cancel_token.len = sizeof token;
    Dctx__Wire__Call call = DCTX__WIRE__CALL__INIT;
    call.has_method = 1;
    call.method.data = (uint8_t *)"/dctx.demo.Demo/Count";
    call.method.len = strlen("/dctx.demo.Demo/Count");
    call.context = &h;
    call.has_stream = 1;
    call.stream = 1;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &call;
    f.has_call_id = 1;
    f.call_id = CALL_ID;
    assert_packs_to(&f, expected, sizeof expected, "stream Call");
    Dctx__Wire__Frame *u = unpack(expected, sizeof expected, DCTX__WIRE__FRAME__BODY_CALL);
    assert_true(u->call->has_stream && u->call->stream);
    assert_false(u->call->has_payload);
    assert_int_equal(u->call->method.len, 21);
    assert_memory_equal(u->call->method.data, "/dctx.demo.Demo/Count", 21);
    assert_int_equal(u->call->context->budget_us, 100000);
    assert_memory_equal(u->call->context->cancel_token.data, token, sizeof token);
    dctx__wire__frame__free_unpacked(u, NULL);
}

static void stream_message_frame_bytes_are_stable(void **state)
{
    (void)state;
    static const uint8_t expected[] = {0x52, 0x07, /* Frame.message, 7 bytes */
                                       0x0a, 0x05, 'h',    'e',
                                       'l',  'l',  'o',      /* StreamMessage.payload */
                                       0xa0, 0x01, CALL_ID}; /* Frame.call_id */
    Dctx__Wire__StreamMessage m = DCTX__WIRE__STREAM_MESSAGE__INIT;
    m.has_payload = 1;
    m.payload.data = (uint8_t *)"hello";
    m.payload.len = 5;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_MESSAGE;
    f.message = &m;
    f.has_call_id = 1;
    f.call_id = CALL_ID;
    assert_packs_to(&f, expected, sizeof expected, "StreamMessage");
    Dctx__Wire__Frame *u = unpack(expected, sizeof expected, DCTX__WIRE__FRAME__BODY_MESSAGE);
    assert_true(u->message->has_payload);
    assert_int_equal(u->message->payload.len, 5);
    assert_memory_equal(u->message->payload.data, "hello", 5);
    dctx__wire__frame__free_unpacked(u, NULL);
}

static void half_close_frame_bytes_are_stable(void **state)
{
    (void)state;
    static const uint8_t expected[] = {0x5a, 0x00,           /* Frame.half_close, empty */
                                       0xa0, 0x01, CALL_ID}; /* Frame.call_id */
    Dctx__Wire__HalfClose hc = DCTX__WIRE__HALF_CLOSE__INIT;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_HALF_CLOSE;
    f.half_close = &hc;
    f.has_call_id = 1;
    f.call_id = CALL_ID;
    assert_packs_to(&f, expected, sizeof expected, "HalfClose");
    Dctx__Wire__Frame *u = unpack(expected, sizeof expected, DCTX__WIRE__FRAME__BODY_HALF_CLOSE);
    assert_non_null(u->half_close);
    dctx__wire__frame__free_unpacked(u, NULL);
}

/* The credit a receiver sends after taking half the largest window of
 * messages of 64 bytes each: 2,048 messages, 131,072 bytes. */
static void credit_frame_bytes_are_stable(void **state)
{
    (void)state;
    static const uint8_t expected[] = {0x62, 0x07,               /* Frame.credit, 7 bytes */
                                       0x08, 0x80, 0x10,         /* Credit.messages 2048 */
                                       0x10, 0x80, 0x80,   0x08, /* Credit.bytes 131072 */
                                       0xa0, 0x01, CALL_ID};     /* Frame.call_id */
    Dctx__Wire__Credit c = DCTX__WIRE__CREDIT__INIT;
    c.has_messages = 1;
    c.messages = DCTX_RPC_STREAM_WINDOW_MESSAGES / 2;
    c.has_bytes = 1;
    c.bytes = DCTX_RPC_STREAM_WINDOW_BYTES / 2;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CREDIT;
    f.credit = &c;
    f.has_call_id = 1;
    f.call_id = CALL_ID;
    assert_packs_to(&f, expected, sizeof expected, "Credit");
    Dctx__Wire__Frame *u = unpack(expected, sizeof expected, DCTX__WIRE__FRAME__BODY_CREDIT);
    assert_true(u->credit->has_messages && u->credit->has_bytes);
    assert_int_equal(u->credit->messages, 2048);
    assert_int_equal(u->credit->bytes, 131072);
    dctx__wire__frame__free_unpacked(u, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stream_call_frame_bytes_are_stable),
        cmocka_unit_test(stream_message_frame_bytes_are_stable),
        cmocka_unit_test(half_close_frame_bytes_are_stable),
        cmocka_unit_test(credit_frame_bytes_are_stable),
    };
    return cmocka_run_group_tests_name("stream_frames", tests, NULL, NULL);
}
