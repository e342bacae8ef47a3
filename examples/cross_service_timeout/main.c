/*
 * cross_service_timeout - one deadline, set at the edge, bounds a chain of
 * three services in three processes: edge -> hop1 -> hop2 -> hop3.
 *
 * The edge gives the call 300 ms. hop1 and hop2 each spend 100 ms on their
 * own part of the work, then call onward with the context they were given;
 * hop3's part would take 500 ms. Every hop prints the budget it received:
 * what is left of the edge's 300 ms. hop3 gets what remains, works until
 * its deadline and gives up; the edge gets DEADLINE_EXCEEDED after ~300 ms
 * instead of waiting 700 ms (or forever).
 *
 * Every channel keeps 5 ms of the budget back for the reply to travel home
 * (policy.reserve_ns), so each hop's deadline falls a little before its
 * caller's: hop3 gives up first and its answer reaches the edge in time.
 *
 * The hops are child processes of this program (fork), each serving one
 * dctx RPC server on an ipc:// socket in a temporary directory.
 */
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dctx/rpc.h>

#define MS 1000000LL /* nanoseconds */
#define HOPS 3
#define METHOD "/example.Chain/Step"
#define EDGE_TIMEOUT (300 * MS)
#define RESERVE (5 * MS)

/* What each hop's own part of the work takes. */
static const int64_t work_ns[HOPS] = {100 * MS, 100 * MS, 500 * MS};

static int64_t t0;     /* when the program started; all processes print times since then */
static char dir[64];   /* temporary directory for the ipc sockets */
static int reports[2]; /* a pipe: a hop writes 'r' once it serves, 'd' when its call ended */
static pid_t pids[HOPS];

/* One line of output: ms since the start (CLOCK_MONOTONIC is one clock for
 * every process of a machine), who, what. stdout is line buffered, so each
 * line is one write even with four processes printing. */
static void say(const char *who, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const char *who, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    printf("%8.1f ms  %-5s %s\n", (double)(dctx_now() - t0) / MS, who, text);
}

static void url_of(int hop, char *out, size_t n)
{
    snprintf(out, n, "ipc://%s/hop%d.ipc", dir, hop + 1);
}

/* ===== A hop ===== */

struct hop {
    char name[16], next_name[16];
    int64_t work_ns;
    dctx_rpc_channel *next; /* NULL for the last hop */
};

static void tell_parent(char what)
{
    if (write(reports[1], &what, 1) != 1)
        perror("write");
}

/* The handler every hop serves: do our part under the context, then call
 * the next hop with the same context, so what is left of the deadline
 * goes along. */
static int step(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    struct hop *h = arg;
    int64_t start = dctx_now(), deadline;
    if (!dctx_deadline(ctx, &deadline)) /* rebuilt from the budget the caller sent */
        deadline = DCTX_DEADLINE_NONE;  /* (never here: the edge set one) */
    say(h->name, "received a budget of %.1f ms; its part takes %lld ms",
        (double)(deadline - start) / MS, (long long)(h->work_ns / MS));

    /* The work: dctx_wait returns true if the context ends first. */
    int code = DCTX_OK;
    if (dctx_wait(ctx, h->work_ns)) {
        code = dctx_err(ctx); /* DCTX_DEADLINE_EXCEEDED */
        say(h->name, "gave up after %.1f ms: %s", (double)(dctx_now() - start) / MS,
            dctx_strerror(code));
        dctx_rpc_reply_set_message(reply, "%s gave up after %.1f ms of its %lld ms of work",
                                   h->name, (double)(dctx_now() - start) / MS,
                                   (long long)(h->work_ns / MS));
    } else if (h->next != NULL) {
        say(h->name, "did its part; calls %s with %.1f ms left", h->next_name,
            (double)(deadline - dctx_now()) / MS);
        dctx_rpc_result res;
        code = dctx_rpc_call_raw(h->next, ctx, METHOD, req, len, &res);
        say(h->name, "%s answered %s: %s", h->next_name, dctx_code_name(code), res.message);
        dctx_rpc_reply_set_message(reply, "%s", res.message); /* pass the reason back */
        dctx_rpc_result_free(&res);
    }
    tell_parent('d');
    return code;
}

/* A hop's process: serve until the parent sends SIGTERM. Returns 0 or a
 * status code (the process's exit code). */
static int hop_main(int i)
{
    /* SIGTERM is taken by sigwait below: block it before any thread
     * exists (threads inherit the mask). Die with the parent, too. */
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &term, NULL) != 0 || prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
        perror("sigprocmask/prctl");
        return DCTX_INTERNAL;
    }

    struct hop h = {.work_ns = work_ns[i]};
    snprintf(h.name, sizeof h.name, "hop%d", i + 1);
    snprintf(h.next_name, sizeof h.next_name, "hop%d", i + 2);
    char url[128], next_url[128];
    url_of(i, url, sizeof url);
    url_of(i + 1, next_url, sizeof next_url);

    dctx_rpc_channel_options opts;
    dctx_rpc_channel_options_init(&opts);
    opts.policy.reserve_ns = RESERVE;

    dctx_rpc_server *srv = NULL;
    int rc = dctx_rpc_server_open(NULL, &srv);
    if (rc == 0 && i + 1 < HOPS)
        rc = dctx_rpc_channel_open(next_url, &opts, &h.next);
    if (rc == 0)
        rc = dctx_rpc_server_register(srv, METHOD, step, &h);
    if (rc == 0)
        rc = dctx_rpc_server_listen(srv, url);
    if (rc == 0)
        rc = dctx_rpc_server_start(srv);
    if (rc == 0) {
        tell_parent('r');
        int sig;
        rc = sigwait(&term, &sig) == 0 ? 0 : DCTX_INTERNAL;
    } else {
        fprintf(stderr, "%s: cannot serve on %s: %s\n", h.name, url, dctx_strerror(rc));
    }
    /* Close the server first: its handlers use the channel. Close
     * reports DEADLINE_EXCEEDED if handlers outlived its grace. */
    if (dctx_rpc_server_close(srv) != 0 && rc == 0)
        rc = DCTX_DEADLINE_EXCEEDED;
    dctx_rpc_channel_close(h.next);
    return rc;
}

/* ===== The parent: start the hops, call, stop them ===== */

/* Read reports until n of kind `what` came; false after timeout_ms. */
static bool wait_reports(char what, int n, int timeout_ms)
{
    int64_t end = dctx_now() + timeout_ms * MS;
    while (n > 0) {
        struct pollfd p = {.fd = reports[0], .events = POLLIN};
        int64_t left = (end - dctx_now()) / MS;
        char c;
        if (left <= 0 || poll(&p, 1, (int)left) != 1 || read(reports[0], &c, 1) != 1)
            return false;
        if (c == what)
            n--;
    }
    return true;
}

/* Start the hops in child processes, the last first: each is serving
 * before the one that calls it starts. */
static bool start_hops(void)
{
    for (int i = HOPS - 1; i >= 0; i--) {
        fflush(stdout); /* or the child would print it again */
        pids[i] = fork();
        if (pids[i] == 0) {
            close(reports[0]);
            exit(hop_main(i));
        }
        if (pids[i] < 0) {
            perror("fork");
            return false;
        }
        if (!wait_reports('r', 1, 5000)) {
            fprintf(stderr, "hop%d did not start\n", i + 1);
            return false;
        }
    }
    return true;
}

/* SIGTERM every hop and wait for it; true if all exited cleanly. */
static bool stop_hops(void)
{
    bool clean = true;
    for (int i = 0; i < HOPS; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    for (int i = 0; i < HOPS; i++) {
        int status = 0;
        if (pids[i] <= 0)
            continue;
        if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0) {
            fprintf(stderr, "hop%d did not exit cleanly (status 0x%x)\n", i + 1, status);
            clean = false;
        }
    }
    return clean;
}

/* The edge: one call with a 300 ms deadline. True if it ended as promised:
 * DEADLINE_EXCEEDED, no later than the deadline (and a little slack). */
static bool call_chain(void)
{
    char url[128];
    url_of(0, url, sizeof url);
    dctx_rpc_channel_options opts;
    dctx_rpc_channel_options_init(&opts);
    opts.policy.reserve_ns = RESERVE;
    dctx_rpc_channel *ch = NULL;
    int rc = dctx_rpc_channel_open(url, &opts, &ch);
    if (rc != 0) {
        fprintf(stderr, "channel to %s: %s\n", url, dctx_strerror(rc));
        return false;
    }
    dctx *ctx = NULL;
    rc = dctx_with_timeout(dctx_background(), EDGE_TIMEOUT, &ctx);
    if (rc != 0) {
        fprintf(stderr, "dctx_with_timeout: %s\n", dctx_strerror(rc));
        dctx_rpc_channel_close(ch);
        return false;
    }
    say("edge", "calls hop1 with a %lld ms deadline (the work would take %lld ms)",
        EDGE_TIMEOUT / MS, (work_ns[0] + work_ns[1] + work_ns[2]) / MS);
    int64_t start = dctx_now();
    dctx_rpc_result res;
    int code = dctx_rpc_call_raw(ch, ctx, METHOD, NULL, 0, &res);
    int64_t took = dctx_now() - start;
    say("edge", "got %s after %.1f ms: %s", dctx_code_name(code), (double)took / MS,
        res.message);
    dctx_rpc_result_free(&res);
    dctx_release(ctx);
    dctx_rpc_channel_close(ch);
    /* Wait until every hop has ended its call (so their lines are all out). */
    if (!wait_reports('d', HOPS, 5000))
        fprintf(stderr, "not every hop reported the end of its call\n");
    return code == DCTX_DEADLINE_EXCEEDED && took < EDGE_TIMEOUT + 50 * MS;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    t0 = dctx_now(); /* only a clock read: no library thread exists before the forks */
    snprintf(dir, sizeof dir, "/tmp/dctx-timeout-XXXXXX");
    if (mkdtemp(dir) == NULL || pipe(reports) != 0) {
        perror("cross_service_timeout");
        return 1;
    }
    bool ok = start_hops();
    close(reports[1]); /* the hops hold their own copies */
    if (ok)
        ok = call_chain();
    if (!stop_hops())
        ok = false;
    close(reports[0]);
    for (int i = 0; i < HOPS; i++) { /* nng removes its sockets; this is in case it could not */
        char path[128];
        snprintf(path, sizeof path, "%s/hop%d.ipc", dir, i + 1);
        unlink(path);
    }
    rmdir(dir);
    printf("%s\n", ok ? "ok: the deadline set at the edge bounded all three hops"
                      : "FAILED: the chain did not end as promised");
    return ok ? 0 : 1;
}
