/*
 * call_map.c - calls in flight by call id (call_map.h).
 */
#include "call_map.h"

#include <stdlib.h>
#include <string.h>

#include <dctx/dctx.h>

#include "wire_impl.h" /* dctx__random */

#define FIRST_BITS 4 /* 16 slots */

/* murmur3's finalizer over the id and the map's seed: every bit of the
 * id reaches the top bits the slot is taken from, so ids that differ only
 * in some bits (counted, or a peer's i << 16) spread all the same. */
static size_t slot_of(const struct dctx__call_map *m, uint32_t id)
{
    uint32_t h = id ^ m->seed;
    h ^= h >> 16;
    h *= 0x85ebca6bu;
    h ^= h >> 13;
    h *= 0xc2b2ae35u;
    h ^= h >> 16;
    return (size_t)(h >> m->shift);
}

void dctx__call_map_init(struct dctx__call_map *m)
{
    memset(m, 0, sizeof *m);
    if (!dctx__random(&m->seed, sizeof m->seed))
        m->seed = 0x9e3779b9u; /* no libsodium: still spread, just not secret */
}

void dctx__call_map_fini(struct dctx__call_map *m)
{
    free(m->slots);
    m->slots = NULL;
    m->count = m->capacity = 0;
}

static void place(struct dctx__call_map *m, uint32_t id, void *call)
{
    size_t mask = m->capacity - 1;
    size_t i = slot_of(m, id);
    while (m->slots[i].id != 0)
        i = (i + 1) & mask;
    m->slots[i].id = id;
    m->slots[i].call = call;
}

static int grow(struct dctx__call_map *m)
{
    unsigned bits = m->capacity == 0 ? FIRST_BITS : 33 - m->shift;
    if (bits > 31)
        return DCTX_RESOURCE_EXHAUSTED;
    struct dctx__call_slot *old = m->slots;
    size_t old_capacity = m->capacity;
    m->slots = calloc((size_t)1 << bits, sizeof *m->slots);
    if (m->slots == NULL) {
        m->slots = old;
        return DCTX_RESOURCE_EXHAUSTED;
    }
    m->capacity = (size_t)1 << bits;
    m->shift = 32 - bits;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i].id != 0)
            place(m, old[i].id, old[i].call);
    free(old);
    return 0;
}

static size_t index_of(const struct dctx__call_map *m, uint32_t id)
{
    if (m->capacity == 0 || id == 0)
        return SIZE_MAX;
    size_t mask = m->capacity - 1;
    for (size_t i = slot_of(m, id);; i = (i + 1) & mask) {
        if (m->slots[i].id == id)
            return i;
        if (m->slots[i].id == 0)
            return SIZE_MAX;
    }
}

int dctx__call_map_insert(struct dctx__call_map *m, uint32_t id, void *call)
{
    if (index_of(m, id) != SIZE_MAX)
        return DCTX_ALREADY_EXISTS;
    if (2 * (m->count + 1) > m->capacity && grow(m) != 0)
        return DCTX_RESOURCE_EXHAUSTED;
    place(m, id, call);
    m->count++;
    return 0;
}

void *dctx__call_map_find(const struct dctx__call_map *m, uint32_t id)
{
    size_t i = index_of(m, id);
    return i == SIZE_MAX ? NULL : m->slots[i].call;
}

void *dctx__call_map_remove(struct dctx__call_map *m, uint32_t id)
{
    size_t i = index_of(m, id);
    if (i == SIZE_MAX)
        return NULL;
    void *call = m->slots[i].call;
    size_t mask = m->capacity - 1;
    /* Backward shift: move each later entry of the run into the hole when
     * its home slot is not between the hole and itself. */
    size_t hole = i;
    for (size_t j = (i + 1) & mask; m->slots[j].id != 0; j = (j + 1) & mask) {
        size_t home = slot_of(m, m->slots[j].id);
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].id = 0;
    m->slots[hole].call = NULL;
    m->count--;
    return call;
}

size_t dctx__call_map_clear(struct dctx__call_map *m, void (*fn)(void *call, void *arg), void *arg)
{
    size_t n = 0;
    for (size_t i = 0; i < m->capacity; i++)
        if (m->slots[i].id != 0) {
            fn(m->slots[i].call, arg);
            n++;
        }
    dctx__call_map_fini(m);
    return n;
}
