/*
 * cancel_remote - a cancel pushed across processes.
 *
 * A client calls a "fan" service, which calls three workers in parallel;
 * each worker's job would take 10 s. When they have worked 200 ms the
 * client cancels its context with a cause ("user pressed stop"). What
 * follows:
 *   - the client's call ends at once with CANCELLED, and a Cancel frame
 *     carrying the cause is pushed to the fan;
 *   - the fan's context is canceled with that cause; its three calls end
 *     at once and push the cancel on to each worker;
 *   - each worker's context is canceled: it stops and says so, with the
 *     cause, a millisecond or so after the client canceled;
 *   - the client and the fan print what their cancels did at the far end
 *     (dctx_rpc_handle_cancel_outcome): "stopped" a running handler.
 *
 * The services are child processes of this program (fork), each serving
 * one dctx RPC server on an ipc:// socket in a temporary directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dctx/rpc.h>

#include "../common/children.h"

#define WORKERS 3
#define SERVICES (1 + WORKERS) /* the fan, then the workers */
#define FAN_METHOD "/example.Fan/Run"
#define WORK_METHOD "/example.Worker/Work"
#define WORK_NS (10000 * MS)
#define CANCEL_AFTER_NS (200 * MS)

/* Service i: 0 is the fan, 1..WORKERS the workers. */
static void name_of(int i, char *out, size_t n)
{
    if (i == 0)
        snprintf(out, n, "fan");
    else
        snprintf(out, n, "worker%d", i);
}

static void url_of(int i, char *out, size_t n)
{
    char name[24];
    name_of(i, name, sizeof name);
    example_url(name, out, n);
}

/* ===== The services ===== */

struct service {
    char name[24];
    dctx_rpc_channel *workers[WORKERS]; /* the fan's channels; NULL in a worker */
};

/* A worker: 10 s of work, unless its context ends first. */
static int work(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)req;
    (void)len;
    struct service *s = arg;
    int64_t start = dctx_now();
    say(s->name, "started; its work takes %lld s", WORK_NS / 1000 / MS);
    tell_parent('w');
    int code = DCTX_OK;
    if (dctx_wait(ctx, WORK_NS)) { /* done before the work was: stop */
        const char *why = NULL;
        code = dctx_cause(ctx, &why); /* the client's cause, two hops away */
        say(s->name, "stopped after %.1f ms: %s \"%s\"", (double)(dctx_now() - start) / MS,
            dctx_code_name(code), why ? why : "");
        dctx_rpc_reply_set_message(reply, "%s stopped: %s", s->name, why ? why : "");
    }
    tell_parent('d');
    return code;
}

/* The fan: call every worker in parallel with our context, wait for all. */
static int fan(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    struct service *s = arg;
    dctx_rpc_handle *calls[WORKERS] = {NULL};
    int code = DCTX_OK;
    say(s->name, "calls its %d workers in parallel", WORKERS);
    for (int i = 0; i < WORKERS; i++) {
        int rc =
            dctx_rpc_call_start(s->workers[i], ctx, WORK_METHOD, req, len, NULL, NULL, &calls[i]);
        if (rc != DCTX_OK && code == DCTX_OK) {
            code = rc;
            dctx_rpc_reply_set_message(reply, "worker%d: %s", i + 1, dctx_strerror(rc));
        }
    }
    /* When our context is canceled each call ends at once, and its cancel
     * is pushed on to its worker. */
    for (int i = 0; i < WORKERS; i++) {
        int rc = calls[i] != NULL ? dctx_rpc_handle_result(calls[i], NULL) : DCTX_OK;
        if (rc != DCTX_OK && code == DCTX_OK)
            code = rc;
    }
    if (dctx_done(ctx)) {
        const char *why = NULL;
        int cause = dctx_cause(ctx, &why);
        say(s->name, "its context was canceled: %s \"%s\"; its calls ended at once",
            dctx_code_name(cause), why ? why : "");
    }
    for (int i = 0; i < WORKERS; i++) {
        if (calls[i] == NULL)
            continue;
        int outcome = dctx_rpc_handle_cancel_outcome(calls[i], 1000 * MS);
        say(s->name, "its cancel at worker%d: %s", i + 1, dctx_rpc_cancel_outcome_name(outcome));
        dctx_rpc_handle_release(calls[i]);
    }
    tell_parent('d');
    return code;
}

/* A service's process: serve until the parent sends SIGTERM. Returns 0 or
 * a status code (the process's exit code). */
static int service_main(int i)
{
    struct service s = {.workers = {NULL}};
    name_of(i, s.name, sizeof s.name);
    char url[128];
    url_of(i, url, sizeof url);

    dctx_rpc_server *srv = NULL;
    int rc = dctx_rpc_server_open(NULL, &srv);
    for (int w = 0; rc == 0 && i == 0 && w < WORKERS; w++) {
        char worker_url[128];
        url_of(w + 1, worker_url, sizeof worker_url);
        rc = dctx_rpc_channel_open(worker_url, NULL, &s.workers[w]);
    }
    if (rc == 0)
        rc = i == 0 ? dctx_rpc_server_register(srv, FAN_METHOD, fan, &s)
                    : dctx_rpc_server_register(srv, WORK_METHOD, work, &s);
    if (rc == 0)
        rc = dctx_rpc_server_listen(srv, url);
    if (rc == 0)
        rc = dctx_rpc_server_start(srv);
    if (rc == 0) {
        rc = serve_until_sigterm();
    } else {
        fprintf(stderr, "%s: cannot serve on %s: %s\n", s.name, url, dctx_strerror(rc));
    }
    /* Close the server first: its handlers use the channels. Close
     * reports DEADLINE_EXCEEDED if handlers outlived its grace. */
    if (dctx_rpc_server_close(srv) != 0 && rc == 0)
        rc = DCTX_DEADLINE_EXCEEDED;
    for (int w = 0; w < WORKERS; w++)
        dctx_rpc_channel_close(s.workers[w]);
    return rc;
}

/* ===== The parent: start the services, call, cancel, stop them ===== */

/* The client: start the fan-out, cancel it 200 ms in. True if the call
 * ended CANCELLED and the cancel stopped the fan's handler. */
static bool call_and_cancel(void)
{
    char url[128];
    url_of(0, url, sizeof url);
    dctx_rpc_channel *ch = NULL;
    int rc = dctx_rpc_channel_open(url, NULL, &ch);
    if (rc != 0) {
        fprintf(stderr, "channel to %s: %s\n", url, dctx_strerror(rc));
        return false;
    }
    dctx *ctx = NULL;
    dctx_rpc_handle *h = NULL;
    rc = dctx_with_cancel(dctx_background(), &ctx);
    if (rc == 0) {
        say("client", "starts the fan-out");
        rc = dctx_rpc_call_start(ch, ctx, FAN_METHOD, NULL, 0, NULL, NULL, &h);
    }
    if (rc != 0) {
        fprintf(stderr, "call: %s\n", dctx_strerror(rc));
        dctx_release(ctx);
        dctx_rpc_channel_close(ch);
        return false;
    }
    /* Once every worker is at work (they say so on the pipe: this keeps
     * the demo the same from run to run), let them work a while, then
     * cancel. */
    int code = -1, outcome = DCTX_RPC_CANCEL_NONE;
    if (!wait_reports('w', WORKERS, 5000)) {
        fprintf(stderr, "the workers did not all start\n");
    } else if (dctx_rpc_handle_wait(h, CANCEL_AFTER_NS)) {
        fprintf(stderr, "the call ended before the cancel\n");
    } else {
        say("client", "cancels: \"user pressed stop\"");
        dctx_cancel_cause(ctx, DCTX_CANCELED, "user pressed stop"); /* pushed at once */
        code = dctx_rpc_handle_result(h, NULL);
        say("client", "its call ended: %s", dctx_code_name(code));
        outcome = dctx_rpc_handle_cancel_outcome(h, 1000 * MS);
        say("client", "its cancel at the fan: %s", dctx_rpc_cancel_outcome_name(outcome));
    }
    /* Wait until every service has ended its call (so their lines are all out). */
    if (!wait_reports('d', SERVICES, 5000))
        fprintf(stderr, "not every service reported the end of its call\n");
    dctx_rpc_handle_release(h);
    dctx_release(ctx);
    dctx_rpc_channel_close(ch);
    return code == DCTX_CANCELED && outcome == DCTX_RPC_CANCEL_STOPPED;
}

int main(void)
{
    if (!example_begin("cancel"))
        return 1;
    bool ok = start_children(SERVICES, service_main);
    if (ok)
        ok = call_and_cancel();
    if (!stop_children())
        ok = false;
    example_end();
    if (ok)
        printf("ok: the call ended CANCELLED at once, and its cancel stopped the fan's handler\n");
    else
        printf("FAILED: the cancel did not do what was promised\n");
    return ok ? 0 : 1;
}
