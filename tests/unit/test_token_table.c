/*
 * test_token_table.c - the server's cancel-token table: the life cycle of a
 * token through each outcome, cancels that overtake their call, tombstone
 * expiry (driven by now_ns arguments, never by sleeping), every limit, a
 * hundred thousand live calls, peer loss, and threads racing on one table
 * (run under ThreadSanitizer and LeakSanitizer by scripts/test).
 */
#include <sodium.h>
#include <stdatomic.h>
#include <string.h>

#include "alloc.h"
#include "testutil.h"
#include "token_table.h"

#define T0 SEC(1000) /* an arbitrary "now" */
#define TTL SEC(10)  /* tombstone lifetime the tests use */

/* A server call as the table sees it: reference counted, so retain can
 * fail once the count has reached zero (the call is dying). */
struct call {
    atomic_int refs;
    uint32_t pipe;
    uint8_t token[DCTX_TOKEN_BYTES];
    int visits;
};

static bool call_retain(void *p)
{
    struct call *c = p;
    int n = atomic_load_explicit(&c->refs, memory_order_relaxed);
    while (n > 0)
        if (atomic_compare_exchange_weak_explicit(&c->refs, &n, n + 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    return false;
}

static void call_release(struct call *c)
{
    atomic_fetch_sub_explicit(&c->refs, 1, memory_order_release);
}

static void call_init(struct call *c, uint32_t pipe)
{
    atomic_init(&c->refs, 1);
    c->pipe = pipe;
    c->visits = 0;
    randombytes_buf(c->token, sizeof c->token);
}

static dctx__token_table *open_table(size_t live, size_t tombstones, size_t finished)
{
    dctx__token_table *t = NULL;
    assert_int_equal(dctx__token_table_open(live, tombstones, finished, &t), 0);
    assert_non_null(t);
    return t;
}

static void new_token(uint8_t token[DCTX_TOKEN_BYTES])
{
    randombytes_buf(token, DCTX_TOKEN_BYTES);
}

static enum dctx__token_found cancel_at(dctx__token_table *t, const uint8_t *token, int64_t now,
                                        void **found)
{
    return dctx__token_cancel(t, token, now, now + TTL, call_retain, found);
}

static int setup(void **state)
{
    (void)state;
    return sodium_init() < 0 ? -1 : 0;
}

static void open_rejects_zero_or_huge_limits_and_a_null_out(void **state)
{
    (void)state;
    dctx__token_table *t = (dctx__token_table *)&t;
    assert_int_equal(dctx__token_table_open(1, 1, 1, NULL), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx__token_table_open(0, 1, 1, &t), DCTX_INVALID_ARGUMENT);
    assert_null(t);
    assert_int_equal(dctx__token_table_open(1, 0, 1, &t), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx__token_table_open(1, 1, 0, &t), DCTX_INVALID_ARGUMENT);
    size_t huge = DCTX__TOKEN_LIMIT_MAX + 1;
    assert_int_equal(dctx__token_table_open(huge, 1, 1, &t), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx__token_table_open(1, huge, 1, &t), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx__token_table_open(1, 1, huge, &t), DCTX_INVALID_ARGUMENT);
    assert_null(t);
    dctx__token_table_close(NULL);
}

static void a_live_call_is_found_by_cancel_and_is_too_late_once_finished(void **state)
{
    (void)state;
    dctx__token_table *t = open_table(16, 16, 16);
    struct call c;
    call_init(&c, 7);
    assert_int_equal(dctx__token_insert(t, c.token, &c, 7, T0), 0);
    assert_int_equal(dctx__token_live_count(t), 1);

    void *found = NULL;
    assert_int_equal(cancel_at(t, c.token, T0, &found), DCTX__TOKEN_LIVE);
    assert_ptr_equal(found, &c);
    assert_int_equal(atomic_load(&c.refs), 2); /* retained for the caller */
    call_release(&c);
    assert_int_equal(dctx__token_tombstone_count(t), 0);

    dctx__token_finish(t, c.token, &c);
    assert_int_equal(dctx__token_live_count(t), 0);
    assert_int_equal(dctx__token_finished_count(t), 1);
    found = &found;
    assert_int_equal(cancel_at(t, c.token, T0, &found), DCTX__TOKEN_FINISHED);
    assert_null(found);
    assert_int_equal(atomic_load(&c.refs), 1);
    assert_int_equal(dctx__token_tombstone_count(t), 0); /* too late leaves no tombstone */
    dctx__token_table_close(t);
}

static void a_cancel_for_an_unknown_token_leaves_one_tombstone(void **state)
{
    (void)state;
    dctx__token_table *t = open_table(16, 16, 16);
    uint8_t token[DCTX_TOKEN_BYTES];
    new_token(token);
    void *found = &found;
    assert_int_equal(cancel_at(t, token, T0, &found), DCTX__TOKEN_TOMBSTONED);
    assert_null(found);
    assert_int_equal(dctx__token_tombstone_count(t), 1);
    /* a second cancel refreshes it, it does not add one */
    assert_int_equal(cancel_at(t, token, T0 + 1, &found), DCTX__TOKEN_TOMBSTONED);
    assert_int_equal(dctx__token_tombstone_count(t), 1);
    assert_int_equal(dctx__token_live_count(t), 0);
    dctx__token_table_close(t);
}

static void a_cancel_that_overtakes_its_call_refuses_the_call_only_once(void **state)
{
    (void)state;
    dctx__token_table *t = open_table(16, 16, 16);
    struct call c;
    call_init(&c, 1);
    void *found;
    assert_int_equal(cancel_at(t, c.token, T0, &found), DCTX__TOKEN_TOMBSTONED);
    assert_int_equal(dctx__token_insert(t, c.token, &c, 1, T0 + 1), DCTX_CANCELED);
    assert_int_equal(dctx__token_tombstone_count(t), 0); /* consumed */
    assert_int_equal(dctx__token_live_count(t), 0);
    /* the tombstone is gone: the same token registers now */
    assert_int_equal(dctx__token_insert(t, c.token, &c, 1, T0 + 2), 0);
    assert_int_equal(cancel_at(t, c.token, T0 + 3, &found), DCTX__TOKEN_LIVE);
    call_release(found);
    dctx__token_finish(t, c.token, &c);
    assert_int_equal(dctx__token_live_count(t), 0);
    dctx__token_table_close(t);
}

static void a_tombstone_refuses_its_call_until_it_expires(void **state)
{
    (void)state;
    dctx__token_table *t = open_table(16, 16, 16);
    uint8_t early[DCTX_TOKEN_BYTES], late[DCTX_TOKEN_BYTES], again[DCTX_TOKEN_BYTES];
    new_token(early);
    new_token(late);
    new_token(again);
    int dummy;
    void *found;
    assert_int_equal(dctx__token_cancel(t, early, T0, T0 + TTL, call_retain, &found),
                     DCTX__TOKEN_TOMBSTONED);
    assert_int_equal(dctx__token_cancel(t, late, T0, T0 + TTL, call_retain, &found),
                     DCTX__TOKEN_TOMBSTONED);
    /* one nanosecond before expiry: refused; at the expiry time: accepted */
    assert_int_equal(dctx__token_insert(t, early, &dummy, 1, T0 + TTL - 1), DCTX_CANCELED);
    assert_int_equal(dctx__token_insert(t, late, &dummy, 1, T0 + TTL), 0);

    /* a refresh moves the expiry out */
    assert_int_equal(dctx__token_cancel(t, again, T0, T0 + TTL, call_retain, &found),
                     DCTX__TOKEN_TOMBSTONED);
    assert_int_equal(dctx__token_cancel(t, again, T0 + 5, T0 + 5 + TTL, call_retain, &found),
                     DCTX__TOKEN_TOMBSTONED);
    assert_int_equal(dctx__token_insert(t, again, &dummy, 1, T0 + TTL + 1), DCTX_CANCELED);
    dctx__token_table_close(t);
}

/* A tombstone past its expiry may still sit in the table (behind a longer
 * lived one, so the lazy purge has not reached it): it counts as absent. */
static void an_expired_tombstone_not_yet_purged_counts_as_absent(void **state)
{
    (void)state;
    dctx__token_table *t = open_table(16, 16, 16);
    uint8_t longer[DCTX_TOKEN_BYTES], x[DCTX_TOKEN_BYTES], y[DCTX_TOKEN_BYTES];
    new_token(longer);
    new_token(x);
    new_token(y);
    int dummy;
    void *found;
    assert_int_equal(dctx__token_cancel(t, longer, T0, T0 + SEC(3600), NULL, &found),
                     DCTX__TOKEN_TOMBSTONED);
    assert_int_equal(dctx__token_cancel(t, x, T0, T0 + TTL, NULL, &found), DCTX__TOKEN_TOMBSTONED);
    assert_int_equal(dctx__token_cancel(t, y, T0, T0 + TTL, NULL, &found), DCTX__TOKEN_TOMBSTONED);
    int64_t later = T0 + TTL + 1;
    /* x: expired, so its call is accepted, and the tombstone is dropped */
    assert_int_equal(dctx__token_insert(t, x, &dummy, 1, later), 0);
    assert_int_equal(dctx__token_tombstone_count(t), 2);
    /* y: canceled again while expired, it is a fresh tombstone */
    assert_int_equal(dctx__token_cancel(t, y, later, later + TTL, NULL, &found),
                     DCTX__TOKEN_TOMBSTONED);
    assert_int_equal(dctx__token_tombstone_count(t), 2);
    assert_int_equal(dctx__token_insert(t, y, &dummy, 1, later + 1), DCTX_CANCELED);
    assert_int_equal(dctx__token_insert(t, longer, &dummy, 1, later + 1), DCTX_CANCELED);
    assert_int_equal(dctx__token_tombstone_count(t), 0);
    dctx__token_table_close(t);
}

static void expired_tombstones_are_purged_by_later_operations_without_inserts(void **state)
{
    (void)state;
    enum { N = 100 };
    dctx__token_table *t = open_table(16, N, 16);
    uint8_t token[DCTX_TOKEN_BYTES];
    void *found;
    for (int i = 0; i < N; i++) {
        new_token(token);
        assert_int_equal(cancel_at(t, token, T0, &found), DCTX__TOKEN_TOMBSTONED);
    }
    assert_int_equal(dctx__token_tombstone_count(t), N);
    /* cancels of a finished call add nothing, and each purges some */
    struct call c;
    call_init(&c, 1);
    assert_int_equal(dctx__token_insert(t, c.token, &c, 1, T0), 0);
    dctx__token_finish(t, c.token, &c);
    assert_int_equal(dctx__token_tombstone_count(t), N);
    for (int i = 0; i < N && dctx__token_tombstone_count(t) > 0; i++)
        assert_int_equal(cancel_at(t, c.token, T0 + TTL, &found), DCTX__TOKEN_FINISHED);
    assert_int_equal(dctx__token_tombstone_count(t), 0);
    dctx__token_table_close(t);
}

static void a_live_or_finished_token_is_refused_as_a_duplicate(void **state)
{
    (void)state;
    dctx__token_table *t = open_table(16, 16, 16);
    struct call a, b;
    call_init(&a, 1);
    call_init(&b, 2);
    memcpy(b.token, a.token, DCTX_TOKEN_BYTES);
    assert_int_equal(dctx__token_insert(t, a.token, &a, 1, T0), 0);
    assert_int_equal(dctx__token_insert(t, b.token, &b, 2, T0), DCTX_ALREADY_EXISTS);
    /* the refused call's finish does not touch the live one */
    dctx__token_finish(t, b.token, &b);
    assert_int_equal(dctx__token_live_count(t), 1);
    assert_int_equal(dctx__token_finished_count(t), 0);
    void *found;
    assert_int_equal(cancel_at(t, a.token, T0, &found), DCTX__TOKEN_LIVE);
    assert_ptr_equal(found, &a);
    call_release(found);

    dctx__token_finish(t, a.token, &a);
    assert_int_equal(dctx__token_insert(t, a.token, &a, 1, T0), DCTX_ALREADY_EXISTS);
    assert_int_equal(dctx__token_live_count(t), 0);
    dctx__token_finish(t, a.token, &a); /* a second finish is harmless */
    assert_int_equal(dctx__token_finished_count(t), 1);
    dctx__token_table_close(t);
}

static void a_dying_call_is_reported_finished_and_not_handed_out(void **state)
{
    (void)state;
    dctx__token_table *t = open_table(16, 16, 16);
    struct call c;
    call_init(&c, 1);
    assert_int_equal(dctx__token_insert(t, c.token, &c, 1, T0), 0);
    call_release(&c); /* the count reaches zero: retain must fail now */
    void *found = &found;
    assert_int_equal(cancel_at(t, c.token, T0, &found), DCTX__TOKEN_FINISHED);
    assert_null(found);
    assert_int_equal(dctx__token_tombstone_count(t), 0);
    assert_int_equal(dctx__token_live_count(t), 1); /* until its finish */
    dctx__token_finish(t, c.token, &c);
    assert_int_equal(dctx__token_live_count(t), 0);
    dctx__token_table_close(t);
}

static void live_calls_past_the_limit_are_refused_until_one_finishes(void **state)
{
    (void)state;
    enum { MAX = 3 };
    dctx__token_table *t = open_table(MAX, 4, 4);
    struct call c[MAX + 1];
    for (int i = 0; i <= MAX; i++)
        call_init(&c[i], 1);
    for (int i = 0; i < MAX; i++)
        assert_int_equal(dctx__token_insert(t, c[i].token, &c[i], 1, T0), 0);
    assert_int_equal(dctx__token_insert(t, c[MAX].token, &c[MAX], 1, T0), DCTX_RESOURCE_EXHAUSTED);
    assert_int_equal(dctx__token_live_count(t), MAX);
    /* cancels still work at the limit: tombstones are not live calls */
    void *found;
    assert_int_equal(cancel_at(t, c[MAX].token, T0, &found), DCTX__TOKEN_TOMBSTONED);
    dctx__token_finish(t, c[0].token, &c[0]);
    assert_int_equal(dctx__token_insert(t, c[MAX].token, &c[MAX], 1, T0), DCTX_CANCELED);
    assert_int_equal(dctx__token_insert(t, c[MAX].token, &c[MAX], 1, T0), 0);
    assert_int_equal(dctx__token_live_count(t), MAX);
    dctx__token_table_close(t); /* live entries are forgotten, not leaked */
}

static void a_full_tombstone_pool_evicts_the_oldest_first(void **state)
{
    (void)state;
    enum { MAX = 3 };
    dctx__token_table *t = open_table(16, MAX, 16);
    uint8_t tok[MAX + 2][DCTX_TOKEN_BYTES];
    void *found;
    int dummy;
    for (int i = 0; i < MAX + 2; i++)
        new_token(tok[i]);
    for (int i = 0; i < MAX; i++)
        assert_int_equal(cancel_at(t, tok[i], T0 + i, &found), DCTX__TOKEN_TOMBSTONED);
    /* refreshing 0 makes it the newest: 1 is now the oldest */
    assert_int_equal(cancel_at(t, tok[0], T0 + 10, &found), DCTX__TOKEN_TOMBSTONED);
    assert_int_equal(cancel_at(t, tok[MAX], T0 + 11, &found), DCTX__TOKEN_TOMBSTONED);
    assert_int_equal(dctx__token_tombstone_count(t), MAX);
    assert_int_equal(cancel_at(t, tok[MAX + 1], T0 + 12, &found), DCTX__TOKEN_TOMBSTONED);
    assert_int_equal(dctx__token_tombstone_count(t), MAX);
    /* 1 and 2 were evicted; 0, MAX and MAX+1 remain */
    assert_int_equal(dctx__token_insert(t, tok[1], &dummy, 1, T0 + 13), 0);
    assert_int_equal(dctx__token_insert(t, tok[2], &dummy, 1, T0 + 13), 0);
    assert_int_equal(dctx__token_insert(t, tok[0], &dummy, 1, T0 + 13), DCTX_CANCELED);
    assert_int_equal(dctx__token_insert(t, tok[MAX], &dummy, 1, T0 + 13), DCTX_CANCELED);
    assert_int_equal(dctx__token_insert(t, tok[MAX + 1], &dummy, 1, T0 + 13), DCTX_CANCELED);
    assert_int_equal(dctx__token_tombstone_count(t), 0);
    dctx__token_table_close(t);
}

static void the_finished_ring_forgets_the_oldest_token(void **state)
{
    (void)state;
    enum { MAX = 2 };
    dctx__token_table *t = open_table(16, 16, MAX);
    struct call c[MAX + 1];
    for (int i = 0; i <= MAX; i++) {
        call_init(&c[i], 1);
        assert_int_equal(dctx__token_insert(t, c[i].token, &c[i], 1, T0), 0);
        dctx__token_finish(t, c[i].token, &c[i]);
    }
    assert_int_equal(dctx__token_finished_count(t), MAX);
    void *found;
    assert_int_equal(cancel_at(t, c[0].token, T0, &found), DCTX__TOKEN_TOMBSTONED);
    for (int i = 1; i <= MAX; i++) {
        assert_int_equal(cancel_at(t, c[i].token, T0, &found), DCTX__TOKEN_FINISHED);
        assert_int_equal(dctx__token_insert(t, c[i].token, &c[i], 1, T0), DCTX_ALREADY_EXISTS);
    }
    dctx__token_table_close(t);
}

static void a_hundred_thousand_live_calls_are_found_then_all_finish(void **state)
{
    (void)state;
    enum { N = 100000 };
    static struct call calls[N];
    dctx__token_table *t = open_table(N, 1024, N);
    for (int i = 0; i < N; i++) {
        call_init(&calls[i], (uint32_t)(i % 10));
        assert_int_equal(dctx__token_insert(t, calls[i].token, &calls[i], calls[i].pipe, T0), 0);
    }
    assert_int_equal(dctx__token_live_count(t), N);
    for (int i = 0; i < N; i += 7) {
        void *found = NULL;
        assert_int_equal(cancel_at(t, calls[i].token, T0, &found), DCTX__TOKEN_LIVE);
        assert_ptr_equal(found, &calls[i]);
        call_release(found);
    }
    assert_int_equal(dctx__token_tombstone_count(t), 0);
    for (int i = 0; i < N; i++)
        dctx__token_finish(t, calls[i].token, &calls[i]);
    assert_int_equal(dctx__token_live_count(t), 0);
    assert_int_equal(dctx__token_finished_count(t), N);
    for (int i = 0; i < N; i += 1000) {
        void *found;
        assert_int_equal(cancel_at(t, calls[i].token, T0, &found), DCTX__TOKEN_FINISHED);
    }
    dctx__token_table_close(t);
}

struct pipe_visit {
    dctx__token_table *t;
    uint32_t pipe;
    bool finish; /* finish each call from fn: fn may call into the table */
};

static void visit_call(void *p, void *arg)
{
    struct call *c = p;
    struct pipe_visit *v = arg;
    assert_int_equal(c->pipe, v->pipe);
    assert_true(atomic_load(&c->refs) >= 2); /* ours and the one retain took */
    c->visits++;
    if (v->finish)
        dctx__token_finish(v->t, c->token, c);
    call_release(c);
}

static void each_of_pipe_visits_exactly_the_calls_of_that_pipe_once(void **state)
{
    (void)state;
    /* enough calls for several batches and several walks per pipe */
    enum { N = 3000, PIPES = 3 };
    static struct call calls[N];
    dctx__token_table *t = open_table(N, 16, N);
    size_t per_pipe[PIPES] = {0};
    for (int i = 0; i < N; i++) {
        uint32_t pipe = (uint32_t)(i * 7 % PIPES) + 100;
        call_init(&calls[i], pipe);
        assert_int_equal(dctx__token_insert(t, calls[i].token, &calls[i], pipe, T0), 0);
        per_pipe[pipe - 100]++;
    }
    /* a dying call of pipe 100 is skipped */
    atomic_store(&calls[0].refs, 0);
    per_pipe[0]--;

    struct pipe_visit v = {t, 101, false};
    assert_int_equal(dctx__token_each_of_pipe(t, 101, call_retain, visit_call, &v), per_pipe[1]);
    v = (struct pipe_visit){t, 100, true};
    assert_int_equal(dctx__token_each_of_pipe(t, 100, call_retain, visit_call, &v), per_pipe[0]);
    v = (struct pipe_visit){t, 999, false};
    assert_int_equal(dctx__token_each_of_pipe(t, 999, call_retain, visit_call, &v), 0);
    for (int i = 0; i < N; i++) {
        bool of_visited_pipe = (calls[i].pipe == 100 || calls[i].pipe == 101) && i != 0;
        assert_int_equal(calls[i].visits, of_visited_pipe ? 1 : 0);
        if (i != 0)
            assert_int_equal(atomic_load(&calls[i].refs), 1);
    }
    /* pipe 100's calls finished from inside fn, all but the dying one */
    assert_int_equal(dctx__token_live_count(t), N - per_pipe[0]);
    assert_int_equal(dctx__token_finished_count(t), per_pipe[0]);
    dctx__token_table_close(t);
}

struct spawner {
    dctx__token_table *t;
    struct call *spawned; /* one new call of the same pipe per visit */
    int n_spawned, visits;
};

static void visit_and_spawn(void *p, void *arg)
{
    struct spawner *s = arg;
    struct call *c = p;
    struct call *n = &s->spawned[s->n_spawned++];
    call_init(n, c->pipe);
    assert_int_equal(dctx__token_insert(s->t, n->token, n, n->pipe, T0), 0);
    s->visits++;
    call_release(c);
}

static void each_of_pipe_skips_calls_inserted_while_it_runs(void **state)
{
    (void)state;
    enum { N = 200 }; /* several batches */
    static struct call calls[N], spawned[N];
    dctx__token_table *t = open_table(2 * N, 16, 16);
    for (int i = 0; i < N; i++) {
        call_init(&calls[i], 5);
        assert_int_equal(dctx__token_insert(t, calls[i].token, &calls[i], 5, T0), 0);
    }
    struct spawner s = {.t = t, .spawned = spawned};
    assert_int_equal(dctx__token_each_of_pipe(t, 5, call_retain, visit_and_spawn, &s), N);
    assert_int_equal(s.visits, N);
    assert_int_equal(dctx__token_live_count(t), 2 * N);
    dctx__token_table_close(t);
}

static void out_of_memory_is_resource_exhausted_and_leaks_nothing(void **state)
{
    (void)state;
    dctx__token_table *t = (dctx__token_table *)&t;
    for (long after = 0; after < 3; after++) { /* the table, the pool, the buckets */
        dctx__test_fail_alloc_after(after);
        assert_int_equal(dctx__token_table_open(4, 4, 4, &t), DCTX_RESOURCE_EXHAUSTED);
        assert_null(t);
    }
    dctx__test_fail_alloc_after(-1);
    t = open_table(4, 4, 4);
    struct call c;
    call_init(&c, 1);
    dctx__test_fail_alloc_after(0);
    assert_int_equal(dctx__token_insert(t, c.token, &c, 1, T0), DCTX_RESOURCE_EXHAUSTED);
    /* cancel and finish never allocate */
    void *found;
    uint8_t other[DCTX_TOKEN_BYTES];
    new_token(other);
    assert_int_equal(cancel_at(t, other, T0, &found), DCTX__TOKEN_TOMBSTONED);
    dctx__test_fail_alloc_after(-1);
    assert_int_equal(dctx__token_live_count(t), 0);
    assert_int_equal(dctx__token_insert(t, c.token, &c, 1, T0), 0);
    dctx__test_fail_alloc_after(0);
    dctx__token_finish(t, c.token, &c);
    dctx__test_fail_alloc_after(-1);
    assert_int_equal(dctx__token_finished_count(t), 1);
    dctx__token_table_close(t);
}

/* ===== Threads ===== */

enum { THREADS = 4, ROUNDS = 20000 };

struct worker {
    dctx__token_table *t;
    uint32_t pipe;
    struct call *calls; /* ROUNDS calls, tokens drawn before the threads start */
    int refused, canceled_live;
};

/* Each round, by i % 4: cancel first (the insert is refused), insert and
 * cancel while live, insert and finish, or finish then cancel too late.
 * Every few rounds a peer-loss walk of this thread's pipe. */
static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < ROUNDS / stress_scale(); i++) {
        struct call *c = &w->calls[i];
        void *found = NULL;
        int64_t now = T0 + i;
        switch (i % 4) {
        case 0:
            assert_int_equal(cancel_at(w->t, c->token, now, &found), DCTX__TOKEN_TOMBSTONED);
            assert_int_equal(dctx__token_insert(w->t, c->token, c, w->pipe, now), DCTX_CANCELED);
            w->refused++;
            break;
        case 1:
            assert_int_equal(dctx__token_insert(w->t, c->token, c, w->pipe, now), 0);
            assert_int_equal(cancel_at(w->t, c->token, now, &found), DCTX__TOKEN_LIVE);
            assert_ptr_equal(found, c);
            call_release(found);
            dctx__token_finish(w->t, c->token, c);
            w->canceled_live++;
            break;
        case 2:
            assert_int_equal(dctx__token_insert(w->t, c->token, c, w->pipe, now), 0);
            if (i % 64 == 2) {
                struct pipe_visit v = {w->t, w->pipe, false};
                assert_int_equal(
                    dctx__token_each_of_pipe(w->t, w->pipe, call_retain, visit_call, &v), 1);
            }
            dctx__token_finish(w->t, c->token, c);
            break;
        default:
            assert_int_equal(dctx__token_insert(w->t, c->token, c, w->pipe, now), 0);
            dctx__token_finish(w->t, c->token, c);
            assert_int_equal(cancel_at(w->t, c->token, now, &found), DCTX__TOKEN_FINISHED);
            break;
        }
    }
    return NULL;
}

static void four_threads_insert_cancel_and_finish_distinct_tokens_concurrently(void **state)
{
    (void)state;
    static struct call calls[THREADS][ROUNDS];
    /* The buckets grow while the threads race. The finished ring holds
     * every token: a thread preempted between its finish and its cancel
     * must still find its own token there, whatever the others did. */
    dctx__token_table *t = open_table(THREADS * 2, 64, THREADS * ROUNDS);
    struct worker w[THREADS];
    pthread_t th[THREADS];
    for (int k = 0; k < THREADS; k++) {
        for (int i = 0; i < ROUNDS; i++)
            call_init(&calls[k][i], (uint32_t)k + 1);
        w[k] = (struct worker){.t = t, .pipe = (uint32_t)k + 1, .calls = calls[k]};
    }
    for (int k = 0; k < THREADS; k++)
        th[k] = start_thread(worker_main, &w[k]);
    for (int k = 0; k < THREADS; k++)
        join_thread(th[k]);
    int rounds = ROUNDS / stress_scale();
    size_t finished = 0;
    for (int k = 0; k < THREADS; k++) {
        finished += (size_t)(rounds - w[k].refused);
        assert_int_equal(w[k].refused, (rounds + 3) / 4);
        assert_int_equal(w[k].canceled_live, (rounds + 2) / 4);
        for (int i = 0; i < rounds; i++)
            assert_int_equal(atomic_load(&calls[k][i].refs), 1);
    }
    assert_int_equal(dctx__token_live_count(t), 0);
    assert_int_equal(dctx__token_tombstone_count(t), 0);
    assert_int_equal(dctx__token_finished_count(t), finished);
    dctx__token_table_close(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(open_rejects_zero_or_huge_limits_and_a_null_out),
        cmocka_unit_test(a_live_call_is_found_by_cancel_and_is_too_late_once_finished),
        cmocka_unit_test(a_cancel_for_an_unknown_token_leaves_one_tombstone),
        cmocka_unit_test(a_cancel_that_overtakes_its_call_refuses_the_call_only_once),
        cmocka_unit_test(a_tombstone_refuses_its_call_until_it_expires),
        cmocka_unit_test(an_expired_tombstone_not_yet_purged_counts_as_absent),
        cmocka_unit_test(expired_tombstones_are_purged_by_later_operations_without_inserts),
        cmocka_unit_test(a_live_or_finished_token_is_refused_as_a_duplicate),
        cmocka_unit_test(a_dying_call_is_reported_finished_and_not_handed_out),
        cmocka_unit_test(live_calls_past_the_limit_are_refused_until_one_finishes),
        cmocka_unit_test(a_full_tombstone_pool_evicts_the_oldest_first),
        cmocka_unit_test(the_finished_ring_forgets_the_oldest_token),
        cmocka_unit_test(a_hundred_thousand_live_calls_are_found_then_all_finish),
        cmocka_unit_test(each_of_pipe_visits_exactly_the_calls_of_that_pipe_once),
        cmocka_unit_test(each_of_pipe_skips_calls_inserted_while_it_runs),
        cmocka_unit_test(out_of_memory_is_resource_exhausted_and_leaks_nothing),
        cmocka_unit_test(four_threads_insert_cancel_and_finish_distinct_tokens_concurrently),
    };
    return cmocka_run_group_tests_name("token_table", tests, setup, NULL);
}
