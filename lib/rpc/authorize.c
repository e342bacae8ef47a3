/*
 * authorize.c - the allow list and the authorize hook per call, and the
 * report limit (authorize.h).
 *
 * The report limit is a fixed table of slots, a peer's slot chosen by
 * SipHash of its name under a key random per process (a peer cannot aim
 * at another's slot). A slot reports at most once per second, for the
 * peer that refused there first; peers that share a slot share its
 * second, and what it leaves out is counted in the slot and given with
 * its next report, so no refusal goes unreported and uncounted. The
 * table's size bounds the memory whatever the number of peers, and the
 * reports per second (SLOTS) whatever they do: a peer that makes new keys
 * to be reported more often only fills slots.
 */
#include "authorize.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_impl.h"
#include "wire_impl.h"

#define SLOTS 1024
#define REPORT_GAP_NS 1000000000LL

int dctx__authorize(const dctx_rpc_server_options *o, const unsigned char *key, const char *method,
                    char *why, size_t why_len)
{
    why[0] = '\0';
    if (o->allow != NULL && key != NULL && !dctx_allow_permits(o->allow, key, method)) {
        char text[DCTX_PUBLIC_KEY_TEXT_BYTES];
        dctx_public_key_text(key, text);
        if (dctx_allow_knows(o->allow, key))
            snprintf(why, why_len, "%s may not call %s", text, method);
        else
            snprintf(why, why_len, "%s is not on the server's allow list", text);
        return DCTX_PERMISSION_DENIED;
    }
    if (o->authorize == NULL)
        return DCTX_OK;
    int code = o->authorize(o->authorize_arg, key, method, why, why_len);
    if (code == DCTX_OK)
        return DCTX_OK;
    if (code < 1 || code > DCTX_CODE_MAX)
        code = DCTX_PERMISSION_DENIED;
    if (memchr(why, '\0', why_len) == NULL || why[0] == '\0')
        snprintf(why, why_len, "%s refused by the server's authorization", method);
    return code;
}

struct slot {
    uint64_t peer; /* the peer's hash; 0: free */
    int64_t last_ns;
    uint64_t suppressed;
};

struct dctx__report_limit {
    pthread_mutex_t mu;
    unsigned char hash_key[crypto_shorthash_KEYBYTES];
    struct slot slots[SLOTS];
};

struct dctx__report_limit *dctx__report_limit_open(void)
{
    struct dctx__report_limit *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    if (!dctx__random(l->hash_key, sizeof l->hash_key)) {
        free(l);
        return NULL;
    }
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

void dctx__report_limit_close(struct dctx__report_limit *l)
{
    if (l == NULL)
        return;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

bool dctx__report_limit_take(struct dctx__report_limit *l, const void *peer, size_t len,
                             int64_t now_ns, uint64_t *suppressed)
{
    unsigned char h[crypto_shorthash_BYTES];
    crypto_shorthash(h, peer, len, l->hash_key);
    uint64_t id = 0;
    memcpy(&id, h, sizeof id);
    id |= 1ULL << 63; /* never 0, the free mark */
    struct slot *s = &l->slots[(id >> 1) % SLOTS];
    pthread_mutex_lock(&l->mu);
    bool take = s->peer == 0 || now_ns - s->last_ns >= REPORT_GAP_NS;
    if (take) {
        *suppressed = s->suppressed;
        s->peer = id;
        s->last_ns = now_ns;
        s->suppressed = 0;
    } else {
        s->suppressed++;
    }
    pthread_mutex_unlock(&l->mu);
    return take;
}

const dctx_key dctx_rpc_caller_key = {.name = "dctx-caller-key", .flags = 0};

bool dctx_rpc_caller(const dctx *ctx, unsigned char key[DCTX_PUBLIC_KEY_BYTES])
{
    size_t len = 0;
    const void *v = ctx != NULL ? dctx_value(ctx, &dctx_rpc_caller_key, &len) : NULL;
    if (v == NULL || len != DCTX_PUBLIC_KEY_BYTES)
        return false;
    memcpy(key, v, DCTX_PUBLIC_KEY_BYTES);
    return true;
}
