/*
 * call.c - `rpcd call`: one call from the command line. Prints the status
 * name on the first line, then the response (or the status message), and
 * exits with the status code. With --cancel-after it cancels the call's
 * context after that long, which pushes the cancel at once, then waits
 * (bounded) for the call to end and says what the cancel did at the far end.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/trace.h>

#include "duration.h"
#include "keepalive.h"
#include "key_flags.h"
#include "tls_flags.h"
#include "log.h"
#include "rpcd.h"

#define MAX_VALUES DCTX_WIRE_VALUES_MAX

static const char call_usage[] =
    "usage: rpcd call URL METHOD [--data TEXT] [--timeout DURATION] [--value KEY=VALUE]...\n"
    "                 [--cancel-after DURATION] [--trace] [--log FILE|-] [--stream]\n"
    "                 [--keepalive DURATION] [--keepalive-timeout DURATION]\n"
    "                 [--tls-ca FILE] [--tls-server-name NAME] [--tls-cert FILE]\n"
    "                 [--key FILE --server-key PUB]\n"
    "\n"
    "Call METHOD (e.g. /dctx.demo.Demo/Echo) at URL once. Prints the status name, then the\n"
    "response or the status message; exits with the status code (0 for OK).\n"
    "  --data TEXT              the request bytes\n"
    "  --timeout DURATION       a deadline for the whole call chain (500us, 250ms, 3s, 1m)\n"
    "  --value KEY=VALUE        a propagated value (repeatable)\n"
    "  --cancel-after DURATION  cancel the call after that long and report what the cancel did\n"
    "  --trace                  start a W3C trace (traceparent) and print its id\n"
    "  --stream                 a streaming call: --data is the first message, then each line of\n"
    "                           standard input until its end; every message back is printed on\n"
    "                           its own line as it comes, then the status name and message\n"
    "  --log FILE|-             JSON lines (cancel_sent, call_end) to FILE or stderr\n"
    "  --keepalive DURATION     ping the server when the connection is silent this long; 0: never\n"
    "  --keepalive-timeout DURATION  fail the call if a ping gets no answer in this long\n";

/* A TLS handshake costs round trips and the CPU of both ends (far more
 * under a sanitizer): a call waits this long for its connection. */
#define TLS_CONNECT_WAIT_NS 1000000000LL

struct call_args {
    struct rpcd_keepalive keepalive;
    struct rpcd_tls tls;
    struct rpcd_keys *ident;               /* --key, --server-key */
    const char *url, *method, *data, *log; /* data, log: NULL when not given */
    int64_t timeout_ns, cancel_after_ns;
    dctx_key keys[MAX_VALUES];
    const char *values[MAX_VALUES];
    int n_values;
    bool trace;
    bool stream;
};

static int add_value(struct call_args *a, const char *kv)
{
    const char *eq = strchr(kv, '=');
    if (eq == NULL)
        return rpcd_usage_error("call", "--value takes KEY=VALUE, not \"%s\"", kv);
    if (a->n_values == MAX_VALUES)
        return rpcd_usage_error("call", "too many --value (at most %d): %s", MAX_VALUES, kv);
    char *name = strndup(kv, (size_t)(eq - kv));
    if (name == NULL || !dctx_wire_key_name_valid(name)) {
        free(name);
        return rpcd_usage_error("call", "--value key must be 1..%d printable characters: \"%s\"",
                                DCTX_WIRE_KEY_BYTES_MAX, kv);
    }
    a->keys[a->n_values] = (dctx_key){name, DCTX_KEY_PROPAGATE};
    a->values[a->n_values++] = eq + 1;
    return 0;
}

static int parse(int argc, char **argv, struct call_args *a)
{
    a->timeout_ns = -1;
    a->cancel_after_ns = -1;
    rpcd_keepalive_init(&a->keepalive);
    int positional = 0;
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0) {
            fputs(call_usage, stdout);
            rpcd_tls_usage(stdout, false);
            rpcd_keys_usage(stdout, false);
            return -1;
        }
        if (strcmp(flag, "--trace") == 0) {
            a->trace = true;
            continue;
        }
        if (strcmp(flag, "--stream") == 0) {
            a->stream = true;
            continue;
        }
        if (strncmp(flag, "--", 2) != 0) {
            if (positional == 0)
                a->url = flag;
            else if (positional == 1)
                a->method = flag;
            else
                return rpcd_usage_error("call", "unexpected argument \"%s\"", flag);
            positional++;
            continue;
        }
        if (val == NULL)
            return rpcd_usage_error("call", "%s needs a value", flag);
        i++;
        int rc = rpcd_keepalive_flag("call", flag, val, &a->keepalive);
        if (rc == 0)
            rc = rpcd_keys_flag("call", flag, val, 0, a->ident);
        if (rc > 1)
            return rc;
        if (rc == 1 || rpcd_tls_flag(flag, val, false, &a->tls))
            continue;
        if (strcmp(flag, "--data") == 0) {
            a->data = val;
        } else if (strcmp(flag, "--log") == 0)
            a->log = val;
        else if (strcmp(flag, "--value") == 0)
            rc = add_value(a, val);
        else if (strcmp(flag, "--timeout") == 0 && !rpcd_parse_duration(val, &a->timeout_ns))
            rc = rpcd_usage_error(
                "call", "--timeout takes a duration (500us, 250ms, 3s, 1m), not \"%s\"", val);
        else if (strcmp(flag, "--cancel-after") == 0 &&
                 !rpcd_parse_duration(val, &a->cancel_after_ns))
            rc = rpcd_usage_error("call", "--cancel-after takes a duration, not \"%s\"", val);
        else if (strcmp(flag, "--data") && strcmp(flag, "--log") && strcmp(flag, "--value") &&
                 strcmp(flag, "--timeout") && strcmp(flag, "--cancel-after"))
            rc = rpcd_usage_error("call", "unknown flag %s", flag);
        if (rc != 0)
            return rc;
    }
    if (a->url == NULL || a->method == NULL)
        return rpcd_usage_error("call", "%s", "URL and METHOD are required");
    if (a->method[0] != '/')
        return rpcd_usage_error("call", "METHOD is /package.Service/Method, not \"%s\"", a->method);
    return rpcd_keys_load("call", a->ident, 0);
}

/* The call's context: the timeout, the trace, then the values; and, in
 * *cancel (a reference of its own), the context under them that
 * --cancel-after cancels: a trace's or a value's context cannot be
 * canceled itself. */
static int make_context(struct call_args *a, dctx **out, dctx **cancel)
{
    dctx *ctx = NULL;
    int rc = a->timeout_ns >= 0 ? dctx_with_timeout(dctx_background(), a->timeout_ns, &ctx)
                                : dctx_with_cancel(dctx_background(), &ctx);
    *cancel = ctx != NULL ? dctx_retain(ctx) : NULL;
    if (rc == 0 && a->trace) {
        dctx *traced = NULL;
        rc = dctx_trace_start(ctx, DCTX_TRACE_SAMPLED, &traced);
        dctx_release(ctx);
        ctx = traced;
    }
    for (int i = 0; rc == 0 && i < a->n_values; i++) {
        dctx *child = NULL;
        rc = dctx_with_value(ctx, &a->keys[i], a->values[i], strlen(a->values[i]), &child);
        dctx_release(ctx);
        ctx = child;
    }
    *out = ctx;
    return rc;
}

static void log_call_end(int code, const char *message, int64_t elapsed_ns, const char *method,
                         const dctx *ctx)
{
    struct rpcd_log_line l;
    rpcd_log_begin(&l, "call_end");
    rpcd_log_str(&l, "method", method);
    rpcd_log_str(&l, "status", dctx_code_name(code));
    rpcd_log_int(&l, "elapsed_us", elapsed_ns / 1000);
    dctx_trace t;
    if (dctx_trace_get(ctx, &t)) {
        rpcd_log_str(&l, "trace_id", t.trace_id);
        rpcd_log_str(&l, "span_id", t.span_id);
    }
    if (message[0] != '\0') /* last: a peer's message may fill the rest of the line */
        rpcd_log_str(&l, "message", message);
    rpcd_log_end(&l);
}

/* Why a call that was never sent failed: dctx_rpc_call_start returns only
 * the code then, so say what rpcd knows (the URL, whether it is reached). */
static void describe_not_sent(int code, dctx_rpc_channel *ch, const char *url,
                              const dctx_rpc_channel_options *o, char *out, size_t n)
{
    dctx_rpc_channel_stats cs;
    dctx_rpc_channel_stats_get(ch, &cs);
    char wait[32];
    if (code == DCTX_UNAVAILABLE && cs.connections == 0)
        snprintf(out, n, "no connection to %s within %s%s%s%s", url,
                 rpcd_format_duration(o->connect_wait_ns, wait, sizeof wait),
                 cs.last_error[0] != '\0' ? " (" : "", cs.last_error,
                 cs.last_error[0] != '\0' ? ")" : "");
    else if (code == DCTX_UNAUTHENTICATED)
        snprintf(out, n, "no authenticated connection to %s: %s", url, cs.last_error);
    else
        snprintf(out, n, "the call was not sent to %s: %s", url, dctx_strerror(code));
}

/* Status name, then the payload or the status message. */
static void print_result(int code, const dctx_rpc_result *res, const char *not_sent)
{
    printf("%s\n", dctx_code_name(code));
    if (code == DCTX_OK)
        fwrite(res->payload, 1, res->payload_len, stdout);
    else if (res->message[0] != '\0')
        fputs(res->message, stdout);
    else
        fputs(not_sent[0] != '\0' ? not_sent : dctx_strerror(code), stdout);
    printf("\n");
}

/* One unary call (rc: make_context's; not 0: only reported), printed as
 * print_result does, with the cancel's outcome after --cancel-after. */
static int call_once(const struct call_args *a, const dctx_rpc_channel_options *o,
                     dctx_rpc_channel *ch, dctx *ctx, dctx *cancelable, int rc)
{
    dctx_rpc_handle *h = NULL;
    int64_t t0 = dctx_now();
    if (rc == 0)
        rc = dctx_rpc_call_start(ch, ctx, a->method, a->data != NULL ? a->data : "",
                                 a->data != NULL ? strlen(a->data) : 0, NULL, NULL, &h);
    /* res is a copy of the call's whole result, ours until freed. */
    dctx_rpc_result res = {.message = ""};
    char not_sent[DCTX_WIRE_MESSAGE_BYTES_MAX] = ""; /* as long as a server's message */
    bool canceled = false;
    if (h != NULL) {
        if (a->cancel_after_ns >= 0 && !dctx_rpc_handle_wait(h, a->cancel_after_ns)) {
            if (a->log != NULL)
                rpcd_log_message("cancel_sent", "after %lld us",
                                 (long long)(dctx_now() - t0) / 1000);
            dctx_cancel(cancelable);
            canceled = true;
        }
        rc = dctx_rpc_handle_result(h, &res);
    } else if (ctx != NULL) {
        describe_not_sent(rc, ch, a->url, o, not_sent, sizeof not_sent);
    }
    if (a->log != NULL && ctx != NULL)
        log_call_end(rc, h != NULL ? res.message : not_sent, dctx_now() - t0, a->method, ctx);
    print_result(rc, &res, not_sent);
    /* Twice the channel's own wait for the answer: by then it came, or the
     * channel gave up on it ("unreached"). */
    if (canceled)
        printf("cancel: %s\n", dctx_rpc_cancel_outcome_name(dctx_rpc_handle_cancel_outcome(
                                   h, 2 * o->cancel_ack_timeout_ns)));
    dctx_rpc_result_free(&res);
    dctx_rpc_handle_release(h);
    return rc;
}

/* A stream (call_stream.c), logged as call_once logs a call. */
static int call_stream(const struct call_args *a, const dctx_rpc_channel_options *o,
                       dctx_rpc_channel *ch, dctx *ctx, dctx *cancelable)
{
    int64_t t0 = dctx_now();
    char message[DCTX_WIRE_MESSAGE_BYTES_MAX]; /* as long as a server's message */
    bool opened;
    int rc = rpcd_call_stream(ch, ctx, cancelable, a->method, a->data, a->cancel_after_ns, message,
                              sizeof message, &opened);
    if (!opened) {
        describe_not_sent(rc, ch, a->url, o, message, sizeof message);
        printf("%s\n%s\n", dctx_code_name(rc), message);
    }
    if (a->log != NULL)
        log_call_end(rc, message, dctx_now() - t0, a->method, ctx);
    return rc;
}

static int call_command(int argc, char **argv, struct rpcd_keys *ident)
{
    struct call_args a = {.ident = ident};
    int rc = parse(argc, argv, &a);
    if (rc != 0)
        return rc < 0 ? 0 : rc;
    if (a.log != NULL && rpcd_log_open(a.log, "rpcd-call") != 0) {
        fprintf(stderr, "rpcd call: cannot open log %s: %s\n", a.log, strerror(errno));
        return RPCD_EXIT_USAGE;
    }
    dctx_rpc_channel_options o;
    dctx_rpc_channel_options_init(&o);
    o.keepalive_ns = a.keepalive.interval_ns;
    o.keepalive_timeout_ns = a.keepalive.timeout_ns;
    rpcd_tls_channel(&a.tls, &o);
    rpcd_keys_channel(a.ident, &o);
    if (strncmp(a.url, "tls+", 4) == 0 && o.connect_wait_ns < TLS_CONNECT_WAIT_NS)
        o.connect_wait_ns = TLS_CONNECT_WAIT_NS;
    dctx_rpc_channel *ch = NULL;
    rc = dctx_rpc_channel_open(a.url, &o, &ch);
    if (rc != 0) {
        fprintf(stderr,
                "rpcd call: bad URL \"%s\" (ipc:///path, tcp://host:port, tls+tcp://, inproc://)\n",
                a.url);
        return rc;
    }
    /* The cancel is the caller's own: one context, canceled by hand (or by
     * its deadline); the call is never canceled any other way. */
    dctx *ctx = NULL, *cancelable = NULL;
    rc = make_context(&a, &ctx, &cancelable);
    if (rc == 0 && a.stream)
        rc = call_stream(&a, &o, ch, ctx, cancelable);
    else
        rc = call_once(&a, &o, ch, ctx, cancelable, rc);
    dctx_trace t;
    if (ctx != NULL && dctx_trace_get(ctx, &t))
        printf("trace: %s\n", t.trace_id);
    dctx_release(ctx);
    dctx_release(cancelable);
    dctx_rpc_channel_close(ch);
    for (int i = 0; i < a.n_values; i++)
        free((char *)a.keys[i].name);
    rpcd_log_close();
    return rc;
}

int rpcd_call(int argc, char **argv)
{
    struct rpcd_keys ident = {0};
    int rc = call_command(argc, argv, &ident);
    rpcd_keys_free(&ident);
    return rc;
}
