/*
 * test_session_accept.c - a server's side of opening sessions: the
 * acceptor (lib/rpc/acceptor.c) takes connections over ipc, tcp (a port of
 * the kernel's choosing) and tls+tcp, each opening a session that says
 * hello; listen failures name their cause; at the descriptor limit a
 * failed accept is retried after a pause, not in a spin, and accepting
 * resumes once descriptors are free; sessions found dead in nng callbacks
 * are closed by the reaper (lib/rpc/reaper.c), each once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <nng/supplemental/util/platform.h>

#include "acceptor.h"
#include "reaper.h"
#include "session.h"
#include "stream_testutil.h"
#include "testutil.h"

#ifndef TLS_DIR
#error "TLS_DIR must name tests/tls"
#endif

/* A server owner: every accepted stream opens a session; an ended session
 * is closed by the reaper. */
struct srv_session {
    struct dctx__session *s;
    struct dctx__reap_item reap;
    struct server *srv;
};

struct server {
    atomic_int accepted, ready, ended, closed;
};

static void close_session(void *arg)
{
    struct srv_session *ss = arg;
    dctx__session_close(ss->s);
    atomic_fetch_add(&ss->srv->closed, 1);
    free(ss);
}

static void srv_ready(void *owner, struct dctx__session *s, const struct dctx__session_peer *p)
{
    (void)s;
    (void)p;
    struct srv_session *ss = owner;
    atomic_fetch_add(&ss->srv->ready, 1);
}

static bool srv_frame(void *owner, struct dctx__session *s, Dctx__Wire__Frame *f)
{
    (void)owner;
    (void)s;
    (void)f;
    return false;
}

static void srv_end(void *owner, struct dctx__session *s, int code, const char *why)
{
    (void)s;
    (void)code;
    (void)why;
    struct srv_session *ss = owner;
    atomic_fetch_add(&ss->srv->ended, 1);
    if (!dctx__reaper_defer(&ss->reap, close_session, ss))
        fail_msg("the reaper did not start");
}

static void on_stream(void *owner, nng_stream *st)
{
    struct server *srv = owner;
    struct srv_session *ss = calloc(1, sizeof *ss);
    if (ss == NULL)
        abort();
    ss->srv = srv;
    struct dctx__session_options o = {.server = true,
                                      .max_frame_bytes = 65536,
                                      .max_calls = 10,
                                      .on_ready = srv_ready,
                                      .on_frame = srv_frame,
                                      .on_end = srv_end,
                                      .owner = ss};
    if (dctx__session_open(st, &o, &ss->s) != 0)
        abort();
    atomic_fetch_add(&srv->accepted, 1);
    dctx__session_start(ss->s);
}

static struct dctx__acceptor *serve(const char *url, struct server *srv)
{
    memset(srv, 0, sizeof *srv);
    struct dctx__acceptor_options o = {
        .tls_cert_key_file = TLS_DIR "/cert_key.pem", .on_stream = on_stream, .owner = srv};
    struct dctx__acceptor *a = NULL;
    assert_int_equal(dctx__acceptor_open(url, &o, &a), 0);
    return a;
}

static bool wait_for(atomic_int *v, int want)
{
    int64_t until = dctx_now() + SEC(10);
    while (atomic_load(v) < want && dctx_now() < until)
        nng_msleep(1);
    return atomic_load(v) >= want;
}

/* A client session: it is ready once the server's hello came. */
static atomic_int client_ready;

static void cli_ready(void *owner, struct dctx__session *s, const struct dctx__session_peer *p)
{
    (void)owner;
    (void)s;
    (void)p;
    atomic_fetch_add(&client_ready, 1);
}

static nng_stream *dial_tls(const char *url)
{
    nng_stream_dialer *d;
    assert_int_equal(nng_stream_dialer_alloc(&d, url), 0);
    nng_tls_config *cfg;
    assert_int_equal(nng_tls_config_alloc(&cfg, NNG_TLS_MODE_CLIENT), 0);
    assert_int_equal(nng_tls_config_ca_file(cfg, TLS_DIR "/cert.pem"), 0);
    assert_int_equal(nng_tls_config_server_name(cfg, "localhost"), 0);
    assert_int_equal(nng_stream_dialer_set_ptr(d, NNG_OPT_TLS_CONFIG, cfg), 0);
    nng_tls_config_free(cfg);
    nng_aio *aio;
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_aio_set_timeout(aio, 5000);
    nng_stream_dialer_dial(d, aio);
    nng_aio_wait(aio);
    assert_int_equal(nng_aio_result(aio), 0);
    nng_stream *s = nng_aio_get_output(aio, 0);
    nng_stream_dialer_free(d); /* before the aio: TSan then sees nng's reap lock between */
    nng_aio_free(aio);
    return s;
}

static void client_says_hello(const char *url, bool tls)
{
    atomic_store(&client_ready, 0);
    nng_stream *st = tls ? dial_tls(url) : st_dial(url);
    struct dctx__session_options o = {.max_frame_bytes = 65536,
                                      .on_ready = cli_ready,
                                      .on_frame = srv_frame,
                                      .on_end = NULL,
                                      .owner = NULL};
    struct dctx__session *s = NULL;
    assert_int_equal(dctx__session_open(st, &o, &s), 0);
    dctx__session_start(s);
    assert_true(wait_for(&client_ready, 1));
    dctx__session_close(s);
}

static char ipc_dir[64];

static void sessions_open_over_ipc_tcp_and_tls(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "ipc://%s/a.ipc", ipc_dir);
    const char *urls[] = {url, "tcp://127.0.0.1:0", "tls+tcp://127.0.0.1:0"};
    for (int i = 0; i < 3; i++) {
        static struct server srv;
        struct dctx__acceptor *a = serve(urls[i], &srv);
        const char *at = dctx__acceptor_url(a);
        if (i > 0)
            assert_null(strstr(at, ":0")); /* the port the kernel chose */
        client_says_hello(at, i == 2);
        assert_true(wait_for(&srv.ready, 1));
        assert_true(wait_for(&srv.closed, 1)); /* the client left: reaped */
        dctx__reaper_wait();
        assert_int_equal(atomic_load(&srv.ended), 1);
        dctx__acceptor_close(a);
    }
}

static void listen_failures_name_their_cause(void **state)
{
    (void)state;
    static struct server srv;
    struct dctx__acceptor *a = serve("tcp://127.0.0.1:0", &srv), *b = NULL;
    struct dctx__acceptor_options o = {.on_stream = on_stream, .owner = &srv};
    assert_int_equal(dctx__acceptor_open(dctx__acceptor_url(a), &o, &b), DCTX_UNAVAILABLE);
    assert_null(b);
    assert_int_equal(dctx__acceptor_open("ipc:///nonexistent-dctx-dir/x.ipc", &o, &b),
                     DCTX_NOT_FOUND);
    assert_int_equal(dctx__acceptor_open("bogus://x", &o, &b), DCTX_INVALID_ARGUMENT);
    o.tls_cert_key_file = "/nonexistent-dctx-dir/key.pem";
    assert_int_equal(dctx__acceptor_open("tls+tcp://127.0.0.1:0", &o, &b), DCTX_NOT_FOUND);
    dctx__acceptor_close(a);
}

/* Peers that connect and leave: each of their sessions ends once and is
 * closed once, by the reaper. */
static void sessions_of_peers_that_leave_are_each_closed_once(void **state)
{
    (void)state;
    enum { N = 300 };
    static struct server srv;
    char url[128];
    snprintf(url, sizeof url, "ipc://%s/churn.ipc", ipc_dir);
    struct dctx__acceptor *a = serve(url, &srv);
    for (int i = 0; i < N; i++)
        st_close(st_dial(url));
    assert_true(wait_for(&srv.closed, N));
    dctx__reaper_wait();
    assert_int_equal(atomic_load(&srv.accepted), N);
    assert_int_equal(atomic_load(&srv.ended), N);
    assert_int_equal(atomic_load(&srv.closed), N);
    dctx__acceptor_close(a);
}

/* A child process that connects to url (tcp://127.0.0.1:PORT) and waits
 * to be killed (20 s at most); it uses only system calls safe after fork. */
static pid_t connect_from_child(const char *url)
{
    int port = atoi(strrchr(url, ':') + 1);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        for (int fd = 3; fd < 256; fd++) /* the parent's full table, copied */
            close(fd);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
            _exit(1);
        alarm(20); /* gone by itself, should the test fail before it kills us */
        for (;;)
            pause();
    }
    return pid;
}

/* At the descriptor limit the accept fails; it is retried every
 * DCTX__ACCEPT_RETRY_MS, costing almost no CPU, and the connection waiting
 * in the backlog is accepted once descriptors are free again. */
static void accept_at_the_descriptor_limit_pauses_then_resumes(void **state)
{
    (void)state;
    static struct server srv;
    struct dctx__acceptor *a = serve("tcp://127.0.0.1:0", &srv);
    struct rlimit old;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
    struct rlimit low = old;
    low.rlim_cur = 256;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    /* Fill the table; then a child process connects (it needs no
     * descriptor of ours): the accept finds none. */
    int fill[256], n = 0;
    for (int round = 0; round < 5; round++) { /* nng frees closed streams' descriptors late */
        for (int fd; n < 256 && (fd = open("/dev/null", O_RDONLY)) >= 0;)
            fill[n++] = fd;
        assert_int_equal(errno, EMFILE);
        nng_msleep(50);
    }
    pid_t child = connect_from_child(dctx__acceptor_url(a));
    struct rusage r0, r1;
    getrusage(RUSAGE_SELF, &r0);
    int64_t t0 = dctx_now();
    uint64_t before = dctx__acceptor_failures(a); /* the child's connect may have come already */
    nng_msleep(600);
    getrusage(RUSAGE_SELF, &r1);
    long cpu_us = (r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) * 1000000L +
                  (r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) +
                  (r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) * 1000000L +
                  (r1.ru_stime.tv_usec - r0.ru_stime.tv_usec);
    uint64_t failures = dctx__acceptor_failures(a);
    int64_t window_ms = (dctx_now() - t0) / 1000000; /* the sleep may run long on a busy machine */
    while (n > 0)
        close(fill[--n]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
    print_message("at the limit for %lld ms: %llu failed accepts, %ld us of CPU\n",
                  (long long)window_ms, (unsigned long long)failures, cpu_us);
    /* one accept per pause at most, never a spin */
    assert_true(failures >= 1 &&
                failures - before <= (uint64_t)window_ms / DCTX__ACCEPT_RETRY_MS + 2);
    assert_true(wait_for(&srv.accepted, 1)); /* resumed */
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    assert_true(wait_for(&srv.closed, 1));
    dctx__reaper_wait();
    dctx__acceptor_close(a);
}

int main(void)
{
    snprintf(ipc_dir, sizeof ipc_dir, "/tmp/dctx-accept-XXXXXX");
    if (mkdtemp(ipc_dir) == NULL)
        return 1;
    st_init("accept");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sessions_open_over_ipc_tcp_and_tls),
        cmocka_unit_test(listen_failures_name_their_cause),
        cmocka_unit_test(sessions_of_peers_that_leave_are_each_closed_once),
        cmocka_unit_test(accept_at_the_descriptor_limit_pauses_then_resumes),
    };
    int rc = cmocka_run_group_tests_name("session_accept", tests, NULL, NULL);
    st_fini();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", ipc_dir);
    if (system(cmd) != 0 && rc == 0)
        rc = 1;
    return rc;
}
