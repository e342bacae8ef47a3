/*
 * test_block_pool.c - the pool (lib/rpc/block_pool.c), stream messages'
 * blocks made of it (stream_half.c) and dctx_rpc_message_set: memory held
 * at once is whole and apart, pooled or not; every size round-trips its
 * bytes, at and past the small blocks' limit; a block made on one thread
 * and freed on another is made again whole there; thousands of frees
 * overflow the caches into the depot and past it; threads that exit with
 * blocks cached give them back (LeakSanitizer counts any left). Under a sanitizer the pool is plain
 * malloc and free: the same tests then check the sizes and the handing
 * between threads against that.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include <dctx/stream.h>

#include "block_pool.h"
#include "stream_half.h"
#include "testutil.h"

enum { SMALL = 240, MANY = 64 * 64 + 500 };

/* A block for len bytes filled with a pattern of seed, then checked. */
static struct dctx__stream_msg *filled(size_t len, unsigned char seed)
{
    struct dctx__stream_msg *m = dctx__msg_alloc(len);
    assert_non_null(m);
    assert_int_equal(m->len, len);
    assert_null(m->next);
    for (size_t i = 0; i < len; i++)
        m->data[i] = (unsigned char)(seed + i);
    return m;
}

static void check_filled(const struct dctx__stream_msg *m, size_t len, unsigned char seed)
{
    assert_int_equal(m->len, len);
    for (size_t i = 0; i < len; i++)
        if (m->data[i] != (unsigned char)(seed + i))
            fail_msg("byte %zu of a %zu-byte block: %u", i, len, m->data[i]);
}

static void every_size_round_trips_at_and_past_the_small_limit(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, 64, SMALL - 1, SMALL, SMALL + 1, 4096, 100000};
    for (int round = 0; round < 3; round++) /* the second and third reuse blocks */
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            struct dctx__stream_msg *m = filled(sizes[i], (unsigned char)(i + round));
            check_filled(m, sizes[i], (unsigned char)(i + round));
            dctx__msg_free(m);
        }
    /* A small block given back serves a message of another small size. */
    struct dctx__stream_msg *a = filled(1, 7);
    dctx__msg_free(a);
    struct dctx__stream_msg *b = filled(SMALL, 9);
    check_filled(b, SMALL, 9);
    dctx__msg_free(b);
    dctx__msg_free(NULL);
}

/* Memory held at once is whole and apart: each piece filled to its last
 * byte keeps its pattern, more pieces than a cache and a depot batch
 * hold, of sizes on both sides of the pool's limit (pooled and malloc'd),
 * each given back with the size it was made with. */
static size_t held_size(int i)
{
    static const size_t sizes[] = {1, DCTX__BLOCK_BYTES - 1, DCTX__BLOCK_BYTES,
                                   DCTX__BLOCK_BYTES + 1, 4096};
    return sizes[i % 5];
}

static void memory_held_at_once_is_whole_and_apart(void **state)
{
    (void)state;
    assert_true(dctx__block_pooled(DCTX__BLOCK_BYTES));
    assert_false(dctx__block_pooled(DCTX__BLOCK_BYTES + 1));
    enum { HELD = 3 * 64 + 7 };
    static unsigned char *held[HELD];
    for (int round = 0; round < 3; round++) { /* later rounds reuse what was given back */
        for (int i = 0; i < HELD; i++) {
            held[i] = dctx__block_alloc(held_size(i));
            assert_non_null(held[i]);
            memset(held[i], (i + round) & 0xff, held_size(i));
        }
        for (int i = 0; i < HELD; i++)
            for (size_t k = 0; k < held_size(i); k++)
                if (held[i][k] != (unsigned char)((i + round) & 0xff))
                    fail_msg("piece %d byte %zu was written by another", i, k);
        for (int i = 0; i < HELD; i++)
            dctx__block_free(held[i], held_size(i));
    }
    dctx__block_free(NULL, 1);
    dctx__block_free(NULL, 4096);
}

static void message_set_copies_and_message_free_gives_back(void **state)
{
    (void)state;
    char text[SMALL + 10];
    memset(text, 'x', sizeof text);
    const size_t sizes[] = {0, 5, SMALL, sizeof text};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        dctx_rpc_message m;
        assert_int_equal(dctx_rpc_message_set(&m, text, sizes[i], 123), 0);
        assert_int_equal(m.len, sizes[i]);
        assert_int_equal(m.budget_ns, 123);
        assert_non_null(m.data);
        assert_memory_equal(m.data, text, sizes[i]);
        dctx_rpc_message_free(&m);
        assert_null(m.data);
        assert_int_equal(m.len, 0);
    }
}

/* Blocks made on one thread, freed on another, as a stream's reader and
 * its receiver do: more than the caches and the depot hold. The threads
 * count what is wrong (cmocka's checks belong to the test's thread). */
static struct dctx__stream_msg *made[MANY];
static atomic_int wrong;

static size_t size_of(int i)
{
    return (size_t)(i % (SMALL + 2));
}

static void *make_all(void *arg)
{
    (void)arg;
    for (int i = 0; i < MANY; i++) {
        made[i] = dctx__msg_alloc(size_of(i));
        if (made[i] == NULL || made[i]->len != size_of(i)) {
            atomic_fetch_add(&wrong, 1);
            continue;
        }
        memset(made[i]->data, i & 0xff, size_of(i));
    }
    return NULL;
}

static void *free_all(void *arg)
{
    (void)arg;
    for (int i = 0; i < MANY; i++) {
        for (size_t k = 0; made[i] != NULL && k < made[i]->len; k++)
            if (made[i]->data[k] != (unsigned char)(i & 0xff)) {
                atomic_fetch_add(&wrong, 1);
                break;
            }
        dctx__msg_free(made[i]);
    }
    return NULL;
}

static void blocks_cross_threads_in_both_directions_and_exit_with_their_threads(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        /* Made on a thread that exits, freed on another that exits: the
         * blocks fill its cache, then the depot, then are freed; the next
         * round's maker takes them back from the depot. */
        pthread_t maker, freer;
        assert_int_equal(pthread_create(&maker, NULL, make_all, NULL), 0);
        assert_int_equal(pthread_join(maker, NULL), 0);
        assert_int_equal(pthread_create(&freer, NULL, free_all, NULL), 0);
        assert_int_equal(pthread_join(freer, NULL), 0);
    }
    /* And on this thread, which outlives the test: what it keeps is
     * reused here. */
    make_all(NULL);
    free_all(NULL);
    make_all(NULL);
    free_all(NULL);
    assert_int_equal(atomic_load(&wrong), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_size_round_trips_at_and_past_the_small_limit),
        cmocka_unit_test(memory_held_at_once_is_whole_and_apart),
        cmocka_unit_test(message_set_copies_and_message_free_gives_back),
        cmocka_unit_test(blocks_cross_threads_in_both_directions_and_exit_with_their_threads),
    };
    return cmocka_run_group_tests_name("block_pool", tests, NULL, NULL);
}
