/*
 * grpc_edge.c - rpcd's gateway and gRPC next hops (grpc_edge.h), on
 * <dctx/grpc.h>.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "grpc_edge.h"
#include "log.h"
#include "tls_flags.h"

const bool rpcd_grpc_built = true;

#define GATEWAY_RESERVE_NS 2000000LL /* 2 ms */

static dctx_grpc_gateway *gateway;
static dctx_rpc_channel *local;       /* the gateway's way to this instance's streams */
static dctx_wire_policy local_policy; /* its unary calls go straight to the server with it */
static bool log_all;

/* One line per gRPC call through the gateway. */
static void on_gateway_event(void *arg, const dctx_grpc_gateway_event *ev)
{
    (void)arg;
    if (!log_all && ev->code == DCTX_OK)
        return;
    struct rpcd_log_line l;
    rpcd_log_begin(&l, "grpc_call_end");
    rpcd_log_str(&l, "method", ev->method);
    rpcd_log_str(&l, "peer", ev->peer);
    rpcd_log_str(&l, "status", dctx_code_name(ev->code));
    if (ev->canceled_by != 0)
        rpcd_log_str(&l, "canceled_by_caller", dctx_code_name(ev->canceled_by));
    if (ev->budget_ns >= 0)
        rpcd_log_int(&l, "budget_us", ev->budget_ns / 1000);
    rpcd_log_int(&l, "elapsed_us", ev->duration_ns / 1000);
    rpcd_log_int(&l, "values", (long long)ev->values);
    if (ev->message[0] != '\0')
        rpcd_log_str(&l, "message", ev->message);
    rpcd_log_end(&l);
}

/* gRPC's C core's own lines (a failed TLS handshake, say) as rpcd's
 * JSON lines, while rpcd's log is open. */
static void on_grpc_log(void *arg, const char *severity, const char *file, int line,
                        const char *message)
{
    (void)arg;
    struct rpcd_log_line l;
    rpcd_log_begin(&l, "grpc_log");
    rpcd_log_str(&l, "severity", severity);
    rpcd_log_str(&l, "file", file);
    rpcd_log_int(&l, "line", line);
    rpcd_log_str(&l, "message", message);
    rpcd_log_end(&l);
}

bool rpcd_grpc_forward_key_valid(const char *key)
{
    return dctx_grpc_forward_key_valid(key);
}

int rpcd_grpc_gateway_start(struct rpcd *r, const struct rpcd_grpc_args *a, bool log_calls)
{
    dctx_grpc_set_log(on_grpc_log, NULL);
    char url[64];
    snprintf(url, sizeof url, "inproc://rpcd-grpc-gateway-%ld", (long)getpid());
    int rc = dctx_rpc_server_listen(r->server, url);
    dctx_rpc_channel_options o = *a->channel;
    /* Calls start on the gateway's one queue thread: when this instance's
     * own server cannot be reached, they fail fast instead of holding it. */
    o.connect_wait_ns = 20000000;
    /* The gRPC caller's deadline reached the C core when it read the
     * headers, after the caller's transit: keep more of it back than a
     * dctx hop does. */
    o.policy.reserve_ns = GATEWAY_RESERVE_NS;
    unsigned char own_key[DCTX_PUBLIC_KEY_BYTES];
    if (a->identity != NULL) {
        /* The gateway calls as this instance itself: an allow list must
         * let its own key in for gRPC callers to get through. */
        dctx_identity_public_key(a->identity, own_key);
        o.identity = a->identity;
        o.server_key = own_key;
    }
    if (rc == 0)
        rc = dctx_rpc_channel_open(url, &o, &local);
    if (rc != 0) {
        fprintf(stderr, "rpcd serve: cannot reach its own server for the gRPC gateway: %s\n",
                dctx_strerror(rc));
        return rc;
    }
    log_all = log_calls;
    local_policy = o.policy;
    /* The demo's streams: gRPC does not say on the wire which calls are. */
    static const char *const streams[] = {"/dctx.demo.Demo/Count", "/dctx.demo.Demo/Sum",
                                          "/dctx.demo.Demo/EchoStream"};
    dctx_grpc_gateway_options g = {.listen = a->listen,
                                   .stream_methods = streams,
                                   .n_stream_methods = 3,
                                   .forward = local,
                                   .local = r->server,
                                   .local_policy = &local_policy,
                                   .forward_keys = a->forward_keys,
                                   .n_forward_keys = (size_t)a->n_forward_keys,
                                   .max_streams = a->max_streams,
                                   .tls_cert_key_file = a->tls_cert,
                                   .tls_client_ca_file = a->tls_client_ca,
                                   .keepalive_ns = a->channel->keepalive_ns,
                                   .keepalive_timeout_ns = a->channel->keepalive_timeout_ns,
                                   .on_event = on_gateway_event};
    rc = dctx_grpc_gateway_open(&g, &gateway);
    if (rc != 0) {
        if (rc == DCTX_UNAVAILABLE)
            fprintf(stderr, "rpcd serve: cannot listen for gRPC on %s: address unavailable\n",
                    a->listen);
        else if (a->tls_cert != NULL && rc != DCTX_RESOURCE_EXHAUSTED)
            fprintf(stderr, "rpcd serve: cannot use --grpc-tls-cert %s%s%s: %s\n", a->tls_cert,
                    a->tls_client_ca != NULL ? " / --grpc-tls-client-ca " : "",
                    a->tls_client_ca != NULL ? a->tls_client_ca : "",
                    rc == DCTX_INVALID_ARGUMENT
                        ? "not PEM with a certificate gRPC can use (and, for the certificate, "
                          "its own key, not encrypted)"
                        : dctx_strerror(rc));
        else
            fprintf(stderr, "rpcd serve: cannot listen for gRPC on %s: %s\n", a->listen,
                    dctx_strerror(rc));
        dctx_rpc_channel_close(local);
        local = NULL;
        return rc;
    }
    struct rpcd_log_line l;
    rpcd_log_begin(&l, "grpc_listening");
    rpcd_log_str(&l, "listen", a->listen);
    rpcd_log_int(&l, "port", dctx_grpc_gateway_port(gateway));
    rpcd_log_str(&l, "tls",
                 a->tls_cert == NULL        ? "none"
                 : a->tls_client_ca == NULL ? "server"
                                            : "mutual");
    struct rpcd_json *j = rpcd_log_json(&l);
    rpcd_json_array(j, "forward");
    rpcd_json_str(j, NULL, "traceparent");
    rpcd_json_str(j, NULL, "tracestate");
    rpcd_json_str(j, NULL, "baggage");
    for (int i = 0; i < a->n_forward_keys; i++)
        rpcd_json_str(j, NULL, a->forward_keys[i]);
    rpcd_json_end(j);
    rpcd_log_end(&l);
    return 0;
}

void rpcd_grpc_gateway_drain(void)
{
    dctx_grpc_gateway_drain(gateway);
}

void rpcd_grpc_gateway_stop(void)
{
    dctx_grpc_gateway_close(gateway);
    gateway = NULL;
    dctx_rpc_channel_close(local);
    local = NULL;
}

void rpcd_grpc_write_stats(struct rpcd_json *j)
{
    if (gateway == NULL)
        return;
    dctx_grpc_gateway_stats st;
    dctx_grpc_gateway_stats_get(gateway, &st);
    rpcd_json_object(j, "grpc");
    rpcd_json_uint(j, "calls", st.calls);
    rpcd_json_uint(j, "in_flight", st.in_flight);
    rpcd_json_object(j, "by_status");
    for (int c = 0; c <= DCTX_CODE_MAX; c++)
        if (st.by_code[c] > 0)
            rpcd_json_uint(j, dctx_code_name(c), st.by_code[c]);
    rpcd_json_end(j);
    rpcd_json_uint(j, "canceled_by_caller", st.canceled_by_caller);
    rpcd_json_uint(j, "deadline_by_caller", st.deadline_by_caller);
    rpcd_json_uint(j, "values_carried", st.values_carried);
    rpcd_json_uint(j, "health_checks", st.health_checks);
    rpcd_json_uint(j, "to_dctx", st.to_dctx);
    rpcd_json_uint(j, "to_grpc", st.to_grpc);
    rpcd_json_end(j);
}

int rpcd_grpc_next_open(struct rpcd *r, const char *url, const struct rpcd_tls *tls)
{
    bool secure = strncmp(url, "grpcs://", 8) == 0;
    const char *target = url + (secure ? strlen("grpcs://") : strlen("grpc://"));
    dctx_grpc_set_log(on_grpc_log, NULL);
    dctx_grpc_channel_options o = {.tls = secure};
    if (secure) {
        o.tls_ca_file = tls->ca;
        o.tls_server_name = tls->server_name;
        o.tls_cert_key_file = tls->cert;
    }
    int rc = r->n_grpc_next == RPCD_MAX_NEXT || target[0] == '\0'
                 ? DCTX_INVALID_ARGUMENT
                 : dctx_grpc_channel_get_with(target, &o, &r->grpc_next[r->n_grpc_next]);
    if (rc != 0) {
        fprintf(stderr, "rpcd serve: cannot use --next %s: %s\n", url,
                rc == DCTX_INVALID_ARGUMENT && secure
                    ? "a TLS file is not PEM with what it needs (--tls-ca: a certificate; "
                      "--tls-cert: a certificate and its key)"
                    : dctx_strerror(rc));
        return rc;
    }
    r->grpc_next_url[r->n_grpc_next++] = url;
    return 0;
}

void rpcd_grpc_next_close(struct rpcd *r)
{
    for (int i = 0; i < r->n_grpc_next; i++)
        dctx_grpc_channel_release(r->grpc_next[i]);
    r->n_grpc_next = 0;
    /* The gateway stopped before: rpcd's log may close from here on. */
    dctx_grpc_set_log(NULL, NULL);
}

int rpcd_grpc_count_relay(struct rpcd *r, dctx *ctx, dctx_rpc_stream *st, const void *req,
                          size_t len, dctx_rpc_reply *reply)
{
    dctx_grpc_stream *up = NULL;
    int rc = dctx_grpc_stream_open(r->grpc_next[0], ctx, "/dctx.demo.Demo/Count", &up);
    if (rc != 0) {
        dctx_rpc_reply_set_message(reply, "%s: %s", r->grpc_next_url[0], dctx_strerror(rc));
        return rc;
    }
    long relayed = 0;
    /* A failed send or close returns the gRPC stream's end: finish says it. */
    bool up_open = dctx_grpc_stream_send(up, req, len) == 0 && dctx_grpc_stream_close_send(up) == 0;
    dctx_rpc_message m;
    rc = 0;
    while (up_open && rc == 0 && dctx_grpc_stream_recv(up, &m)) {
        rc = dctx_rpc_stream_send(st, m.data, m.len);
        dctx_rpc_message_free(&m);
        relayed += rc == 0;
    }
    if (rc != 0) { /* ours ended first: the gRPC stream goes too */
        dctx_grpc_stream_release(up);
        up = NULL;
    }
    dctx_rpc_result res = {.code = rc};
    if (up != NULL)
        rc = dctx_grpc_stream_finish(up, &res);
    rpcd_log_message("stream_relayed", "Count: %ld messages from %s, %s", relayed,
                     r->grpc_next_url[0], dctx_code_name(rc));
    if (rc != DCTX_OK)
        dctx_rpc_reply_set_message(
            reply, "%s", res.message != NULL && res.message[0] ? res.message : dctx_strerror(rc));
    dctx_rpc_result_free(&res);
    dctx_grpc_stream_release(up);
    return rc;
}

static void hop_done(void *arg, const dctx_rpc_result *res)
{
    struct rpcd_grpc_hop *h = arg;
    pthread_mutex_lock(&h->mu);
    dctx_rpc_result_set(&h->res, res->code, res->message, res->payload, res->payload_len);
    h->ended = true;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

void rpcd_grpc_chain_start(struct rpcd *r, int i, dctx *ctx, const void *req, size_t len,
                           struct rpcd_grpc_hop *h)
{
    pthread_mutex_init(&h->mu, NULL);
    pthread_cond_init(&h->cv, NULL);
    h->ended = false;
    int rc =
        dctx_grpc_call_start(r->grpc_next[i], ctx, "/dctx.demo.Demo/Chain", req, len, hop_done, h);
    if (rc != 0) {
        /* Not started: why, as the call would have said. */
        const char *cause = NULL;
        dctx_rpc_result_set(&h->res, rc,
                            dctx_done(ctx) && dctx_cause(ctx, &cause) != 0 && cause != NULL
                                ? cause
                                : dctx_strerror(rc),
                            NULL, 0);
        h->ended = true;
    }
}

int rpcd_grpc_chain_wait(struct rpcd_grpc_hop *h, dctx_rpc_result *res)
{
    pthread_mutex_lock(&h->mu);
    while (!h->ended)
        pthread_cond_wait(&h->cv, &h->mu);
    pthread_mutex_unlock(&h->mu);
    *res = h->res;
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    return res->code;
}
