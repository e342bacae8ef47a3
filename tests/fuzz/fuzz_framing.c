/*
 * fuzz_framing.c - the frame reader (lib/rpc/framing.c) and the Frame
 * decoder on bytes a peer sends, fed in pieces whose size the input's
 * second byte chooses (its first, the reader's limit).
 *
 * Invariants, not only "no crash": a body handed out is 1..max_body bytes
 * and lies inside what was fed or the reader's own block; the reader takes
 * every byte it is given unless it refused the stream, and once refused
 * it stays so; every body either unpacks as a Frame or is refused by
 * protobuf-c; nothing stays allocated after fini (LeakSanitizer).
 */
#include <stdint.h>
#include <stdlib.h>

#include "dctx.pb-c.h"
#include "framing.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint32_t max_body = 16 + (uint32_t)data[0] * 64; /* small limits reach TOO_BIG too */
    size_t piece = 1 + (size_t)data[1];
    data += 2;
    size -= 2;
    struct dctx__frame_reader r;
    dctx__frame_reader_init(&r, max_body);
    enum dctx__frame_status st = DCTX__FRAME_NEED_MORE;
    while (size > 0 && st == DCTX__FRAME_NEED_MORE) {
        size_t n = size < piece ? size : piece;
        const unsigned char *p = data;
        size_t left = n;
        for (;;) {
            const unsigned char *body = NULL;
            size_t body_len = 0;
            st = dctx__frame_reader_next(&r, &p, &left, &body, &body_len);
            if (st != DCTX__FRAME_READY)
                break;
            CHECK(body != NULL && body_len >= 1 && body_len <= max_body);
            Dctx__Wire__Frame *f = dctx__wire__frame__unpack(NULL, body_len, body);
            if (f != NULL)
                dctx__wire__frame__free_unpacked(f, NULL);
        }
        if (st == DCTX__FRAME_NEED_MORE)
            CHECK(left == 0); /* every byte taken */
        data += n;
        size -= n;
    }
    if (st != DCTX__FRAME_NEED_MORE) { /* refused: it stays so */
        static const unsigned char more[1] = {0};
        const unsigned char *p = more, *body = NULL;
        size_t left = sizeof more, body_len = 0;
        CHECK(dctx__frame_reader_next(&r, &p, &left, &body, &body_len) == st);
    }
    dctx__frame_reader_fini(&r);
    return 0;
}
