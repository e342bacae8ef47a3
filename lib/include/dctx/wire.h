/*
 * wire.h - how a context crosses the wire: the limits every peer enforces,
 * the registry that files received values under the program's own keys,
 * and the per-destination propagation policy.
 *
 * A call carries its context as a header: the deadline as the remaining
 * budget, a fresh 16-byte cancel token, and the values of keys flagged
 * DCTX_KEY_PROPAGATE (by key name), plus values that came from upstream
 * under names this process does not know (they pass through). The callee
 * rebuilds a child context from the header under its server's root.
 *
 * Limits are enforced on both sides, with a status naming the limit:
 * DCTX_INVALID_ARGUMENT for a malformed header or a value over a per-value
 * limit, DCTX_RESOURCE_EXHAUSTED for too many values or bytes.
 */
#ifndef DCTX_WIRE_H
#define DCTX_WIRE_H

#include <dctx/dctx.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ===== Limits ===== */

/* Bytes of a cancel token (libsodium randombytes_buf). */
#define DCTX_TOKEN_BYTES 16
/* Values per call (W3C Baggage's figure). */
#define DCTX_WIRE_VALUES_MAX 64
/* Bytes of all values of a call, keys included (W3C Baggage's figure). */
#define DCTX_WIRE_VALUE_BYTES_MAX 8192
/* Bytes of one key name; names are 1..256 printable ASCII characters
 * (0x21..0x7e). */
#define DCTX_WIRE_KEY_BYTES_MAX 256
/* Bytes of a method name ("/package.Service/Method"). */
#define DCTX_WIRE_METHOD_BYTES_MAX 256
/* Bytes of a status or cause message; longer ones are cut. */
#define DCTX_WIRE_MESSAGE_BYTES_MAX 1024
/* Hops a call chain may take; a deeper call is refused (a loop guard). */
#define DCTX_WIRE_HOPS_MAX 64
/* Keys a process may register with dctx_wire_register_key. */
#define DCTX_WIRE_REGISTERED_KEYS_MAX 512

/* ===== Key registry ===== */

/* dctx_wire_register_key lets this process file values received under
 * key->name as values of key, so handlers find them with dctx_value(ctx,
 * key). Values under names nobody registered still pass through to the
 * next hop, untouched. The key must be flagged DCTX_KEY_PROPAGATE, have a
 * valid name (see DCTX_WIRE_KEY_BYTES_MAX) and live as long as the
 * process. Registering the same key twice is fine. Returns 0,
 * DCTX_INVALID_ARGUMENT (key NULL, not DCTX_KEY_PROPAGATE, or a bad name),
 * DCTX_ALREADY_EXISTS (another key has the name, "traceparent" included:
 * it is dctx_traceparent_key's) or DCTX_RESOURCE_EXHAUSTED (the registry
 * holds DCTX_WIRE_REGISTERED_KEYS_MAX keys already). Thread safe; never
 * blocks for long (a lock shared with servers decoding calls). */
DCTX_API int dctx_wire_register_key(const dctx_key *key);

/* dctx_wire_key_name_valid tells whether name may travel as a key name. */
DCTX_API bool dctx_wire_key_name_valid(const char *name);

/* ===== Propagation policy ===== */

/* What a channel sends of a context, on top of each key's own flag. */
enum dctx_wire_send {
    DCTX_WIRE_SEND_ALL = 0,   /* every propagated value (the default) */
    DCTX_WIRE_SEND_NONE = 1,  /* no values at all (a third party) */
    DCTX_WIRE_SEND_LISTED = 2 /* only values whose key name is listed */
};

typedef struct dctx_wire_policy {
    /* Taken off the caller's remaining time before it is sent as the
     * budget: time kept back for the reply to travel home. */
    int64_t reserve_ns;
    /* A call whose budget (after the reserve) is below this is not sent:
     * it fails at once with DCTX_DEADLINE_EXCEEDED. 0: any positive budget
     * is sent. */
    int64_t min_budget_ns;
    enum dctx_wire_send send;
    const char *const *listed; /* names, for DCTX_WIRE_SEND_LISTED */
    size_t n_listed;
} dctx_wire_policy;

/* ===== Inspecting ===== */

/* dctx_wire_each_value calls fn(arg, name, value, len) for each value a
 * call made with ctx would carry under policy (NULL: all), nearest first,
 * each name once: values of propagated keys and values passed through from
 * upstream. Stops at the first non-zero return of fn and returns it; 0
 * otherwise; DCTX_INVALID_ARGUMENT (ctx or fn NULL, or a value breaks a
 * per-value limit) or DCTX_RESOURCE_EXHAUSTED (too many values or bytes, or
 * no memory) before fn is called, as a call would be refused. The strings
 * and bytes fn gets live as long as ctx. */
DCTX_API int dctx_wire_each_value(const dctx *ctx, const dctx_wire_policy *policy,
                                  int (*fn)(void *arg, const char *name, const void *value,
                                            size_t len),
                                  void *arg);

#ifdef __cplusplus
}
#endif

#endif /* DCTX_WIRE_H */
