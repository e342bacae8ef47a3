/*
 * after.c - after-funcs (Go's AfterFunc) and the executor that runs them.
 *
 * Design
 *   An after-func is an entry in the children list of the context's done
 *   source, next to child nodes. When that node is canceled the entry is
 *   taken off the list and queued to the executor; a cancel never runs a
 *   user's callback and never waits for one. (The library's own hooks,
 *   dctx__after_func_inline, are the exception: the RPC client's cancel
 *   push runs on the canceling thread once its locks are released, which
 *   saves the executor's wake-up on every hop a cancel crosses; it never
 *   calls user code there.)
 *
 *   Run or stop, exactly once: the entry's state goes from PENDING to
 *   CLAIMED (by the cancel, under the node's lock, as it takes the entry) or
 *   to STOPPED (dctx_after_stop) by one compare-and-swap. As in Go, once
 *   the cancel has returned, fn is bound to run and stop returns false. A
 *   claimed entry's fn runs on the executor, which then releases the
 *   context reference the entry holds; a stop that wins releases it.
 *
 *   Two references keep an entry: the caller's handle (if asked for) and
 *   the registration, held by whoever has the entry: the list, then the
 *   executor's queue. Whoever takes it off the list under the lock (the
 *   canceler, or a winning stop) moves or drops the registration.
 *
 *   The executor never lets queued work wait behind a running fn (which may
 *   block, or wait for another after-func): each item queued either claims
 *   an idle thread or starts a new one, up to MAX_THREADS. Threads beyond
 *   the first leave after IDLE_EXIT_S seconds idle.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>

#include "alloc.h"
#include "context_impl.h"

enum { AFTER_PENDING, AFTER_CLAIMED, AFTER_STOPPED };

struct dctx_after {
    struct dctx__link link;   /* in reg's list; protected by reg->lock */
    bool linked;              /* protected by reg->lock */
    atomic_int state;         /* AFTER_PENDING, then CLAIMED or STOPPED */
    atomic_int refs;          /* handle + registration */
    dctx *ctx;                /* retained while PENDING; NULL if it can never be done */
    struct dctx__cancel *reg; /* ctx's done source */
    void (*fn)(void *);
    void *arg;
    struct dctx_after *queue_next; /* protected by queue_lock */
    bool run_inline;               /* the library's own: run by the canceling thread */
};

#define MAX_THREADS 64
#define IDLE_EXIT_S 10

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static struct dctx_after *queue_head, *queue_tail; /* protected by queue_lock */
static int threads; /* executor threads alive; protected by queue_lock */
static int idle;    /* asleep and not yet claimed by queued work; ditto */
static int claims;  /* wake-ups owed to claimed sleepers; ditto */

static void after_unref(struct dctx_after *a)
{
    if (atomic_fetch_sub_explicit(&a->refs, 1, memory_order_acq_rel) == 1)
        free(a);
}

static void run(struct dctx_after *a)
{
    if (atomic_load_explicit(&a->state, memory_order_acquire) == AFTER_CLAIMED) {
        a->fn(a->arg);
        dctx_release(a->ctx);
    }
    after_unref(a);
}

static void *executor_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&queue_lock);
    for (;;) {
        struct dctx_after *a = queue_head;
        if (a != NULL) {
            queue_head = a->queue_next;
            if (queue_head == NULL)
                queue_tail = NULL;
            pthread_mutex_unlock(&queue_lock);
            run(a);
            pthread_mutex_lock(&queue_lock);
            continue;
        }
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += IDLE_EXIT_S;
        idle++;
        int rc = pthread_cond_timedwait(&queue_cond, &queue_lock, &until);
        if (claims > 0) {
            claims--; /* the scheduler already took us off idle */
            continue;
        }
        idle--;
        if (rc == ETIMEDOUT && threads > 1) {
            threads--;
            pthread_mutex_unlock(&queue_lock);
            return NULL;
        }
    }
}

/* Start one more executor thread. Called under queue_lock. */
static int spawn(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, executor_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return rc;
    pthread_detach(thread);
    threads++;
    return 0;
}

static int ensure_executor(void)
{
    pthread_mutex_lock(&queue_lock);
    int rc = threads == 0 ? spawn() : 0;
    pthread_mutex_unlock(&queue_lock);
    return rc == 0 ? 0 : DCTX_RESOURCE_EXHAUSTED;
}

static void enqueue_locked(struct dctx_after *a)
{
    a->queue_next = NULL;
    if (queue_tail != NULL)
        queue_tail->queue_next = a;
    else
        queue_head = a;
    queue_tail = a;
}

void dctx__after_claim(struct dctx__link *l)
{
    struct dctx_after *a = dctx__container_of(l, struct dctx_after, link);
    a->linked = false;
    int expected = AFTER_PENDING;
    /* Fails only if a stop won first: then the executor just drops it. */
    atomic_compare_exchange_strong_explicit(&a->state, &expected, AFTER_CLAIMED,
                                            memory_order_acq_rel, memory_order_acquire);
}

void dctx__after_schedule(struct dctx__link *first)
{
    struct dctx_after *inline_head = NULL, **inline_tail = &inline_head;
    bool locked = false;
    for (struct dctx__link *l = first, *next; l != NULL; l = next) {
        next = l->next;
        struct dctx_after *a = dctx__container_of(l, struct dctx_after, link);
        if (a->run_inline) {
            a->queue_next = NULL;
            *inline_tail = a;
            inline_tail = &a->queue_next;
            continue;
        }
        if (!locked) {
            pthread_mutex_lock(&queue_lock);
            locked = true;
        }
        enqueue_locked(a);
        if (idle > 0) {
            idle--;
            claims++;
            pthread_cond_signal(&queue_cond);
        } else if (threads < MAX_THREADS) {
            (void)spawn(); /* on failure the threads we have get to it */
        }
    }
    if (locked)
        pthread_mutex_unlock(&queue_lock);
    /* Every node lock is released by now (cancel.c): the library's own
     * hooks run here, on the canceling thread, with no hand-off. */
    for (struct dctx_after *a = inline_head, *next; a != NULL; a = next) {
        next = a->queue_next;
        run(a);
    }
}

static int add(dctx *ctx, void (*fn)(void *), void *arg, dctx_after **out, bool run_inline)
{
    if (out != NULL)
        *out = NULL;
    if (ctx == NULL || fn == NULL)
        return DCTX_INVALID_ARGUMENT;
    struct dctx__cancel *reg = ctx->done_src;
    if (reg == NULL && out == NULL)
        return 0; /* can never run, and nobody will ask */
    if (reg != NULL && !run_inline && ensure_executor() != 0)
        return DCTX_RESOURCE_EXHAUSTED;
    struct dctx_after *a = dctx__malloc(sizeof *a);
    if (a == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    a->link.kind = DCTX__LINK_AFTER;
    a->linked = false;
    atomic_init(&a->state, AFTER_PENDING);
    atomic_init(&a->refs, (out != NULL) + (reg != NULL));
    a->ctx = reg != NULL ? dctx_retain(ctx) : NULL;
    a->reg = reg;
    a->fn = fn;
    a->arg = arg;
    a->queue_next = NULL;
    a->run_inline = run_inline;
    if (out != NULL)
        *out = a;
    if (reg == NULL)
        return 0;

    dctx__lock_acquire(&reg->lock);
    bool done = atomic_load_explicit(&reg->err, memory_order_relaxed) != 0;
    if (!done) {
        dctx__list_push(&reg->children, &a->link);
        a->linked = true;
    }
    dctx__lock_release(&reg->lock);
    /* From here a may already have run and, without a handle, be freed. */
    if (done) {
        int expected = AFTER_PENDING;
        atomic_compare_exchange_strong_explicit(&a->state, &expected, AFTER_CLAIMED,
                                                memory_order_acq_rel, memory_order_acquire);
        a->link.next = NULL;
        dctx__after_schedule(&a->link);
    }
    return 0;
}

int dctx_after_func(dctx *ctx, void (*fn)(void *), void *arg, dctx_after **out)
{
    return add(ctx, fn, arg, out, false);
}

int dctx__after_func_inline(dctx *ctx, void (*fn)(void *), void *arg, dctx_after **out)
{
    return add(ctx, fn, arg, out, true);
}

bool dctx_after_stop(dctx_after *h)
{
    if (h == NULL)
        return false;
    int expected = AFTER_PENDING;
    bool stopped = atomic_compare_exchange_strong_explicit(
        &h->state, &expected, AFTER_STOPPED, memory_order_acq_rel, memory_order_acquire);
    if (stopped && h->reg != NULL) {
        /* We still hold the context reference, so reg is alive. */
        struct dctx__cancel *reg = h->reg;
        bool unlinked = false;
        dctx__lock_acquire(&reg->lock);
        if (h->linked) {
            dctx__list_unlink(&h->link);
            h->linked = false;
            unlinked = true;
        }
        dctx__lock_release(&reg->lock);
        dctx_release(h->ctx);
        if (unlinked)
            after_unref(h); /* the registration: nobody else has the entry */
    }
    after_unref(h);
    return stopped;
}
