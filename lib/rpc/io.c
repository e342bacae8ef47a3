/*
 * io.c - pooled nng contexts, frames in nng messages, nng errors as
 * status codes (see rpc_impl.h).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "rpc_impl.h"

static void io_callback(void *arg)
{
    struct dctx__io *io = arg;
    io->fn(io->owner, io, nng_aio_result(io->aio));
}

void dctx__io_pool_init(struct dctx__io_pool *pool, nng_socket sock, size_t max)
{
    pool->sock = sock;
    pthread_mutex_init(&pool->mu, NULL);
    pool->idle = NULL;
    pool->all = NULL;
    pool->count = 0;
    pool->max = max;
    pool->waited = false;
}

static int io_make(struct dctx__io_pool *pool, struct dctx__io **out)
{
    struct dctx__io *io = calloc(1, sizeof *io);
    if (io == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    io->pool = pool;
    /* Without a callback nng completes the aio on the thread that finished
     * it and wakes the waiter directly: no hand-off to nng's task threads. */
    int rv = pool->waited ? nng_aio_alloc(&io->aio, NULL, NULL)
                          : nng_aio_alloc(&io->aio, io_callback, io);
    if (rv == 0) {
        rv = nng_ctx_open(&io->nctx, pool->sock);
        if (rv != 0)
            nng_aio_free(io->aio);
    }
    if (rv != 0) {
        free(io);
        return dctx__status_from_nng(rv);
    }
    *out = io;
    return 0;
}

int dctx__io_get(struct dctx__io_pool *pool, dctx__io_fn fn, void *owner, struct dctx__io **out)
{
    pthread_mutex_lock(&pool->mu);
    struct dctx__io *io = pool->idle;
    if (io != NULL) {
        pool->idle = io->next;
    } else if (pool->max != 0 && pool->count >= pool->max) {
        pthread_mutex_unlock(&pool->mu);
        return DCTX_RESOURCE_EXHAUSTED;
    } else {
        pool->count++; /* reserve the place; made outside the lock */
    }
    pthread_mutex_unlock(&pool->mu);
    if (io == NULL) {
        int rc = io_make(pool, &io);
        pthread_mutex_lock(&pool->mu);
        if (rc != 0) {
            pool->count--;
        } else {
            io->all = pool->all;
            pool->all = io;
        }
        pthread_mutex_unlock(&pool->mu);
        if (rc != 0)
            return rc;
    }
    io->fn = fn;
    io->owner = owner;
    atomic_store_explicit(&io->spare, false, memory_order_relaxed);
    *out = io;
    return 0;
}

void dctx__io_put(struct dctx__io *io)
{
    struct dctx__io_pool *pool = io->pool;
    pthread_mutex_lock(&pool->mu);
    io->next = pool->idle;
    pool->idle = io;
    pthread_mutex_unlock(&pool->mu);
}

void dctx__io_pool_abort(struct dctx__io_pool *pool, bool all)
{
    pthread_mutex_lock(&pool->mu);
    for (struct dctx__io *io = pool->all; io != NULL; io = io->all)
        if (all || !atomic_load_explicit(&io->spare, memory_order_relaxed))
            nng_aio_cancel(io->aio); /* a no-op on an idle aio */
    pthread_mutex_unlock(&pool->mu);
}

void dctx__io_pool_fini(struct dctx__io_pool *pool)
{
    struct dctx__io *io = pool->all;
    while (io != NULL) {
        struct dctx__io *next = io->all;
        nng_aio_free(io->aio); /* waits for a callback still returning */
        nng_ctx_close(io->nctx);
        free(io);
        io = next;
    }
    pool->all = pool->idle = NULL;
    pthread_mutex_destroy(&pool->mu);
}

int dctx__frame_pack(const Dctx__Wire__Frame *f, nng_msg **out)
{
    size_t n = dctx__wire__frame__get_packed_size(f);
    nng_msg *m = NULL;
    if (nng_msg_alloc(&m, n) != 0)
        return DCTX_RESOURCE_EXHAUSTED;
    dctx__wire__frame__pack(f, nng_msg_body(m));
    *out = m;
    return 0;
}

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

struct frame_block {
    size_t used, cap;
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
    if (size > SIZE_MAX - sizeof(struct frame_piece))
        return NULL;
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

Dctx__Wire__Frame *dctx__frame_unpack(nng_msg *m)
{
    size_t len = nng_msg_len(m);
    size_t cap = len < FRAME_SPACE_MAX ? len + FRAME_STRUCT_BYTES : FRAME_SPACE_MAX;
    cap = cap < FRAME_SPACE_MAX ? cap : FRAME_SPACE_MAX;
    struct frame_block *b = malloc(sizeof *b + cap);
    if (b == NULL)
        return NULL;
    b->used = 0;
    b->cap = cap;
    b->pieces = NULL;
    ProtobufCAllocator arena = {
        .alloc = frame_alloc, .free = frame_free_piece, .allocator_data = b};
    Dctx__Wire__Frame *f = dctx__wire__frame__unpack(&arena, len, nng_msg_body(m));
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

int dctx__status_from_nng(int e)
{
    switch (e) {
    case 0:
        return DCTX_OK;
    case NNG_ETIMEDOUT:
        return DCTX_DEADLINE_EXCEEDED;
    case NNG_ECANCELED:
        return DCTX_CANCELED;
    case NNG_ECLOSED:
    case NNG_ECONNREFUSED:
    case NNG_ECONNRESET:
    case NNG_ECONNSHUT:
    case NNG_ECONNABORTED:
    case NNG_EUNREACHABLE:
    case NNG_EADDRINUSE:
    case NNG_ESTATE:
        return DCTX_UNAVAILABLE;
    case NNG_ENOMEM:
    case NNG_EMSGSIZE:
    case NNG_ENOSPC:
        return DCTX_RESOURCE_EXHAUSTED;
    case NNG_EINVAL:
    case NNG_EADDRINVAL:
    case NNG_ENOTSUP:
    case NNG_EBADTYPE:
    /* nng says ECRYPTO when a certificate, key or CA file cannot be used;
     * a handshake that fails later ends its connection instead. */
    case NNG_ECRYPTO:
        return DCTX_INVALID_ARGUMENT;
    case NNG_ENOENT: /* an ipc path's directory, a TLS file */
        return DCTX_NOT_FOUND;
    case NNG_EPERM:
        return DCTX_PERMISSION_DENIED;
    case NNG_EPEERAUTH:
        return DCTX_UNAUTHENTICATED;
    default:
        return DCTX_INTERNAL;
    }
}

nng_duration dctx__ms_until(int64_t deadline_ns, int64_t now_ns)
{
    if (deadline_ns == DCTX_DEADLINE_NONE)
        return NNG_DURATION_INFINITE;
    int64_t left = deadline_ns - now_ns;
    if (left <= 0)
        return 1; /* NNG_DURATION_ZERO means "poll"; one ms is the least wait */
    int64_t ms = (left + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (nng_duration)ms;
}
