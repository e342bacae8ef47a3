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

Dctx__Wire__Frame *dctx__frame_unpack(nng_msg *m)
{
    return dctx__frame_unpack_bytes(nng_msg_body(m), nng_msg_len(m));
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
