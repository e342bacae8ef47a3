/*
 * channel_set.c - a channel over several URLs (see channel_set.h).
 *
 * The set holds nothing of its own that a call touches: it picks a
 * channel, and the call is that channel's from then on. The pick reads
 * each channel's state under its own mutex, one at a time, so a state may
 * change right after it is read: a call can still land on a server that
 * just began to drain, which answers it UNAVAILABLE "draining" without
 * running it (proto/PROTOCOL.md, Drain), as a channel of one URL would.
 */
#include "channel_set.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_impl.h"

struct dctx__channel_set {
    size_t n;
    atomic_size_t next; /* where the next pick starts */
    dctx_rpc_channel *ch[];
};

int dctx__channel_set_open(const char *const *urls, size_t n, const dctx_rpc_channel_options *o,
                           struct dctx__channel_set **out)
{
    *out = NULL;
    if (urls == NULL || n < 2 || n > DCTX__CHANNEL_SET_MAX)
        return DCTX_INVALID_ARGUMENT;
    struct dctx__channel_set *set = calloc(1, sizeof *set + n * sizeof set->ch[0]);
    if (set == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    for (; set->n < n; set->n++) {
        int rc = dctx_rpc_channel_open(urls[set->n], o, &set->ch[set->n]);
        if (rc != 0) {
            dctx__channel_set_close(set);
            return rc;
        }
    }
    *out = set;
    return 0;
}

dctx_rpc_channel *dctx__channel_set_pick(struct dctx__channel_set *set)
{
    size_t first = atomic_fetch_add_explicit(&set->next, 1, memory_order_relaxed) % set->n;
    dctx_rpc_channel *dialing = NULL;
    for (size_t i = 0; i < set->n; i++) {
        dctx_rpc_channel *ch = set->ch[(first + i) % set->n];
        switch (dctx__channel_state(ch)) {
        case DCTX__CHANNEL_READY:
            return ch;
        case DCTX__CHANNEL_DIALING:
            if (dialing == NULL)
                dialing = ch;
            break;
        case DCTX__CHANNEL_DRAINING:
            break;
        }
    }
    return dialing != NULL ? dialing : set->ch[first];
}

void dctx__channel_set_stats(struct dctx__channel_set *set, dctx_rpc_channel_stats *out)
{
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < set->n; i++) {
        dctx_rpc_channel_stats s;
        dctx_rpc_channel_stats_get(set->ch[i], &s);
        out->calls += s.calls;
        for (int c = 0; c <= DCTX_CODE_MAX; c++)
            out->by_code[c] += s.by_code[c];
        out->not_sent_budget += s.not_sent_budget;
        out->cancels_pushed += s.cancels_pushed;
        for (int o = 0; o < DCTX_RPC_CANCEL_OUTCOMES; o++)
            out->cancel_outcomes[o] += s.cancel_outcomes[o];
        out->bad_frames += s.bad_frames;
        out->connections += s.connections;
        out->draining += s.draining;
        if (s.last_error[0] != '\0') /* the last URL's that failed, named */
            snprintf(out->last_error, sizeof out->last_error, "%s", s.last_error);
    }
}

void dctx__channel_set_close(struct dctx__channel_set *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->n; i++)
        dctx_rpc_channel_close(set->ch[i]);
    free(set);
}
