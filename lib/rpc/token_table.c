/*
 * token_table.c - the server's cancel-token table (see token_table.h for
 * what it is for and what it promises).
 *
 * Layout
 *   One entry type for the three kinds of token. Each entry sits in two
 *   structures at once:
 *     - a bucket chain (singly linked through chain) of a hash table with
 *       separate chaining, indexed by keyed SipHash of the token; the full
 *       64-bit hash is kept in the entry, so growing never rehashes a token
 *       and a lookup runs sodium_memcmp only on a hash match;
 *     - the order list of its kind (circular, doubly linked, with a
 *       sentinel in the table): live calls in insert order, tombstones
 *       oldest (least recently created or refreshed) first, finished tokens
 *       oldest first. Removing any entry is O(1); evicting the oldest is
 *       taking the head.
 *   each_of_pipe also puts marker entries (CURSOR) of its own into the live
 *   list, to keep its place while the lock is dropped.
 *
 * Where entries come from
 *   LIVE      dctx__malloc at insert.
 *   FINISHED  the LIVE entry, turned over in place by finish; freed when
 *             the finished ring forgets it.
 *   TOMBSTONE the pool allocated at open, handed out as needed (released
 *             ones linked through chain); when all of it is in use the
 *             oldest tombstone is reused.
 *
 * Lock
 *   t->lock guards every field but key, max_*, max_buckets and pool (the
 *   array itself), which are written once at open.
 */
#include "token_table.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "context/alloc.h"

enum entry_kind { SENTINEL, CURSOR, LIVE, TOMBSTONE, FINISHED, FREE };

struct entry {
    struct entry *prev, *next; /* order list of the kind */
    struct entry *chain;       /* next in the bucket; next free in the pool */
    uint64_t hash;             /* keyed SipHash of token */
    uint8_t token[DCTX_TOKEN_BYTES];
    uint32_t pipe_id; /* LIVE */
    uint8_t kind;     /* enum entry_kind */
    union {
        void *call;         /* LIVE */
        int64_t expires_ns; /* TOMBSTONE: absent from this time on */
    } u;
};

struct dctx__token_table {
    pthread_mutex_t lock;
    unsigned char key[crypto_shorthash_KEYBYTES];  /* immutable; wiped at close */
    size_t max_live, max_tombstones, max_finished; /* immutable */
    size_t max_buckets;                            /* immutable; a power of two */
    struct entry *pool;                            /* max_tombstones entries */

    struct entry **buckets;
    size_t mask;                             /* bucket count - 1 */
    struct entry live, tombstones, finished; /* order list sentinels */
    size_t n_live, n_tombstones, n_finished;
    struct entry *pool_free; /* released pool entries */
    size_t pool_used;        /* entries of pool handed out at least once */
};

/* Expired tombstones that insert and cancel pop at most, each. Two would
 * do (each cancel adds at most one); a few more drain an idle backlog. */
#define PURGE_BUDGET 4

/* each_of_pipe: calls per batch, entries walked per lock hold. */
#define PIPE_BATCH 64
#define PIPE_WALK 1024

#define INITIAL_BUCKETS 64

/* ===== Order lists ===== */

static void list_init(struct entry *sentinel)
{
    memset(sentinel, 0, sizeof *sentinel);
    sentinel->prev = sentinel->next = sentinel;
    sentinel->kind = SENTINEL;
}

/* Put e just before at: before the sentinel is the tail (the newest). */
static void list_insert_before(struct entry *at, struct entry *e)
{
    e->next = at;
    e->prev = at->prev;
    at->prev->next = e;
    at->prev = e;
}

static void list_unlink(struct entry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = e->next = NULL;
}

/* The oldest entry of a list, or NULL if it is empty. */
static struct entry *list_head(struct entry *sentinel)
{
    return sentinel->next == sentinel ? NULL : sentinel->next;
}

/* ===== Hash index ===== */

static uint64_t token_hash(const dctx__token_table *t, const uint8_t token[DCTX_TOKEN_BYTES])
{
    unsigned char out[crypto_shorthash_BYTES];
    crypto_shorthash(out, token, DCTX_TOKEN_BYTES, t->key);
    uint64_t h;
    memcpy(&h, out, sizeof h);
    return h;
}

static struct entry **bucket_of(dctx__token_table *t, uint64_t hash)
{
    return &t->buckets[hash & t->mask];
}

static struct entry *find(dctx__token_table *t, const uint8_t token[DCTX_TOKEN_BYTES],
                          uint64_t hash)
{
    for (struct entry *e = *bucket_of(t, hash); e != NULL; e = e->chain)
        if (e->hash == hash && sodium_memcmp(e->token, token, DCTX_TOKEN_BYTES) == 0)
            return e;
    return NULL;
}

static void chain_add(dctx__token_table *t, struct entry *e)
{
    struct entry **b = bucket_of(t, e->hash);
    e->chain = *b;
    *b = e;
}

static void chain_remove(dctx__token_table *t, struct entry *e)
{
    struct entry **p = bucket_of(t, e->hash);
    while (*p != e)
        p = &(*p)->chain;
    *p = e->chain;
    e->chain = NULL;
}

/* Double the bucket array once the entries outnumber the buckets, up to
 * max_buckets. Failing to grow is harmless (chains get longer), so the
 * operations that call this never fail because of it. */
static void maybe_grow(dctx__token_table *t)
{
    size_t n = t->mask + 1;
    if (t->n_live + t->n_tombstones + t->n_finished <= n || n >= t->max_buckets ||
        n > SIZE_MAX / (2 * sizeof(struct entry *)))
        return;
    struct entry **nb = dctx__malloc(2 * n * sizeof *nb);
    if (nb == NULL)
        return;
    memset(nb, 0, 2 * n * sizeof *nb);
    struct entry **old = t->buckets;
    t->buckets = nb;
    t->mask = 2 * n - 1;
    for (size_t i = 0; i < n; i++) {
        struct entry *e = old[i];
        while (e != NULL) {
            struct entry *next = e->chain;
            chain_add(t, e);
            e = next;
        }
    }
    free(old);
}

/* ===== Tombstones ===== */

/* Take tombstone e out of the table, back into the pool. */
static void tombstone_release(dctx__token_table *t, struct entry *e)
{
    chain_remove(t, e);
    list_unlink(e);
    t->n_tombstones--;
    e->kind = FREE;
    e->chain = t->pool_free;
    t->pool_free = e;
}

/* Pop a few expired tombstones off the head. Bounded, so O(1). */
static void purge_expired(dctx__token_table *t, int64_t now_ns)
{
    for (int i = 0; i < PURGE_BUDGET; i++) {
        struct entry *e = list_head(&t->tombstones);
        if (e == NULL || e->u.expires_ns > now_ns)
            return;
        tombstone_release(t, e);
    }
}

/* An entry for a new tombstone: a released one, else one never used (the
 * pool is touched only as far as it is used, so a big limit costs memory
 * only when cancels come), else the oldest tombstone. */
static struct entry *tombstone_take(dctx__token_table *t)
{
    struct entry *e = t->pool_free;
    if (e == NULL && t->pool_used < t->max_tombstones) {
        e = &t->pool[t->pool_used++];
        memset(e, 0, sizeof *e);
        return e;
    }
    if (e == NULL) {
        /* The pool is only exhausted when all of it is tombstones. */
        tombstone_release(t, list_head(&t->tombstones));
        e = t->pool_free;
    }
    t->pool_free = e->chain;
    return e;
}

static void tombstone_add(dctx__token_table *t, const uint8_t token[DCTX_TOKEN_BYTES],
                          uint64_t hash, int64_t expires_ns)
{
    struct entry *e = tombstone_take(t);
    memcpy(e->token, token, DCTX_TOKEN_BYTES);
    e->hash = hash;
    e->kind = TOMBSTONE;
    e->pipe_id = 0;
    e->u.expires_ns = expires_ns;
    chain_add(t, e);
    list_insert_before(&t->tombstones, e);
    t->n_tombstones++;
    maybe_grow(t);
}

/* ===== Open, close ===== */

static size_t pow2_at_least(size_t n)
{
    size_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

static bool limits_valid(size_t max_live, size_t max_tombstones, size_t max_finished)
{
    return max_live >= 1 && max_live <= DCTX__TOKEN_LIMIT_MAX && max_tombstones >= 1 &&
           max_tombstones <= DCTX__TOKEN_LIMIT_MAX && max_finished >= 1 &&
           max_finished <= DCTX__TOKEN_LIMIT_MAX;
}

/* Allocate the pool (all free) and the first buckets. */
static int alloc_arrays(dctx__token_table *t)
{
    if (t->max_tombstones > SIZE_MAX / sizeof(struct entry))
        return DCTX_RESOURCE_EXHAUSTED;
    size_t nb = t->max_buckets < INITIAL_BUCKETS ? t->max_buckets : INITIAL_BUCKETS;
    t->pool = dctx__malloc(t->max_tombstones * sizeof(struct entry));
    t->buckets = dctx__malloc(nb * sizeof *t->buckets);
    if (t->pool == NULL || t->buckets == NULL) {
        free(t->pool);
        free(t->buckets);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    memset(t->buckets, 0, nb * sizeof *t->buckets);
    t->mask = nb - 1;
    t->pool_free = NULL;
    t->pool_used = 0; /* handed out on demand: see tombstone_take */
    return 0;
}

int dctx__token_table_open(size_t max_live, size_t max_tombstones, size_t max_finished,
                           dctx__token_table **out)
{
    if (out == NULL)
        return DCTX_INVALID_ARGUMENT;
    *out = NULL;
    if (!limits_valid(max_live, max_tombstones, max_finished))
        return DCTX_INVALID_ARGUMENT;
    if (sodium_init() < 0) /* idempotent and thread-safe: 1 once done */
        return DCTX_RESOURCE_EXHAUSTED;
    dctx__token_table *t = dctx__malloc(sizeof *t);
    if (t == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    memset(t, 0, sizeof *t);
    t->max_live = max_live;
    t->max_tombstones = max_tombstones;
    t->max_finished = max_finished;
    t->max_buckets = pow2_at_least(max_live + max_tombstones + max_finished);
    if (alloc_arrays(t) != 0) {
        free(t);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    if (pthread_mutex_init(&t->lock, NULL) != 0) {
        free(t->pool);
        free(t->buckets);
        free(t);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    list_init(&t->live);
    list_init(&t->tombstones);
    list_init(&t->finished);
    crypto_shorthash_keygen(t->key);
    *out = t;
    return 0;
}

static void free_list(struct entry *sentinel)
{
    struct entry *e = sentinel->next;
    while (e != sentinel) {
        struct entry *next = e->next;
        free(e);
        e = next;
    }
}

void dctx__token_table_close(dctx__token_table *t)
{
    if (t == NULL)
        return;
    /* Live and finished entries were allocated one by one; tombstones
     * live in the pool. No each_of_pipe runs, so no cursors are left. */
    free_list(&t->live);
    free_list(&t->finished);
    free(t->pool);
    free(t->buckets);
    pthread_mutex_destroy(&t->lock);
    sodium_memzero(t->key, sizeof t->key);
    free(t);
}

/* ===== Operations ===== */

int dctx__token_insert(dctx__token_table *t, const uint8_t token[DCTX_TOKEN_BYTES], void *call,
                       uint32_t pipe_id, int64_t now_ns)
{
    uint64_t hash = token_hash(t, token); /* the key is immutable: no lock needed */
    int rc = 0;
    pthread_mutex_lock(&t->lock);
    purge_expired(t, now_ns);
    struct entry *e = find(t, token, hash);
    if (e != NULL && e->kind == TOMBSTONE) {
        bool overtaken = e->u.expires_ns > now_ns;
        tombstone_release(t, e); /* consumed, or expired: gone either way */
        if (overtaken) {
            rc = DCTX_CANCELED;
            goto out;
        }
    } else if (e != NULL) {
        rc = DCTX_ALREADY_EXISTS; /* LIVE or FINISHED */
        goto out;
    }
    if (t->n_live >= t->max_live || (e = dctx__malloc(sizeof *e)) == NULL) {
        rc = DCTX_RESOURCE_EXHAUSTED;
        goto out;
    }
    memcpy(e->token, token, DCTX_TOKEN_BYTES);
    e->hash = hash;
    e->kind = LIVE;
    e->pipe_id = pipe_id;
    e->u.call = call;
    chain_add(t, e);
    list_insert_before(&t->live, e);
    t->n_live++;
    maybe_grow(t);
out:
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void dctx__token_finish(dctx__token_table *t, const uint8_t token[DCTX_TOKEN_BYTES], void *call)
{
    uint64_t hash = token_hash(t, token);
    struct entry *forgotten = NULL;
    pthread_mutex_lock(&t->lock);
    struct entry *e = find(t, token, hash);
    if (e != NULL && e->kind == LIVE && e->u.call == call) {
        list_unlink(e);
        t->n_live--;
        e->kind = FINISHED;
        e->u.call = NULL;
        list_insert_before(&t->finished, e);
        if (++t->n_finished > t->max_finished) {
            forgotten = list_head(&t->finished);
            chain_remove(t, forgotten);
            list_unlink(forgotten);
            t->n_finished--;
        }
    }
    pthread_mutex_unlock(&t->lock);
    free(forgotten); /* out of the table already: free it without the lock */
}

enum dctx__token_found dctx__token_cancel(dctx__token_table *t,
                                          const uint8_t token[DCTX_TOKEN_BYTES], int64_t now_ns,
                                          int64_t expires_ns, bool (*retain)(void *call),
                                          void **call)
{
    uint64_t hash = token_hash(t, token);
    enum dctx__token_found found = DCTX__TOKEN_TOMBSTONED;
    *call = NULL;
    pthread_mutex_lock(&t->lock);
    purge_expired(t, now_ns);
    struct entry *e = find(t, token, hash);
    if (e == NULL) {
        tombstone_add(t, token, hash, expires_ns);
    } else if (e->kind == LIVE) {
        /* A call whose retain fails is dying: it is about to finish. */
        found = DCTX__TOKEN_FINISHED;
        if (retain == NULL || retain(e->u.call)) {
            *call = e->u.call;
            found = DCTX__TOKEN_LIVE;
        }
    } else if (e->kind == FINISHED) {
        found = DCTX__TOKEN_FINISHED;
    } else {
        /* Refresh (an expired one too): it becomes the newest. */
        e->u.expires_ns = expires_ns;
        list_unlink(e);
        list_insert_before(&t->tombstones, e);
    }
    pthread_mutex_unlock(&t->lock);
    return found;
}

/* Under the lock: walk from cursor here towards end, retaining the calls of
 * pipe_id into batch, and move here past what was walked. Returns the
 * number collected; *done once end is reached (here and end unlinked). */
static size_t collect_batch(struct entry *here, struct entry *end, uint32_t pipe_id,
                            bool (*retain)(void *call), void **batch, bool *done)
{
    size_t n = 0;
    struct entry *e = here->next;
    for (size_t steps = 0; e != end && n < PIPE_BATCH && steps < PIPE_WALK; steps++) {
        if (e->kind == LIVE && e->pipe_id == pipe_id && (retain == NULL || retain(e->u.call)))
            batch[n++] = e->u.call;
        e = e->next;
    }
    list_unlink(here);
    *done = e == end;
    if (*done)
        list_unlink(end);
    else
        list_insert_before(e, here); /* e is the first entry not yet walked */
    return n;
}

size_t dctx__token_each_of_pipe(dctx__token_table *t, uint32_t pipe_id, bool (*retain)(void *call),
                                void (*fn)(void *call, void *arg), void *arg)
{
    /* Cursors: here marks our place, end the tail as it was at the start,
     * so calls inserted meanwhile (appended after end) are not walked. */
    struct entry here = {.kind = CURSOR}, end = {.kind = CURSOR};
    void *batch[PIPE_BATCH];
    size_t total = 0;
    bool done = false;
    pthread_mutex_lock(&t->lock);
    list_insert_before(t->live.next, &here);
    list_insert_before(&t->live, &end);
    while (!done) {
        size_t n = collect_batch(&here, &end, pipe_id, retain, batch, &done);
        pthread_mutex_unlock(&t->lock);
        for (size_t i = 0; i < n; i++)
            fn(batch[i], arg);
        total += n;
        if (!done)
            pthread_mutex_lock(&t->lock);
    }
    return total;
}

/* ===== Counts ===== */

static size_t count_of(dctx__token_table *t, const size_t *field)
{
    pthread_mutex_lock(&t->lock);
    size_t n = *field;
    pthread_mutex_unlock(&t->lock);
    return n;
}

size_t dctx__token_live_count(dctx__token_table *t)
{
    return count_of(t, &t->n_live);
}

size_t dctx__token_tombstone_count(dctx__token_table *t)
{
    return count_of(t, &t->n_tombstones);
}

size_t dctx__token_finished_count(dctx__token_table *t)
{
    return count_of(t, &t->n_finished);
}
