/*
 * test_session_dial.c - a channel's side of opening sessions: the dialer
 * (lib/rpc/dialer.c) reaches a server that comes up late, dials again
 * after a back-off that grows (no spin while the server is down), dials
 * again when told its connection ended, speaks tls+tcp with a CA and a
 * server name (a session over it says hello; without the CA the session
 * ends in the handshake, which nng runs with the first I/O), and closes
 * promptly whatever it is doing.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/util/platform.h>

#include "acceptor.h"
#include "dialer.h"
#include "session.h"
#include "stream_testutil.h"
#include "testutil.h"

#ifndef TLS_DIR
#error "TLS_DIR must name tests/tls"
#endif

/* What the dialer's owner saw; the streams it got are closed at once, as a
 * connection that ended. */
struct owner {
    atomic_int streams, fails;
    atomic_int last_code;
};

static void got_stream(void *arg, nng_stream *s)
{
    struct owner *o = arg;
    nng_stream_close(s);
    nng_stream_free(s);
    atomic_fetch_add(&o->streams, 1);
}

static void dial_failed(void *arg, int code, const char *why)
{
    (void)why;
    struct owner *o = arg;
    atomic_store(&o->last_code, code);
    atomic_fetch_add(&o->fails, 1);
}

/* The server side: accepted streams are closed at once too. */
static atomic_int accepted;

static void accept_stream(void *owner, nng_stream *s)
{
    (void)owner;
    nng_stream_close(s);
    nng_stream_free(s);
    atomic_fetch_add(&accepted, 1);
}

static struct dctx__acceptor *serve(const char *url)
{
    struct dctx__acceptor_options o = {.tls_cert_key_file = TLS_DIR "/cert_key.pem",
                                       .on_stream = accept_stream};
    struct dctx__acceptor *a = NULL;
    assert_int_equal(dctx__acceptor_open(url, &o, &a), 0);
    return a;
}

static struct dctx__dialer *dial(const char *url, struct owner *o, const char *ca,
                                 int64_t backoff_max_ns)
{
    memset(o, 0, sizeof *o);
    struct dctx__dialer_options opt = {.tls_ca_file = ca,
                                       .tls_server_name = "localhost",
                                       .backoff_max_ns = backoff_max_ns,
                                       .on_stream = got_stream,
                                       .on_fail = dial_failed,
                                       .owner = o};
    struct dctx__dialer *d = NULL;
    assert_int_equal(dctx__dialer_open(url, &opt, &d), 0);
    return d;
}

static bool wait_for(atomic_int *v, int want)
{
    int64_t until = dctx_now() + SEC(10);
    while (atomic_load(v) < want && dctx_now() < until)
        nng_msleep(1);
    return atomic_load(v) >= want;
}

static char dir[64];

/* Nothing listens for 700 ms: the dials fail at a growing interval (10 ms
 * doubling to 200 ms: about 7 of them, not hundreds); then the server comes
 * up and the next dial gets through. */
static void dialer_backs_off_while_the_server_is_down_then_connects(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "ipc://%s/late.ipc", dir);
    static struct owner o;
    struct dctx__dialer *d = dial(url, &o, NULL, MS(200));
    nng_msleep(700);
    int fails = atomic_load(&o.fails);
    print_message("%d dials failed in 700 ms\n", fails);
    assert_true(fails >= 3 && fails <= 12);
    assert_int_equal(atomic_load(&o.last_code), DCTX_UNAVAILABLE);
    atomic_store(&accepted, 0);
    struct dctx__acceptor *a = serve(url);
    assert_true(wait_for(&o.streams, 1));
    assert_true(wait_for(&accepted, 1));
    dctx__dialer_close(d);
    dctx__acceptor_close(a);
}

/* Each redial after an ended connection connects again, at once. */
static void redial_after_an_ended_connection_connects_again(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "ipc://%s/redial.ipc", dir);
    atomic_store(&accepted, 0);
    struct dctx__acceptor *a = serve(url);
    static struct owner o;
    struct dctx__dialer *d = dial(url, &o, NULL, MS(200));
    for (int i = 1; i <= 5; i++) {
        assert_true(wait_for(&o.streams, i));
        dctx__dialer_redial(d, true);
    }
    assert_true(wait_for(&accepted, 6));
    nng_msleep(50);
    assert_int_equal(atomic_load(&o.streams), 6);
    assert_int_equal(dctx__dialer_dials(d), 6 + (uint64_t)atomic_load(&o.fails));
    dctx__dialer_close(d);
    dctx__acceptor_close(a);
}

/* A TLS owner: each stream opens a client session, which tells whether
 * the handshake (which nng runs with the first I/O) verified the server. */
struct tls_owner {
    struct dctx__session *s;
    atomic_int ready, ended, streams;
};

static void tls_ready(void *owner, struct dctx__session *s, const struct dctx__session_peer *p)
{
    (void)s;
    (void)p;
    atomic_fetch_add(&((struct tls_owner *)owner)->ready, 1);
}

static bool tls_frame(void *owner, struct dctx__session *s, Dctx__Wire__Frame *f)
{
    (void)owner;
    (void)s;
    (void)f;
    return false;
}

static void tls_end(void *owner, struct dctx__session *s, int code, const char *why)
{
    (void)s;
    (void)code;
    (void)why;
    atomic_fetch_add(&((struct tls_owner *)owner)->ended, 1);
}

static void tls_stream(void *arg, nng_stream *st)
{
    struct tls_owner *o = arg;
    struct dctx__session_options so = {.max_frame_bytes = 65536,
                                       .on_ready = tls_ready,
                                       .on_frame = tls_frame,
                                       .on_end = tls_end,
                                       .owner = o};
    if (dctx__session_open(st, &so, &o->s) == 0)
        dctx__session_start(o->s);
    atomic_fetch_add(&o->streams, 1);
}

/* A server-side owner for TLS: sessions that say hello back. */
static void tls_accept(void *owner, nng_stream *st)
{
    struct dctx__session **slot = owner;
    struct dctx__session_options so = {
        .server = true, .max_frame_bytes = 65536, .on_frame = tls_frame, .owner = NULL};
    if (dctx__session_open(st, &so, slot) == 0)
        dctx__session_start(*slot);
}

static void tls_session_with_the_ca_says_hello_and_without_it_ends(void **state)
{
    (void)state;
    static struct dctx__session *srv_side[1];
    struct dctx__acceptor_options ao = {.tls_cert_key_file = TLS_DIR "/cert_key.pem",
                                        .on_stream = tls_accept,
                                        .owner = &srv_side[0]};
    struct dctx__acceptor *a = NULL;
    assert_int_equal(dctx__acceptor_open("tls+tcp://127.0.0.1:0", &ao, &a), 0);
    static struct tls_owner with, without;
    memset(&with, 0, sizeof with);
    memset(&without, 0, sizeof without);
    struct dctx__dialer_options good = {.tls_ca_file = TLS_DIR "/cert.pem",
                                        .tls_server_name = "localhost",
                                        .backoff_max_ns = MS(200),
                                        .on_stream = tls_stream,
                                        .owner = &with};
    struct dctx__dialer *d = NULL;
    assert_int_equal(dctx__dialer_open(dctx__acceptor_url(a), &good, &d), 0);
    assert_true(wait_for(&with.ready, 1));
    dctx__dialer_close(d);
    dctx__session_close(with.s);
    dctx__acceptor_close(a);
    dctx__session_close(srv_side[0]);
    srv_side[0] = NULL;

    assert_int_equal(dctx__acceptor_open("tls+tcp://127.0.0.1:0", &ao, &a), 0);
    struct dctx__dialer_options bad = good; /* no CA: the server cannot be verified */
    bad.tls_ca_file = NULL;
    bad.owner = &without;
    assert_int_equal(dctx__dialer_open(dctx__acceptor_url(a), &bad, &d), 0);
    assert_true(wait_for(&without.ended, 1));
    assert_int_equal(atomic_load(&without.ready), 0);
    dctx__dialer_close(d);
    dctx__session_close(without.s);
    dctx__acceptor_close(a);
    dctx__session_close(srv_side[0]);
}

static void dialer_open_failures_name_their_cause(void **state)
{
    (void)state;
    static struct owner o;
    struct dctx__dialer_options opt = {.on_stream = got_stream, .owner = &o};
    struct dctx__dialer *d = (struct dctx__dialer *)&opt;
    assert_int_equal(dctx__dialer_open("bogus://x", &opt, &d), DCTX_INVALID_ARGUMENT);
    assert_null(d);
    opt.tls_ca_file = "/nonexistent-dctx-dir/ca.pem";
    assert_int_equal(dctx__dialer_open("tls+tcp://127.0.0.1:5", &opt, &d), DCTX_NOT_FOUND);
    assert_null(d);
}

/* A connection that never worked (the peer dropped it before the hellos)
 * is redialed after the back-off, which keeps doubling: a peer that
 * accepts and drops every connection is not redialed in a spin. Four such
 * redials wait 10 + 20 + 40 + 80 ms at least. */
static void redial_after_a_connection_that_never_worked_backs_off(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "ipc://%s/dropper.ipc", dir);
    atomic_store(&accepted, 0);
    struct dctx__acceptor *a = serve(url);
    static struct owner o;
    struct dctx__dialer *d = dial(url, &o, NULL, SEC(1));
    assert_true(wait_for(&o.streams, 1));
    int64_t t0 = dctx_now();
    for (int i = 1; i <= 4; i++) {
        assert_true(wait_for(&o.streams, i));
        dctx__dialer_redial(d, false);
    }
    assert_true(wait_for(&o.streams, 5));
    assert_true(dctx_now() - t0 >= MS(150));
    dctx__dialer_close(d);
    dctx__acceptor_close(a);
}

/* While it waits out a back-off, a redial does nothing (one dial at a
 * time); close returns promptly all the same. */
static void close_during_a_long_back_off_returns_at_once(void **state)
{
    (void)state;
    char url[128];
    snprintf(url, sizeof url, "ipc://%s/nobody.ipc", dir);
    static struct owner o;
    struct dctx__dialer *d = dial(url, &o, NULL, SEC(60));
    /* After the sixth failure the back-off is 640 ms: redials in it do nothing. */
    assert_true(wait_for(&o.fails, 6));
    uint64_t dials = dctx__dialer_dials(d);
    for (int i = 0; i < 10; i++)
        dctx__dialer_redial(d, true);
    assert_int_equal(dctx__dialer_dials(d), dials);
    int64_t t0 = dctx_now();
    dctx__dialer_close(d);
    assert_true(dctx_now() - t0 < SEC(5));
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/dctx-dial-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dialer_backs_off_while_the_server_is_down_then_connects),
        cmocka_unit_test(redial_after_an_ended_connection_connects_again),
        cmocka_unit_test(redial_after_a_connection_that_never_worked_backs_off),
        cmocka_unit_test(tls_session_with_the_ca_says_hello_and_without_it_ends),
        cmocka_unit_test(dialer_open_failures_name_their_cause),
        cmocka_unit_test(close_during_a_long_back_off_returns_at_once),
    };
    int rc = cmocka_run_group_tests_name("session_dial", tests, NULL, NULL);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0 && rc == 0)
        rc = 1;
    return rc;
}
