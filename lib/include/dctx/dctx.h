/*
 * dctx.h - Go's context package in C: a tree of contexts that carry a
 * cancel signal, a deadline and request-scoped values.
 *
 * Model
 *   Every context but Background and TODO has one parent. Canceling a
 *   context cancels its whole subtree, top down and synchronously: when
 *   dctx_cancel returns, every descendant reports done. A context never
 *   outlives the reasons it was made for: its deadline is never later than
 *   its parent's, and a child of a canceled parent is born canceled with the
 *   parent's error and cause.
 *
 * Ownership
 *   A context is reference counted. A constructor hands its caller one
 *   reference, dropped with dctx_release. Releasing the last reference
 *   detaches the context from its parent, stops its timer and frees it;
 *   canceling first is not required (forgetting to cancel never leaks). A
 *   child holds a reference on its parent, so a parent lives as long as any
 *   of its descendants. Every pointer parameter is borrowed for the call;
 *   what the library keeps longer it retains itself, as each function says.
 *
 * Threads
 *   Every function is thread safe. A context may be used, canceled and
 *   released from any thread. No function calls user code on the caller's
 *   thread: after-funcs run on threads of the library.
 *
 * Errors
 *   Fallible functions return 0 or a DCTX_* status code (the gRPC code
 *   space). On failure the out-parameter is set to NULL.
 *
 * Library threads
 *   The first deadline starts one timer thread; the first after-func starts
 *   an executor thread, and more join while all are busy (at most 64; those
 *   beyond the first leave after 10 s idle). They block every signal, live
 *   until the process exits and are not inherited by fork(2): do not use
 *   contexts made before a fork in the child. The timer heap grows with the
 *   number of live deadlines and never shrinks.
 */
#ifndef DCTX_DCTX_H
#define DCTX_DCTX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define DCTX_API __attribute__((visibility("default")))
#define DCTX_NODISCARD __attribute__((warn_unused_result))
#define DCTX_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define DCTX_API
#define DCTX_NODISCARD
#define DCTX_PRINTF(fmt, args)
#endif

#define DCTX_VERSION_MAJOR 0
#define DCTX_VERSION_MINOR 1
#define DCTX_VERSION_PATCH 0
#define DCTX_VERSION_STRING "0.1.0"

/* ===== Types ===== */

/* A context. Opaque, reference counted, thread safe. */
typedef struct dctx dctx;

/* The handle of a registered after-func (see dctx_after_func). */
typedef struct dctx_after dctx_after;

/* A value key. Define keys as static consts; a key's identity is its
 * address, never its name, so two keys with the same name are different
 * keys (as two Go key types are). name is used on the wire and in logs;
 * flags holds DCTX_KEY_* bits. The key must outlive every context that
 * holds a value under it. */
typedef struct dctx_key {
    const char *name;
    uint32_t flags;
} dctx_key;

/* DCTX_KEY_PROPAGATE whitelists a key's values to cross the wire with RPC
 * calls. Values of keys without it never leave the process. */
#define DCTX_KEY_PROPAGATE 1u

/* ===== Status codes (numbered as gRPC's) ===== */

enum dctx_code {
    DCTX_OK = 0,
    DCTX_CANCELED = 1,
    DCTX_UNKNOWN = 2,
    DCTX_INVALID_ARGUMENT = 3,
    DCTX_DEADLINE_EXCEEDED = 4,
    DCTX_NOT_FOUND = 5,
    DCTX_ALREADY_EXISTS = 6,
    DCTX_PERMISSION_DENIED = 7,
    DCTX_RESOURCE_EXHAUSTED = 8,
    DCTX_FAILED_PRECONDITION = 9,
    DCTX_ABORTED = 10,
    DCTX_OUT_OF_RANGE = 11,
    DCTX_UNIMPLEMENTED = 12,
    DCTX_INTERNAL = 13,
    DCTX_UNAVAILABLE = 14,
    DCTX_DATA_LOSS = 15,
    DCTX_UNAUTHENTICATED = 16
};

/* gRPC spells code 1 "CANCELLED"; this alias lets code use either name. */
#define DCTX_CANCELLED DCTX_CANCELED

/* The largest status code. */
#define DCTX_CODE_MAX DCTX_UNAUTHENTICATED

/* dctx_strerror returns a static, human readable text for a code:
 * "context canceled", "context deadline exceeded", "invalid argument", ...
 * Unknown codes give "unknown status code". Never NULL. */
DCTX_API const char *dctx_strerror(int code);

/* dctx_code_name returns gRPC's name of a code: "OK", "CANCELLED",
 * "DEADLINE_EXCEEDED", ... Unknown codes give "UNKNOWN". Never NULL. */
DCTX_API const char *dctx_code_name(int code);

/* dctx_code_from_name maps a gRPC code name ("CANCELLED"; case sensitive)
 * back to its code. Returns the code, or -1 if name is not a code name. */
DCTX_API int dctx_code_from_name(const char *name);

/* ===== Clock ===== */

/* dctx_now returns CLOCK_MONOTONIC in nanoseconds. Every deadline in this
 * API is on this clock. */
DCTX_API int64_t dctx_now(void);

/* DCTX_DEADLINE_NONE is never reached: a deadline at it never fires. */
#define DCTX_DEADLINE_NONE INT64_MAX

/* ===== Roots ===== */

/* dctx_background returns the root context: never done, no values, no
 * deadline. It is immortal and borrowed: retain, release and cancel do
 * nothing to it, and it need not be released. */
DCTX_API dctx *dctx_background(void);

/* dctx_todo returns a context like Background, a distinct object, for code
 * that has not decided which context to use yet. */
DCTX_API dctx *dctx_todo(void);

/* ===== Constructors =====
 *
 * Each returns 0 and stores one new reference in *out, or returns a code
 * and stores NULL in *out (when out is not NULL):
 *   DCTX_INVALID_ARGUMENT    parent, key or out is NULL, or val is NULL
 *                            with len > 0;
 *   DCTX_RESOURCE_EXHAUSTED  no memory, or no timer thread could be made.
 * Each makes at most one heap allocation and retains parent. None blocks
 * beyond a short lock on the parent. */

/* dctx_with_cancel makes a child that is done when dctx_cancel(child) is
 * called or when parent becomes done, whichever comes first. A child of a
 * done parent is born done with the parent's error and cause. */
DCTX_API int dctx_with_cancel(dctx *parent, dctx **out);

/* dctx_with_deadline makes a cancelable child that also becomes done with
 * DCTX_DEADLINE_EXCEEDED once dctx_now() reaches deadline_ns. If the
 * parent's deadline is strictly earlier, the child is a plain cancelable
 * child (its deadline is the parent's; a deadline never extends). A deadline
 * already passed gives a child born done with DCTX_DEADLINE_EXCEEDED (unless
 * the parent was already done, whose error wins). DCTX_DEADLINE_NONE is a
 * deadline that never comes. */
DCTX_API int dctx_with_deadline(dctx *parent, int64_t deadline_ns, dctx **out);

/* dctx_with_deadline_cause is dctx_with_deadline whose deadline, when it
 * fires, sets cause (0 means DCTX_DEADLINE_EXCEEDED) and msg (copied; may be
 * NULL) as the cause; dctx_err still gives DCTX_DEADLINE_EXCEEDED. Canceling
 * the child with dctx_cancel does not use this cause. If the parent's
 * deadline is earlier, cause and msg are ignored, as in Go. */
DCTX_API int dctx_with_deadline_cause(dctx *parent, int64_t deadline_ns, int cause, const char *msg,
                                      dctx **out);

/* dctx_with_timeout is dctx_with_deadline(parent, dctx_now() + timeout_ns)
 * (saturating: a huge timeout is no deadline). */
DCTX_API int dctx_with_timeout(dctx *parent, int64_t timeout_ns, dctx **out);

/* dctx_with_timeout_cause is dctx_with_deadline_cause with a timeout. */
DCTX_API int dctx_with_timeout_cause(dctx *parent, int64_t timeout_ns, int cause, const char *msg,
                                     dctx **out);

/* dctx_with_value makes a child that holds len bytes copied from val under
 * key, shadowing any value of the same key further up. Done, error, cause
 * and deadline are the parent's. val may be NULL only when len is 0. */
DCTX_API int dctx_with_value(dctx *parent, const dctx_key *key, const void *val, size_t len,
                             dctx **out);

/* dctx_without_cancel makes a child that sees parent's values but is never
 * done, has no deadline and no cause, even after parent is canceled. Its
 * own children can be canceled as usual. */
DCTX_API int dctx_without_cancel(dctx *parent, dctx **out);

/* ===== Cancel and lifetime ===== */

/* dctx_cancel cancels ctx and, before returning, every descendant: their
 * error becomes DCTX_CANCELED, their cause DCTX_CANCELED with no message.
 * Idempotent: the first cancel wins and later ones change nothing, but
 * even a cancel that finds ctx already done (or a deadline firing) returns
 * only once every descendant is done. It also detaches ctx from its parent
 * and stops its timer, so the parent holds nothing for it. Only contexts
 * made by dctx_with_cancel, dctx_with_deadline(_cause) and
 * dctx_with_timeout(_cause) can be canceled; on any other context, and on
 * NULL, it does nothing. Never waits for an after-func. Allocates nothing
 * (it may start an executor thread when after-funcs are due). */
DCTX_API void dctx_cancel(dctx *ctx);

/* dctx_cancel_cause is dctx_cancel that records why: cause is a status
 * code (0 means DCTX_CANCELED; a value outside 0..DCTX_CODE_MAX becomes
 * DCTX_UNKNOWN) and msg a text (copied; may be NULL). dctx_err still gives
 * DCTX_CANCELED. If ctx is already done, nothing changes (first cause
 * wins). Descendants get the same cause and message. */
DCTX_API void dctx_cancel_cause(dctx *ctx, int cause, const char *msg);

/* dctx_retain adds a reference to ctx and returns ctx. NULL gives NULL. */
DCTX_API dctx *dctx_retain(dctx *ctx);

/* dctx_release drops a reference. The last one detaches ctx from its parent,
 * stops its timer, releases its parent and frees it; a done fd it made is
 * closed. NULL does nothing. Using ctx after releasing your last reference
 * to it is undefined. */
DCTX_API void dctx_release(dctx *ctx);

/* ===== Queries ===== */

/* dctx_done tells whether ctx is done (canceled or past its deadline, as
 * enacted). One atomic load: no lock, never blocks. */
DCTX_API bool dctx_done(const dctx *ctx);

/* dctx_err returns 0 while ctx is live, then DCTX_CANCELED or
 * DCTX_DEADLINE_EXCEEDED, stable from then on. No lock. */
DCTX_API int dctx_err(const dctx *ctx);

/* dctx_cause returns 0 while ctx is live; once done, the cause given by the
 * first cancel of ctx or of the ancestor that canceled it (its error when
 * none was given). If msg is not NULL, *msg gets the cause's message or
 * NULL; the text stays valid while the caller holds its reference to ctx.
 * A context made by dctx_without_cancel has no cause. */
DCTX_API int dctx_cause(const dctx *ctx, const char **msg);

/* dctx_deadline returns true and stores ctx's deadline (dctx_now()'s clock)
 * in *deadline_ns (if not NULL) when ctx has one; false otherwise. */
DCTX_API bool dctx_deadline(const dctx *ctx, int64_t *deadline_ns);

/* dctx_value returns the value stored under key by ctx or its nearest
 * ancestor that has one, and its length in *len (if len is not NULL), or
 * NULL (and *len 0) if none has. A present zero-length value gives a
 * non-NULL pointer. The bytes are read-only and stay valid while the caller
 * holds its reference to ctx. Values survive cancel. No lock. */
DCTX_API const void *dctx_value(const dctx *ctx, const dctx_key *key, size_t *len);

/* ===== Waiting ===== */

/* dctx_wait blocks until ctx is done (returns true) or timeout_ns pass
 * (returns false); timeout_ns < 0 waits forever, 0 does not block. On a
 * context that can never be done it returns false after the timeout (and
 * with timeout_ns < 0 never returns). A waiter whose context's deadline has
 * passed enacts the deadline itself (so it wakes on time without depending
 * on the timer thread): the cancel of that deadline's subtree may then run
 * on the caller's thread, also with timeout_ns 0. While it sleeps the
 * thread's timer slack is 1 ns (restored on return). May be called from any
 * number of threads at once. */
DCTX_API bool dctx_wait(dctx *ctx, int64_t timeout_ns);

/* dctx_done_fd returns a file descriptor that polls readable once ctx is
 * done, for poll/epoll loops. It is owned by ctx (or by the ancestor ctx
 * takes its done state from): the same fd on every call, valid while you
 * hold your reference; never read, write or close it. Returns -1 with errno
 * 0 if ctx can never be done, or -1 with errno set if no fd could be made. */
DCTX_API int dctx_done_fd(dctx *ctx);

/* ===== After-funcs ===== */

/* dctx_after_func arranges for fn(arg) to run once after ctx is done (at
 * once if it already is), on a thread of the library: never on a thread
 * that is inside a dctx_* call, so a cancel never waits for fn, and a fn
 * that blocks does not hold up other after-funcs (until 64 block at once).
 * Until fn has run or been stopped, ctx is retained: an after-func without
 * a handle on a context that is never canceled keeps it for the life of
 * the process. On a context that can never be done fn never runs (and
 * nothing is retained). If out is not NULL it receives a handle that must
 * be passed to dctx_after_stop exactly once, whether or not fn has run.
 * After-funcs of one context run in the order they were registered, each
 * possibly on its own thread. Returns 0, DCTX_INVALID_ARGUMENT (ctx or fn
 * NULL) or DCTX_RESOURCE_EXHAUSTED (no memory or no thread; fn will never
 * run). */
DCTX_API int dctx_after_func(dctx *ctx, void (*fn)(void *), void *arg, dctx_after **out);

/* dctx_after_stop stops fn from running: returns true if it did (fn will
 * never run), false if fn has run, is running, or is bound to run because
 * the cancel that reached ctx took it first; once that cancel has returned,
 * stop returns false, as Go's does. It does not wait for a running fn.
 * Frees h; h must not be used again. NULL gives false. */
DCTX_API bool dctx_after_stop(dctx_after *h);

#ifdef __cplusplus
}
#endif

#endif /* DCTX_DCTX_H */
