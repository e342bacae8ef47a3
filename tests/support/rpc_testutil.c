/*
 * rpc_testutil.c - the program, addresses, tracked resources and their
 * teardown, servers, channels, contexts and calls of rpc_testutil.h.
 */
#include "rpc_testutil.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>

/* ===== The program ===== */

static const char *rt_program = "rpc";
static int rt_port_base;        /* 0 until rt_init */
static atomic_int rt_port_next; /* offset in the block, from a random start */
static atomic_int rt_seq;       /* for inproc names, ipc sockets and paths */

const dctx_key rt_key_tenant = {"it-tenant", DCTX_KEY_PROPAGATE};
const dctx_key rt_key_trace = {"it-trace", DCTX_KEY_PROPAGATE};
const dctx_key rt_key_secret = {"it-secret", 0};
const dctx_key rt_key_pass = {"it-pass", DCTX_KEY_PROPAGATE};

void rt_init(const char *program, enum rt_port_base ports)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    rt_program = program;
    rt_port_base = (int)ports;
    /* A random start: the same program of another build (a sanitizer
     * suite, say) may be running at the same time. */
    atomic_store(&rt_port_next, (int)(rt_random64() % RT_PORT_SPAN));
    if (getenv("RT_TEST_FILTER") != NULL)
        cmocka_set_test_filter(getenv("RT_TEST_FILTER"));
}

int rt_group_setup(void **state)
{
    (void)state;
    assert_int_equal(dctx_wire_register_key(&rt_key_tenant), 0);
    assert_int_equal(dctx_wire_register_key(&rt_key_trace), 0);
    return 0;
}

/* ===== Time, waiting, randomness ===== */

void rt_sleep(int64_t ns)
{
    if (ns <= 0)
        return;
    struct timespec ts = {(time_t)(ns / SEC(1)), (long)(ns % SEC(1))};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

uint64_t rt_random64(void)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (uint64_t)dctx_now() ^ ((uint64_t)getpid() << 32);
    return r;
}

uint64_t rt_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* ===== Addresses and paths ===== */

static char rt_tmpdir_path[96];

static void rt_remove_tmpdir(void)
{
    DIR *d = opendir(rt_tmpdir_path);
    if (d == NULL)
        return;
    struct dirent *e;
    char path[sizeof rt_tmpdir_path + 300];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", rt_tmpdir_path, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(rt_tmpdir_path);
}

const char *rt_tmpdir(void)
{
    if (rt_tmpdir_path[0] == '\0') {
        snprintf(rt_tmpdir_path, sizeof rt_tmpdir_path, "/tmp/dctx-%.40s-XXXXXX", rt_program);
        if (mkdtemp(rt_tmpdir_path) == NULL)
            fail_msg("mkdtemp: %s", strerror(errno));
        atexit(rt_remove_tmpdir);
    }
    return rt_tmpdir_path;
}

static int rt_next_port(void)
{
    if (rt_port_base == 0)
        fail_msg("rt_init was not called: no port block");
    int n = atomic_fetch_add(&rt_port_next, 1);
    return rt_port_base + n % RT_PORT_SPAN;
}

void rt_url(enum rt_transport t, char *buf, size_t len)
{
    int n = atomic_fetch_add(&rt_seq, 1);
    switch (t) {
    case RT_INPROC:
        snprintf(buf, len, "inproc://dctx-%s-%d-%d", rt_program, (int)getpid(), n);
        break;
    case RT_IPC:
        snprintf(buf, len, "ipc://%s/s%d.sock", rt_tmpdir(), n);
        break;
    case RT_TCP:
        snprintf(buf, len, "tcp://127.0.0.1:%d", rt_next_port());
        break;
    }
}

void rt_path(const char *name, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s-%d", rt_tmpdir(), name, atomic_fetch_add(&rt_seq, 1));
}

/* ===== Tracked resources ===== */

#define RT_TRACK_MAX 64

static struct {
    dctx_rpc_channel *channels[RT_TRACK_MAX];
    dctx_rpc_server *servers[RT_TRACK_MAX];
    rt_raw *raws[RT_TRACK_MAX];
    rt_relay *relays[RT_TRACK_MAX];
    pid_t children[RT_TRACK_MAX];
    dctx *ctxs[4 * RT_TRACK_MAX];
    dctx_rpc_handle *handles[RT_TRACK_MAX];
} rt_tracked;

#define RT_LEN(array) (sizeof rt_tracked.array / sizeof rt_tracked.array[0])

/* Record item in the first free slot of array. */
#define RT_TRACK(array, item)                                                                      \
    do {                                                                                           \
        size_t i_;                                                                                 \
        for (i_ = 0; i_ < RT_LEN(array) && rt_tracked.array[i_]; i_++) {                           \
        }                                                                                          \
        if (i_ == RT_LEN(array))                                                                   \
            fail_msg("too many tracked " #array);                                                  \
        rt_tracked.array[i_] = (item);                                                             \
    } while (0)

/* Forget one tracking of item (the test released or closed it). */
#define RT_UNTRACK(array, item)                                                                    \
    do {                                                                                           \
        for (size_t i_ = 0; i_ < RT_LEN(array); i_++)                                              \
            if (rt_tracked.array[i_] == (item)) {                                                  \
                rt_tracked.array[i_] = 0;                                                          \
                break;                                                                             \
            }                                                                                      \
    } while (0)

dctx *rt_track_ctx(dctx *c)
{
    RT_TRACK(ctxs, c);
    return c;
}

void rt_ctx_release(dctx *c)
{
    RT_UNTRACK(ctxs, c);
    dctx_release(c);
}

static void rt_track_handle(dctx_rpc_handle *h)
{
    RT_TRACK(handles, h);
}

void rt_handle_release(dctx_rpc_handle *h)
{
    RT_UNTRACK(handles, h);
    dctx_rpc_handle_release(h);
}

void rt_track_raw(rt_raw *r)
{
    RT_TRACK(raws, r);
}

void rt_untrack_raw(rt_raw *r)
{
    RT_UNTRACK(raws, r);
}

void rt_track_server(dctx_rpc_server *s)
{
    RT_TRACK(servers, s);
}

void rt_untrack_server(dctx_rpc_server *s)
{
    RT_UNTRACK(servers, s);
}

void rt_untrack_channel(dctx_rpc_channel *ch)
{
    RT_UNTRACK(channels, ch);
}

void rt_track_relay(rt_relay *r)
{
    RT_TRACK(relays, r);
}

void rt_untrack_relay(rt_relay *r)
{
    RT_UNTRACK(relays, r);
}

void rt_track_child(pid_t pid)
{
    RT_TRACK(children, pid);
}

void rt_untrack_child(pid_t pid)
{
    RT_UNTRACK(children, pid);
}

void rt_child_kill(pid_t pid)
{
    RT_UNTRACK(children, pid);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

uint64_t rt_acks_pending(dctx_rpc_channel *ch)
{
    dctx_rpc_channel_stats st;
    dctx_rpc_channel_stats_get(ch, &st);
    uint64_t answered = st.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED] +
                        st.cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED] +
                        st.cancel_outcomes[DCTX_RPC_CANCEL_TOO_LATE] +
                        st.cancel_outcomes[DCTX_RPC_CANCEL_UNREACHED];
    return st.cancels_pushed > answered ? st.cancels_pushed - answered : 0;
}

void rt_quiesce(void)
{
    int64_t until = dctx_now() + SEC(5);
    for (size_t i = 0; i < RT_TRACK_MAX; i++) {
        dctx_rpc_server *s = rt_tracked.servers[i];
        dctx_rpc_channel *ch = rt_tracked.channels[i];
        while (s != NULL && dctx_now() < until) {
            dctx_rpc_server_stats st;
            dctx_rpc_server_stats_get(s, &st);
            if (st.in_flight == 0)
                break;
            rt_sleep(MS(1));
        }
        while (ch != NULL && rt_acks_pending(ch) > 0 && dctx_now() < until)
            rt_sleep(MS(1));
    }
    rt_sleep(MS(20));
}

int rt_teardown(void **state)
{
    (void)state;
    rt_quiesce();
    for (size_t i = 0; i < RT_TRACK_MAX; i++) {
        if (rt_tracked.raws[i] != NULL)
            rt_raw_close(rt_tracked.raws[i]);
        if (rt_tracked.relays[i] != NULL)
            rt_relay_close(rt_tracked.relays[i]);
    }
    for (size_t i = 0; i < RT_TRACK_MAX; i++)
        if (rt_tracked.channels[i] != NULL) {
            dctx_rpc_channel_close(rt_tracked.channels[i]);
            rt_tracked.channels[i] = NULL;
        }
    for (size_t i = 0; i < RT_TRACK_MAX; i++)
        if (rt_tracked.servers[i] != NULL) {
            (void)dctx_rpc_server_close(rt_tracked.servers[i]);
            rt_tracked.servers[i] = NULL;
        }
    for (size_t i = 0; i < RT_TRACK_MAX; i++)
        if (rt_tracked.children[i] != 0)
            rt_child_kill(rt_tracked.children[i]);
    for (size_t i = 0; i < RT_LEN(handles); i++)
        if (rt_tracked.handles[i] != NULL)
            rt_handle_release(rt_tracked.handles[i]);
    for (size_t i = 0; i < RT_LEN(ctxs); i++)
        if (rt_tracked.ctxs[i] != NULL)
            rt_ctx_release(rt_tracked.ctxs[i]);
    return 0;
}

/* ===== Servers, channels, contexts ===== */

void rt_server_listen(dctx_rpc_server *s, enum rt_transport t, char *url, size_t url_len)
{
    int rc = DCTX_UNAVAILABLE;
    for (int tries = 0; tries < 50 && rc == DCTX_UNAVAILABLE; tries++) {
        rt_url(t, url, url_len);
        rc = dctx_rpc_server_listen(s, url);
    }
    assert_int_equal(rc, 0);
}

dctx_rpc_server *rt_server_open(enum rt_transport t, const dctx_rpc_server_options *opts,
                                const struct rt_method *methods, size_t n, char *url,
                                size_t url_len)
{
    dctx_rpc_server *s = NULL;
    assert_int_equal(dctx_rpc_server_open(opts, &s), 0);
    rt_track_server(s);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(
            methods[i].stream_fn != NULL
                ? dctx_rpc_server_register_stream(s, methods[i].name, methods[i].stream_fn,
                                                  methods[i].arg)
                : dctx_rpc_server_register(s, methods[i].name, methods[i].fn, methods[i].arg),
            0);
    rt_server_listen(s, t, url, url_len);
    assert_int_equal(dctx_rpc_server_start(s), 0);
    return s;
}

dctx_rpc_server *rt_serve(enum rt_transport t, const dctx_rpc_server_options *opts,
                          const char *method, dctx_rpc_handler_fn fn, void *arg, char *url)
{
    struct rt_method m[] = {{method, fn, arg, NULL}};
    return rt_server_open(t, opts, m, 1, url, 256);
}

dctx_rpc_server_options rt_server_options(int workers)
{
    dctx_rpc_server_options o;
    dctx_rpc_server_options_init(&o);
    o.workers = workers;
    return o;
}

int rt_server_close(dctx_rpc_server *s)
{
    rt_untrack_server(s);
    return dctx_rpc_server_close(s);
}

dctx_rpc_server_stats rt_server_stats(dctx_rpc_server *s)
{
    dctx_rpc_server_stats st;
    dctx_rpc_server_stats_get(s, &st);
    return st;
}

dctx_rpc_channel *rt_channel_open(const char *url, const dctx_rpc_channel_options *opts)
{
    dctx_rpc_channel *ch = NULL;
    assert_int_equal(dctx_rpc_channel_open(url, opts, &ch), 0);
    assert_non_null(ch);
    RT_TRACK(channels, ch);
    return ch;
}

void rt_channel_close(dctx_rpc_channel *ch)
{
    rt_untrack_channel(ch);
    dctx_rpc_channel_close(ch);
}

dctx_rpc_channel_stats rt_channel_stats(dctx_rpc_channel *ch)
{
    dctx_rpc_channel_stats st;
    dctx_rpc_channel_stats_get(ch, &st);
    return st;
}

dctx *rt_with_cancel(void)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_cancel(dctx_background(), &c), 0);
    return rt_track_ctx(c);
}

dctx *rt_with_timeout(int64_t ns)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_timeout(dctx_background(), ns, &c), 0);
    return rt_track_ctx(c);
}

dctx *rt_with_value(dctx *parent, const dctx_key *key, const char *s)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_value(parent, key, s, strlen(s) + 1, &c), 0);
    rt_ctx_release(parent); /* the child holds it */
    return rt_track_ctx(c);
}

/* ===== Checks ===== */

bool rt_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t k = p[i] < 0x80         ? 1
                   : (p[i] >> 5) == 6  ? 2
                   : (p[i] >> 4) == 14 ? 3
                   : (p[i] >> 3) == 30 ? 4
                                       : 0;
        if (k == 0 || i + k > n)
            return false;
        for (size_t j = 1; j < k; j++)
            if ((p[i + j] >> 6) != 2)
                return false;
        i += k;
    }
    return true;
}

/* ===== Calls ===== */

void rt_outcome_done(void *arg, const dctx_rpc_result *res)
{
    rt_outcome *o = arg;
    o->code = res->code;
    o->cancel_outcome = res->cancel_outcome;
    o->ended_ns = dctx_now();
    snprintf(o->message, sizeof o->message, "%s", res->message != NULL ? res->message : "(null)");
    o->payload_len = res->payload_len;
    if (res->payload_len > 0)
        memcpy(o->payload, res->payload,
               res->payload_len < sizeof o->payload ? res->payload_len : sizeof o->payload);
    o->thread = pthread_self();
    atomic_fetch_add(&o->callbacks, 1);
}

dctx_rpc_handle *rt_start(dctx_rpc_channel *ch, dctx *ctx, const char *method, const void *req,
                          size_t len, rt_outcome *o)
{
    memset(o, 0, sizeof *o);
    dctx_rpc_handle *h = NULL;
    assert_int_equal(dctx_rpc_call_start(ch, ctx, method, req, len, rt_outcome_done, o, &h), 0);
    assert_non_null(h);
    rt_track_handle(h);
    return h;
}

void rt_finish(dctx_rpc_handle *h, int64_t timeout_ns)
{
    assert_true(dctx_rpc_handle_wait(h, timeout_ns));
}

void *rt_thread_call_main(void *arg)
{
    struct rt_thread_call *c = arg;
    c->rc = dctx_rpc_call_raw(c->ch, c->ctx, c->method, NULL, 0, &c->res);
    c->returned_ns = dctx_now();
    return NULL;
}
