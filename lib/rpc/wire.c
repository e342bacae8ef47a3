/*
 * wire.c - a context on the wire: encoding one into a call's header, and
 * rebuilding one from a received header.
 *
 * Design
 *   Encoding walks the context's value chain nearest first and sends each
 *   key name once (a nearer value shadows a farther one): values of keys
 *   flagged DCTX_KEY_PROPAGATE, and the pass-through values kept by the
 *   nearest rebuilt context. The bytes stay in the context; the header only
 *   points at them, so encoding allocates nothing.
 *
 *   Decoding files each received value under the key registered for its
 *   name, or, when nobody registered the name, keeps it in a "meta" value
 *   (an internal key) with the hop count, to be sent on unchanged. On top
 *   goes the cancelable node the server cancels; its deadline is now plus
 *   the budget, so the two hosts' clocks never meet.
 *
 *   Limits are checked on both sides; the error text names the limit.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/hooks.h"
#include "wire_impl.h"

#include <dctx/rpc.h> /* dctx_rpc_deadline */
#include <dctx/trace.h>

/* ===== Key registry ===== */

#define REGISTRY_SLOTS (2 * DCTX_WIRE_REGISTERED_KEYS_MAX) /* open addressing; at most half full */

static pthread_rwlock_t registry_lock = PTHREAD_RWLOCK_INITIALIZER;
static const dctx_key *registry[REGISTRY_SLOTS]; /* protected by registry_lock */
static size_t registry_count;                    /* protected by registry_lock */

static uint32_t name_hash(const char *name, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a: the registry holds our own names, no attacker */
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)name[i]) * 16777619u;
    return h;
}

static bool name_bytes_valid(const char *name, size_t len)
{
    if (len == 0 || len > DCTX_WIRE_KEY_BYTES_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((uint8_t)name[i] < 0x21 || (uint8_t)name[i] > 0x7e)
            return false;
    return true;
}

bool dctx_wire_key_name_valid(const char *name)
{
    return name != NULL && name_bytes_valid(name, strnlen(name, DCTX_WIRE_KEY_BYTES_MAX + 1));
}

/* The slot holding name, or the empty slot where it would go. Called with
 * registry_lock held. */
static size_t registry_slot(const char *name, size_t len)
{
    size_t i = name_hash(name, len) % REGISTRY_SLOTS;
    while (registry[i] != NULL &&
           (strlen(registry[i]->name) != len || memcmp(registry[i]->name, name, len) != 0))
        i = (i + 1) % REGISTRY_SLOTS;
    return i;
}

int dctx_wire_register_key(const dctx_key *key)
{
    if (key == NULL || !(key->flags & DCTX_KEY_PROPAGATE) || !dctx_wire_key_name_valid(key->name))
        return DCTX_INVALID_ARGUMENT;
    if (strcmp(key->name, dctx_traceparent_key.name) == 0) /* the library's own (trace.h) */
        return key == &dctx_traceparent_key ? 0 : DCTX_ALREADY_EXISTS;
    int rc = 0;
    pthread_rwlock_wrlock(&registry_lock);
    size_t i = registry_slot(key->name, strlen(key->name));
    if (registry[i] == NULL) {
        if (registry_count >= DCTX_WIRE_REGISTERED_KEYS_MAX) {
            rc = DCTX_RESOURCE_EXHAUSTED;
        } else {
            registry[i] = key;
            registry_count++;
        }
    } else if (registry[i] != key) {
        rc = DCTX_ALREADY_EXISTS;
    }
    pthread_rwlock_unlock(&registry_lock);
    return rc;
}

static const dctx_key *registered_key(const char *name, size_t len)
{
    pthread_rwlock_rdlock(&registry_lock);
    const dctx_key *key = registry[registry_slot(name, len)];
    pthread_rwlock_unlock(&registry_lock);
    return key;
}

/* ===== The meta value of a rebuilt context =====
 *
 * Its bytes: a meta_head, then n_route instance ids (u64, the route calls
 * from here carry), then n_pass entries, each a name length (u16), the
 * name and a NUL (the header points at it as a C string), a value length
 * (u32) and the value; unaligned, read with memcpy. Written by decode
 * from checked input, read by encode. */

static const dctx_key meta_key = {"dctx.wire.meta", 0};

struct meta_head {
    uint32_t hops_next; /* the hop count calls from here carry */
    uint32_t n_pass;
    uint32_t n_route;
};

struct pass_entry {
    const char *name;
    uint16_t name_len;
    const uint8_t *value;
    uint32_t value_len;
};

/* Read the entry at *pos and advance it. */
static struct pass_entry pass_next(const uint8_t *blob, size_t *pos)
{
    struct pass_entry e;
    memcpy(&e.name_len, blob + *pos, sizeof e.name_len);
    *pos += sizeof e.name_len;
    e.name = (const char *)blob + *pos;
    *pos += e.name_len + 1u;
    memcpy(&e.value_len, blob + *pos, sizeof e.value_len);
    *pos += sizeof e.value_len;
    e.value = blob + *pos;
    *pos += e.value_len;
    return e;
}

uint32_t dctx__wire_hops(const dctx *ctx)
{
    const struct meta_head *m = dctx_value(ctx, &meta_key, NULL);
    return m != NULL ? m->hops_next : 0;
}

/* ===== Encode ===== */

struct encoder {
    struct dctx__wire_out *out;
    const dctx_wire_policy *policy;
    size_t bytes;
    char *err;
};

static bool policy_allows(const dctx_wire_policy *p, const char *name, size_t len)
{
    if (p == NULL || p->send == DCTX_WIRE_SEND_ALL)
        return true;
    if (p->send == DCTX_WIRE_SEND_NONE)
        return false;
    for (size_t i = 0; i < p->n_listed; i++)
        if (strlen(p->listed[i]) == len && memcmp(p->listed[i], name, len) == 0)
            return true;
    return false;
}

static bool already_sent(const struct dctx__wire_out *out, const char *name, size_t len)
{
    for (size_t i = 0; i < out->hdr.n_values; i++)
        if (strlen(out->values[i].key) == len && memcmp(out->values[i].key, name, len) == 0)
            return true;
    return false;
}

/* Add one value unless shadowed or filtered. name must be NUL-terminated
 * at len (key names are; pass-through names are stored so). */
static int emit(struct encoder *e, const char *name, size_t len, const void *value,
                size_t value_len)
{
    struct dctx__wire_out *out = e->out;
    if (!policy_allows(e->policy, name, len) || already_sent(out, name, len))
        return 0;
    if (!name_bytes_valid(name, len)) {
        snprintf(e->err, DCTX__WIRE_ERR_BYTES,
                 "key name \"%.40s\" cannot travel: 1..%d printable ASCII characters", name,
                 DCTX_WIRE_KEY_BYTES_MAX);
        return DCTX_INVALID_ARGUMENT;
    }
    if (out->hdr.n_values == DCTX_WIRE_VALUES_MAX) {
        snprintf(e->err, DCTX__WIRE_ERR_BYTES, "more than %d propagated values",
                 DCTX_WIRE_VALUES_MAX);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    e->bytes += len + value_len;
    if (e->bytes > DCTX_WIRE_VALUE_BYTES_MAX) {
        snprintf(e->err, DCTX__WIRE_ERR_BYTES, "propagated values over %d bytes (at key \"%.40s\")",
                 DCTX_WIRE_VALUE_BYTES_MAX, name);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    Dctx__Wire__Value *v = &out->values[out->hdr.n_values];
    dctx__wire__value__init(v);
    v->key = (char *)name;
    v->has_value = 1;
    v->value.data = (uint8_t *)value;
    v->value.len = value_len;
    out->value_ptrs[out->hdr.n_values++] = v;
    return 0;
}

static int emit_passthrough(struct encoder *e, const unsigned char *meta)
{
    struct meta_head head;
    memcpy(&head, meta, sizeof head);
    size_t pos = sizeof head + head.n_route * sizeof(uint64_t);
    for (uint32_t i = 0; i < head.n_pass; i++) {
        struct pass_entry p = pass_next(meta, &pos);
        int rc = emit(e, p.name, p.name_len, p.value, p.value_len);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int encode_budget(const dctx *ctx, const dctx_wire_policy *policy, int64_t now,
                         Dctx__Wire__ContextHeader *hdr, char *err)
{
    int64_t deadline;
    if (!dctx_rpc_deadline(ctx, &deadline)) /* a drain's end, too */
        return 0;
    int64_t reserve = policy ? policy->reserve_ns : 0;
    int64_t floor = policy && policy->min_budget_ns > 1000 ? policy->min_budget_ns : 1000;
    int64_t left = deadline - now - reserve;
    if (left < floor) {
        snprintf(
            err, DCTX__WIRE_ERR_BYTES,
            "budget %lld us after a %lld us reply reserve, under the %lld us minimum: not sent",
            (long long)((deadline - now) / 1000), (long long)(reserve / 1000),
            (long long)(floor / 1000));
        return DCTX_DEADLINE_EXCEEDED;
    }
    hdr->has_budget_us = 1;
    hdr->budget_us = (uint64_t)(left / 1000); /* rounded down: a budget never grows */
    return 0;
}

/* The values part of a header: what ctx propagates under policy. */
static int encode_values(const dctx *ctx, const dctx_wire_policy *policy,
                         struct dctx__wire_out *out, char *err)
{
    int rc = 0;
    struct encoder e = {.out = out, .policy = policy, .err = err};
    bool meta_seen = false;
    struct dctx__value_view v = {0};
    while (rc == 0 && dctx__value_next(ctx, &v)) {
        if (v.key == &meta_key) {
            if (!meta_seen) /* farther ones belong to an enclosing rebuild */
                rc = emit_passthrough(&e, v.data);
            meta_seen = true;
        } else if (v.key->flags & DCTX_KEY_PROPAGATE) {
            rc = emit(&e, v.key->name, strlen(v.key->name), v.data, v.len);
        }
    }
    return rc;
}

/* The route calls from ctx carry: what the nearest rebuild stored, copied
 * out of the (unaligned) meta value. */
static void encode_route(const dctx *ctx, struct dctx__wire_out *out)
{
    const unsigned char *meta = dctx_value(ctx, &meta_key, NULL);
    if (meta == NULL)
        return;
    struct meta_head head;
    memcpy(&head, meta, sizeof head);
    memcpy(out->route, meta + sizeof head, head.n_route * sizeof(uint64_t));
    out->hdr.n_route = head.n_route;
    out->hdr.route = out->route;
}

int dctx__wire_encode(const dctx *ctx, const dctx_wire_policy *policy, int64_t now_ns,
                      struct dctx__wire_out *out, char *err)
{
    err[0] = '\0';
    dctx__wire__context_header__init(&out->hdr);
    out->hdr.values = out->value_ptrs;
    int rc = encode_budget(ctx, policy, now_ns, &out->hdr, err);
    if (rc == 0)
        rc = encode_values(ctx, policy, out, err);
    if (rc != 0)
        return rc;

    if (!dctx__random(out->token, sizeof out->token)) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "libsodium could not start: no randomness for tokens");
        return DCTX_INTERNAL;
    }
    out->hdr.has_cancel_token = 1;
    out->hdr.cancel_token.data = out->token;
    out->hdr.cancel_token.len = sizeof out->token;
    out->hdr.has_hops = 1;
    out->hdr.hops = dctx__wire_hops(ctx);
    encode_route(ctx, out);
    return 0;
}

int dctx_wire_each_value(const dctx *ctx, const dctx_wire_policy *policy,
                         int (*fn)(void *arg, const char *name, const void *value, size_t len),
                         void *arg)
{
    if (ctx == NULL || fn == NULL)
        return DCTX_INVALID_ARGUMENT;
    struct dctx__wire_out *out = malloc(sizeof *out); /* 4 KiB, kept off the user's stack */
    if (out == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    char err[DCTX__WIRE_ERR_BYTES];
    dctx__wire__context_header__init(&out->hdr);
    out->hdr.values = out->value_ptrs;
    int rc = encode_values(ctx, policy, out, err);
    for (size_t i = 0; rc == 0 && i < out->hdr.n_values; i++)
        rc = fn(arg, out->values[i].key, out->values[i].value.data, out->values[i].value.len);
    free(out);
    return rc;
}

/* ===== Decode ===== */

static int check_header(const Dctx__Wire__ContextHeader *hdr, char *err)
{
    if (!hdr->has_cancel_token || hdr->cancel_token.len != DCTX_TOKEN_BYTES) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "cancel token must be %d bytes", DCTX_TOKEN_BYTES);
        return DCTX_INVALID_ARGUMENT;
    }
    if (hdr->has_hops && hdr->hops >= DCTX_WIRE_HOPS_MAX) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "call made %u hops, the limit is %d", hdr->hops,
                 DCTX_WIRE_HOPS_MAX);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    if (hdr->n_route >= DCTX_WIRE_HOPS_MAX) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "a route of %zu servers, the limit is %d", hdr->n_route,
                 DCTX_WIRE_HOPS_MAX - 1);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    if (hdr->has_budget_us && hdr->budget_us == 0) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "budget of 0 us");
        return DCTX_DEADLINE_EXCEEDED;
    }
    if (hdr->n_values > DCTX_WIRE_VALUES_MAX) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "%zu propagated values, the limit is %d", hdr->n_values,
                 DCTX_WIRE_VALUES_MAX);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    size_t bytes = 0;
    for (size_t i = 0; i < hdr->n_values; i++) {
        const Dctx__Wire__Value *v = hdr->values[i];
        /* protobuf-c gives strings NUL-terminated; a NUL inside makes the
         * length differ from strnlen's, which the name check then refuses. */
        if (v->key == NULL || !dctx_wire_key_name_valid(v->key)) {
            snprintf(err, DCTX__WIRE_ERR_BYTES,
                     "value %zu has no valid key name (1..%d printable ASCII)", i,
                     DCTX_WIRE_KEY_BYTES_MAX);
            return DCTX_INVALID_ARGUMENT;
        }
        bytes += strlen(v->key) + (v->has_value ? v->value.len : 0);
        if (bytes > DCTX_WIRE_VALUE_BYTES_MAX) {
            snprintf(err, DCTX__WIRE_ERR_BYTES,
                     "propagated values over %d bytes (at key \"%.40s\")",
                     DCTX_WIRE_VALUE_BYTES_MAX, v->key);
            return DCTX_RESOURCE_EXHAUSTED;
        }
    }
    return 0;
}

static bool first_of_name(const Dctx__Wire__ContextHeader *hdr, size_t i)
{
    for (size_t j = 0; j < i; j++)
        if (strcmp(hdr->values[j]->key, hdr->values[i]->key) == 0)
            return false;
    return true;
}

/* Chain a value node under *parent, dropping the reference to the old
 * parent (the child holds it now). */
static int push_value(dctx **parent, const dctx_key *key, const void *val, size_t len)
{
    dctx *child = NULL;
    int rc = dctx_with_value(*parent, key, val, len, &child);
    if (rc != 0)
        return rc;
    dctx_release(*parent);
    *parent = child;
    return 0;
}

/* Where a received value goes. */
enum destination { DROP, PASS_THROUGH, OWN_KEY, TRACE };

/* The index of the first value named name, or -1. */
static long find_value(const Dctx__Wire__ContextHeader *hdr, const char *name)
{
    for (size_t i = 0; i < hdr->n_values; i++)
        if (strcmp(hdr->values[i]->key, name) == 0)
            return (long)i;
    return -1;
}

/* W3C: a valid traceparent continues the trace under a new span for this
 * hop; a malformed one is dropped, and tracestate with it (a tracestate
 * without a traceparent means nothing). */
static enum destination trace_destination(const Dctx__Wire__ContextHeader *hdr, size_t i,
                                          bool *dropped)
{
    long tp = find_value(hdr, dctx_traceparent_key.name);
    bool valid = tp >= 0 && hdr->values[tp]->has_value &&
                 dctx_trace_parse((const char *)hdr->values[tp]->value.data,
                                  hdr->values[tp]->value.len, NULL);
    if (tp >= 0 && !valid)
        *dropped = true;
    if ((size_t)tp == i)
        return valid ? TRACE : DROP;
    return valid ? PASS_THROUGH : DROP; /* tracestate */
}

/* The meta value: hop count, then the values nobody here registered. */
static int push_meta(dctx **parent, const Dctx__Wire__ContextHeader *hdr,
                     const enum destination *dest, uint64_t self_id)
{
    struct meta_head head = {.hops_next = (hdr->has_hops ? hdr->hops : 0) + 1,
                             .n_pass = 0,
                             .n_route = (uint32_t)hdr->n_route + (self_id != 0)};
    size_t size = sizeof head + head.n_route * sizeof(uint64_t);
    for (size_t i = 0; i < hdr->n_values; i++)
        if (dest[i] == PASS_THROUGH)
            size += sizeof(uint16_t) + strlen(hdr->values[i]->key) + 1 + sizeof(uint32_t) +
                    hdr->values[i]->value.len;
    uint8_t *blob = malloc(size);
    if (blob == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    size_t pos = sizeof head;
    if (hdr->n_route > 0)
        memcpy(blob + pos, hdr->route, hdr->n_route * sizeof(uint64_t));
    pos += hdr->n_route * sizeof(uint64_t);
    if (self_id != 0) {
        memcpy(blob + pos, &self_id, sizeof self_id);
        pos += sizeof self_id;
    }
    for (size_t i = 0; i < hdr->n_values; i++) {
        if (dest[i] != PASS_THROUGH)
            continue;
        const Dctx__Wire__Value *v = hdr->values[i];
        uint16_t name_len = (uint16_t)strlen(v->key); /* <= 256, checked */
        uint32_t value_len = (uint32_t)v->value.len;  /* <= 8192, checked */
        memcpy(blob + pos, &name_len, sizeof name_len);
        pos += sizeof name_len;
        memcpy(blob + pos, v->key, name_len + 1u); /* with its NUL */
        pos += name_len + 1u;
        memcpy(blob + pos, &value_len, sizeof value_len);
        pos += sizeof value_len;
        if (value_len > 0)
            memcpy(blob + pos, v->value.data, value_len);
        pos += value_len;
        head.n_pass++;
    }
    memcpy(blob, &head, sizeof head);
    int rc = push_value(parent, &meta_key, blob, size);
    free(blob);
    return rc;
}

/* The call's deadline: now plus its budget, capped; DCTX_DEADLINE_NONE for
 * a call with neither a budget nor a cap. */
static int64_t call_deadline(const Dctx__Wire__ContextHeader *hdr, int64_t now_ns,
                             int64_t max_budget_ns)
{
    int64_t budget = DCTX_DEADLINE_NONE;
    if (hdr->has_budget_us)
        budget = hdr->budget_us >= (uint64_t)(INT64_MAX / 1000) ? DCTX_DEADLINE_NONE
                                                                : (int64_t)hdr->budget_us * 1000;
    if (max_budget_ns > 0 && budget > max_budget_ns)
        budget = max_budget_ns;
    return budget >= DCTX_DEADLINE_NONE - now_ns ? DCTX_DEADLINE_NONE : now_ns + budget;
}

int dctx__wire_decode(dctx *root, const Dctx__Wire__ContextHeader *hdr, int64_t now_ns,
                      int64_t max_budget_ns, uint64_t self_id, dctx **out, char *err,
                      bool *trace_dropped)
{
    *out = NULL;
    err[0] = '\0';
    bool dropped = false;
    int rc = check_header(hdr, err);
    if (rc != 0)
        return rc;
    for (size_t i = 0; self_id != 0 && i < hdr->n_route; i++) {
        if (hdr->route[i] == self_id) {
            snprintf(err, DCTX__WIRE_ERR_BYTES, "call loop: hop %zu of %zu was this server", i + 1,
                     hdr->n_route);
            return DCTX_FAILED_PRECONDITION;
        }
    }

    /* Registered keys get value nodes of their own; the rest ride in the
     * meta value. The first of a repeated name wins (nearest first). */
    enum destination dest[DCTX_WIRE_VALUES_MAX];
    dctx *top = dctx_retain(root);
    for (size_t i = 0; i < hdr->n_values && rc == 0; i++) {
        const Dctx__Wire__Value *v = hdr->values[i];
        const dctx_key *key = NULL;
        if (!first_of_name(hdr, i))
            dest[i] = DROP;
        else if (strcmp(v->key, "traceparent") == 0 || strcmp(v->key, "tracestate") == 0)
            dest[i] = trace_destination(hdr, i, &dropped);
        else if ((key = registered_key(v->key, strlen(v->key))) != NULL)
            dest[i] = OWN_KEY;
        else
            dest[i] = PASS_THROUGH;
        if (dest[i] == OWN_KEY)
            rc = push_value(&top, key, v->value.data, v->has_value ? v->value.len : 0);
    }
    if (rc == 0)
        rc = push_meta(&top, hdr, dest, self_id);
    for (size_t i = 0; rc == 0 && i < hdr->n_values; i++) {
        if (dest[i] == TRACE) {
            dctx *child = NULL;
            rc = dctx__trace_continue(top, (const char *)hdr->values[i]->value.data,
                                      hdr->values[i]->value.len, &child);
            if (rc == 0) {
                dctx_release(top);
                top = child;
            }
        }
    }
    if (trace_dropped != NULL)
        *trace_dropped = dropped;
    dctx *call = NULL;
    if (rc == 0)
        rc = dctx_with_deadline(top, call_deadline(hdr, now_ns, max_budget_ns), &call);
    dctx_release(top);
    if (rc != 0) {
        snprintf(err, DCTX__WIRE_ERR_BYTES, "out of memory rebuilding the context");
        return rc;
    }
    *out = call;
    return 0;
}
