/*
 * test_stress.c - what C adds to Go's tests: depth and breadth without
 * recursion, and threads racing on one parent (run under ThreadSanitizer
 * and LeakSanitizer by scripts/test).
 */
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <sys/resource.h>

#include "testutil.h"

enum { DEEP = 1000000 };

/* A chain a million deep: cancel at the root reaches the leaf, and freeing
 * it from either end costs no stack. The stack limit is lowered to 256 KiB
 * first, so a recursive walk would crash here. */
static void million_deep_chain_cancels_and_frees_without_recursion(void **state)
{
    (void)state;
    static dctx *chain[DEEP];
    static const dctx_key key = {"root", 0};
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_value(dctx_background(), &key, "r", 2, &ctx), 0);
    chain[0] = ctx;
    for (int i = 1; i < DEEP; i++) {
        dctx *next = NULL;
        int rc =
            (i % 3 == 0) ? dctx_with_timeout(ctx, SEC(3600), &next) : dctx_with_cancel(ctx, &next);
        assert_int_equal(rc, 0);
        chain[i] = ctx = next;
    }
    assert_string_equal(dctx_value(ctx, &key, NULL), "r");
    assert_false(dctx_done(ctx));
    dctx_cancel(chain[1]);
    assert_true(dctx_done(ctx));
    assert_int_equal(dctx_err(ctx), DCTX_CANCELED);
    /* release root first: the chain is freed in one go by the leaf's release */
    for (int i = 0; i < DEEP; i++)
        dctx_release(chain[i]);

    /* and a live chain freed from the leaf end (no cancel at all) */
    ctx = dctx_background();
    for (int i = 0; i < DEEP; i++) {
        dctx *next = NULL;
        assert_int_equal(dctx_with_cancel(ctx, &next), 0);
        if (i > 0)
            dctx_release(ctx); /* only the leaf keeps the chain alive */
        ctx = next;
    }
    dctx_release(ctx);
}

/* fan-out 10, depth 5 below a root: 111,110 descendants */
static void tree_of_111110_nodes_cancels_completely(void **state)
{
    (void)state;
    enum { FAN = 10, LEVELS = 5, NODES = 10 + 100 + 1000 + 10000 + 100000 };
    static dctx *nodes[NODES];
    dctx *root = NULL;
    assert_int_equal(dctx_with_cancel(dctx_background(), &root), 0);
    int n = 0, level_start = 0, level_len = 1;
    for (int l = 0; l < LEVELS; l++) {
        int next_start = n;
        for (int p = 0; p < level_len; p++) {
            dctx *parent = l == 0 ? root : nodes[level_start + p];
            for (int k = 0; k < FAN; k++)
                assert_int_equal(dctx_with_cancel(parent, &nodes[n++]), 0);
        }
        level_start = next_start;
        level_len *= FAN;
    }
    assert_int_equal(n, NODES);
    assert_int_equal(children_of(root), FAN);
    dctx_cancel_cause(root, DCTX_ABORTED, "tree");
    const char *root_msg = NULL;
    assert_int_equal(dctx_cause(root, &root_msg), DCTX_ABORTED);
    assert_string_equal(root_msg, "tree");
    for (int i = 0; i < NODES; i++) {
        const char *msg = NULL;
        if (dctx_err(nodes[i]) != DCTX_CANCELED || dctx_cause(nodes[i], &msg) != DCTX_ABORTED)
            fail_msg("node %d not canceled with the root's cause", i);
        assert_ptr_equal(msg, root_msg); /* shared, not copied per node */
        assert_int_equal(children_of(nodes[i]), 0);
    }
    assert_int_equal(children_of(root), 0);
    for (int i = 0; i < NODES; i++)
        dctx_release(nodes[i]);
    dctx_release(root);
}

/* Threads hammer one parent (children of every kind, canceled, released
 * with or without cancel, after-funcs stopped or left) while the main
 * thread cancels the parent. Every child made after the cancel is born
 * canceled; everything is freed (LeakSanitizer); no race (TSan). */
struct hammer {
    dctx *parent;
    atomic_bool parent_canceled; /* set after dctx_cancel(parent) returned */
    atomic_int stop;
    atomic_long made, born_canceled, wrong;
    atomic_long after_due; /* registered and not stopped: each must run once */
    atomic_long after_ran;
};

static void count_after(void *arg)
{
    atomic_fetch_add(&((struct hammer *)arg)->after_ran, 1);
}

static void *hammer_thread(void *arg)
{
    struct hammer *h = arg;
    static const dctx_key key = {"k", 0};
    unsigned i = 0;
    while (!atomic_load(&h->stop)) {
        bool after_cancel = atomic_load(&h->parent_canceled);
        dctx *c = NULL, *v = NULL;
        int rc;
        switch (i++ % 4) {
        case 0:
            rc = dctx_with_cancel(h->parent, &c);
            break;
        case 1:
            rc = dctx_with_timeout(h->parent, (i % 8) ? SEC(3600) : US(50), &c);
            break;
        case 2:
            rc = dctx_with_value(h->parent, &key, "v", 2, &v);
            if (rc == 0)
                rc = dctx_with_cancel(v, &c);
            break;
        default: {
            dctx_after *a = NULL;
            rc = dctx_after_func(h->parent, count_after, h, (i % 8) ? &a : NULL);
            if (rc == 0 && (a == NULL || !dctx_after_stop(a)))
                atomic_fetch_add(&h->after_due, 1);
            rc = dctx_with_cancel(h->parent, &c);
        }
        }
        if (rc != 0) {
            atomic_fetch_add(&h->wrong, 1);
            break;
        }
        atomic_fetch_add(&h->made, 1);
        if (after_cancel) {
            if (dctx_err(c) != DCTX_CANCELED)
                atomic_fetch_add(&h->wrong, 1);
            atomic_fetch_add(&h->born_canceled, 1);
        }
        if (i % 3 == 0)
            dctx_cancel(c);
        dctx_release(c);
        dctx_release(v);
    }
    return NULL;
}

static void threads_race_on_one_parent_while_it_is_canceled(void **state)
{
    (void)state;
    enum { THREADS = 4 };
    for (int round = 0; round < 20; round++) {
        struct hammer h = {0};
        assert_int_equal(dctx_with_cancel(dctx_background(), &h.parent), 0);
        pthread_t t[THREADS];
        for (int i = 0; i < THREADS; i++)
            t[i] = start_thread(hammer_thread, &h);
        while (atomic_load(&h.made) < 2000)
            sched_yield();
        dctx_cancel_cause(h.parent, DCTX_ABORTED, "round over");
        atomic_store(&h.parent_canceled, true);
        long at_cancel = atomic_load(&h.made);
        while (atomic_load(&h.made) < at_cancel + 2000)
            sched_yield();
        atomic_store(&h.stop, 1);
        for (int i = 0; i < THREADS; i++)
            join_thread(t[i]);
        assert_int_equal(atomic_load(&h.wrong), 0);
        assert_true(atomic_load(&h.born_canceled) > 0);
        /* every after-func not stopped runs, once; h must outlive them */
        int64_t give_up = dctx_now() + SEC(30);
        while (atomic_load(&h.after_ran) < atomic_load(&h.after_due) && dctx_now() < give_up)
            sched_yield();
        assert_int_equal(atomic_load(&h.after_ran), atomic_load(&h.after_due));
        assert_int_equal(children_of(h.parent), 0);
        dctx_release(h.parent);
    }
}

/* Children released (their count hits zero) while the parent's cancel
 * walks its list: the walk must skip the dying ones, never revive them. */
struct churn {
    dctx *parent;
    atomic_int go;
};

static void *release_churn(void *arg)
{
    struct churn *c = arg;
    while (!atomic_load(&c->go))
        ;
    for (int i = 0; i < 20000 && !dctx_done(c->parent); i++) {
        dctx *child = NULL;
        if (dctx_with_cancel(c->parent, &child) == 0)
            dctx_release(child);
    }
    return NULL;
}

static void release_during_cascade_is_safe(void **state)
{
    (void)state;
    for (int round = 0; round < 50 / stress_scale() + 1; round++) {
        struct churn c = {0};
        assert_int_equal(dctx_with_cancel(dctx_background(), &c.parent), 0);
        enum { KEEP = 2000 };
        dctx *kept[KEEP];
        for (int i = 0; i < KEEP; i++)
            assert_int_equal(dctx_with_cancel(c.parent, &kept[i]), 0);
        pthread_t t[2];
        t[0] = start_thread(release_churn, &c);
        t[1] = start_thread(release_churn, &c);
        atomic_store(&c.go, 1);
        for (int i = 0; i < KEEP; i += 2) /* release half while the cancel may run */
            dctx_release(kept[i]);
        dctx_cancel(c.parent);
        for (int i = 1; i < KEEP; i += 2)
            assert_int_equal(dctx_err(kept[i]), DCTX_CANCELED);
        join_thread(t[0]);
        join_thread(t[1]);
        for (int i = 1; i < KEEP; i += 2)
            dctx_release(kept[i]);
        assert_int_equal(children_of(c.parent), 0);
        dctx_release(c.parent);
    }
}

/* Shards (cancel.c): a parent whose lock a child's attach found held
 * splits its children list, and every later child joins its thread's
 * shard. Children in shards are canceled like the others, may be released
 * while the cancel drains their shard, and a child made after the cancel
 * is born canceled. */
struct sharded {
    dctx *parent;
    atomic_int attached, go, made;
    dctx *kept[4][500];
};

static void *attach_one(void *arg)
{
    struct sharded *s = arg;
    dctx *c = NULL;
    if (dctx_with_cancel(s->parent, &c) == 0) /* blocks: the test holds the lock */
        s->kept[0][0] = c;
    atomic_store(&s->attached, 1);
    return NULL;
}

struct shard_worker {
    struct sharded *s;
    int index;
};

static void *fill_shard(void *arg)
{
    struct shard_worker *w = arg;
    struct sharded *s = w->s;
    while (!atomic_load(&s->go))
        ;
    for (int i = 0; i < 500; i++) {
        dctx *c = NULL;
        if (dctx_with_cancel(s->parent, &c) == 0) {
            atomic_fetch_add(&s->made, 1);
            if (i % 5 == 0)
                dctx_cancel(c); /* its own cancel may race the parent's */
            if (i % 2 == 0)
                dctx_release(c); /* leaves its shard (or meets the cascade) */
            else
                s->kept[w->index][i] = c;
        }
    }
    return NULL;
}

static void children_in_shards_are_canceled_and_released_safely(void **state)
{
    (void)state;
    for (int round = 0; round < 20 / stress_scale() + 1; round++) {
        static struct sharded s;
        memset(&s, 0, sizeof s);
        /* odd rounds: the cancel starts one level up and reaches the
         * sharded parent as a child of the cascade */
        dctx *grand = NULL;
        assert_int_equal(dctx_with_cancel(dctx_background(), &grand), 0);
        assert_int_equal(dctx_with_cancel(grand, &s.parent), 0);
        assert_false(has_shards(s.parent));
        /* Hold the parent's lock: the attach finds it taken, as a second
         * thread making a child at the same moment would. */
        struct dctx__cancel *p = s.parent->done_src;
        dctx__lock_acquire(&p->lock);
        pthread_t one = start_thread(attach_one, &s);
        struct timespec pause = {0, 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
        assert_int_equal(atomic_load(&s.attached), 0);
        dctx__lock_release(&p->lock);
        join_thread(one);
        assert_true(has_shards(s.parent));
        assert_int_equal(children_of(s.parent), 1);

        struct shard_worker w[3];
        pthread_t t[3];
        for (int i = 0; i < 3; i++) {
            w[i] = (struct shard_worker){&s, i + 1};
            t[i] = start_thread(fill_shard, &w[i]);
        }
        atomic_store(&s.go, 1);
        while (atomic_load(&s.made) < 600)
            sched_yield();
        dctx_cancel_cause(round % 2 ? grand : s.parent, DCTX_ABORTED, "sharded");
        for (int i = 0; i < 3; i++)
            join_thread(t[i]);
        /* every child kept, in whichever list it joined, was canceled with
         * the parent's cause (or born canceled with it), unless it was
         * canceled by itself first (i % 5 == 0 above: cause CANCELED) */
        for (int k = 0; k < 4; k++)
            for (int i = 0; i < 500; i++)
                if (s.kept[k][i] != NULL) {
                    const char *msg = NULL;
                    assert_int_equal(dctx_err(s.kept[k][i]), DCTX_CANCELED);
                    int cause = dctx_cause(s.kept[k][i], &msg);
                    if (k == 0 || i % 5 != 0) {
                        assert_int_equal(cause, DCTX_ABORTED);
                        assert_string_equal(msg, "sharded");
                    } else {
                        assert_true(cause == DCTX_CANCELED || cause == DCTX_ABORTED);
                    }
                    dctx_release(s.kept[k][i]);
                }
        assert_int_equal(children_of(s.parent), 0);
        assert_int_equal(children_of(grand), 0);
        dctx_release(s.parent);
        dctx_release(grand);
    }
}

/* A cancel that loses (the node is already done) still returns only once
 * the whole subtree is done, as in Go, where the first cancel holds the
 * lock while it works. Here the first cancel walks a long chain on another
 * thread while the main thread cancels again and looks at the leaf. */
struct loser {
    dctx *root;
    atomic_int go;
};

static void *first_cancel(void *arg)
{
    struct loser *l = arg;
    atomic_store(&l->go, 1);
    dctx_cancel_cause(l->root, DCTX_ABORTED, "first");
    return NULL;
}

static void losing_cancel_returns_after_the_subtree_is_done(void **state)
{
    (void)state;
    enum { LEN = 100000 };
    static dctx *chain[LEN];
    for (int round = 0; round < 10; round++) {
        struct loser l = {0};
        assert_int_equal(dctx_with_cancel(dctx_background(), &l.root), 0);
        dctx *ctx = l.root;
        for (int i = 0; i < LEN; i++) {
            assert_int_equal(dctx_with_cancel(ctx, &chain[i]), 0);
            ctx = chain[i];
        }
        pthread_t t = start_thread(first_cancel, &l);
        while (!dctx_done(l.root))
            ;
        dctx_cancel(l.root); /* loses */
        assert_int_equal(dctx_err(chain[LEN - 1]), DCTX_CANCELED);
        const char *msg = NULL;
        assert_int_equal(dctx_cause(chain[LEN - 1], &msg), DCTX_ABORTED);
        join_thread(t);
        for (int i = 0; i < LEN; i++)
            dctx_release(chain[i]);
        dctx_release(l.root);
    }
}

/* The same when the first cancel is a deadline fired by the timer thread. */
static void cancel_after_deadline_fired_waits_for_the_subtree(void **state)
{
    (void)state;
    enum { LEN = 100000 };
    static dctx *chain[LEN];
    for (int round = 0; round < 5; round++) {
        dctx *root = NULL;
        assert_int_equal(dctx_with_timeout(dctx_background(), MS(20), &root), 0);
        dctx *ctx = root;
        for (int i = 0; i < LEN; i++) {
            assert_int_equal(dctx_with_cancel(ctx, &chain[i]), 0);
            ctx = chain[i];
        }
        while (!dctx_done(root))
            ;
        dctx_cancel(root);
        assert_int_equal(dctx_err(chain[LEN - 1]), DCTX_DEADLINE_EXCEEDED);
        for (int i = 0; i < LEN; i++)
            dctx_release(chain[i]);
        dctx_release(root);
    }
}

static int set_small_stack(void **state)
{
    (void)state;
    /* the limit binds the main thread's stack growth from here on */
    struct rlimit rl;
    getrlimit(RLIMIT_STACK, &rl);
    rl.rlim_cur = 256 * 1024;
    setrlimit(RLIMIT_STACK, &rl);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(million_deep_chain_cancels_and_frees_without_recursion,
                               set_small_stack),
        cmocka_unit_test(tree_of_111110_nodes_cancels_completely),
        cmocka_unit_test(threads_race_on_one_parent_while_it_is_canceled),
        cmocka_unit_test(release_during_cascade_is_safe),
        cmocka_unit_test(children_in_shards_are_canceled_and_released_safely),
        cmocka_unit_test(losing_cancel_returns_after_the_subtree_is_done),
        cmocka_unit_test(cancel_after_deadline_fired_waits_for_the_subtree),
    };
    return cmocka_run_group_tests_name("stress", tests, NULL, NULL);
}
