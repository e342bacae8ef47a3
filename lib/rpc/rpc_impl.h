/*
 * rpc_impl.h - what the RPC client and server share: pooled nng contexts
 * with their aios, frames in nng messages, and nng errors as status codes.
 * Never installed.
 */
#ifndef DCTX_RPC_IMPL_H
#define DCTX_RPC_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include <nng/nng.h>

#include <dctx/rpc.h>

#include "dctx.pb-c.h"
#include "frame.h"

/* ===== Pooled nng contexts (io.c) =====
 *
 * An io is an nng context of the socket and an aio, kept for reuse: a REQ
 * or REP context is idle again once its operation ended, so calls borrow
 * one instead of opening and closing a context and an aio each time. That
 * also keeps nng's pitfall away (closing a context and freeing its aio
 * from inside the aio's own callback crashed nng 1.5.2 under churn): an io
 * is only ever handed back to the pool, from anywhere, and freed by
 * dctx__io_pool_fini once the socket is closed and nothing is in flight.
 *
 * The aio's callback calls fn(owner, io, result). nng may start the next
 * user's callback while the previous one is still returning, so a callback
 * must not touch the io after dctx__io_put. */
struct dctx__io;
typedef void (*dctx__io_fn)(void *owner, struct dctx__io *io, int result);

struct dctx__io {
    nng_ctx nctx;
    nng_aio *aio;
    struct dctx__io_pool *pool;
    dctx__io_fn fn;        /* set by the borrower */
    void *owner;           /* set by the borrower */
    struct dctx__io *next; /* idle list; protected by pool->mu */
    atomic_bool spare;     /* set by the borrower: abort it last (client.c: a cancel);
                              read by a closing channel's abort, so atomic */
    struct dctx__io *all;  /* every io of the pool, for fini; immutable once linked */
};

struct dctx__io_pool {
    nng_socket sock;
    pthread_mutex_t mu;
    struct dctx__io *idle; /* protected by mu */
    struct dctx__io *all;  /* protected by mu */
    size_t count;          /* ios made; protected by mu */
    size_t max;            /* cap on count; 0: none */
    bool waited;           /* aios without a callback: the borrower waits on them
                              (nng_aio_wait); set before the first io_get */
};

void dctx__io_pool_init(struct dctx__io_pool *pool, nng_socket sock, size_t max);
/* Borrow an io (made if none is idle); fn is not called for a waited pool.
 * Returns 0, DCTX_RESOURCE_EXHAUSTED (the cap, or nng out of memory) or
 * DCTX_UNAVAILABLE (socket closed). */
int dctx__io_get(struct dctx__io_pool *pool, dctx__io_fn fn, void *owner, struct dctx__io **out);
void dctx__io_put(struct dctx__io *io);
/* Abort every operation under way (their callbacks see ECANCELED); with
 * all false, those of ios marked spare are left running. */
void dctx__io_pool_abort(struct dctx__io_pool *pool, bool all);
/* Free every io (close its context, free its aio, waiting for a callback
 * still returning): once nothing will start an operation on them again. */
void dctx__io_pool_fini(struct dctx__io_pool *pool);

/* ===== Frames ===== */

/* Pack f into a new message. Returns 0 or DCTX_RESOURCE_EXHAUSTED. */
int dctx__frame_pack(const Dctx__Wire__Frame *f, nng_msg **out);
/* Unpack a message's body (into one block, io.c); NULL if it is not a
 * well-formed Frame. Free it with dctx__frame_free only. */
Dctx__Wire__Frame *dctx__frame_unpack(nng_msg *m);

/* ===== Results, replies, methods ===== */

/* dctx__result_set fills res (whatever it held before is not freed) with
 * code and copies of message (cut to the wire limit) and payload, in one
 * allocation. Out of memory: the code stays, the texts go; res is always
 * valid to free (client.c). */
void dctx__result_set(dctx_rpc_result *res, int code, const char *message, const void *payload,
                      size_t payload_len);

/* dctx__reply_take_payload sets reply's payload to data (malloc'ed; the
 * reply frees it), without the copy dctx_rpc_reply_set_payload makes. */
void dctx__reply_take_payload(dctx_rpc_reply *reply, void *data, size_t len);

/* dctx__server_register_owned is dctx_rpc_server_register_flags for a
 * wrapper (pb.c): owned (may be NULL) is freed when the server is, and
 * only if this returns 0. */
int dctx__server_register_owned(dctx_rpc_server *srv, const char *method, dctx_rpc_handler_fn fn,
                                void *arg, unsigned flags, void *owned);

/* ===== Status ===== */

/* dctx__status_from_nng is the one map from nng errors to status codes
 * (rpc.h, "Errors"): ETIMEDOUT is DEADLINE_EXCEEDED; closed, refused,
 * reset or shut connections UNAVAILABLE; no memory or a message too big
 * RESOURCE_EXHAUSTED; a bad URL, option or TLS file INVALID_ARGUMENT; a
 * missing path NOT_FOUND; EPERM PERMISSION_DENIED; a peer failing TLS
 * authentication UNAUTHENTICATED; ECANCELED CANCELLED; the rest INTERNAL. */
int dctx__status_from_nng(int nng_err);

/* Relative aio timeout (nng's ms) until an absolute deadline, rounded up;
 * NNG_DURATION_INFINITE for DCTX_DEADLINE_NONE. */
nng_duration dctx__ms_until(int64_t deadline_ns, int64_t now_ns);

#endif /* DCTX_RPC_IMPL_H */
