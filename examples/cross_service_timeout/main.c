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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dctx/rpc.h>

#include "../common/children.h"

#define HOPS 3
#define METHOD "/example.Chain/Step"
#define EDGE_TIMEOUT (300 * MS)
#define RESERVE (5 * MS)

/* What each hop's own part of the work takes. */
static const int64_t work_ns[HOPS] = {100 * MS, 100 * MS, 500 * MS};

static void url_of(int hop, char *out, size_t n)
{
    char name[16];
    snprintf(name, sizeof name, "hop%d", hop + 1);
    example_url(name, out, n);
}

/* ===== A hop ===== */

struct hop {
    char name[16], next_name[16];
    int64_t work_ns;
    dctx_rpc_channel *next; /* NULL for the last hop */
};

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
        rc = serve_until_sigterm();
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
    say("edge", "got %s after %.1f ms: %s", dctx_code_name(code), (double)took / MS, res.message);
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
    if (!example_begin("timeout"))
        return 1;
    bool ok = start_children(HOPS, hop_main);
    if (ok)
        ok = call_chain();
    if (!stop_children())
        ok = false;
    example_end();
    printf("%s\n", ok ? "ok: the deadline set at the edge bounded all three hops"
                      : "FAILED: the chain did not end as promised");
    return ok ? 0 : 1;
}
