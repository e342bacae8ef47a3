/*
 * tracing_values - what crosses the wire with a call, and what does not.
 *
 * The edge starts a W3C trace (dctx_trace_start) and puts two values in
 * its context: a tenant, under a key flagged DCTX_KEY_PROPAGATE, and a
 * password, under a key without the flag. It calls a chain of three
 * services in three processes: edge -> hop1 -> hop2 -> hop3.
 *
 * Every hop prints its trace position and the values it got:
 *   - the trace id is the same at every hop; each hop works under a span of
 *     its own whose parent is its caller's span, so the lines rebuild the
 *     call tree;
 *   - tenant=acme reaches every hop: each registered the key with
 *     dctx_wire_register_key, so the value is filed under its own key;
 *   - the password never leaves the edge: no hop has it, and it is not
 *     among the values that came with the call.
 *
 * The hops are child processes of this program (fork), each serving one
 * dctx RPC server on an ipc:// socket in a temporary directory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dctx/rpc.h>
#include <dctx/trace.h>

#include "../common/children.h"

#define HOPS 3
#define METHOD "/example.Chain/Step"

/* Keys are identified by address; the name is what travels. */
static const dctx_key tenant_key = {"tenant", DCTX_KEY_PROPAGATE};
static const dctx_key password_key = {"password", 0}; /* no flag: stays in this process */

static void url_of(int hop, char *out, size_t n)
{
    char name[16];
    snprintf(name, sizeof name, "hop%d", hop + 1);
    example_url(name, out, n);
}

/* ===== What a context holds ===== */

/* A value as text, or "(none)". */
static void value_text(const dctx *ctx, const dctx_key *key, char *out, size_t n)
{
    size_t len = 0;
    const char *v = dctx_value(ctx, key, &len);
    if (v != NULL)
        snprintf(out, n, "%.*s", (int)len, v);
    else
        snprintf(out, n, "(none)");
}

static int add_name(void *arg, const char *name, const void *value, size_t len)
{
    (void)value;
    (void)len;
    char *names = arg;
    size_t used = strlen(names);
    snprintf(names + used, 256 - used, " %s", name);
    return 0;
}

/* Print ctx's trace position and values; `carried` says what the list of
 * names is: what a call with ctx would carry (every value of a propagated
 * key, and those passed through from upstream). */
static void show(const char *who, const dctx *ctx, const char *carried)
{
    dctx_trace t;
    if (!dctx_trace_get(ctx, &t)) {
        say(who, "no trace!");
        return;
    }
    say(who, "trace %s  span %s  parent %s", t.trace_id, t.span_id,
        t.parent_span_id[0] ? t.parent_span_id : "-");
    char tenant[64], password[64], names[256] = "";
    value_text(ctx, &tenant_key, tenant, sizeof tenant);
    value_text(ctx, &password_key, password, sizeof password);
    int rc = dctx_wire_each_value(ctx, NULL, add_name, names);
    say(who, "tenant=%s password=%s  %s:%s", tenant, password, carried,
        rc == 0 ? names : " (over the wire limits)");
}

/* ===== A hop ===== */

struct hop {
    char name[16];
    dctx_rpc_channel *next; /* NULL for the last hop */
};

/* Show what the call brought, then call onward with the same context: the
 * trace (now at this hop's span) and the tenant go along. */
static int step(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    struct hop *h = arg;
    show(h->name, ctx, "came with the call");
    int code = DCTX_OK;
    if (h->next != NULL) {
        dctx_rpc_result res;
        code = dctx_rpc_call_raw(h->next, ctx, METHOD, req, len, &res);
        if (code != DCTX_OK)
            dctx_rpc_reply_set_message(reply, "%s", res.message);
        dctx_rpc_result_free(&res);
    }
    tell_parent('d');
    return code;
}

/* A hop's process: serve until the parent sends SIGTERM. Returns 0 or a
 * status code (the process's exit code). */
static int hop_main(int i)
{
    struct hop h = {.next = NULL};
    snprintf(h.name, sizeof h.name, "hop%d", i + 1);
    char url[128], next_url[128];
    url_of(i, url, sizeof url);
    url_of(i + 1, next_url, sizeof next_url);

    /* File values received under "tenant" as tenant_key's, so dctx_value
     * finds them. (Here every process shares this program's key; a real
     * service registers its own key of the same name.) The password key
     * could not be registered: it is not flagged DCTX_KEY_PROPAGATE. */
    int rc = dctx_wire_register_key(&tenant_key);
    dctx_rpc_server *srv = NULL;
    if (rc == 0)
        rc = dctx_rpc_server_open(NULL, &srv);
    if (rc == 0 && i + 1 < HOPS)
        rc = dctx_rpc_channel_open(next_url, NULL, &h.next);
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

/* The edge's context: a deadline, a new trace, a tenant and a password. */
static int edge_context(dctx **out)
{
    dctx *timed = NULL, *traced = NULL, *tenant = NULL;
    *out = NULL;
    int rc = dctx_with_timeout(dctx_background(), 2000 * MS, &timed);
    if (rc == 0)
        rc = dctx_trace_start(timed, DCTX_TRACE_SAMPLED, &traced);
    if (rc == 0)
        rc = dctx_with_value(traced, &tenant_key, "acme", 4, &tenant);
    if (rc == 0)
        rc = dctx_with_value(tenant, &password_key, "hunter2", 7, out);
    dctx_release(tenant); /* each child holds its parent */
    dctx_release(traced);
    dctx_release(timed);
    return rc;
}

/* The edge: one call down the chain. True if it succeeded. */
static bool call_chain(void)
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
    rc = edge_context(&ctx);
    if (rc != 0) {
        fprintf(stderr, "edge context: %s\n", dctx_strerror(rc));
        dctx_rpc_channel_close(ch);
        return false;
    }
    show("edge", ctx, "a call carries");
    dctx_rpc_result res;
    int code = dctx_rpc_call_raw(ch, ctx, METHOD, NULL, 0, &res);
    if (!wait_reports('d', HOPS, 5000)) /* every hop has printed */
        fprintf(stderr, "not every hop reported the end of its call\n");
    say("edge", "the chain answered %s%s%s", dctx_code_name(code), res.message[0] ? ": " : "",
        res.message);
    dctx_rpc_result_free(&res);
    dctx_release(ctx);
    dctx_rpc_channel_close(ch);
    return code == DCTX_OK;
}

int main(void)
{
    if (!example_begin("tracing"))
        return 1;
    bool ok = start_children(HOPS, hop_main);
    if (ok)
        ok = call_chain();
    if (!stop_children())
        ok = false;
    example_end();
    return ok ? 0 : 1;
}
