/*
 * context.c - making, querying, retaining and freeing contexts.
 *
 * Each constructor makes exactly one allocation: the node, with the value
 * bytes or the deadline cause text in the same block. Queries read fields
 * that are immutable after birth, or err with one acquire load, so they
 * take no lock. The shape of a node is in context_impl.h; cancel is in
 * cancel.c, deadlines in timer.c, waiting in wait.c, after-funcs in after.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "clock.h"
#include "context_impl.h"
#include "hooks.h"

static struct dctx background_ctx = {.kind = DCTX__ROOT};
static struct dctx todo_ctx = {.kind = DCTX__ROOT};

dctx *dctx_background(void)
{
    return &background_ctx;
}

dctx *dctx_todo(void)
{
    return &todo_ctx;
}

/* ===== References ===== */

dctx *dctx_retain(dctx *ctx)
{
    /* Relaxed: taking a reference publishes nothing; the caller already
     * holds one, so the node cannot be freed under us. */
    if (ctx != NULL && ctx->kind != DCTX__ROOT)
        atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
    return ctx;
}

bool dctx__try_retain(dctx *ctx)
{
    int n = atomic_load_explicit(&ctx->refs, memory_order_relaxed);
    while (n > 0) {
        if (atomic_compare_exchange_weak_explicit(&ctx->refs, &n, n + 1, memory_order_relaxed,
                                                  memory_order_relaxed))
            return true;
    }
    return false;
}

static void destroy(dctx *ctx)
{
    if (dctx__is_cancelable(ctx)) {
        struct dctx__cancel *c = (struct dctx__cancel *)ctx;
        if (ctx->kind == DCTX__TIMER)
            dctx__timer_remove((struct dctx__timer *)c);
        dctx__detach(c);
        if (c->done_fd >= 0)
            close(c->done_fd);
        free(c->own_msg);
        free(atomic_load_explicit(&c->shards, memory_order_relaxed));
    }
    free(ctx);
}

void dctx_release(dctx *ctx)
{
    /* A loop, not recursion: freeing the leaf of a deep chain may free
     * every ancestor in turn. */
    while (ctx != NULL && ctx->kind != DCTX__ROOT) {
        /* A count of 1 is ours alone: nobody can take a reference without
         * holding one, except the timer thread reviving a timer node
         * (dctx__try_retain). So the last release of any other node skips
         * the atomic decrement; the acquire load still sees every write of
         * the threads that let go before (their decrements are releases). */
        int old =
            ctx->kind != DCTX__TIMER && atomic_load_explicit(&ctx->refs, memory_order_acquire) == 1
                ? 1
                /* acq_rel: our writes to the node happen before whoever
                       * frees it, and the freer sees everyone's writes. */
                : atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel);
        if (old > 1)
            return;
        if (old < 1)
            abort(); /* released more often than retained */
        dctx *parent = ctx->parent;
        destroy(ctx);
        ctx = parent;
    }
}

/* ===== Constructors ===== */

static int check_args(const dctx *parent, dctx **out)
{
    if (out != NULL)
        *out = NULL;
    return (parent == NULL || out == NULL) ? DCTX_INVALID_ARGUMENT : 0;
}

static void init_base(dctx *ctx, enum dctx__kind kind, dctx *parent)
{
    atomic_init(&ctx->refs, 1);
    ctx->kind = kind;
    ctx->parent = dctx_retain(parent);
    ctx->done_src = parent->done_src;
    ctx->deadline_src = parent->deadline_src;
    ctx->values = parent->values;
}

static struct dctx__cancel *new_cancel(dctx *parent, enum dctx__kind kind, size_t size)
{
    struct dctx__cancel *c = dctx__malloc(size);
    if (c == NULL)
        return NULL;
    init_base(&c->base, kind, parent);
    c->base.done_src = c;
    atomic_init(&c->err, 0);
    atomic_init(&c->waiters, 0);
    atomic_init(&c->lock.state, 0);
    c->cause = 0;
    c->cause_msg = NULL;
    c->own_msg = NULL;
    c->done_fd = -1;
    c->reg = NULL;
    atomic_init(&c->joined, DCTX__OUT_OF_LIST);
    c->sibling.kind = DCTX__LINK_NODE;
    c->sibling.prev = c->sibling.next = NULL;
    dctx__list_init(&c->children);
    atomic_init(&c->shards, NULL);
    c->joined_lock = NULL;
    c->work_next = NULL;
    c->shards_done = 0;
    return c;
}

int dctx_with_cancel(dctx *parent, dctx **out)
{
    int rc = check_args(parent, out);
    if (rc != 0)
        return rc;
    struct dctx__cancel *c = new_cancel(parent, DCTX__CANCEL, sizeof *c);
    if (c == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    dctx__attach(c, parent);
    *out = &c->base;
    return 0;
}

/* dctx_with_deadline_cause, for a caller that has just read the clock. */
static int with_deadline_at(dctx *parent, int64_t deadline_ns, int cause, const char *msg,
                            int64_t now, dctx **out)
{
    int rc = check_args(parent, out);
    if (rc != 0)
        return rc;
    /* Go: a deadline never extends the parent's; an earlier parent makes
     * this a plain cancelable child, and its own cause is ignored. */
    const struct dctx__timer *pt = parent->deadline_src;
    if (deadline_ns == DCTX_DEADLINE_NONE || (pt != NULL && pt->deadline_ns < deadline_ns))
        return dctx_with_cancel(parent, out);

    size_t msg_size = msg != NULL ? strlen(msg) + 1 : 0;
    struct dctx__timer *t =
        (struct dctx__timer *)new_cancel(parent, DCTX__TIMER, sizeof *t + msg_size);
    if (t == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    t->deadline_ns = deadline_ns;
    atomic_init(&t->heap_index, DCTX__NOT_IN_HEAP);
    t->dl_cause = dctx__cause_code(cause, DCTX_DEADLINE_EXCEEDED);
    t->dl_msg = msg != NULL ? memcpy(t->msg_buf, msg, msg_size) : NULL;
    t->c.base.deadline_src = t;
    dctx__attach(&t->c, parent);

    if (deadline_ns <= now) {
        dctx__expire(t); /* no-op if born canceled: the parent's error wins */
    } else if (atomic_load_explicit(&t->c.err, memory_order_relaxed) == 0) {
        rc = dctx__timer_add(t);
        if (rc != 0) {
            dctx_release(&t->c.base);
            return rc;
        }
        /* A parent's cancel that reached t before it was in the heap found
         * nothing to remove: take it out here. One of the two sees the
         * other (err is stored before the cancel takes the heap lock). */
        if (atomic_load_explicit(&t->c.err, memory_order_acquire) != 0)
            dctx__timer_remove(t);
    }
    *out = &t->c.base;
    return 0;
}

int dctx_with_deadline_cause(dctx *parent, int64_t deadline_ns, int cause, const char *msg,
                             dctx **out)
{
    return with_deadline_at(parent, deadline_ns, cause, msg, dctx_now(), out);
}

int dctx_with_deadline(dctx *parent, int64_t deadline_ns, dctx **out)
{
    return with_deadline_at(parent, deadline_ns, 0, NULL, dctx_now(), out);
}

/* now + timeout, clamped so a huge timeout means no deadline. */
int dctx_with_timeout(dctx *parent, int64_t timeout_ns, dctx **out)
{
    int64_t now = dctx_now();
    return with_deadline_at(parent, dctx__add_sat(now, timeout_ns), 0, NULL, now, out);
}

int dctx_with_timeout_cause(dctx *parent, int64_t timeout_ns, int cause, const char *msg,
                            dctx **out)
{
    int64_t now = dctx_now();
    return with_deadline_at(parent, dctx__add_sat(now, timeout_ns), cause, msg, now, out);
}

int dctx_with_value(dctx *parent, const dctx_key *key, const void *val, size_t len, dctx **out)
{
    int rc = check_args(parent, out);
    if (rc != 0)
        return rc;
    if (key == NULL || (val == NULL && len > 0))
        return DCTX_INVALID_ARGUMENT;
    if (len > SIZE_MAX - sizeof(struct dctx__value))
        return DCTX_RESOURCE_EXHAUSTED;
    struct dctx__value *v = dctx__malloc(sizeof *v + len);
    if (v == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    init_base(&v->base, DCTX__VALUE, parent);
    v->key = key;
    v->next = parent->values;
    v->len = len;
    if (len > 0)
        memcpy(v->data, val, len);
    v->base.values = v;
    *out = &v->base;
    return 0;
}

int dctx_without_cancel(dctx *parent, dctx **out)
{
    int rc = check_args(parent, out);
    if (rc != 0)
        return rc;
    dctx *d = dctx__malloc(sizeof *d);
    if (d == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    init_base(d, DCTX__DETACHED, parent);
    d->done_src = NULL;
    d->deadline_src = NULL;
    *out = d;
    return 0;
}

/* ===== Cancel ===== */

void dctx_cancel(dctx *ctx)
{
    if (ctx != NULL && dctx__is_cancelable(ctx))
        dctx__cancel_node((struct dctx__cancel *)ctx, DCTX_CANCELED, DCTX_CANCELED, NULL, NULL);
}

void dctx_cancel_cause(dctx *ctx, int cause, const char *msg)
{
    dctx__cancel_err(ctx, DCTX_CANCELED, cause, msg);
}

void dctx__cancel_err(dctx *ctx, int err, int cause, const char *msg)
{
    if (ctx == NULL || !dctx__is_cancelable(ctx))
        return;
    struct dctx__cancel *c = (struct dctx__cancel *)ctx;
    /* Cheap early out, so a losing cancel copies nothing. */
    if (atomic_load_explicit(&c->err, memory_order_acquire) != 0)
        return;
    char *copy = NULL;
    if (msg != NULL) {
        size_t size = strlen(msg) + 1;
        copy = dctx__malloc(size);
        if (copy != NULL)
            memcpy(copy, msg, size);
        /* Out of memory: the cause code still holds, without its text. */
    }
    dctx__cancel_node(c, err, dctx__cause_code(cause, err), copy, copy);
}

/* ===== Queries ===== */

bool dctx_done(const dctx *ctx)
{
    const struct dctx__cancel *s = ctx != NULL ? ctx->done_src : NULL;
    return s != NULL && atomic_load_explicit(&s->err, memory_order_acquire) != 0;
}

int dctx_err(const dctx *ctx)
{
    const struct dctx__cancel *s = ctx != NULL ? ctx->done_src : NULL;
    return s != NULL ? atomic_load_explicit(&s->err, memory_order_acquire) : 0;
}

int dctx_cause(const dctx *ctx, const char **msg)
{
    const struct dctx__cancel *s = ctx != NULL ? ctx->done_src : NULL;
    if (msg != NULL)
        *msg = NULL;
    /* The acquire load of err makes cause and cause_msg, written before
     * err was published, visible. */
    if (s == NULL || atomic_load_explicit(&s->err, memory_order_acquire) == 0)
        return 0;
    if (msg != NULL)
        *msg = s->cause_msg;
    return s->cause;
}

bool dctx_deadline(const dctx *ctx, int64_t *deadline_ns)
{
    const struct dctx__timer *t = ctx != NULL ? ctx->deadline_src : NULL;
    if (t == NULL)
        return false;
    if (deadline_ns != NULL)
        *deadline_ns = t->deadline_ns;
    return true;
}

bool dctx__can_be_done(const dctx *ctx)
{
    return ctx->done_src != NULL;
}

bool dctx__value_next(const dctx *ctx, struct dctx__value_view *v)
{
    const struct dctx__value *node =
        v->pos == NULL ? ctx->values : ((const struct dctx__value *)v->pos)->next;
    if (node == NULL)
        return false;
    v->key = node->key;
    v->data = node->data;
    v->len = node->len;
    v->pos = node;
    return true;
}

const void *dctx_value(const dctx *ctx, const dctx_key *key, size_t *len)
{
    if (len != NULL)
        *len = 0;
    if (ctx == NULL || key == NULL)
        return NULL;
    for (const struct dctx__value *v = ctx->values; v != NULL; v = v->next) {
        if (v->key == key) {
            if (len != NULL)
                *len = v->len;
            return v->data;
        }
    }
    return NULL;
}
