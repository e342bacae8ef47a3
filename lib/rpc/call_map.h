/*
 * call_map.h - the calls in flight on one connection, by call id: which
 * call a reply or a cancel's answer belongs to (client), and which ids a
 * peer has in flight (server). Never installed.
 *
 * Open addressing with linear probing; a removal shifts the entries after
 * it back, so there are no tombstones and a lookup ends at the first empty
 * slot. The slot is a mix of the id with a random seed per map, so a peer
 * that picks its ids cannot aim them at one run of slots (and a map is
 * one connection's: a peer could only slow its own). The table doubles
 * when half full and never shrinks: its size follows the most calls a
 * connection had at once.
 *
 * Not thread safe: the owner's lock guards it.
 */
#ifndef DCTX_RPC_CALL_MAP_H
#define DCTX_RPC_CALL_MAP_H

#include <stddef.h>
#include <stdint.h>

struct dctx__call_slot {
    uint32_t id; /* 0: empty */
    void *call;
};

struct dctx__call_map {
    struct dctx__call_slot *slots;
    uint32_t seed;  /* random, per map */
    unsigned shift; /* 32 - log2(capacity) */
    size_t count, capacity;
};

/* dctx__call_map_init makes an empty map (no allocation until the first
 * insert). */
void dctx__call_map_init(struct dctx__call_map *m);
void dctx__call_map_fini(struct dctx__call_map *m);

/* dctx__call_map_insert maps id (not 0) to call. Returns 0,
 * DCTX_ALREADY_EXISTS (id is mapped: nothing changes) or
 * DCTX_RESOURCE_EXHAUSTED (no memory to grow). */
int dctx__call_map_insert(struct dctx__call_map *m, uint32_t id, void *call);

/* dctx__call_map_find returns id's call, or NULL. */
void *dctx__call_map_find(const struct dctx__call_map *m, uint32_t id);

/* dctx__call_map_remove unmaps id and returns its call, or NULL. */
void *dctx__call_map_remove(struct dctx__call_map *m, uint32_t id);

/* dctx__call_map_clear hands every call to fn(call, arg), once each, and
 * empties the map (its table is freed); returns how many. fn must not use
 * the map. */
size_t dctx__call_map_clear(struct dctx__call_map *m, void (*fn)(void *call, void *arg), void *arg);

#endif /* DCTX_RPC_CALL_MAP_H */
