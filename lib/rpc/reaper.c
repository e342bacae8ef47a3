/*
 * reaper.c - one thread for deferred closes (reaper.h).
 *
 * A FIFO of intrusive items under one mutex; the thread sleeps on a
 * condition variable while it is empty. Waiting for the items deferred so
 * far uses two counters: deferred (items queued) and done (items run);
 * a waiter notes deferred and sleeps until done reaches it.
 */
#include "reaper.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>

#include "context/alloc.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER; /* items queued */
static pthread_cond_t ran = PTHREAD_COND_INITIALIZER;  /* items done */
static struct dctx__reap_item *head, **tail = &head;   /* protected by mu */
static uint64_t deferred, done;                        /* protected by mu */
static bool started; /* protected by mu; a failed start is tried again next time */

static void *reaper_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&mu);
    for (;;) {
        while (head == NULL)
            pthread_cond_wait(&work, &mu);
        struct dctx__reap_item *it = head;
        head = it->next;
        if (head == NULL)
            tail = &head;
        pthread_mutex_unlock(&mu);
        it->fn(it->arg); /* may free the item: not touched after */
        pthread_mutex_lock(&mu);
        done++;
        pthread_cond_broadcast(&ran);
    }
    return NULL;
}

/* Start the thread, with every signal blocked; mu held. */
static bool start(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    bool ok = dctx__thread_start(&t, reaper_main, NULL) == 0;
    if (ok)
        pthread_detach(t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return ok;
}

bool dctx__reaper_start(void)
{
    pthread_mutex_lock(&mu);
    bool ok = started || (started = start());
    pthread_mutex_unlock(&mu);
    return ok;
}

bool dctx__reaper_defer(struct dctx__reap_item *item, void (*fn)(void *arg), void *arg)
{
    item->next = NULL;
    item->fn = fn;
    item->arg = arg;
    pthread_mutex_lock(&mu);
    if (!started && !(started = start())) {
        pthread_mutex_unlock(&mu);
        return false;
    }
    *tail = item;
    tail = &item->next;
    deferred++;
    pthread_cond_signal(&work);
    pthread_mutex_unlock(&mu);
    return true;
}

void dctx__reaper_wait(void)
{
    pthread_mutex_lock(&mu);
    uint64_t until = deferred;
    while (done < until)
        pthread_cond_wait(&ran, &mu);
    pthread_mutex_unlock(&mu);
}
