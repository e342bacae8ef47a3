/*
 * cancel.c - joining a parent, and the cancel cascade.
 *
 * Design
 *   The cascade is Go's, made iterative. Go cancels a node's children while
 *   holding the node's lock, recursing; here a depth-first walk keeps the
 *   same discipline with an explicit stack threaded through the nodes'
 *   work_next fields (no allocation, no recursion: a chain a million deep
 *   costs no stack). A node is locked when its cancel starts and unlocked
 *   only once its whole subtree is done. So:
 *   - a second cancel of a node (or of a node inside a subtree being
 *     canceled) blocks on its lock until that subtree is done: every
 *     cancel returns with the subtree done, as in Go, winner or not;
 *   - a child taken off a locked parent's list cannot be freed under the
 *     walk: freeing a taken child needs the parent's lock (detach);
 *   - a cancel that meets a node another thread is canceling waits for it.
 *   Locks are only ever taken top-down (parent, then child) while others
 *   are held; every other path takes one node lock alone. No cycle, so no
 *   deadlock.
 *
 *   The walk reads no reference counts and takes none: a child in a list
 *   is alive until it has left the list, and it leaves only under the
 *   list's lock; once taken, it is freed only after taking the parent's
 *   own lock, which the walk holds. After-funcs met on the way are claimed under their
 *   node's lock and handed to the executor once every lock is released.
 *
 *   All descendants get the error and cause of the node the cancel started
 *   at; a node already done keeps its own.
 *
 * Shards
 *   Threads that make and cancel children of one parent at once would all
 *   take the parent's lock twice per child (attach, detach), and its cache
 *   line would bounce between their cores. So the first time attach finds
 *   the lock held it gives the parent DCTX__SHARDS more lists, each with
 *   its own lock on its own line, and from then on each thread joins the
 *   shard of its slot. Shards are installed only under the parent's lock
 *   and only while it is live, so a cascade, which holds that lock, sees
 *   every shard there is; it drains each under the shard's lock after
 *   marking the parent done, so an attach that takes a shard lock later
 *   sees the parent done (and is born canceled) and one that came earlier
 *   is drained. A child taken from a shard is marked TAKEN_BY_CANCEL under
 *   the shard's lock; its detach then waits on the parent's own lock, which
 *   the cascade holds while it may touch the child, as for the main list.
 *
 * Link states (dctx__cancel.joined, written under the lock of the list it
 * joined, except TAKEN_BY_CANCEL -> OUT_OF_LIST for a shard's child: under
 * the parent's own lock)
 *   IN_LIST         in the parent's list.
 *   TAKEN_BY_CANCEL a cascade took it off; freeing it must take the parent's lock,
 *          which the cascade holds while it may still touch the child.
 *   OUT_OF_LIST     never joined, or left by itself (its own cancel or release):
 *          nothing more to do, no lock needed.
 */
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "context_impl.h"

/* This thread's shard: threads are numbered as they first get here. */
static unsigned thread_shard(void)
{
    static atomic_uint threads_seen;
    static _Thread_local unsigned slot_plus_one;
    if (slot_plus_one == 0)
        slot_plus_one = atomic_fetch_add_explicit(&threads_seen, 1, memory_order_relaxed) + 1;
    return (slot_plus_one - 1) % DCTX__SHARDS;
}

/* Give reg its shards (reg locked and live). Without memory it keeps its
 * one list: sharding is only about speed. */
static void add_shards(struct dctx__cancel *reg)
{
    struct dctx__shard *s = NULL;
    if (posix_memalign((void **)&s, _Alignof(struct dctx__shard), sizeof *s * DCTX__SHARDS) != 0)
        return;
    for (int i = 0; i < DCTX__SHARDS; i++) {
        atomic_init(&s[i].lock.state, 0);
        dctx__list_init(&s[i].children);
    }
    atomic_store_explicit(&reg->shards, s, memory_order_release);
}

/* Lock the list c is to join in reg; *list gets it. */
static dctx__lock *lock_a_list(struct dctx__cancel *reg, struct dctx__link **list)
{
    struct dctx__shard *shards = atomic_load_explicit(&reg->shards, memory_order_acquire);
    if (shards == NULL) {
        bool met = !dctx__lock_try_acquire(&reg->lock);
        if (met) {
            dctx__lock_acquire(&reg->lock);
            if (atomic_load_explicit(&reg->err, memory_order_relaxed) == 0 &&
                atomic_load_explicit(&reg->shards, memory_order_relaxed) == NULL)
                add_shards(reg); /* this child still joins the main list */
        }
        *list = &reg->children;
        return &reg->lock;
    }
    struct dctx__shard *s = &shards[thread_shard()];
    dctx__lock_acquire(&s->lock);
    *list = &s->children;
    return &s->lock;
}

void dctx__attach(struct dctx__cancel *c, dctx *parent)
{
    struct dctx__cancel *reg = parent->done_src;
    c->reg = reg;
    if (reg == NULL)
        return;
    struct dctx__link *list;
    dctx__lock *lock = lock_a_list(reg, &list);
    /* Acquire: under a shard's lock the cascade's write of err (under the
     * parent's) may be seen before its shard lock orders it; cause and
     * cause_msg were written before err. */
    int err = atomic_load_explicit(&reg->err, memory_order_acquire);
    if (err != 0) {
        /* Born canceled. c is not visible to any other thread yet. */
        c->cause = reg->cause;
        c->cause_msg = reg->cause_msg;
        atomic_store_explicit(&c->err, err, memory_order_relaxed);
    } else {
        dctx__list_push(list, &c->sibling);
        c->joined_lock = lock;
        atomic_store_explicit(&c->joined, DCTX__IN_LIST, memory_order_relaxed);
    }
    dctx__lock_release(lock);
}

void dctx__detach(struct dctx__cancel *c)
{
    if (atomic_load_explicit(&c->joined, memory_order_acquire) == DCTX__OUT_OF_LIST)
        return;
    struct dctx__cancel *reg = c->reg;
    dctx__lock *lock = c->joined_lock;
    dctx__lock_acquire(lock);
    int joined = atomic_load_explicit(&c->joined, memory_order_relaxed);
    if (joined == DCTX__IN_LIST)
        dctx__list_unlink(&c->sibling);
    if (joined != DCTX__TAKEN_BY_CANCEL || lock == &reg->lock) {
        atomic_store_explicit(&c->joined, DCTX__OUT_OF_LIST, memory_order_release);
        dctx__lock_release(lock);
        return;
    }
    dctx__lock_release(lock);
    /* Taken from a shard by a cascade, which holds reg's own lock while it
     * may still touch c: wait for it there. */
    dctx__lock_acquire(&reg->lock);
    atomic_store_explicit(&c->joined, DCTX__OUT_OF_LIST, memory_order_release);
    dctx__lock_release(&reg->lock);
}

/* What one cancel carries down the tree. */
struct cascade {
    int err, cause;
    const char *msg;           /* owned by the start node or an ancestor */
    struct dctx__link *afters; /* claimed after-funcs, in order */
    struct dctx__link **afters_tail;
};

/* Mark c done; c is locked and was live. Wakes sleepers (they register
 * under this lock, so no wake-up is lost), signals the done fd, stops the
 * timer and claims c's after-funcs. Child nodes stay in the list for the
 * walk. */
static void mark_done(struct dctx__cancel *c, struct cascade *k)
{
    c->cause = k->cause;
    c->cause_msg = k->msg;
    atomic_store_explicit(&c->err, k->err, memory_order_release);
    if (atomic_load_explicit(&c->waiters, memory_order_relaxed) != 0)
        dctx__futex_wake(&c->err, INT_MAX);
    if (c->done_fd >= 0) {
        uint64_t one = 1;
        /* An eventfd write fails only when the counter would overflow,
         * which leaves the fd readable anyway. */
        ssize_t n = write(c->done_fd, &one, sizeof one);
        (void)n;
    }
    if (c->base.kind == DCTX__TIMER)
        dctx__timer_remove((struct dctx__timer *)c);
}

/* The first entry of a list (its lock held), unlinked; a child node is
 * marked TAKEN_BY_CANCEL under that lock. NULL if the list is empty. */
static struct dctx__link *take_first(struct dctx__link *list)
{
    struct dctx__link *l = list->next;
    if (l == list)
        return NULL;
    dctx__list_unlink(l);
    if (l->kind == DCTX__LINK_NODE)
        atomic_store_explicit(&dctx__container_of(l, struct dctx__cancel, sibling)->joined,
                              DCTX__TAKEN_BY_CANCEL, memory_order_release);
    return l;
}

/* Take one entry off t's lists (t locked): the main list first, then the
 * shards in order. NULL once every list is empty: t is done, so no attach
 * adds to them again. */
static struct dctx__link *take_any(struct dctx__cancel *t)
{
    struct dctx__link *l = take_first(&t->children);
    struct dctx__shard *shards = atomic_load_explicit(&t->shards, memory_order_relaxed);
    while (l == NULL && shards != NULL && t->shards_done < DCTX__SHARDS) {
        struct dctx__shard *s = &shards[t->shards_done];
        dctx__lock_acquire(&s->lock);
        l = take_first(&s->children);
        dctx__lock_release(&s->lock);
        if (l == NULL)
            t->shards_done++;
    }
    return l;
}

/* Act on an entry taken off a locked node's lists. A child node comes back
 * locked and done (NULL if it was done already: someone else's cancel
 * covered it); an after-func is claimed and queued on the cascade. */
static struct dctx__cancel *take(struct dctx__link *l, struct cascade *k)
{
    if (l->kind == DCTX__LINK_AFTER) {
        dctx__after_claim(l);
        l->next = NULL;
        *k->afters_tail = l;
        k->afters_tail = &l->next;
        return NULL;
    }
    struct dctx__cancel *child = dctx__container_of(l, struct dctx__cancel, sibling);
    dctx__lock_acquire(&child->lock);
    if (atomic_load_explicit(&child->err, memory_order_relaxed) != 0) {
        dctx__lock_release(&child->lock);
        return NULL;
    }
    mark_done(child, k);
    return child;
}

void dctx__cancel_node(struct dctx__cancel *c, int err, int cause, const char *msg, char *own_msg)
{
    struct cascade k = {.err = err, .cause = cause, .msg = msg};
    k.afters_tail = &k.afters;
    dctx__lock_acquire(&c->lock);
    if (atomic_load_explicit(&c->err, memory_order_relaxed) != 0) {
        /* Lost: the winner held this lock until the subtree was done. */
        dctx__lock_release(&c->lock);
        free(own_msg);
        return;
    }
    c->own_msg = own_msg;
    mark_done(c, &k);

    /* Depth first; every node on the stack is locked and done. */
    c->work_next = NULL;
    struct dctx__cancel *stack = c;
    while (stack != NULL) {
        struct dctx__cancel *t = stack;
        struct dctx__link *l = take_any(t);
        if (l == NULL) {
            stack = t->work_next;
            dctx__lock_release(&t->lock); /* its subtree is done */
            continue;
        }
        struct dctx__cancel *child = take(l, &k);
        if (child != NULL) {
            child->work_next = stack;
            stack = child;
        }
    }
    dctx__detach(c);
    if (k.afters != NULL)
        dctx__after_schedule(k.afters);
}

void dctx__expire(struct dctx__timer *t)
{
    dctx__cancel_node(&t->c, DCTX_DEADLINE_EXCEEDED, t->dl_cause, t->dl_msg, NULL);
}
