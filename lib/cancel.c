/*
 * cancel.c - joining a parent, and the cancel cascade.
 *
 * Design
 *   Cancel is iterative: a canceled node moves its children from its list
 *   onto a worklist (through their work_next field, so no allocation), and
 *   the loop cancels them one at a time, each adding its own children. A
 *   chain a million deep or a tree of a million nodes costs no stack.
 *
 *   Only one node lock is held at a time (context_impl.h). Under the node's
 *   lock: first cancel wins (err is set once), the cause is stored before
 *   err is published, and the children are taken off the list, each with a
 *   reference so it cannot be freed while it waits on the worklist. Outside
 *   the lock: waiters and the done fd are woken, the timer is stopped, the
 *   after-funcs go to the executor, and the node leaves its parent's list.
 *
 *   Go's order holds: a parent is done before any of its children, and
 *   every descendant is done when the cancel call returns. All of them get
 *   the error and cause of the node the cancel started at; a node already
 *   done keeps its own and its subtree is not visited again.
 *
 * Settling
 *   "Every descendant is done when cancel returns" must also hold for a
 *   cancel that loses (the node was already done) while the winner is still
 *   walking the subtree, and for the winner when another thread won a node
 *   inside its subtree and is still walking below it. So each node counts
 *   what is still unsettled below it: 1 for itself plus each child its
 *   cancel took. A node whose count reaches 0 is settled and takes one off
 *   the node that took it (settle_to), and so on up. Every cancel call ends
 *   by waiting for its node to settle. Waits only ever point down the tree,
 *   so they cannot form a cycle. A settler always holds a reference to a
 *   node at or below the one it settles, which keeps that one alive.
 */
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include "context_impl.h"

void dctx__attach(struct dctx__cancel *c, dctx *parent)
{
    struct dctx__cancel *reg = parent->done_src;
    c->reg = reg;
    if (reg == NULL)
        return;
    dctx__lock_acquire(&reg->lock);
    int err = atomic_load_explicit(&reg->err, memory_order_relaxed);
    if (err != 0) {
        /* Born canceled. c is not visible to any other thread yet. */
        c->cause = reg->cause;
        c->cause_msg = reg->cause_msg;
        atomic_store_explicit(&c->err, err, memory_order_relaxed);
    } else {
        dctx__list_push(&reg->children, &c->sibling);
        atomic_store_explicit(&c->linked, true, memory_order_relaxed);
    }
    dctx__lock_release(&reg->lock);
}

void dctx__detach(struct dctx__cancel *c)
{
    struct dctx__cancel *reg = c->reg;
    if (reg == NULL || !atomic_load_explicit(&c->linked, memory_order_acquire))
        return;
    dctx__lock_acquire(&reg->lock);
    if (atomic_load_explicit(&c->linked, memory_order_relaxed)) {
        dctx__list_unlink(&c->sibling);
        atomic_store_explicit(&c->linked, false, memory_order_release);
    }
    dctx__lock_release(&reg->lock);
}

/* Move c's children off its list: cancelable ones onto *work (each with a
 * reference), after-funcs onto the chain *afters_tail ends (claimed for
 * the executor, in the order they were registered). A child whose count is
 * already zero is being freed: it stays, and unlinks itself. Returns the
 * number of nodes taken. Called under c->lock. */
static int take_children(struct dctx__cancel *c, struct dctx__cancel **work,
                         struct dctx__link ***afters_tail)
{
    struct dctx__link *sentinel = &c->children;
    struct dctx__link *l = sentinel->next, *next;
    int taken = 0;
    for (; l != sentinel; l = next) {
        next = l->next;
        if (l->kind == DCTX__LINK_AFTER) {
            dctx__list_unlink(l);
            dctx__after_claim(l);
            l->next = NULL;
            **afters_tail = l;
            *afters_tail = &l->next;
            continue;
        }
        struct dctx__cancel *k = dctx__container_of(l, struct dctx__cancel, sibling);
        if (!dctx__try_retain(&k->base))
            continue;
        dctx__list_unlink(l);
        k->settle_to = c;
        atomic_store_explicit(&k->linked, false, memory_order_release);
        k->work_next = *work;
        *work = k;
        taken++;
    }
    return taken;
}

static void wake(struct dctx__cancel *c, int fd)
{
    /* seq_cst pairs with the waiter's seq_cst increment before it sleeps:
     * either we see the waiter, or the waiter's futex sees err != 0. */
    if (atomic_load_explicit(&c->waiters, memory_order_seq_cst) != 0)
        dctx__futex_wake(&c->err, INT_MAX);
    if (fd >= 0) {
        uint64_t one = 1;
        /* An eventfd write fails only when the counter would overflow,
         * which leaves the fd readable anyway. */
        ssize_t n = write(fd, &one, sizeof one);
        (void)n;
    }
}

/* Cancel one node; returns false if it was already done. */
static bool cancel_one(struct dctx__cancel *c, int err, int cause, const char *msg, char *own_msg,
                       struct dctx__cancel **work)
{
    struct dctx__link *afters = NULL, **afters_tail = &afters;
    dctx__lock_acquire(&c->lock);
    if (atomic_load_explicit(&c->err, memory_order_relaxed) != 0) {
        dctx__lock_release(&c->lock);
        return false;
    }
    c->cause = cause;
    c->cause_msg = msg;
    c->own_msg = own_msg;
    atomic_store_explicit(&c->err, err, memory_order_seq_cst);
    int taken = take_children(c, work, &afters_tail);
    atomic_store_explicit(&c->unsettled, 1 + taken, memory_order_relaxed);
    int fd = c->done_fd;
    dctx__lock_release(&c->lock);

    wake(c, fd);
    if (c->base.kind == DCTX__TIMER)
        dctx__timer_remove((struct dctx__timer *)c);
    if (afters != NULL)
        dctx__after_schedule(afters);
    return true;
}

/* Take one off k's count; a node that reaches 0 is settled: wake who
 * waits for it and take one off the node that took it, and so on up. */
static void settle(struct dctx__cancel *k)
{
    while (k != NULL) {
        /* Read before the decrement: once settled, k may be released by
         * a waiter (though not freed while we hold a node below it). */
        struct dctx__cancel *up = k->settle_to;
        if (atomic_fetch_sub_explicit(&k->unsettled, 1, memory_order_seq_cst) != 1)
            return;
        if (atomic_load_explicit(&k->waiters, memory_order_seq_cst) != 0)
            dctx__futex_wake(&k->unsettled, INT_MAX);
        k = up;
    }
}

static void wait_settled(struct dctx__cancel *c)
{
    for (;;) {
        int n = atomic_load_explicit(&c->unsettled, memory_order_acquire);
        if (n == 0)
            return;
        atomic_fetch_add_explicit(&c->waiters, 1, memory_order_seq_cst);
        dctx__futex_wait(&c->unsettled, n, INT64_MAX);
        atomic_fetch_sub_explicit(&c->waiters, 1, memory_order_relaxed);
    }
}

void dctx__cancel_node(struct dctx__cancel *c, int err, int cause, const char *msg, char *own_msg)
{
    struct dctx__cancel *work = NULL;
    if (cancel_one(c, err, cause, msg, own_msg, &work)) {
        /* Leave the parent's list first: settle_to must be final (set by a
         * parent's cancel that took us) before we settle. */
        dctx__detach(c);
        settle(c);
        /* The cause text belongs to c or an ancestor of c, so it outlives
         * every descendant that points at it. */
        while (work != NULL) {
            struct dctx__cancel *k = work;
            work = k->work_next;
            if (cancel_one(k, err, cause, msg, NULL, &work))
                settle(k); /* else its winner settles it */
            dctx_release(&k->base);
        }
    } else {
        free(own_msg);
    }
    wait_settled(c);
}

void dctx__expire(struct dctx__timer *t)
{
    dctx__cancel_node(&t->c, DCTX_DEADLINE_EXCEEDED, t->dl_cause, t->dl_msg, NULL);
}
