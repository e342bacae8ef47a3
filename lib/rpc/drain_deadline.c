/*
 * drain_deadline.c - the deadlines of draining servers (see
 * drain_deadline.h) and dctx_rpc_deadline.
 *
 * A context's deadline never changes (Go's rule, and what the core's
 * lock-free reads rest on), so a drain cannot tighten the deadlines of
 * the calls already running. It is kept beside them instead: a short list
 * of the servers that drain, looked up by the id their call root carries.
 * The list is almost always empty, and then a lookup is one atomic load:
 * every outgoing call's budget goes through it.
 */
#include "drain_deadline.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/rpc.h>

const dctx_key dctx__drain_key = {.name = "dctx.drain"};

struct draining {
    uint64_t id;
    int64_t until;
    struct draining *next;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct draining *list; /* protected by mu */
static atomic_int count;      /* entries in list: 0 spares the lock */

bool dctx__drain_begin(uint64_t id, int64_t until)
{
    struct draining *d = malloc(sizeof *d);
    if (d == NULL)
        return false;
    *d = (struct draining){.id = id, .until = until};
    pthread_mutex_lock(&mu);
    d->next = list;
    list = d;
    atomic_fetch_add(&count, 1);
    pthread_mutex_unlock(&mu);
    return true;
}

void dctx__drain_end(uint64_t id)
{
    pthread_mutex_lock(&mu);
    for (struct draining **p = &list; *p != NULL; p = &(*p)->next) {
        if ((*p)->id == id) {
            struct draining *d = *p;
            *p = d->next;
            free(d);
            atomic_fetch_sub(&count, 1);
            break;
        }
    }
    pthread_mutex_unlock(&mu);
}

/* The drain's end for the server whose calls ctx is under, if it drains. */
static bool drain_until(const dctx *ctx, int64_t *until)
{
    if (atomic_load_explicit(&count, memory_order_acquire) == 0)
        return false;
    size_t len = 0;
    const void *v = dctx_value(ctx, &dctx__drain_key, &len);
    if (v == NULL || len != sizeof(uint64_t))
        return false;
    uint64_t id;
    memcpy(&id, v, sizeof id);
    bool found = false;
    pthread_mutex_lock(&mu);
    for (struct draining *d = list; d != NULL && !found; d = d->next)
        if (d->id == id) {
            *until = d->until;
            found = true;
        }
    pthread_mutex_unlock(&mu);
    return found;
}

bool dctx_rpc_deadline(const dctx *ctx, int64_t *deadline_ns)
{
    int64_t own = 0, drain = 0;
    bool has_own = dctx_deadline(ctx, &own);
    bool has_drain = ctx != NULL && drain_until(ctx, &drain);
    if (!has_own && !has_drain)
        return false;
    if (deadline_ns != NULL)
        *deadline_ns = !has_drain ? own : !has_own ? drain : own < drain ? own : drain;
    return true;
}
