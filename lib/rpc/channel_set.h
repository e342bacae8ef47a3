/*
 * channel_set.h - a channel over several URLs (dctx_rpc_channel_open_urls):
 * one channel per URL, each dialing and redialing its own, and every new
 * call handed to one of them, round robin among those connected and not
 * draining. A call stays on the channel it was given: its cancel, its
 * reply and its end are that channel's. Never installed.
 */
#ifndef DCTX_RPC_CHANNEL_SET_H
#define DCTX_RPC_CHANNEL_SET_H

#include <stddef.h>

#include <dctx/rpc.h>

/* The most URLs a set takes. */
#define DCTX__CHANNEL_SET_MAX 64

struct dctx__channel_set;

/* Open a channel to each of the n URLs (2..DCTX__CHANNEL_SET_MAX) with the
 * same options. Returns 0, or dctx_rpc_channel_open's failure for the
 * first URL that failed (nothing left open), or DCTX_INVALID_ARGUMENT (n
 * out of range) or DCTX_RESOURCE_EXHAUSTED. */
int dctx__channel_set_open(const char *const *urls, size_t n, const dctx_rpc_channel_options *o,
                           struct dctx__channel_set **out);

/* The channel for a new call: the next connected one not draining, round
 * robin; when none is, the next one still dialing (the call waits for it
 * as on a channel of one URL); when all drain, the next one (the call
 * fails there, "draining"). */
dctx_rpc_channel *dctx__channel_set_pick(struct dctx__channel_set *set);

/* The sum of the channels' stats (connections: those up now). */
void dctx__channel_set_stats(struct dctx__channel_set *set, dctx_rpc_channel_stats *out);

/* Close every channel (see dctx_rpc_channel_close) and free the set. */
void dctx__channel_set_close(struct dctx__channel_set *set);

#endif /* DCTX_RPC_CHANNEL_SET_H */
