/*
 * serve.c - `rpcd serve`: host the demo services and user modules
 * on one or more URLs until SIGTERM or SIGINT, then shut down gracefully.
 *
 * Signals are blocked in every thread and taken by the main thread with
 * sigwait, so no handler runs in the middle of library code.
 */
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/rpcd_module.h>

#include "duration.h"
#include "grpc_edge.h"
#include "keepalive.h"
#include "log.h"
#include "metrics.h"
#include "metrics_http.h"
#include "key_flags.h"
#include "tls_flags.h"
#include "rpcd.h"

static const char serve_usage[] =
    "usage: rpcd serve --listen URL [--listen URL]... [--name NAME] [--next URL]...\n"
    "                  [--workers N] [--log FILE|-] [--log-calls all|errors|none]\n"
    "                  [--max-inflight N] [--module PATH.so]... [--metrics-listen HOST:PORT]\n"
    "                  [--tls-cert FILE] [--tls-client-ca FILE] [--tls-ca FILE]\n"
    "                  [--tls-server-name NAME] [--key FILE] [--allow FILE] [--next-key PUB]\n"
    "                  [--grpc-listen HOST:PORT] [--grpc-forward KEY]...\n"
    "                  [--grpc-max-streams N] [--grpc-tls-cert FILE]\n"
    "                  [--grpc-tls-client-ca FILE]\n"
    "\n"
    "Serve the demo methods (/dctx.demo.Demo/Echo, Sleep, Chain, Fail; the streams Count,\n"
    "Sum, EchoStream) and /dctx.Admin/Stats on every --listen URL (inproc://, ipc://, tcp://,\n"
    "tls+tcp://) until SIGTERM or SIGINT.\n"
    "  --name NAME        the instance name in logs and Chain answers (default: rpcd)\n"
    "  --next URL[,URL]...  a next hop for Chain (repeat for several hops, called in\n"
    "                     parallel) and Count (relayed from the first); dialed in the\n"
    "                     background, may be down. Several URLs for one hop: each call\n"
    "                     goes to one of them, round robin among those up and not draining\n"
    "  --next grpc://HOST:PORT  a gRPC server as a next hop of Chain (called alongside the\n"
    "                     dctx hops, with the time left, the cancel and the values as\n"
    "                     metadata);\n"
    "                     grpcs://HOST:PORT with TLS (--tls-ca, --tls-server-name, --tls-cert)\n"
    "  --grpc-listen HOST:PORT  take gRPC calls (HTTP/2) for any method and serve\n"
    "                     each as a dctx call: grpc-timeout becomes the budget, a cancel\n"
    "                     a cancel; grpc.health.v1.Health/Check answers SERVING, and\n"
    "                     NOT_SERVING while the instance drains. With --allow, the\n"
    "                     allow list must let this instance's own key call the methods\n"
    "  --grpc-forward KEY  a metadata key carried on as a value (traceparent, tracestate\n"
    "                     and baggage always are; repeatable)\n"
    "  --grpc-tls-cert FILE  gRPC over TLS: the gateway's certificate and key (PEM, one file)\n"
    "  --grpc-tls-client-ca FILE  mutual TLS: gRPC callers must present a certificate of\n"
    "                     this CA\n";

/* The usage, with the library's own defaults (dctx_rpc_server_options_init). */
static void print_usage(void)
{
    char grace[32];
    fputs(serve_usage, stdout);
    printf(
        "  --workers N        handler threads (default %d)\n"
        "  --max-inflight N   calls queued or running; beyond: RESOURCE_EXHAUSTED (default %d)\n"
        "  --log FILE|-       JSON lines to FILE, or to stderr with - (the default)\n"
        "  --log-calls WHICH  the calls logged: all (call_start and call_end, the default),\n"
        "                     errors (call_end of those not OK) or none; cancels, dropped\n"
        "                     traces and rpcd's own events are always logged\n"
        "  --module PATH.so   load a user module: its dctx_rpcd_module_init registers methods\n"
        "                     (see <dctx/rpcd_module.h>)\n"
        "  --metrics-listen HOST:PORT\n"
        "                     serve GET /metrics (Prometheus' text format) and GET /healthz\n"
        "                     (200 serving, 503 draining) over HTTP; port 0: any free one\n"
        "  --grpc-max-streams N  gRPC streams bridged at once (Count, Sum, EchoStream; two\n"
        "                     threads each); one more is refused RESOURCE_EXHAUSTED (default %d)\n"
        "  --shutdown-grace D on SIGTERM the server drains: how long calls in flight get to\n"
        "                     finish before they are stopped (default %s)\n",
        DCTX_RPC_DEFAULT_WORKERS, DCTX_RPC_DEFAULT_MAX_IN_FLIGHT, DCTX_GRPC_DEFAULT_MAX_STREAMS,
        rpcd_format_duration(DCTX_RPC_DEFAULT_SHUTDOWN_GRACE_NS, grace, sizeof grace));
    fputs("  keepalive, toward the callers and the next hops:\n", stdout);
    rpcd_keepalive_usage(stdout);
    rpcd_tls_usage(stdout, true);
    rpcd_keys_usage(stdout, true);
}

struct serve_args {
    const char *listen[RPCD_MAX_LISTEN];
    int n_listen;
    const char *name;
    const char *next[RPCD_MAX_NEXT];
    int n_next;
    const char *grpc_next[RPCD_MAX_NEXT]; /* --next grpc://HOST:PORT */
    int n_grpc_next;
    struct rpcd_grpc_args grpc;
    dctx_rpc_server_options server; /* workers, in-flight limit, grace; the rest default */
    const char *log;
    const char *metrics_listen; /* HOST:PORT, or NULL */
    enum log_calls { LOG_CALLS_ALL, LOG_CALLS_ERRORS, LOG_CALLS_NONE } log_calls;
    const char *modules[RPCD_MAX_MODULES];
    int n_modules;
    struct rpcd_keepalive keepalive; /* for the server and its next hops */
    struct rpcd_tls tls;             /* its certificate, its callers', its next hops' */
    struct rpcd_keys keys;           /* its identity, its allow list, its next hops' keys */
};

static bool parse_int(const char *s, int lo, int hi, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = s != NULL ? strtol(s, &end, 10) : 0;
    if (s == NULL || *s == '\0' || *end != '\0' || errno != 0 || v < lo || v > hi)
        return false;
    *out = (int)v;
    return true;
}

static int parse(int argc, char **argv, struct serve_args *a)
{
    a->name = "rpcd";
    dctx_rpc_server_options_init(&a->server);
    rpcd_keepalive_init(&a->keepalive);
    for (int i = 0; i < argc; i++) {
        const char *flag = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0) {
            print_usage();
            return -1;
        }
        if (strncmp(flag, "--", 2) != 0)
            return rpcd_usage_error("serve", "unexpected argument \"%s\"", flag);
        if (val == NULL)
            return rpcd_usage_error("serve", "%s needs a value", flag);
        i++;
        int k = rpcd_keepalive_flag("serve", flag, val, &a->keepalive);
        if (k > 1)
            return k;
        if (k == 0)
            k = rpcd_keys_flag("serve", flag, val, a->n_next, &a->keys);
        if (k > 1)
            return k;
        if (k == 1 || rpcd_tls_flag(flag, val, true, &a->tls))
            continue;
        if (strcmp(flag, "--listen") == 0) {
            if (a->n_listen == RPCD_MAX_LISTEN)
                return rpcd_usage_error("serve", "too many --listen (at most %d): %s",
                                        RPCD_MAX_LISTEN, val);
            a->listen[a->n_listen++] = val;
        } else if (strcmp(flag, "--next") == 0 &&
                   (strncmp(val, "grpc://", 7) == 0 || strncmp(val, "grpcs://", 8) == 0)) {
            if (!rpcd_grpc_built)
                return rpcd_usage_error("serve", "--next %s: rpcd was built without gRPC", val);
            if (a->n_grpc_next == RPCD_MAX_NEXT)
                return rpcd_usage_error("serve", "too many gRPC --next (at most %d): %s",
                                        RPCD_MAX_NEXT, val);
            a->grpc_next[a->n_grpc_next++] = val;
        } else if (strcmp(flag, "--grpc-listen") == 0) {
            if (!rpcd_grpc_built)
                return rpcd_usage_error("serve", "--grpc-listen: rpcd was built without gRPC");
            a->grpc.listen = val;
        } else if (strcmp(flag, "--grpc-forward") == 0) {
            if (a->grpc.n_forward_keys == DCTX_GRPC_FORWARD_KEYS_MAX)
                return rpcd_usage_error("serve", "too many --grpc-forward (at most %d): %s",
                                        DCTX_GRPC_FORWARD_KEYS_MAX, val);
            if (!rpcd_grpc_forward_key_valid(val))
                return rpcd_usage_error("serve",
                                        "--grpc-forward takes a lowercase metadata key "
                                        "(a-z 0-9 - _ .; not grpc-*), not \"%s\"",
                                        val);
            a->grpc.forward_keys[a->grpc.n_forward_keys++] = val;
        } else if (strcmp(flag, "--grpc-max-streams") == 0) {
            if (!parse_int(val, 1, 65536, &a->grpc.max_streams))
                return rpcd_usage_error("serve", "--grpc-max-streams takes 1..65536, not \"%s\"",
                                        val);
        } else if (strcmp(flag, "--grpc-tls-cert") == 0) {
            a->grpc.tls_cert = val;
        } else if (strcmp(flag, "--grpc-tls-client-ca") == 0) {
            a->grpc.tls_client_ca = val;
        } else if (strcmp(flag, "--next") == 0) {
            if (a->n_next == RPCD_MAX_NEXT)
                return rpcd_usage_error("serve", "too many --next (at most %d): %s", RPCD_MAX_NEXT,
                                        val);
            a->next[a->n_next++] = val;
        } else if (strcmp(flag, "--name") == 0) {
            a->name = val;
        } else if (strcmp(flag, "--metrics-listen") == 0) {
            a->metrics_listen = val;
        } else if (strcmp(flag, "--log") == 0) {
            a->log = val;
        } else if (strcmp(flag, "--log-calls") == 0) {
            if (strcmp(val, "all") == 0)
                a->log_calls = LOG_CALLS_ALL;
            else if (strcmp(val, "errors") == 0)
                a->log_calls = LOG_CALLS_ERRORS;
            else if (strcmp(val, "none") == 0)
                a->log_calls = LOG_CALLS_NONE;
            else
                return rpcd_usage_error("serve",
                                        "--log-calls takes all, errors or none, not \"%s\"", val);
        } else if (strcmp(flag, "--workers") == 0) {
            if (!parse_int(val, 1, 1024, &a->server.workers))
                return rpcd_usage_error("serve", "--workers takes 1..1024, not \"%s\"", val);
        } else if (strcmp(flag, "--max-inflight") == 0) {
            if (!parse_int(val, 1, 10000000, &a->server.max_in_flight))
                return rpcd_usage_error("serve", "--max-inflight takes 1..10000000, not \"%s\"",
                                        val);
        } else if (strcmp(flag, "--shutdown-grace") == 0) {
            if (!rpcd_parse_duration(val, &a->server.shutdown_grace_ns))
                return rpcd_usage_error(
                    "serve", "--shutdown-grace takes a duration (500ms, 5s), not \"%s\"", val);
        } else if (strcmp(flag, "--module") == 0) {
            if (a->n_modules == RPCD_MAX_MODULES)
                return rpcd_usage_error("serve", "too many --module (at most %d): %s",
                                        RPCD_MAX_MODULES, val);
            a->modules[a->n_modules++] = val;
        } else {
            return rpcd_usage_error("serve", "unknown flag %s", flag);
        }
    }
    if (a->n_listen == 0)
        return rpcd_usage_error("serve", "%s", "--listen URL is required");
    if (a->grpc.n_forward_keys > 0 && a->grpc.listen == NULL)
        return rpcd_usage_error("serve", "%s", "--grpc-forward needs --grpc-listen");
    if (a->grpc.max_streams != 0 && a->grpc.listen == NULL)
        return rpcd_usage_error("serve", "%s", "--grpc-max-streams needs --grpc-listen");
    if (a->grpc.tls_cert != NULL && a->grpc.listen == NULL)
        return rpcd_usage_error("serve", "%s", "--grpc-tls-cert needs --grpc-listen");
    if (a->grpc.tls_client_ca != NULL && a->grpc.tls_cert == NULL)
        return rpcd_usage_error("serve", "%s", "--grpc-tls-client-ca needs --grpc-tls-cert");
    for (int i = 0; i < a->n_listen; i++)
        if (strncmp(a->listen[i], "tls+", 4) == 0 && a->tls.cert == NULL)
            return rpcd_usage_error("serve", "--listen %s needs --tls-cert FILE", a->listen[i]);
    return rpcd_keys_load("serve", &a->keys, a->n_next);
}

static void log_trace(struct rpcd_log_line *l, const dctx_rpc_event *ev)
{
    if (ev->trace_id == NULL)
        return;
    rpcd_log_str(l, "trace_id", ev->trace_id);
    rpcd_log_str(l, "span_id", ev->span_id);
    if (ev->parent_span_id != NULL)
        rpcd_log_str(l, "parent_span_id", ev->parent_span_id);
}

/* A stream's messages each way: in from its peer, out to it. */
static void log_messages(struct rpcd_log_line *l, const dctx_rpc_event *ev)
{
    if (!ev->stream)
        return;
    rpcd_log_int(l, "messages_in", (int64_t)ev->messages_received);
    rpcd_log_int(l, "messages_out", (int64_t)ev->messages_sent);
}

/* Is a call that ended with code logged under --log-calls (arg)? */
static bool call_logged(const void *arg, int code)
{
    enum log_calls which = *(const enum log_calls *)arg;
    return which == LOG_CALLS_ALL || (which == LOG_CALLS_ERRORS && code != DCTX_OK);
}

/* Library events become log lines; arg is the --log-calls choice. */
static void on_event(void *arg, const dctx_rpc_event *ev)
{
    struct rpcd_log_line l;
    switch (ev->kind) {
    case DCTX_RPC_EVENT_CALL_START:
        if (*(const enum log_calls *)arg != LOG_CALLS_ALL)
            return;
        rpcd_log_begin(&l, ev->stream ? "stream_start" : "call_start");
        rpcd_log_str(&l, "method", ev->method);
        if (ev->deadline_in_ns >= 0)
            rpcd_log_int(&l, "deadline_in_us", ev->deadline_in_ns / 1000);
        log_trace(&l, ev);
        break;
    case DCTX_RPC_EVENT_CALL_END:
        rpcd_metrics_call_end(ev->method, ev->code, ev->elapsed_ns);
        if (!call_logged(arg, ev->code))
            return;
        rpcd_log_begin(&l, ev->stream ? "stream_end" : "call_end");
        rpcd_log_str(&l, "method", ev->method);
        rpcd_log_str(&l, "status", dctx_code_name(ev->code));
        rpcd_log_int(&l, "elapsed_us", ev->elapsed_ns / 1000);
        log_messages(&l, ev);
        log_trace(&l, ev);
        /* Last: a peer's message may fill what is left of the line. */
        if (ev->message[0] != '\0')
            rpcd_log_str(&l, "message", ev->message);
        break;
    case DCTX_RPC_EVENT_CANCEL_RECEIVED:
        rpcd_log_begin(&l, "cancel_received");
        rpcd_log_str(&l, "cause", dctx_code_name(ev->code));
        rpcd_log_str(&l, "cause_message", ev->message);
        rpcd_log_str(&l, "outcome", dctx_rpc_cancel_outcome_name(ev->outcome));
        break;
    case DCTX_RPC_EVENT_TRACE_DROPPED:
        rpcd_log_begin(&l, "trace_dropped");
        rpcd_log_str(&l, "method", ev->method);
        rpcd_log_str(&l, "message", ev->message);
        break;
    case DCTX_RPC_EVENT_DENIED:
    case DCTX_RPC_EVENT_UNAUTHENTICATED:
        rpcd_log_begin(&l, ev->kind == DCTX_RPC_EVENT_DENIED ? "denied" : "unauthenticated");
        rpcd_log_str(&l, "peer", ev->peer);
        if (ev->method != NULL)
            rpcd_log_str(&l, "method", ev->method);
        rpcd_log_str(&l, "status", dctx_code_name(ev->code));
        rpcd_log_int(&l, "suppressed", (int64_t)ev->suppressed);
        rpcd_log_str(&l, "message", ev->message);
        break;
    case DCTX_RPC_EVENT_CANCEL_PUSHED:
        rpcd_log_begin(&l, "cancel_pushed");
        rpcd_log_str(&l, "method", ev->method);
        rpcd_log_str(&l, "cause", dctx_code_name(ev->code));
        rpcd_log_str(&l, "cause_message", ev->message);
        break;
    default:
        return;
    }
    rpcd_log_end(&l);
}

/* Events of the channels to next hops: the calls this instance makes. */
static void on_next_event(void *arg, const dctx_rpc_event *ev)
{
    if (ev->kind != DCTX_RPC_EVENT_CALL_END) {
        on_event(arg, ev);
        return;
    }
    if (!call_logged(arg, ev->code))
        return;
    struct rpcd_log_line l;
    rpcd_log_begin(&l, ev->stream ? "next_stream_end" : "next_call_end");
    rpcd_log_str(&l, "method", ev->method);
    rpcd_log_str(&l, "status", dctx_code_name(ev->code));
    rpcd_log_int(&l, "elapsed_us", ev->elapsed_ns / 1000);
    log_messages(&l, ev);
    log_trace(&l, ev);
    rpcd_log_end(&l);
}

/* The line that says the instance is up: where it listens, its next hops,
 * and where its metrics are served (the port in use). */
static void log_serving(const struct serve_args *a, const char *metrics)
{
    struct rpcd_log_line l;
    rpcd_log_begin(&l, "serving");
    struct rpcd_json *j = rpcd_log_json(&l);
    rpcd_json_array(j, "listen");
    for (int i = 0; i < a->n_listen; i++)
        rpcd_json_str(j, NULL, a->listen[i]);
    rpcd_json_end(j);
    rpcd_json_array(j, "next");
    for (int i = 0; i < a->n_next; i++)
        rpcd_json_str(j, NULL, a->next[i]);
    for (int i = 0; i < a->n_grpc_next; i++)
        rpcd_json_str(j, NULL, a->grpc_next[i]);
    rpcd_json_end(j);
    rpcd_log_int(&l, "workers", a->server.workers);
    if (metrics[0] != '\0')
        rpcd_log_str(&l, "metrics", metrics);
    char key[DCTX_PUBLIC_KEY_TEXT_BYTES];
    if (rpcd_keys_public_text(&a->keys, key))
        rpcd_log_str(&l, "key", key);
    rpcd_log_end(&l);
    if (a->keys.id == NULL)
        rpcd_log_message("peers_not_authenticated",
                         "without --key, any process that reaches a --listen address may call "
                         "every method, and frames cross the wire in the clear (SECURITY.md)");
}

/* Split a --next value at its commas into urls (at most max; the copy in
 * buf, of size len); the count, or 0 if any URL is empty or there are too
 * many. */
static size_t split_urls(const char *list, char *buf, size_t len, const char **urls, size_t max)
{
    if (snprintf(buf, len, "%s", list) >= (int)len)
        return 0;
    size_t n = 0;
    for (char *p = buf, *comma;; p = comma + 1) {
        comma = strchr(p, ',');
        if (comma != NULL)
            *comma = '\0';
        if (*p == '\0' || n == max)
            return 0;
        urls[n++] = p;
        if (comma == NULL)
            return n;
    }
}

static int open_next_hops(struct rpcd *r, const struct serve_args *a)
{
    dctx_rpc_channel_options o;
    dctx_rpc_channel_options_init(&o);
    o.on_event = on_next_event;
    o.event_arg = (void *)&a->log_calls;
    o.keepalive_ns = a->keepalive.interval_ns;
    o.keepalive_timeout_ns = a->keepalive.timeout_ns;
    rpcd_tls_channel(&a->tls, &o);
    for (int i = 0; i < a->n_next; i++) {
        rpcd_keys_next_hop(&a->keys, i, &o);
        char buf[4096];
        const char *urls[RPCD_MAX_NEXT_URLS];
        size_t n = split_urls(a->next[i], buf, sizeof buf, urls, RPCD_MAX_NEXT_URLS);
        if (n == 0)
            return rpcd_usage_error("serve",
                                    "--next takes URL[,URL]... (at most %d URLs, none empty), "
                                    "not \"%s\"",
                                    RPCD_MAX_NEXT_URLS, a->next[i]);
        int rc = dctx_rpc_channel_open_urls(urls, n, &o, &r->next[i]);
        if (rc != 0) {
            fprintf(stderr, "rpcd serve: cannot use --next %s: %s\n", a->next[i],
                    dctx_strerror(rc));
            return rc;
        }
        r->next_url[i] = a->next[i];
        r->n_next++;
    }
    for (int i = 0; i < a->n_grpc_next; i++) {
        int rc = rpcd_grpc_next_open(r, a->grpc_next[i], &a->tls);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Load each --module and let it register its methods. The handles stay
 * open for the life of the process: the server calls into them. */
static int load_modules(struct rpcd *r, const struct serve_args *a)
{
    dctx_rpcd_module m = {.abi = DCTX_RPCD_MODULE_ABI,
                          .server = r->server,
                          .name = r->name,
                          .next = r->next,
                          .next_urls = r->next_url,
                          .n_next = r->n_next};
    for (int i = 0; i < a->n_modules; i++) {
        void *h = dlopen(a->modules[i], RTLD_NOW | RTLD_LOCAL);
        if (h == NULL) {
            fprintf(stderr, "rpcd serve: cannot load module %s: %s\n", a->modules[i], dlerror());
            return DCTX_INVALID_ARGUMENT;
        }
        int (*init)(const dctx_rpcd_module *) =
            (int (*)(const dctx_rpcd_module *))dlsym(h, "dctx_rpcd_module_init");
        if (init == NULL) {
            fprintf(stderr, "rpcd serve: module %s has no dctx_rpcd_module_init\n", a->modules[i]);
            return DCTX_INVALID_ARGUMENT;
        }
        int rc = init(&m);
        if (rc != 0) {
            fprintf(stderr, "rpcd serve: module %s failed to start: %s\n", a->modules[i],
                    dctx_code_name(rc));
            return rc;
        }
        rpcd_log_message("module_loaded", "%s", a->modules[i]);
    }
    return 0;
}

static int start_server(struct rpcd *r, const struct serve_args *a)
{
    dctx_rpc_server_options o = a->server;
    o.name = a->name;
    o.tls_cert_key_file = a->tls.cert;
    o.tls_client_ca_file = a->tls.client_ca;
    o.keepalive_ns = a->keepalive.interval_ns;
    o.keepalive_timeout_ns = a->keepalive.timeout_ns;
    /* Callers may ping as often as this server pings them. */
    if (a->keepalive.interval_ns > 0 && a->keepalive.interval_ns < o.keepalive_min_interval_ns)
        o.keepalive_min_interval_ns = a->keepalive.interval_ns;
    o.on_event = on_event;
    o.event_arg = (void *)&a->log_calls;
    o.identity = a->keys.id;
    o.allow = a->keys.allow;
    int rc = dctx_rpc_server_open(&o, &r->server);
    if (rc == 0)
        rc = rpcd_demo_services_register(r);
    if (rc == 0)
        rc = load_modules(r, a);
    if (rc == 0 && a->metrics_listen != NULL && rpcd_metrics_init(r) != 0)
        rc = DCTX_RESOURCE_EXHAUSTED;
    for (int i = 0; rc == 0 && i < a->n_listen; i++) {
        rc = dctx_rpc_server_listen(r->server, a->listen[i]);
        if (rc != 0)
            fprintf(stderr, "rpcd serve: cannot listen on %s: %s\n", a->listen[i],
                    rc == DCTX_INVALID_ARGUMENT    ? "not a valid URL, or a TLS file it cannot use"
                    : rc == DCTX_NOT_FOUND         ? "a file it needs does not exist (an ipc "
                                                     "path's directory, a TLS file)"
                    : rc == DCTX_PERMISSION_DENIED ? "permission denied"
                                                   : "address unavailable");
    }
    if (rc == 0)
        rc = dctx_rpc_server_start(r->server);
    return rc;
}

/* The gRPC gateway in front of the server (--grpc-listen): its inproc
 * channel keeps the instance's keepalive, and calls with its key. */
static int start_grpc_gateway(struct rpcd *r, struct serve_args *a)
{
    dctx_rpc_channel_options o;
    dctx_rpc_channel_options_init(&o);
    o.keepalive_ns = a->keepalive.interval_ns;
    o.keepalive_timeout_ns = a->keepalive.timeout_ns;
    a->grpc.identity = a->keys.id;
    a->grpc.channel = &o;
    return rpcd_grpc_gateway_start(r, &a->grpc, a->log_calls == LOG_CALLS_ALL);
}

int rpcd_serve(int argc, char **argv)
{
    struct serve_args a = {0};
    int rc = parse(argc, argv, &a);
    if (rc != 0) {
        rpcd_keys_free(&a.keys);
        return rc < 0 ? 0 : rc;
    }
    if (rpcd_log_open(a.log, a.name) != 0) {
        fprintf(stderr, "rpcd serve: cannot open log %s: %s\n", a.log, strerror(errno));
        rpcd_keys_free(&a.keys);
        return RPCD_EXIT_USAGE;
    }
    /* Block the shutdown signals before any thread exists: every thread
     * inherits the mask, and only sigwait below takes them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    struct rpcd r = {.name = a.name, .started_ns = dctx_now()};
    rc = open_next_hops(&r, &a);
    if (rc == 0)
        rc = start_server(&r, &a);
    if (rc == 0 && a.grpc.listen != NULL)
        rc = start_grpc_gateway(&r, &a);
    char metrics[300] = "";
    if (rc == 0 && a.metrics_listen != NULL)
        rc = rpcd_metrics_http_start(&r, a.metrics_listen, metrics, sizeof metrics);
    if (rc == 0) {
        log_serving(&a, metrics);
        int sig = 0;
        sigwait(&stop, &sig);
        rpcd_log_message("shutdown", "signal %d: canceling in-flight calls", sig);
    }
    /* The metrics answer through the drain (/healthz: 503), and stop
     * before the server and channels they read are freed. */
    rpcd_metrics_set_draining();
    rpcd_grpc_gateway_drain();
    int closed = dctx_rpc_server_shutdown(r.server);
    if (closed != 0)
        rpcd_log_message("shutdown", "handlers outlived the shutdown grace");
    rpcd_metrics_http_stop(); /* it reads the gateway's counters */
    rpcd_grpc_gateway_stop();
    dctx_rpc_server_close(r.server);
    for (int i = 0; i < r.n_next; i++)
        dctx_rpc_channel_close(r.next[i]);
    rpcd_grpc_next_close(&r);
    rpcd_metrics_free();
    rpcd_log_message("stopped", "%s",
                     rc == 0                 ? "clean"
                     : rc == RPCD_EXIT_USAGE ? "bad arguments"
                                             : dctx_strerror(rc));
    rpcd_log_close();
    rpcd_keys_free(&a.keys);
    return rc == 0 ? 0 : rc;
}
