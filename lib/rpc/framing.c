/*
 * framing.c - frames on a byte stream (framing.h).
 *
 * The reader is a two-phase machine: HEADER (hdr_got < 4) then BODY. A
 * body that arrives whole within one feed is handed out where it lies; one
 * spread over feeds is gathered in r->body, a block that doubles as bytes
 * arrive (never past the body's length), so memory follows what the peer
 * really sent. A block beyond KEEP_BLOCK is freed once its body was handed
 * out, so one large frame does not pin its size for the connection's life.
 */
#include "framing.h"

#include <stdlib.h>
#include <string.h>

#define KEEP_BLOCK (64 * 1024)

void dctx__frame_reader_init(struct dctx__frame_reader *r, uint32_t max_body)
{
    memset(r, 0, sizeof *r);
    r->max_body = max_body;
}

void dctx__frame_reader_fini(struct dctx__frame_reader *r)
{
    free(r->body);
    r->body = NULL;
    r->body_cap = 0;
}

bool dctx__frame_reader_idle(const struct dctx__frame_reader *r)
{
    return r->broken == 0 && (r->handed_out || (r->hdr_got == 0 && r->body_got == 0));
}

/* Forget the frame just handed out; keep a small block for the next. */
static void next_frame(struct dctx__frame_reader *r)
{
    r->handed_out = false;
    r->hdr_got = 0;
    r->body_got = 0;
    if (r->body_cap > KEEP_BLOCK) {
        free(r->body);
        r->body = NULL;
        r->body_cap = 0;
    }
}

static uint32_t header_value(const unsigned char h[DCTX__FRAME_HEADER_BYTES])
{
    return (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | (uint32_t)h[3];
}

/* Room for need bytes of the body: the next power of two, within
 * [DCTX__FRAMING_MIN_BLOCK, body_len]. */
static bool grow(struct dctx__frame_reader *r, size_t need)
{
    if (need <= r->body_cap)
        return true;
    size_t cap = r->body_cap > DCTX__FRAMING_MIN_BLOCK ? r->body_cap : DCTX__FRAMING_MIN_BLOCK;
    while (cap < need)
        cap *= 2;
    if (cap > r->body_len)
        cap = r->body_len;
    unsigned char *p = realloc(r->body, cap);
    if (p == NULL)
        return false;
    r->body = p;
    r->body_cap = cap;
    return true;
}

enum dctx__frame_status dctx__frame_reader_next(struct dctx__frame_reader *r,
                                                const unsigned char **data, size_t *len,
                                                const unsigned char **body, size_t *body_len)
{
    if (r->broken != 0)
        return (enum dctx__frame_status)r->broken;
    if (r->handed_out)
        next_frame(r);
    if (r->hdr_got < DCTX__FRAME_HEADER_BYTES) {
        size_t take = DCTX__FRAME_HEADER_BYTES - r->hdr_got;
        if (take > *len)
            take = *len;
        memcpy(r->hdr + r->hdr_got, *data, take);
        r->hdr_got += take;
        *data += take;
        *len -= take;
        if (r->hdr_got < DCTX__FRAME_HEADER_BYTES)
            return DCTX__FRAME_NEED_MORE;
        r->body_len = header_value(r->hdr);
        if (r->body_len == 0 || r->body_len > r->max_body) {
            r->broken = r->body_len == 0 ? DCTX__FRAME_EMPTY : DCTX__FRAME_TOO_BIG;
            return (enum dctx__frame_status)r->broken;
        }
    }
    if (r->body_got == 0 && *len >= r->body_len) { /* whole where it lies */
        *body = *data;
        *body_len = r->body_len;
        *data += r->body_len;
        *len -= r->body_len;
        r->handed_out = true;
        return DCTX__FRAME_READY;
    }
    size_t take = r->body_len - r->body_got;
    if (take > *len)
        take = *len;
    if (take == 0)
        return DCTX__FRAME_NEED_MORE;
    if (!grow(r, r->body_got + take)) {
        r->broken = DCTX__FRAME_NO_MEMORY;
        return DCTX__FRAME_NO_MEMORY;
    }
    memcpy(r->body + r->body_got, *data, take);
    r->body_got += take;
    *data += take;
    *len -= take;
    if (r->body_got < r->body_len)
        return DCTX__FRAME_NEED_MORE;
    *body = r->body;
    *body_len = r->body_len;
    r->handed_out = true;
    return DCTX__FRAME_READY;
}
