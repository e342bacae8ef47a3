/*
 * authorize.h - a server's decision on each call of a peer (the allow
 * list, then the application's hook), and the limit on how often a
 * peer's refusals are reported (at most once per peer per second).
 * Never installed.
 */
#ifndef DCTX_RPC_AUTHORIZE_H
#define DCTX_RPC_AUTHORIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dctx/rpc.h>

/* dctx__authorize: may the caller with key (NULL: one without keys) call
 * method under o's allow list and authorize hook? DCTX_OK, or the status
 * that refuses it, with why (why_len bytes) saying why. */
int dctx__authorize(const dctx_rpc_server_options *o, const unsigned char *key, const char *method,
                    char *why, size_t why_len);

struct dctx__report_limit;

/* A limit for peers named by bytes (a key, an address). NULL: no memory. */
struct dctx__report_limit *dctx__report_limit_open(void);
void dctx__report_limit_close(struct dctx__report_limit *l);

/* dctx__report_limit_take: may the peer's refusal at now_ns be reported?
 * True at most once per second for the peer (and the few that share its
 * slot), with *suppressed the refusals of that slot not reported since
 * its last report. Any thread. */
bool dctx__report_limit_take(struct dctx__report_limit *l, const void *peer, size_t len,
                             int64_t now_ns, uint64_t *suppressed);

#endif /* DCTX_RPC_AUTHORIZE_H */
