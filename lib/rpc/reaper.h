/*
 * reaper.h - work deferred to one thread of the library's own: closing a
 * session or connection found dead inside an nng callback, where closing
 * it would wait on the callback itself (conn.h), and finishing a call a
 * cancel ended, whose callback must not run inside dctx_cancel (client.c).
 * Never installed.
 *
 * An item is embedded in what it serves, so deferring never allocates and
 * cannot fail. Items run in the order deferred, each once, on the reaper
 * thread, with no lock held. The thread starts on first use, blocks every
 * signal, and lives until the process exits.
 */
#ifndef DCTX_RPC_REAPER_H
#define DCTX_RPC_REAPER_H

#include <stdbool.h>

struct dctx__reap_item {
    struct dctx__reap_item *next; /* the reaper's */
    void (*fn)(void *arg);
    void *arg;
};

/* dctx__reaper_start starts the thread if it is not running; false if it
 * cannot be. Channels and servers call it when they open, so that their
 * deferring never fails. */
bool dctx__reaper_start(void);

/* dctx__reaper_defer queues fn(arg) on the reaper thread, using item (which
 * must stay valid until fn runs, and not be queued twice at once). Returns
 * false only if the thread could not be started (it is tried again on the
 * next call): the caller then must do the work another way. From any
 * thread, nng callbacks included. */
bool dctx__reaper_defer(struct dctx__reap_item *item, void (*fn)(void *arg), void *arg);

/* dctx__reaper_wait returns once every item deferred before the call has
 * run. Not from the reaper thread nor from an nng callback. */
void dctx__reaper_wait(void);

#endif /* DCTX_RPC_REAPER_H */
