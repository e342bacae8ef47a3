/*
 * timer.c - the one thread that fires every deadline.
 *
 * Design
 *   Live deadlines sit in a binary min-heap of timer nodes; each node knows
 *   its slot (heap_index), so adding and removing any node is O(log n),
 *   whatever the number of live timers. One thread sleeps on a condition
 *   variable (CLOCK_MONOTONIC) until the earliest deadline, pops what is
 *   due and cancels it outside the heap lock.
 *
 *   Adding a timer wakes the thread only if the new deadline is earlier
 *   than the time the thread sleeps to (sleep_until). Removing one never
 *   wakes it: an early wake-up finds nothing due and sleeps again. So
 *   creating and canceling timers in a loop costs no system call.
 *
 *   A node is freed only after dctx__timer_remove. The thread pops a node
 *   under the heap lock and fires it only if it can still take a reference
 *   (dctx__try_retain); its last touch of a node it could not retain is the
 *   release store of heap_index = NOT_IN_HEAP. So remove may skip the lock
 *   when it reads NOT_IN_HEAP (acquire): the node is out, and the thread
 *   is done with it. The thread never fires into freed memory, and it may
 *   drop the last reference itself.
 *
 *   The thread runs with 1 ns timer slack (the default 50 us would be added
 *   to every deadline) and with every signal blocked.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <time.h>

#include "clock.h"
#include "context_impl.h"

static pthread_mutex_t heap_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t heap_cond;        /* on CLOCK_MONOTONIC; made once */
static struct dctx__timer **heap;       /* protected by heap_lock */
static size_t heap_len, heap_cap;       /* protected by heap_lock */
static int64_t sleep_until = INT64_MIN; /* INT64_MIN while awake; protected by heap_lock */
static pthread_once_t start_once = PTHREAD_ONCE_INIT;
static int start_error; /* written once under start_once */

#define HEAP_INITIAL_CAP 1024

/* ===== Heap ===== */

static void heap_set(size_t i, struct dctx__timer *t)
{
    heap[i] = t;
    atomic_store_explicit(&t->heap_index, i, memory_order_relaxed);
}

static void sift_up(size_t i)
{
    struct dctx__timer *t = heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap[parent]->deadline_ns <= t->deadline_ns)
            break;
        heap_set(i, heap[parent]);
        i = parent;
    }
    heap_set(i, t);
}

static void sift_down(size_t i)
{
    struct dctx__timer *t = heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= heap_len)
            break;
        if (child + 1 < heap_len && heap[child + 1]->deadline_ns < heap[child]->deadline_ns)
            child++;
        if (t->deadline_ns <= heap[child]->deadline_ns)
            break;
        heap_set(i, heap[child]);
        i = child;
    }
    heap_set(i, t);
}

static void heap_remove_at(size_t i)
{
    struct dctx__timer *t = heap[i];
    struct dctx__timer *last = heap[--heap_len];
    if (i != heap_len) {
        heap_set(i, last);
        if (i > 0 && heap[(i - 1) / 2]->deadline_ns > last->deadline_ns)
            sift_up(i);
        else
            sift_down(i);
    }
    /* Last: see the design note on skipping the lock. */
    atomic_store_explicit(&t->heap_index, DCTX__NOT_IN_HEAP, memory_order_release);
}

static bool heap_reserve(void)
{
    if (heap_len < heap_cap)
        return true;
    size_t cap = heap_cap ? heap_cap * 2 : HEAP_INITIAL_CAP;
    struct dctx__timer **grown = realloc(heap, cap * sizeof *grown);
    if (grown == NULL)
        return false;
    heap = grown;
    heap_cap = cap;
    return true;
}

/* ===== The timer thread ===== */

static void *timer_main(void *unused)
{
    (void)unused;
    prctl(PR_SET_TIMERSLACK, 1UL);
    pthread_mutex_lock(&heap_lock);
    for (;;) {
        if (heap_len > 0 && heap[0]->deadline_ns <= dctx_now()) {
            struct dctx__timer *t = heap[0];
            bool retained = dctx__try_retain(&t->c.base);
            heap_remove_at(0);
            if (!retained)
                continue; /* being freed; its release no longer needs us */
            pthread_mutex_unlock(&heap_lock);
            dctx__expire(t);
            dctx_release(&t->c.base);
            pthread_mutex_lock(&heap_lock);
            continue;
        }
        if (heap_len == 0) {
            sleep_until = INT64_MAX;
            pthread_cond_wait(&heap_cond, &heap_lock);
        } else {
            sleep_until = heap[0]->deadline_ns;
            dctx__cond_wait_until(&heap_cond, &heap_lock, sleep_until);
        }
        sleep_until = INT64_MIN;
    }
    return NULL;
}

static void start_thread(void)
{
    dctx__cond_init_monotonic(&heap_cond);

    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t thread;
    start_error = pthread_create(&thread, NULL, timer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (start_error == 0)
        pthread_detach(thread);
}

int dctx__timer_add(struct dctx__timer *t)
{
    pthread_once(&start_once, start_thread);
    if (start_error != 0)
        return DCTX_RESOURCE_EXHAUSTED;
    pthread_mutex_lock(&heap_lock);
    if (!heap_reserve()) {
        pthread_mutex_unlock(&heap_lock);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    heap[heap_len] = t;
    sift_up(heap_len++);
    if (t->deadline_ns < sleep_until)
        pthread_cond_signal(&heap_cond);
    pthread_mutex_unlock(&heap_lock);
    return 0;
}

void dctx__timer_remove(struct dctx__timer *t)
{
    if (atomic_load_explicit(&t->heap_index, memory_order_acquire) == DCTX__NOT_IN_HEAP)
        return;
    pthread_mutex_lock(&heap_lock);
    size_t i = atomic_load_explicit(&t->heap_index, memory_order_relaxed);
    if (i != DCTX__NOT_IN_HEAP)
        heap_remove_at(i);
    pthread_mutex_unlock(&heap_lock);
}

long dctx__test_timer_heap_check(void)
{
    pthread_mutex_lock(&heap_lock);
    long n = (long)heap_len;
    for (size_t i = 0; i < heap_len; i++) {
        if (atomic_load_explicit(&heap[i]->heap_index, memory_order_relaxed) != i ||
            (i > 0 && heap[(i - 1) / 2]->deadline_ns > heap[i]->deadline_ns))
            n = -1;
    }
    pthread_mutex_unlock(&heap_lock);
    return n;
}
