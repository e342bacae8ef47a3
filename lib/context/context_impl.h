/*
 * context_impl.h - the private shape of a context node, shared by the files
 * of the context core. Never installed.
 *
 * Kinds of node
 *   ROOT      Background and TODO: static, immortal, never done.
 *   VALUE     one key/value pair; done state and deadline are its parent's.
 *   DETACHED  dctx_without_cancel: values of its parent, nothing else.
 *   CANCEL    its own done state, a list of children to cancel with it.
 *   TIMER     a CANCEL node with a deadline in the timer heap.
 *
 * Every node caches three pointers copied from its parent at birth so that
 * no query walks the tree: done_src (the cancelable node whose state is this
 * node's: itself for CANCEL/TIMER, NULL when it can never be done),
 * deadline_src (the TIMER node whose deadline applies) and values (the
 * nearest VALUE node, for lookups that skip non-value nodes).
 *
 * References
 *   Strong references point up: a node holds one on its parent, so every
 *   ancestor (and every done_src, deadline_src and cause message up the
 *   chain) outlives it. A cancelable node keeps weak links down: an
 *   intrusive list of its cancelable children and after-funcs (child
 *   nodes may sit in shards of it instead, cancel.c). A child leaves its
 *   list, under that list's lock, when it is canceled or freed, so a child
 *   in a list is alive while that list's lock is held; once a cascade took
 *   it off, it stays alive while the parent's own lock is held.
 *
 * Locks
 *   Each cancelable node has a lock guarding its children list, its done
 *   fd, the increments of its waiters count and the writes of err and
 *   cause. Lock order is
 *   parent before child: only the cancel cascade holds more than one (it
 *   holds a node until its subtree is done, cancel.c); every other path
 *   holds one node lock at a time. The timer heap lock and the after-func
 *   queue lock may be taken under a node lock, never the other way round.
 *   A node's shard locks (cancel.c) guard only their lists: one is taken
 *   under the node's lock by the cascade, or alone, and nothing is taken
 *   while one is held.
 */
#ifndef DCTX_CONTEXT_IMPL_H
#define DCTX_CONTEXT_IMPL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include <dctx/dctx.h>

#include "futex.h"
#include "hooks.h" /* what the core offers lib/rpc/ */

/* clang-format would take (ptr) for a cast and glue the minus to it. */
/* clang-format off */
#define dctx__container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
/* clang-format on */

enum dctx__kind {
    DCTX__ROOT,
    DCTX__VALUE,
    DCTX__DETACHED,
    DCTX__CANCEL,
    DCTX__TIMER,
};

struct dctx__cancel;
struct dctx__timer;
struct dctx__value;

struct dctx {
    atomic_int refs;                  /* unused for ROOT */
    enum dctx__kind kind;             /* set at birth, never changes */
    dctx *parent;                     /* strong; NULL for ROOT */
    struct dctx__cancel *done_src;    /* see above; immutable */
    struct dctx__timer *deadline_src; /* immutable */
    const struct dctx__value *values; /* immutable */
};

/* A link in a cancelable node's children list: a child node or an
 * after-func. The list is circular with a sentinel in the parent. */
enum dctx__link_kind { DCTX__LINK_SENTINEL, DCTX__LINK_NODE, DCTX__LINK_AFTER };

enum dctx__joined { DCTX__OUT_OF_LIST, DCTX__IN_LIST, DCTX__TAKEN_BY_CANCEL };

struct dctx__link {
    struct dctx__link *prev, *next; /* protected by the owner list's lock */
    enum dctx__link_kind kind;      /* immutable */
};

/* A part of a node's children list with its own lock, so that threads
 * making children of one parent at once do not all take the parent's
 * lock (cancel.c, "Shards"). One cache line each. */
#define DCTX__SHARDS 8

struct dctx__shard {
    _Alignas(64) dctx__lock lock;
    struct dctx__link children; /* sentinel; protected by lock; only child nodes */
};

struct dctx__cancel {
    dctx base;
    /* The first cache line holds what children touch on their parent (the
     * reference count in base, the lock, the list head) and what readers
     * poll (err): one line moves between cores, not three. */
    dctx__lock lock;
    /* err is 0 while live, then DCTX_CANCELED or DCTX_DEADLINE_EXCEEDED.
     * Written once, under lock, after cause and cause_msg (release); read
     * without a lock (acquire). It is also the futex word waiters sleep on. */
    atomic_int err;
    struct dctx__link children; /* sentinel of our list; protected by lock */
    /* NULL until two threads met on lock in attach; then DCTX__SHARDS more
     * lists for child nodes (after-funcs stay in children). Set once, under
     * lock, while live; freed with the node. */
    _Atomic(struct dctx__shard *) shards;

    atomic_int waiters;    /* threads asleep on err: incremented under
                              lock, decremented without it (wait.c) */
    int cause;             /* valid once err != 0 */
    const char *cause_msg; /* valid once err != 0; owned by this node or an ancestor */
    char *own_msg;         /* heap copy from dctx_cancel_cause; freed with the node */
    int done_fd;           /* -1 until dctx_done_fd; protected by lock */
    /* joined: where we stand in reg's list (enum dctx__joined, cancel.c).
     * Written under the lock of the list we joined (or, for OUT_OF_LIST
     * after a cascade took us from a shard, under reg->lock); OUT_OF_LIST
     * is final, so a lock-free read of it lets release skip every lock. */
    atomic_int joined;
    struct dctx__cancel *reg;       /* the node whose list we joined at birth; NULL if none */
    struct dctx__link sibling;      /* our link in reg's list */
    dctx__lock *joined_lock;        /* the lock of that list: reg's own or a shard's;
                                       set at attach, under it */
    struct dctx__cancel *work_next; /* cascade stack; owned by the canceling thread */
    int shards_done;                /* cascade: shards drained; owned by the canceling thread */
};

struct dctx__timer {
    struct dctx__cancel c;
    int64_t deadline_ns; /* immutable */
    /* DCTX__NOT_IN_HEAP or the slot; written under the heap lock, read
     * without it only to skip the lock when NOT_IN_HEAP (timer.c). */
    atomic_size_t heap_index;
    int dl_cause;       /* the cause the deadline sets; immutable */
    const char *dl_msg; /* NULL or msg_buf */
    char msg_buf[];     /* the copied deadline cause message, same allocation */
};

struct dctx__value {
    dctx base;
    const dctx_key *key;
    const struct dctx__value *next; /* nearest VALUE ancestor */
    size_t len;
    _Alignas(max_align_t) unsigned char data[]; /* the copied value, same allocation */
};

#define DCTX__NOT_IN_HEAP ((size_t)-1)

/* Intrusive circular list, protected by the owner's lock. */
static inline void dctx__list_init(struct dctx__link *sentinel)
{
    sentinel->prev = sentinel->next = sentinel;
    sentinel->kind = DCTX__LINK_SENTINEL;
}

static inline void dctx__list_push(struct dctx__link *sentinel, struct dctx__link *l)
{
    l->next = sentinel;
    l->prev = sentinel->prev;
    sentinel->prev->next = l;
    sentinel->prev = l;
}

static inline void dctx__list_unlink(struct dctx__link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    l->prev = l->next = NULL;
}

/* A cause code as stored: 0 becomes dflt, anything outside the code space
 * DCTX_UNKNOWN. */
static inline int dctx__cause_code(int cause, int dflt)
{
    if (cause == 0)
        return dflt;
    if (cause < 0 || cause > DCTX_CODE_MAX)
        return DCTX_UNKNOWN;
    return cause;
}

static inline bool dctx__is_cancelable(const dctx *ctx)
{
    return ctx->kind == DCTX__CANCEL || ctx->kind == DCTX__TIMER;
}

/* dctx__try_retain turns a weak link into a reference: it fails once the
 * count has reached zero (the node is being freed and must not be revived). */
bool dctx__try_retain(dctx *ctx);

/* --- cancel.c --- */

/* Join parent's done source at birth, or be born done if it is done. */
void dctx__attach(struct dctx__cancel *c, dctx *parent);

/* Cancel c and its subtree with err and cause (first cancel wins), then
 * unlink c from its parent's list and stop its timer; returns once the
 * subtree is done, even when c was done already. msg must outlive c: an
 * ancestor's text, the deadline text of c, or own_msg, which c then owns
 * (freed at once if c was already done). The caller holds a reference. */
void dctx__cancel_node(struct dctx__cancel *c, int err, int cause, const char *msg, char *own_msg);

/* Unlink c from the list of the node it joined at birth, if still there. */
void dctx__detach(struct dctx__cancel *c);

/* Fire a deadline: cancel with DCTX_DEADLINE_EXCEEDED and its cause. */
void dctx__expire(struct dctx__timer *t);

/* --- after.c --- */

/* Claim an after-func taken off a canceled node's list (under that node's
 * lock) for the executor: from here on stop cannot prevent it, as in Go. */
void dctx__after_claim(struct dctx__link *l);

/* Hand after-funcs taken off a canceled node's list to the executor. The
 * links form a NULL-terminated chain through next. */
void dctx__after_schedule(struct dctx__link *first);

/* --- timer.c --- */

/* Put t into the timer heap (starting the timer thread on first use).
 * Returns 0 or DCTX_RESOURCE_EXHAUSTED. */
int dctx__timer_add(struct dctx__timer *t);

/* Take t out of the heap if it is there. Once it returns, the timer thread
 * will not touch t again. */
void dctx__timer_remove(struct dctx__timer *t);

/* Test hook: the number of live timers, or -1 if the heap is broken. */
long dctx__test_timer_heap_check(void);

#endif /* DCTX_CONTEXT_IMPL_H */
