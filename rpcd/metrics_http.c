/*
 * metrics_http.c - the HTTP endpoints of `rpcd serve --metrics-listen`
 * (see metrics_http.h), on nng's HTTP server (nng/supplemental/http).
 *
 * nng calls a handler on one of its threads with the request, and sends
 * the response the handler finishes its aio with. Both handlers answer at
 * once; nng_http_server_stop waits for every connection it has to close,
 * so nothing runs after stop, and releasing the server frees the
 * handlers with it.
 */
#include "metrics_http.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

#include "metrics.h"
#include "rpcd.h"

static nng_http_server *server;

/* Finish aio with a response: status, content type and body (copied). */
static void respond(nng_aio *aio, uint16_t status, const char *type, const char *body, size_t len)
{
    nng_http_res *res;
    if (nng_http_res_alloc(&res) != 0) {
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    if (nng_http_res_set_status(res, status) != 0 ||
        nng_http_res_set_header(res, "Content-Type", type) != 0 ||
        nng_http_res_copy_data(res, body, len) != 0) {
        nng_http_res_free(res);
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void metrics_handler(nng_aio *aio)
{
    nng_http_handler *h = nng_aio_get_input(aio, 1);
    size_t len = 0;
    char *text = rpcd_metrics_render(nng_http_handler_get_data(h), &len);
    if (text == NULL) {
        nng_aio_finish(aio, NNG_ENOMEM); /* nng answers 500 */
        return;
    }
    respond(aio, NNG_HTTP_STATUS_OK, "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

static void healthz_handler(nng_aio *aio)
{
    static const char serving[] = "serving\n", draining[] = "draining\n";
    if (rpcd_metrics_draining())
        respond(aio, NNG_HTTP_STATUS_SERVICE_UNAVAILABLE, "text/plain", draining,
                sizeof draining - 1);
    else
        respond(aio, NNG_HTTP_STATUS_OK, "text/plain", serving, sizeof serving - 1);
}

static int add_handler(const char *path, void (*fn)(nng_aio *), const struct rpcd *r)
{
    nng_http_handler *h;
    int rv = nng_http_handler_alloc(&h, path, fn);
    if (rv != 0)
        return rv;
    if ((rv = nng_http_handler_set_data(h, (void *)r, NULL)) != 0 ||
        (rv = nng_http_server_add_handler(server, h)) != 0)
        nng_http_handler_free(h);
    return rv;
}

/* HOST:PORT with a host and a decimal port up to 65535; IPv6 in brackets. */
static bool valid_hostport(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || colon[1] == '\0' || strlen(colon + 1) > 5 ||
        strpbrk(s, "/?#@ ") != NULL)
        return false;
    for (const char *p = colon + 1; *p != '\0'; p++)
        if (*p < '0' || *p > '9')
            return false;
    return atoi(colon + 1) <= 65535;
}

int rpcd_metrics_http_start(const struct rpcd *r, const char *hostport, char *bound,
                            size_t bound_len)
{
    snprintf(bound, bound_len, "%s", hostport);
    if (!valid_hostport(hostport))
        return rpcd_usage_error("serve", "--metrics-listen takes HOST:PORT, not \"%s\"", hostport);
    char text[512];
    snprintf(text, sizeof text, "http://%s", hostport);
    nng_url *url = NULL;
    int rv = nng_url_parse(&url, text);
    if (rv != 0)
        return rpcd_usage_error("serve", "--metrics-listen takes HOST:PORT, not \"%s\"", hostport);
    if ((rv = nng_http_server_hold(&server, url)) == 0 &&
        (rv = add_handler("/metrics", metrics_handler, r)) == 0 &&
        (rv = add_handler("/healthz", healthz_handler, r)) == 0)
        rv = nng_http_server_start(server);
    nng_sockaddr sa;
    if (rv == 0 && nng_http_server_get_addr(server, &sa) == 0) {
        unsigned port = ntohs(sa.s_family == NNG_AF_INET6 ? sa.s_in6.sa_port : sa.s_in.sa_port);
        const char *host = url->u_hostname;
        bool v6 = strchr(host, ':') != NULL;
        snprintf(bound, bound_len, "%s%s%s:%u", v6 ? "[" : "", host, v6 ? "]" : "", port);
    }
    nng_url_free(url);
    if (rv != 0) {
        fprintf(stderr, "rpcd serve: cannot serve metrics on %s: %s\n", hostport, nng_strerror(rv));
        if (server != NULL)
            nng_http_server_release(server);
        server = NULL;
        return DCTX_UNAVAILABLE;
    }
    return 0;
}

void rpcd_metrics_http_stop(void)
{
    if (server == NULL)
        return;
    nng_http_server_stop(server);
    nng_http_server_release(server);
    server = NULL;
}
