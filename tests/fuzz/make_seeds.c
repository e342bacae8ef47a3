/*
 * make_seeds.c - writes the binary seeds of tests/fuzz/corpus (framing,
 * context): well-formed frames and headers as dctx itself sends them, for
 * the fuzzers to start from. Run by hand when the protocol changes:
 *   make_seeds tests/fuzz/corpus
 * (the text seeds, traceparent and duration, are written by hand).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/dctx.h>
#include <dctx/trace.h>

#include "dctx.pb-c.h"
#include "framing.h"
#include "wire_impl.h"

static const dctx_key tenant = {.name = "tenant", .flags = DCTX_KEY_PROPAGATE};
static const dctx_key unknown = {.name = "x-unknown", .flags = DCTX_KEY_PROPAGATE};

static void write_file(const char *dir, const char *name, const void *a, size_t alen, const void *b,
                       size_t blen)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(a, 1, alen, f) != alen || (blen && fwrite(b, 1, blen, f) != blen)) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

/* A frame as the reader's input: its two control bytes (limit, piece
 * size), then header and body. */
static void write_frame(const char *dir, const char *name, const Dctx__Wire__Frame *f,
                        uint8_t piece)
{
    size_t n = dctx__wire__frame__get_packed_size(f);
    unsigned char *buf = malloc(2 + DCTX__FRAME_HEADER_BYTES + n);
    buf[0] = 0xff; /* the largest limit the fuzzer sets */
    buf[1] = piece;
    dctx__frame_header((uint32_t)n, buf + 2);
    dctx__wire__frame__pack(f, buf + 2 + DCTX__FRAME_HEADER_BYTES);
    write_file(dir, name, buf, 2 + DCTX__FRAME_HEADER_BYTES + n, NULL, 0);
    free(buf);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds CORPUS_DIR\n");
        return 2;
    }
    char framing[512], context[512];
    snprintf(framing, sizeof framing, "%s/framing", argv[1]);
    snprintf(context, sizeof context, "%s/context", argv[1]);

    dctx *c0, *c1, *c2, *ctx;
    dctx_with_timeout(dctx_background(), 1000000000LL, &c0);
    dctx_with_value(c0, &tenant, "acme", 4, &c1);
    dctx_with_value(c1, &unknown, "v", 1, &c2);
    dctx_trace_start(c2, DCTX_TRACE_SAMPLED, &ctx);
    struct dctx__wire_out out;
    char err[DCTX__WIRE_ERR_BYTES];
    if (dctx__wire_encode(ctx, NULL, dctx_now(), &out, err) != 0) {
        fprintf(stderr, "encode: %s\n", err);
        return 1;
    }
    size_t n = dctx__wire__context_header__get_packed_size(&out.hdr);
    unsigned char *hdr = malloc(n);
    dctx__wire__context_header__pack(&out.hdr, hdr);
    write_file(context, "values-trace-deadline", hdr, n, NULL, 0);
    free(hdr);
    Dctx__Wire__ContextHeader empty = DCTX__WIRE__CONTEXT_HEADER__INIT;
    n = dctx__wire__context_header__get_packed_size(&empty);
    write_file(context, "empty", "", 0, NULL, 0);

    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    Dctx__Wire__Call call = DCTX__WIRE__CALL__INIT;
    call.has_method = 1;
    call.method.data = (uint8_t *)"/dctx.demo.Demo/Echo";
    call.method.len = strlen("/dctx.demo.Demo/Echo");
    call.context = &out.hdr;
    call.has_payload = 1;
    call.payload.data = (uint8_t *)"hello";
    call.payload.len = 5;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &call;
    f.has_call_id = 1;
    f.call_id = 1;
    write_frame(framing, "call-whole", &f, 0xff);
    write_frame(framing, "call-bytewise", &f, 0);

    Dctx__Wire__Reply reply = DCTX__WIRE__REPLY__INIT;
    reply.has_code = 1;
    reply.code = DCTX_CANCELED;
    reply.message = (char *)"context canceled";
    f.body_case = DCTX__WIRE__FRAME__BODY_REPLY;
    f.reply = &reply;
    write_frame(framing, "reply", &f, 7);

    Dctx__Wire__Cancel cancel = DCTX__WIRE__CANCEL__INIT;
    cancel.has_cancel_token = 1;
    cancel.cancel_token.data = out.token;
    cancel.cancel_token.len = sizeof out.token;
    cancel.has_code = 1;
    cancel.code = DCTX_DEADLINE_EXCEEDED;
    cancel.message = (char *)"deadline";
    f.body_case = DCTX__WIRE__FRAME__BODY_CANCEL;
    f.cancel = &cancel;
    write_frame(framing, "cancel", &f, 3);

    Dctx__Wire__Hello hello = DCTX__WIRE__HELLO__INIT;
    hello.has_version = 1;
    hello.version = 1;
    hello.has_max_frame_bytes = 1;
    hello.max_frame_bytes = 4 << 20;
    hello.name = (char *)"svc";
    f.has_call_id = 0;
    f.body_case = DCTX__WIRE__FRAME__BODY_HELLO;
    f.hello = &hello;
    write_frame(framing, "hello", &f, 1);

    dctx_release(ctx);
    dctx_release(c2);
    dctx_release(c1);
    dctx_release(c0);
    return 0;
}
