/*
 * local_tree - the context tree at work inside one process.
 *
 * A "request" fans out to 3 services of 3 workers each; every worker runs
 * on its own thread under a child context (with a value naming it) and
 * waits for its context in one of the three ways C offers: dctx_wait, a
 * poll() on dctx_done_fd, or an after-func. Twice:
 *   1. the request has a 150 ms timeout and nobody cancels: the deadline
 *      reaches all nine workers;
 *   2. the request is canceled by hand after 50 ms, with a cause: the
 *      cancel reaches all nine, and each says how long it took.
 * Each worker prints when it saw done, its error and cause.
 */
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dctx/dctx.h>

enum { SERVICES = 3, WORKERS = 3 };

static const dctx_key worker_key = {"worker", 0};

struct worker {
    dctx *ctx;
    char name[32];
    int how; /* 0 dctx_wait, 1 poll on the done fd, 2 after-func */
    pthread_t thread;
    sem_t after_ran;
};

static int64_t started;     /* when the request began */
static int64_t canceled_at; /* when main canceled (part 2), 0 in part 1 */
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

static void report(struct worker *w, const char *via)
{
    int64_t now = dctx_now();
    const char *msg = NULL;
    int cause = dctx_cause(w->ctx, &msg);
    pthread_mutex_lock(&print_lock);
    printf("  %8.3f ms  %-14s saw %-17s cause %-17s %-22s via %s", (now - started) / 1e6,
           (const char *)dctx_value(w->ctx, &worker_key, NULL), dctx_code_name(dctx_err(w->ctx)),
           dctx_code_name(cause), msg ? msg : "", via);
    if (canceled_at)
        printf("  (%.1f us after the cancel)", (now - canceled_at) / 1e3);
    printf("\n");
    pthread_mutex_unlock(&print_lock);
}

static void after_done(void *arg)
{
    struct worker *w = arg;
    report(w, "after-func");
    sem_post(&w->after_ran);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    if (w->how == 0) {
        dctx_wait(w->ctx, -1);
        report(w, "dctx_wait");
    } else {
        struct pollfd p = {.fd = dctx_done_fd(w->ctx), .events = POLLIN};
        while (poll(&p, 1, -1) != 1)
            ;
        report(w, "poll(done_fd)");
    }
    return NULL;
}

static void run_tree(dctx *request, bool cancel_by_hand)
{
    struct worker workers[SERVICES * WORKERS];
    dctx *services[SERVICES];
    started = dctx_now();
    canceled_at = 0;
    for (int s = 0; s < SERVICES; s++) {
        if (dctx_with_cancel(request, &services[s]) != 0)
            exit(1);
        for (int k = 0; k < WORKERS; k++) {
            struct worker *w = &workers[s * WORKERS + k];
            snprintf(w->name, sizeof w->name, "service%d/w%d", s + 1, k + 1);
            dctx *named = NULL;
            if (dctx_with_value(services[s], &worker_key, w->name, strlen(w->name) + 1, &named) ||
                dctx_with_cancel(named, &w->ctx))
                exit(1);
            dctx_release(named); /* the child holds it */
            w->how = k;
            sem_init(&w->after_ran, 0, 0);
            if (w->how == 2)
                dctx_after_func(w->ctx, after_done, w, NULL);
            else
                pthread_create(&w->thread, NULL, worker_main, w);
        }
    }
    if (cancel_by_hand) {
        struct timespec ts = {0, 50 * 1000000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&print_lock);
        canceled_at = dctx_now();
        printf("  %8.3f ms  main           cancels the request\n", (canceled_at - started) / 1e6);
        pthread_mutex_unlock(&print_lock);
        dctx_cancel_cause(request, DCTX_CANCELED, "user pressed stop");
    }
    for (int i = 0; i < SERVICES * WORKERS; i++) {
        struct worker *w = &workers[i];
        if (w->how == 2)
            sem_wait(&w->after_ran);
        else
            pthread_join(w->thread, NULL);
        sem_destroy(&w->after_ran);
        dctx_release(w->ctx);
    }
    for (int s = 0; s < SERVICES; s++)
        dctx_release(services[s]);
}

int main(void)
{
    dctx *request = NULL;
    printf("1. a request with a 150 ms timeout, fanned out to %d workers:\n", SERVICES * WORKERS);
    if (dctx_with_timeout_cause(dctx_background(), 150 * 1000000, DCTX_DEADLINE_EXCEEDED,
                                "request budget spent", &request))
        return 1;
    run_tree(request, false);
    dctx_release(request);

    printf("\n2. the same tree, canceled by hand after 50 ms:\n");
    if (dctx_with_timeout(dctx_background(), 10LL * 1000000000, &request))
        return 1;
    run_tree(request, true);
    dctx_release(request);
    return 0;
}
