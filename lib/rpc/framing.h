/*
 * framing.h - frames on a byte stream, for the session protocol
 * (proto/PROTOCOL.md): each frame is a 4-byte big-endian body length, then
 * that many bytes of body. The reader takes bytes as they arrive, in
 * pieces of any size, and hands out whole bodies. Never installed.
 *
 * Bounds: a length over the reader's max_body, or 0, is refused as soon as
 * its 4 bytes are in, before anything is allocated for it. A body's memory
 * is taken as its bytes arrive, not reserved from its length: a peer that
 * sends the length of a large frame and stalls holds no more than it sent
 * (rounded up to the next power of two, at least FRAMING_MIN_BLOCK). A
 * body wholly inside the bytes fed is handed out in place, without a copy.
 */
#ifndef DCTX_RPC_FRAMING_H
#define DCTX_RPC_FRAMING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DCTX__FRAME_HEADER_BYTES 4
/* The least block a body spread over several feeds is copied into. */
#define DCTX__FRAMING_MIN_BLOCK 4096

/* dctx__frame_header writes the header of a body of len bytes. */
static inline void dctx__frame_header(uint32_t len, unsigned char out[DCTX__FRAME_HEADER_BYTES])
{
    out[0] = (unsigned char)(len >> 24);
    out[1] = (unsigned char)(len >> 16);
    out[2] = (unsigned char)(len >> 8);
    out[3] = (unsigned char)len;
}

struct dctx__frame_reader {
    uint32_t max_body; /* immutable after init */
    unsigned char hdr[DCTX__FRAME_HEADER_BYTES];
    size_t hdr_got;      /* header bytes of the frame under way */
    uint32_t body_len;   /* once hdr_got is 4 */
    unsigned char *body; /* a body spread over feeds: its bytes so far */
    size_t body_got, body_cap;
    bool handed_out; /* the last call returned READY */
    int broken;      /* 0, or the status that ended the stream */
};

/* What dctx__frame_reader_next found. */
enum dctx__frame_status {
    DCTX__FRAME_READY,     /* *body, *len: one whole body */
    DCTX__FRAME_NEED_MORE, /* every byte given was taken; feed more */
    DCTX__FRAME_TOO_BIG,   /* a length over max_body: the stream is unusable */
    DCTX__FRAME_EMPTY,     /* a length of 0: the stream is unusable */
    DCTX__FRAME_NO_MEMORY  /* a body's block could not grow; the stream is unusable */
};

void dctx__frame_reader_init(struct dctx__frame_reader *r, uint32_t max_body);
void dctx__frame_reader_fini(struct dctx__frame_reader *r);

/* dctx__frame_reader_next takes bytes from *data (*len of them), advancing
 * both past what it took, until a body is whole (READY: *body points at it,
 * *body_len bytes, valid until the next call on r) or the bytes run out
 * (NEED_MORE). Call it again with what is left after READY: one feed may
 * hold many frames. After TOO_BIG, EMPTY or NO_MEMORY the reader stays in
 * that state; the caller ends the stream. The length it refused is in
 * r->body_len. */
enum dctx__frame_status dctx__frame_reader_next(struct dctx__frame_reader *r,
                                                const unsigned char **data, size_t *len,
                                                const unsigned char **body, size_t *body_len);

/* True between frames (no header or body byte of a frame under way): a
 * stream that ends here ended cleanly. */
bool dctx__frame_reader_idle(const struct dctx__frame_reader *r);

#endif /* DCTX_RPC_FRAMING_H */
