/*
 * frame.c - Frame messages unpacked into one block: protobuf-c would
 * otherwise allocate every message, string and bytes field of a frame
 * apart. Shared by the REQ/REP path (io.c, from nng messages) and the
 * session protocol (session.c, from a stream's bytes).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "frame.h"

/* An unpacked frame lives in one block: protobuf-c would otherwise
 * allocate every message, string and bytes field of it apart (5-8 blocks
 * for a call, the largest allocation cost of a call). Pieces that do not
 * fit the block (a large payload) get blocks of their own, freed with it.
 * protobuf-c allocates the top message first, so the frame sits at the
 * start of the space and the block is found again from the frame. The
 * space is sized from the message (a server holds each call's frame while
 * it runs: 10,000 calls in flight are 10,000 blocks): unpacked, a call
 * takes about its wire size plus FRAME_STRUCT_BYTES of structs. */
#define FRAME_STRUCT_BYTES 320
#define FRAME_SPACE_MAX 1000 /* with the header, within malloc's fast bins */

struct frame_piece {
    struct frame_piece *next;
    _Alignas(max_align_t) unsigned char data[];
};

/* What unpacking a frame may take beyond its own length: a call's structs
 * (its header, at most DCTX_WIRE_VALUES_MAX values) fit many times over,
 * while a frame packed with millions of empty fields (each costs a struct
 * unpacked, two bytes packed) is refused as malformed instead of taking
 * 60 times its size. */
#define UNPACK_SLACK (64 * 1024)

struct frame_block {
    size_t used, cap;
    size_t budget, spent; /* bytes the unpack may take, and took in pieces */
    struct frame_piece *pieces;
    _Alignas(max_align_t) unsigned char space[];
};

static void *frame_alloc(void *data, size_t size)
{
    struct frame_block *b = data;
    size_t need = (size + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);
    if (need >= size && need <= b->cap - b->used) {
        void *p = b->space + b->used;
        b->used += need;
        return p;
    }
    if (size > SIZE_MAX - sizeof(struct frame_piece) || size > b->budget - b->spent)
        return NULL; /* protobuf-c then fails the unpack */
    b->spent += size;
    struct frame_piece *piece = malloc(sizeof *piece + size);
    if (piece == NULL)
        return NULL;
    piece->next = b->pieces;
    b->pieces = piece;
    return piece->data;
}

static void frame_free_piece(void *data, void *p)
{
    (void)data; /* everything goes with the block */
    (void)p;
}

static void frame_block_free(struct frame_block *b)
{
    for (struct frame_piece *p = b->pieces, *next; p != NULL; p = next) {
        next = p->next;
        free(p);
    }
    free(b);
}

Dctx__Wire__Frame *dctx__frame_unpack_bytes(const void *body, size_t len)
{
    size_t cap = len < FRAME_SPACE_MAX ? len + FRAME_STRUCT_BYTES : FRAME_SPACE_MAX;
    cap = cap < FRAME_SPACE_MAX ? cap : FRAME_SPACE_MAX;
    struct frame_block *b = malloc(sizeof *b + cap);
    if (b == NULL)
        return NULL;
    b->used = 0;
    b->cap = cap;
    b->budget = len + UNPACK_SLACK;
    b->spent = 0;
    b->pieces = NULL;
    ProtobufCAllocator arena = {
        .alloc = frame_alloc, .free = frame_free_piece, .allocator_data = b};
    Dctx__Wire__Frame *f = dctx__wire__frame__unpack(&arena, len, body);
    if (f == NULL || (void *)f != (void *)b->space) {
        /* malformed; or a protobuf-c that allocates otherwise: refused
         * as malformed rather than freed wrongly (every test would fail) */
        frame_block_free(b);
        return NULL;
    }
    return f;
}

void dctx__frame_free(Dctx__Wire__Frame *f)
{
    if (f != NULL)
        frame_block_free(
            (struct frame_block *)((unsigned char *)f - offsetof(struct frame_block, space)));
}

const char *dctx__frame_kind_name(Dctx__Wire__Frame__BodyCase k)
{
    switch (k) {
    case DCTX__WIRE__FRAME__BODY_CALL:
        return "call";
    case DCTX__WIRE__FRAME__BODY_REPLY:
        return "reply";
    case DCTX__WIRE__FRAME__BODY_CANCEL:
        return "cancel";
    case DCTX__WIRE__FRAME__BODY_CANCEL_ACK:
        return "cancel_ack";
    case DCTX__WIRE__FRAME__BODY_HELLO:
        return "hello";
    case DCTX__WIRE__FRAME__BODY_PING:
        return "ping";
    case DCTX__WIRE__FRAME__BODY_PONG:
        return "pong";
    case DCTX__WIRE__FRAME__BODY_DRAIN:
        return "drain";
    case DCTX__WIRE__FRAME__BODY_GOAWAY:
        return "goaway";
    case DCTX__WIRE__FRAME__BODY_AUTH:
        return "auth";
    case DCTX__WIRE__FRAME__BODY_MESSAGE:
        return "message";
    case DCTX__WIRE__FRAME__BODY_HALF_CLOSE:
        return "half_close";
    case DCTX__WIRE__FRAME__BODY_CREDIT:
        return "credit";
    default:
        return "?";
    }
}
