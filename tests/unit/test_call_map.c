/*
 * test_call_map.c - calls in flight by call id: insert, find and remove
 * keep every other id reachable (removal shifts the runs after it back),
 * a taken id is refused, the table grows past many calls and across the
 * id space, clear hands each out once and empties it, and ids a peer picks to collide stay
 * spread.
 */
#include <stdlib.h>
#include <string.h>

#include "call_map.h"
#include "testutil.h"

#define N 100000

static void *tag(uint32_t id)
{
    return (void *)(uintptr_t)(id * 2u + 1u);
}

static void ids_map_to_their_calls_and_a_taken_id_is_refused(void **state)
{
    (void)state;
    struct dctx__call_map m;
    dctx__call_map_init(&m);
    assert_null(dctx__call_map_find(&m, 1)); /* empty, nothing allocated */
    assert_int_equal(dctx__call_map_insert(&m, 1, tag(1)), 0);
    assert_int_equal(dctx__call_map_insert(&m, 2, tag(2)), 0);
    assert_int_equal(dctx__call_map_insert(&m, 1, tag(9)), DCTX_ALREADY_EXISTS);
    assert_ptr_equal(dctx__call_map_find(&m, 1), tag(1));
    assert_ptr_equal(dctx__call_map_find(&m, 2), tag(2));
    assert_null(dctx__call_map_find(&m, 3));
    assert_null(dctx__call_map_find(&m, 0)); /* 0 is never an id */
    assert_int_equal(m.count, 2);
    dctx__call_map_fini(&m);
}

/* Every other id removed from a hundred thousand: the rest stay findable,
 * the removed are gone, and their ids can be taken again. */
static void removal_keeps_every_other_id_reachable(void **state)
{
    (void)state;
    struct dctx__call_map m;
    dctx__call_map_init(&m);
    for (uint32_t id = 1; id <= N; id++)
        assert_int_equal(dctx__call_map_insert(&m, id, tag(id)), 0);
    for (uint32_t id = 1; id <= N; id += 2)
        assert_ptr_equal(dctx__call_map_remove(&m, id), tag(id));
    assert_int_equal(m.count, N / 2);
    for (uint32_t id = 1; id <= N; id++) {
        if (id % 2)
            assert_null(dctx__call_map_find(&m, id));
        else
            assert_ptr_equal(dctx__call_map_find(&m, id), tag(id));
    }
    assert_null(dctx__call_map_remove(&m, 1)); /* twice: nothing */
    for (uint32_t id = 1; id <= N; id += 2)
        assert_int_equal(dctx__call_map_insert(&m, id, tag(id)), 0);
    assert_int_equal(m.count, N);
    dctx__call_map_fini(&m);
}

/* Ids spread over the whole 32-bit space, with the largest, inserted and
 * removed in a random order against a plain array as the model. */
static void random_ids_across_the_space_agree_with_a_model(void **state)
{
    (void)state;
    enum { K = 20000 };
    uint32_t *ids = malloc(K * sizeof *ids);
    bool *in = calloc(K, sizeof *in);
    assert_non_null(ids);
    assert_non_null(in);
    uint32_t x = 12345;
    for (int i = 0; i < K; i++) {
        x = x * 1664525u + 1013904223u; /* distinct: a full-period LCG */
        ids[i] = x == 0 ? UINT32_MAX : x;
    }
    struct dctx__call_map m;
    dctx__call_map_init(&m);
    size_t count = 0;
    for (int round = 0; round < 8 * K; round++) {
        x = x * 1664525u + 1013904223u;
        int i = (int)(x % K);
        if (in[i]) {
            assert_ptr_equal(dctx__call_map_remove(&m, ids[i]), tag(ids[i]));
            count--;
        } else {
            assert_int_equal(dctx__call_map_insert(&m, ids[i], tag(ids[i])), 0);
            count++;
        }
        in[i] = !in[i];
    }
    assert_int_equal(m.count, count);
    for (int i = 0; i < K; i++)
        assert_true(dctx__call_map_find(&m, ids[i]) == (in[i] ? tag(ids[i]) : NULL));
    dctx__call_map_fini(&m);
    free(ids);
    free(in);
}

static void count_call(void *call, void *arg)
{
    int *seen = arg;
    seen[((uintptr_t)call - 1) / 2]++;
}

static void clear_hands_out_every_call_once_and_empties_the_map(void **state)
{
    (void)state;
    struct dctx__call_map m;
    dctx__call_map_init(&m);
    for (uint32_t id = 1; id <= 1000; id++)
        assert_int_equal(dctx__call_map_insert(&m, id * 7919u, tag(id)), 0);
    static int seen[1001];
    memset(seen, 0, sizeof seen);
    assert_int_equal(dctx__call_map_clear(&m, count_call, seen), 1000);
    for (int id = 1; id <= 1000; id++)
        assert_int_equal(seen[id], 1);
    assert_int_equal(m.count, 0);
    assert_null(dctx__call_map_find(&m, 7919));
    assert_int_equal(dctx__call_map_insert(&m, 7919, tag(1)), 0);
    dctx__call_map_fini(&m);
}

/* The longest run of taken slots: what a miss costs at most. */
static size_t longest_run(const struct dctx__call_map *m)
{
    size_t best = 0, run = 0;
    for (size_t i = 0; i < 2 * m->capacity; i++) { /* twice round: a run may wrap */
        run = m->slots[i % m->capacity].id != 0 ? run + 1 : 0;
        if (run > best)
            best = run;
    }
    return best;
}

/* A peer picks ids a multiple of every table size apart, which an
 * identity hash would put in one slot: the map's mixing spreads them, so
 * no run of taken slots grows long, whatever the seed (200 maps). */
static void ids_a_peer_aims_at_one_slot_stay_spread(void **state)
{
    (void)state;
    size_t worst = 0;
    for (int k = 0; k < 200; k++) {
        struct dctx__call_map m;
        dctx__call_map_init(&m);
        for (uint32_t i = 1; i <= 4096; i++)
            assert_int_equal(dctx__call_map_insert(&m, i << 16, tag(i)), 0);
        for (uint32_t i = 1; i <= 4096; i++)
            assert_ptr_equal(dctx__call_map_find(&m, i << 16), tag(i));
        assert_true(m.capacity >= 2 * m.count && m.capacity <= 4 * m.count);
        size_t run = longest_run(&m);
        worst = run > worst ? run : worst;
        dctx__call_map_fini(&m);
    }
    print_message("longest run of taken slots in 200 maps of 8192: %zu\n", worst);
    assert_true(worst <
                128); /* linear probing at half load: tens; aimed ids clustered: thousands */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ids_map_to_their_calls_and_a_taken_id_is_refused),
        cmocka_unit_test(removal_keeps_every_other_id_reachable),
        cmocka_unit_test(random_ids_across_the_space_agree_with_a_model),
        cmocka_unit_test(clear_hands_out_every_call_once_and_empties_the_map),
        cmocka_unit_test(ids_a_peer_aims_at_one_slot_stay_spread),
    };
    return cmocka_run_group_tests_name("call_map", tests, NULL, NULL);
}
