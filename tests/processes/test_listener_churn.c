/*
 * test_listener_churn.c - nng 1.5.2's listener pitfall (nng issue #1518):
 * peers that close their connection during the SP handshake can make a
 * listener stop accepting for good. A dctx server notices and re-creates
 * it (lib/rpc/listen.c). Here hundreds of half-open connections hit an ipc
 * and a tcp server; afterwards a client retrying on UNAVAILABLE must be
 * served within a few seconds. Without the guard the ipc server never
 * answers again.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <dctx/rpc.h>

#include "testutil.h"

static int echo(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    (void)ctx;
    return dctx_rpc_reply_set_payload(reply, req, len);
}

/* Connect to the server's address and hang up, half the time after
 * sending the start of an SP header. */
static void churn(const struct sockaddr *addr, socklen_t len, int family, int n)
{
    for (int i = 0; i < n; i++) {
        int fd = socket(family, SOCK_STREAM, 0);
        if (fd < 0)
            continue;
        if (connect(fd, addr, len) == 0 && i % 2) {
            static const unsigned char head[4] = {0, 'S', 'P', 0};
            ssize_t w = write(fd, head, sizeof head);
            (void)w;
        }
        close(fd);
    }
}

/* Until deadline: a call, again and again on one channel (which redials
 * by itself); true once one succeeds. One channel, not one per try: nng
 * 1.5.2's ipc dialer has a close race of its own (a dial completing while
 * its dialer is torn down) that opening and closing channels in a loop
 * against a dead listener provokes. */
static bool served_within(const char *url, int64_t within)
{
    dctx_rpc_channel_options o;
    dctx_rpc_channel_options_init(&o);
    o.connect_wait_ns = MS(500);
    dctx_rpc_channel *ch = NULL;
    assert_int_equal(dctx_rpc_channel_open(url, &o, &ch), 0);
    int64_t give_up = dctx_now() + within;
    bool served = false;
    while (!served && dctx_now() < give_up) {
        dctx *ctx = NULL;
        assert_int_equal(dctx_with_timeout(dctx_background(), SEC(1), &ctx), 0);
        int rc = dctx_rpc_call_raw(ch, ctx, "/t.T/Echo", "x", 1, NULL);
        dctx_release(ctx);
        served = rc == DCTX_OK;
        assert_true(served || rc == DCTX_UNAVAILABLE || rc == DCTX_DEADLINE_EXCEEDED);
    }
    dctx_rpc_channel_close(ch);
    return served;
}

static dctx_rpc_server *serve(const char *url)
{
    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(NULL, &srv), 0);
    assert_int_equal(dctx_rpc_server_register(srv, "/t.T/Echo", echo, NULL), 0);
    assert_int_equal(dctx_rpc_server_listen(srv, url), 0);
    assert_int_equal(dctx_rpc_server_start(srv), 0);
    return srv;
}

static void ipc_listener_survives_peers_leaving_mid_handshake(void **state)
{
    (void)state;
    char path[64], url[80];
    snprintf(path, sizeof path, "/tmp/dctx-churn-%d.ipc", (int)getpid());
    snprintf(url, sizeof url, "ipc://%s", path);
    dctx_rpc_server *srv = serve(url);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    for (int round = 0; round < 3; round++) {
        churn((struct sockaddr *)&a, sizeof a, AF_UNIX, 300);
        assert_true(served_within(url, SEC(10)));
    }
    dctx_rpc_server_stats st;
    dctx_rpc_server_stats_get(srv, &st);
    print_message("ipc listener re-created %llu times\n",
                  (unsigned long long)st.listeners_restarted);
    assert_int_equal(dctx_rpc_server_close(srv), 0);
}

static void tcp_listener_survives_peers_leaving_mid_handshake(void **state)
{
    (void)state;
    char url[64];
    dctx_rpc_server *srv = NULL;
    int port = 0;
    assert_int_equal(dctx_rpc_server_open(NULL, &srv), 0);
    assert_int_equal(dctx_rpc_server_register(srv, "/t.T/Echo", echo, NULL), 0);
    srand((unsigned)getpid());
    int rc = -1;
    for (int i = 0; i < 50 && rc != 0; i++) {
        port = 20000 + rand() % 20000;
        snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
        rc = dctx_rpc_server_listen(srv, url);
    }
    assert_int_equal(rc, 0);
    assert_int_equal(dctx_rpc_server_start(srv), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int round = 0; round < 3; round++) {
        churn((struct sockaddr *)&a, sizeof a, AF_INET, 300);
        assert_true(served_within(url, SEC(10)));
    }
    assert_int_equal(dctx_rpc_server_close(srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ipc_listener_survives_peers_leaving_mid_handshake),
        cmocka_unit_test(tcp_listener_survives_peers_leaving_mid_handshake),
    };
    return cmocka_run_group_tests_name("listener_churn", tests, NULL, NULL);
}
