/*
 * block_pool.c - blocks kept for the next (block_pool.h).
 *
 * Each thread keeps up to 2 * BATCH blocks; past that, BATCH go to the
 * depot (at most DEPOT_BATCHES, 2 MiB: beyond, freed); a thread with none
 * takes a batch from the depot, one lock per BATCH blocks. A thread's
 * cache is freed when it exits.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "block_pool.h"

#define BATCH 64
#define DEPOT_BATCHES 128

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define POOLED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define POOLED 0
#endif
#endif
#ifndef POOLED
#define POOLED 1
#endif

#if POOLED

/* Blocks are kept as pointers, never linked through themselves: taking
 * or giving one back touches no block (a block freed on another core is
 * not in this one's cache). */
struct cache {
    void *slot[2 * BATCH];
    unsigned n;
    bool registered; /* its thread's exit frees it */
};

static __thread struct cache cache;
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;
static bool exit_key_made;

static pthread_mutex_t depot_mu = PTHREAD_MUTEX_INITIALIZER;
static void *depot[DEPOT_BATCHES][BATCH];
static unsigned depot_n; /* batches in depot */

static void thread_exit(void *arg)
{
    struct cache *c = arg;
    for (unsigned i = 0; i < c->n; i++)
        free(c->slot[i]);
    c->n = 0;
    /* A block given back later in the exit (another key's destructor)
     * registers the cache again: POSIX runs destructors again then. */
    c->registered = false;
}

static void make_exit_key(void)
{
    exit_key_made = pthread_key_create(&exit_key, thread_exit) == 0;
}

/* Whether this thread may keep blocks: its exit must free them. */
static bool cache_ready(void)
{
    if (!cache.registered) {
        pthread_once(&exit_once, make_exit_key);
        cache.registered = exit_key_made && pthread_setspecific(exit_key, &cache) == 0;
    }
    return cache.registered;
}

static void *block_get(void)
{
    if (cache.n == 0 && cache_ready()) {
        pthread_mutex_lock(&depot_mu);
        if (depot_n > 0) {
            memcpy(cache.slot, depot[--depot_n], sizeof depot[0]);
            cache.n = BATCH;
        }
        pthread_mutex_unlock(&depot_mu);
    }
    return cache.n > 0 ? cache.slot[--cache.n] : malloc(DCTX__BLOCK_BYTES);
}

static void block_put(void *b)
{
    if (!cache_ready()) {
        free(b);
        return;
    }
    if (cache.n == 2 * BATCH) {
        /* A full cache: its newest BATCH go to the depot (or are freed). */
        cache.n -= BATCH;
        pthread_mutex_lock(&depot_mu);
        bool kept = depot_n < DEPOT_BATCHES;
        if (kept)
            memcpy(depot[depot_n++], &cache.slot[cache.n], sizeof depot[0]);
        pthread_mutex_unlock(&depot_mu);
        if (!kept)
            for (unsigned i = 0; i < BATCH; i++)
                free(cache.slot[cache.n + i]);
    }
    cache.slot[cache.n++] = b;
}

void *dctx__block_alloc(size_t bytes)
{
    return dctx__block_pooled(bytes) ? block_get() : malloc(bytes);
}

void dctx__block_free(void *p, size_t bytes)
{
    if (p != NULL && dctx__block_pooled(bytes))
        block_put(p);
    else
        free(p);
}

#else /* a sanitizer watches every block */

void *dctx__block_alloc(size_t bytes)
{
    return malloc(dctx__block_pooled(bytes) ? DCTX__BLOCK_BYTES : bytes);
}

void dctx__block_free(void *p, size_t bytes)
{
    (void)bytes;
    free(p);
}

#endif
