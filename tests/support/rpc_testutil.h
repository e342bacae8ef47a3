/*
 * rpc_testutil.h - helpers for the RPC integration tests: unique addresses
 * on inproc, ipc and tcp; servers and channels that a teardown closes even
 * when a test fails half way; a probe handler that records what a handler
 * saw; raw nng peers that speak dctx frames; a relay that holds frames so a
 * test can order them; and a server in a child process, to kill.
 * Header-only; each test program includes it once.
 *
 * Handlers run on library threads: they never call cmocka's assert_*
 * (that longjmps on the test's thread); they record, and the test checks.
 */
#ifndef DCTX_RPC_TESTUTIL_H
#define DCTX_RPC_TESTUTIL_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/protocol/reqrep0/req.h>

#include <dctx/rpc.h>

#include "dctx.pb-c.h"
#include "testutil.h"

/* ===== Time, waiting, sanitizers ===== */

static inline void rt_sleep(int64_t ns)
{
    if (ns <= 0)
        return;
    struct timespec ts = {(time_t)(ns / SEC(1)), (long)(ns % SEC(1))};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Poll cond every 200 us until it holds (true) or timeout_ns pass (false). */
#define RT_WAIT_FOR(cond, timeout_ns)                                                  \
    __extension__({                                                                    \
        int64_t rt_until_ = dctx_now() + (timeout_ns);                                 \
        bool rt_ok_;                                                                   \
        while (!(rt_ok_ = (cond)) && dctx_now() < rt_until_)                           \
            rt_sleep(US(200));                                                         \
        rt_ok_;                                                                        \
    })

static inline bool rt_under_tsan(void)
{
#if defined(__SANITIZE_THREAD__)
    return true;
#else
    return false;
#endif
}

static inline uint64_t rt_random64(void)
{
    uint64_t r = 0;
    if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
        r = (uint64_t)dctx_now() ^ ((uint64_t)getpid() << 32);
    return r;
}

/* A small deterministic generator for shuffles and garbage (xorshift64*). */
static inline uint64_t rt_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* ===== Addresses ===== */

enum rt_transport { RT_INPROC, RT_IPC, RT_TCP };

static char rt_tmpdir_path[64];
static atomic_int rt_seq;
static atomic_int rt_port_counter; /* 0 until the first tcp address */

static inline void rt_remove_tmpdir(void)
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

/* A directory of this process for ipc sockets and shared files, removed
 * at exit. */
static inline const char *rt_tmpdir(void)
{
    if (rt_tmpdir_path[0] == '\0') {
        snprintf(rt_tmpdir_path, sizeof rt_tmpdir_path, "/tmp/dctx-rpc-XXXXXX");
        if (mkdtemp(rt_tmpdir_path) == NULL)
            fail_msg("mkdtemp: %s", strerror(errno));
        atexit(rt_remove_tmpdir);
    }
    return rt_tmpdir_path;
}

/* tcp ports come from a per-process counter that starts at a random port in
 * 20000..40000, so parallel test programs rarely meet; a port found taken
 * is skipped by whoever listens (rt_server_listen retries). */
static inline int rt_next_port(void)
{
    int zero = 0;
    if (atomic_load(&rt_port_counter) == 0)
        atomic_compare_exchange_strong(&rt_port_counter, &zero,
                                       (int)(rt_random64() % 20000));
    int n = atomic_fetch_add(&rt_port_counter, 1);
    return 20000 + n % 20001;
}

static inline void rt_url(enum rt_transport t, char *buf, size_t len)
{
    int n = atomic_fetch_add(&rt_seq, 1);
    switch (t) {
    case RT_INPROC:
        snprintf(buf, len, "inproc://dctx-rt-%d-%d", (int)getpid(), n);
        break;
    case RT_IPC:
        snprintf(buf, len, "ipc://%s/s%d.sock", rt_tmpdir(), n);
        break;
    case RT_TCP:
        snprintf(buf, len, "tcp://127.0.0.1:%d", rt_next_port());
        break;
    }
}

static inline const char *rt_transport_name(enum rt_transport t)
{
    return t == RT_INPROC ? "inproc" : t == RT_IPC ? "ipc" : "tcp";
}

/* ===== Tracked resources =====
 *
 * Everything a test opens through these helpers is recorded, and
 * rt_teardown (a cmocka teardown) closes what the test did not: channels
 * and raw sockets first (so handlers blocked on them wake), then servers,
 * then child processes. A failing test so leaves nothing running. */

#define RT_TRACK_MAX 64

typedef struct rt_relay rt_relay;
static void rt_relay_close(rt_relay *r);

static struct {
    dctx_rpc_channel *channels[RT_TRACK_MAX];
    dctx_rpc_server *servers[RT_TRACK_MAX];
    nng_socket socks[RT_TRACK_MAX];
    bool sock_used[RT_TRACK_MAX];
    rt_relay *relays[RT_TRACK_MAX];
    pid_t children[RT_TRACK_MAX];
    dctx *ctxs[4 * RT_TRACK_MAX];
    dctx_rpc_handle *handles[RT_TRACK_MAX];
} rt_tracked;

#define RT_LEN(array) (sizeof rt_tracked.array / sizeof rt_tracked.array[0])

#define RT_TRACK(array, item)                                                          \
    do {                                                                               \
        size_t i_;                                                                     \
        for (i_ = 0; i_ < RT_LEN(array) && rt_tracked.array[i_]; i_++) {               \
        }                                                                              \
        if (i_ == RT_LEN(array))                                                       \
            fail_msg("too many tracked " #array);                                      \
        rt_tracked.array[i_] = (item);                                                 \
    } while (0)

/* Forget one tracking of item (the test released or closed it). */
#define RT_UNTRACK(array, item)                                                        \
    do {                                                                               \
        for (size_t i_ = 0; i_ < RT_LEN(array); i_++)                                  \
            if (rt_tracked.array[i_] == (item)) {                                      \
                rt_tracked.array[i_] = 0;                                              \
                break;                                                                 \
            }                                                                          \
    } while (0)

/* Contexts and call handles a test holds: released by the teardown if a
 * failing test could not (so LeakSanitizer reports only real leaks). */
static inline dctx *rt_track_ctx(dctx *c)
{
    RT_TRACK(ctxs, c);
    return c;
}

static inline void rt_ctx_release(dctx *c)
{
    RT_UNTRACK(ctxs, c);
    dctx_release(c);
}

static inline void rt_handle_release(dctx_rpc_handle *h)
{
    RT_UNTRACK(handles, h);
    dctx_rpc_handle_release(h);
}

static inline void rt_track_sock(nng_socket s)
{
    for (size_t i = 0; i < RT_TRACK_MAX; i++)
        if (!rt_tracked.sock_used[i]) {
            rt_tracked.sock_used[i] = true;
            rt_tracked.socks[i] = s;
            return;
        }
    fail_msg("too many tracked sockets");
}

/* Close a raw socket opened by a helper. */
static inline void rt_sock_close(nng_socket s)
{
    for (size_t i = 0; i < RT_TRACK_MAX; i++)
        if (rt_tracked.sock_used[i] && rt_tracked.socks[i].id == s.id)
            rt_tracked.sock_used[i] = false;
    nng_close(s);
}

static inline void rt_child_kill(pid_t pid)
{
    RT_UNTRACK(children, pid);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

/* Cancels pushed by ch whose answer has not come back yet. */
static inline uint64_t rt_acks_pending(dctx_rpc_channel *ch)
{
    dctx_rpc_channel_stats st;
    dctx_rpc_channel_stats_get(ch, &st);
    uint64_t answered = st.cancel_outcomes[DCTX_RPC_CANCEL_STOPPED] +
                        st.cancel_outcomes[DCTX_RPC_CANCEL_PREVENTED] +
                        st.cancel_outcomes[DCTX_RPC_CANCEL_TOO_LATE] +
                        st.cancel_outcomes[DCTX_RPC_CANCEL_UNREACHED];
    return st.cancels_pushed > answered ? st.cancels_pushed - answered : 0;
}

/* Let the traffic of a test die down before closing (bounded): servers
 * with no calls in flight, channels with no cancel awaiting its answer,
 * then a moment for replies already on their way. A channel closed while
 * a reply arrives can hang for good with nng 1.5.2 (see the test
 * closing_a_channel_while_replies_arrive_returns), and with it every
 * later close in the process; this keeps that one bug from stopping the
 * whole suite. */
static inline void rt_quiesce(void)
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

static inline int rt_teardown(void **state)
{
    (void)state;
    rt_quiesce();
    for (size_t i = 0; i < RT_TRACK_MAX; i++) {
        if (rt_tracked.sock_used[i]) {
            rt_tracked.sock_used[i] = false;
            nng_close(rt_tracked.socks[i]);
        }
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

/* ===== Servers and channels ===== */

struct rt_method {
    const char *name;
    dctx_rpc_handler_fn fn;
    void *arg;
};

/* Listen on a fresh address of transport t (tcp: skipping ports found
 * taken); the address goes to url. */
static inline void rt_server_listen(dctx_rpc_server *s, enum rt_transport t, char *url,
                                    size_t url_len)
{
    int rc = DCTX_UNAVAILABLE;
    for (int tries = 0; tries < 50 && rc == DCTX_UNAVAILABLE; tries++) {
        rt_url(t, url, url_len);
        rc = dctx_rpc_server_listen(s, url);
    }
    assert_int_equal(rc, 0);
}

/* A started server with methods, listening on a fresh address of t. opts
 * NULL: defaults. The teardown closes it if the test does not. */
static inline dctx_rpc_server *rt_server_open(enum rt_transport t,
                                              const dctx_rpc_server_options *opts,
                                              const struct rt_method *methods, size_t n,
                                              char *url, size_t url_len)
{
    dctx_rpc_server *s = NULL;
    assert_int_equal(dctx_rpc_server_open(opts, &s), 0);
    RT_TRACK(servers, s);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(dctx_rpc_server_register(s, methods[i].name, methods[i].fn,
                                                  methods[i].arg),
                         0);
    rt_server_listen(s, t, url, url_len);
    assert_int_equal(dctx_rpc_server_start(s), 0);
    return s;
}

static inline int rt_server_close(dctx_rpc_server *s)
{
    RT_UNTRACK(servers, s);
    return dctx_rpc_server_close(s);
}

static inline dctx_rpc_server_stats rt_server_stats(dctx_rpc_server *s)
{
    dctx_rpc_server_stats st;
    dctx_rpc_server_stats_get(s, &st);
    return st;
}

static inline dctx_rpc_channel *rt_channel_open(const char *url,
                                                const dctx_rpc_channel_options *opts)
{
    dctx_rpc_channel *ch = NULL;
    assert_int_equal(dctx_rpc_channel_open(url, opts, &ch), 0);
    assert_non_null(ch);
    RT_TRACK(channels, ch);
    return ch;
}

static inline void rt_channel_close(dctx_rpc_channel *ch)
{
    RT_UNTRACK(channels, ch);
    dctx_rpc_channel_close(ch);
}


static inline dctx_rpc_channel_stats rt_channel_stats(dctx_rpc_channel *ch)
{
    dctx_rpc_channel_stats st;
    dctx_rpc_channel_stats_get(ch, &st);
    return st;
}

/* A cancelable context, and one with a timeout (tracked: release with
 * rt_ctx_release). */
static inline dctx *rt_with_cancel(void)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_cancel(dctx_background(), &c), 0);
    return rt_track_ctx(c);
}

static inline dctx *rt_with_timeout(int64_t ns)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_timeout(dctx_background(), ns, &c), 0);
    return rt_track_ctx(c);
}

/* ===== Handlers ===== */

/* Echo: the request is the response. */
static inline int rt_echo_handler(void *arg, dctx *ctx, const void *req, size_t len,
                                  dctx_rpc_reply *reply)
{
    (void)arg;
    (void)ctx;
    if (len > 0 && dctx_rpc_reply_set_payload(reply, req, len) != 0)
        return DCTX_RESOURCE_EXHAUSTED;
    return DCTX_OK;
}

enum rt_probe_mode {
    RT_PROBE_RETURN,   /* return at once */
    RT_PROBE_WAIT_CTX, /* wait on the context, at most wait_ns */
    RT_PROBE_SLEEP,    /* sleep wait_ns, ignoring the context */
    RT_PROBE_HOLD      /* ignore the context until the test sets release (at most wait_ns) */
};

/* What a handler saw. The test sets mode, wait_ns and code before the
 * call; the handler writes the rest and then raises started / finished
 * (whose loads order the plain fields for the test), and touches nothing
 * after finished. Give probes static storage, not the test's stack: a
 * failing test leaves while its handlers may still run. */
typedef struct rt_probe {
    enum rt_probe_mode mode;
    int64_t wait_ns;
    int code; /* returned when the context is still live at the end */

    atomic_int runs, started, finished, release;
    int64_t entered_ns, returned_ns, deadline_ns;
    bool had_deadline;
    int err, cause;
    bool has_cause_msg;
    char cause_msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
} rt_probe;

static inline void rt_probe_init(rt_probe *p, enum rt_probe_mode mode, int64_t wait_ns)
{
    memset(p, 0, sizeof *p);
    p->mode = mode;
    p->wait_ns = wait_ns;
    p->code = DCTX_OK;
}

/* Runs the probe; returns the context's cause once it is done, else the
 * probe's code. */
static inline int rt_probe_run(rt_probe *p, dctx *ctx)
{
    p->entered_ns = dctx_now();
    p->had_deadline = dctx_deadline(ctx, &p->deadline_ns);
    atomic_fetch_add(&p->runs, 1);
    atomic_store(&p->started, 1);
    switch (p->mode) {
    case RT_PROBE_RETURN:
        break;
    case RT_PROBE_WAIT_CTX:
        dctx_wait(ctx, p->wait_ns);
        break;
    case RT_PROBE_SLEEP:
        rt_sleep(p->wait_ns);
        break;
    case RT_PROBE_HOLD: {
        int64_t until = dctx_now() + p->wait_ns;
        while (!atomic_load(&p->release) && dctx_now() < until)
            rt_sleep(US(200));
        break;
    }
    }
    p->err = dctx_err(ctx);
    const char *msg = NULL;
    p->cause = dctx_cause(ctx, &msg);
    p->has_cause_msg = msg != NULL;
    snprintf(p->cause_msg, sizeof p->cause_msg, "%s", msg != NULL ? msg : "");
    p->returned_ns = dctx_now();
    int rc = p->err != 0 ? p->cause : p->code;
    atomic_store(&p->finished, 1); /* the test may be gone after this */
    return rc;
}

/* Handler whose arg is one rt_probe. */
static inline int rt_probe_handler(void *arg, dctx *ctx, const void *req, size_t len,
                                   dctx_rpc_reply *reply)
{
    (void)req;
    (void)len;
    (void)reply;
    return rt_probe_run(arg, ctx);
}

/* Handler whose arg is an array of probes, picked by the request's first
 * byte (so a test can tell its calls apart). */
static inline int rt_probes_handler(void *arg, dctx *ctx, const void *req, size_t len,
                                    dctx_rpc_reply *reply)
{
    (void)reply;
    rt_probe *probes = arg;
    if (len < 1)
        return DCTX_INVALID_ARGUMENT;
    return rt_probe_run(&probes[((const uint8_t *)req)[0]], ctx);
}

/* ===== Async calls ===== */

/* Where a completion callback puts what it got (static storage, as for
 * probes). */
typedef struct rt_outcome {
    atomic_int callbacks;
    int code;
    int cancel_outcome;
    int64_t ended_ns;
    char message[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
    size_t payload_len;
} rt_outcome;

static inline void rt_outcome_done(void *arg, const dctx_rpc_result *res)
{
    rt_outcome *o = arg;
    o->code = res->code;
    o->cancel_outcome = res->cancel_outcome;
    o->ended_ns = dctx_now();
    snprintf(o->message, sizeof o->message, "%s", res->message != NULL ? res->message : "(null)");
    o->payload_len = res->payload_len;
    atomic_fetch_add(&o->callbacks, 1);
}

/* Start an asynchronous call that reports into o; returns its handle
 * (tracked: release with rt_handle_release). */
static inline dctx_rpc_handle *rt_start(dctx_rpc_channel *ch, dctx *ctx, const char *method,
                                        const void *req, size_t len, rt_outcome *o)
{
    memset(o, 0, sizeof *o);
    dctx_rpc_handle *h = NULL;
    assert_int_equal(dctx_rpc_call_start(ch, ctx, method, req, len, rt_outcome_done, o, &h), 0);
    assert_non_null(h);
    RT_TRACK(handles, h);
    return h;
}

/* Wait (bounded) for a call to end; its callback has then run. */
static inline void rt_finish(dctx_rpc_handle *h, int64_t timeout_ns)
{
    assert_true(dctx_rpc_handle_wait(h, timeout_ns));
}

/* ===== Raw frames ===== */

static inline void rt_token(uint8_t token[DCTX_TOKEN_BYTES])
{
    if (getrandom(token, DCTX_TOKEN_BYTES, 0) != DCTX_TOKEN_BYTES)
        fail_msg("getrandom failed");
}

/* Pack a frame into a malloc'd buffer. */
static inline uint8_t *rt_pack(const Dctx__Wire__Frame *f, size_t *len)
{
    *len = dctx__wire__frame__get_packed_size(f);
    uint8_t *buf = malloc(*len ? *len : 1);
    assert_non_null(buf);
    assert_int_equal(dctx__wire__frame__pack(f, buf), *len);
    return buf;
}

/* A Call frame, packed. budget_us 0: no deadline. */
static inline uint8_t *rt_pack_call(const char *method, const uint8_t token[DCTX_TOKEN_BYTES],
                                    uint64_t budget_us, const void *payload, size_t payload_len,
                                    size_t *len)
{
    Dctx__Wire__ContextHeader h = DCTX__WIRE__CONTEXT_HEADER__INIT;
    h.has_cancel_token = 1;
    h.cancel_token.data = (uint8_t *)token;
    h.cancel_token.len = DCTX_TOKEN_BYTES;
    h.has_budget_us = budget_us != 0;
    h.budget_us = budget_us;
    h.has_hops = 1;
    h.hops = 0;
    Dctx__Wire__Call c = DCTX__WIRE__CALL__INIT;
    c.method = (char *)method;
    c.context = &h;
    c.has_payload = 1;
    c.payload.data = (uint8_t *)payload;
    c.payload.len = payload_len;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CALL;
    f.call = &c;
    return rt_pack(&f, len);
}

/* A Cancel frame, packed. */
static inline uint8_t *rt_pack_cancel(const uint8_t token[DCTX_TOKEN_BYTES], int code,
                                      const char *msg, uint64_t budget_us, size_t *len)
{
    Dctx__Wire__Cancel c = DCTX__WIRE__CANCEL__INIT;
    c.has_cancel_token = 1;
    c.cancel_token.data = (uint8_t *)token;
    c.cancel_token.len = DCTX_TOKEN_BYTES;
    c.has_code = 1;
    c.code = (uint32_t)code;
    c.message = (char *)msg;
    c.has_budget_us = 1;
    c.budget_us = budget_us;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_CANCEL;
    f.cancel = &c;
    return rt_pack(&f, len);
}

/* A REQ socket dialed to url, with resend off (as the library's channels),
 * and 2 s send and receive timeouts. */
static inline nng_socket rt_raw_req(const char *url)
{
    nng_socket s;
    assert_int_equal(nng_req0_open(&s), 0);
    rt_track_sock(s);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE), 0);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 2000), 0);
    assert_int_equal(nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, 2000), 0);
    int rv;
    int64_t until = dctx_now() + SEC(5);
    while ((rv = nng_dial(s, url, NULL, 0)) != 0 && dctx_now() < until)
        rt_sleep(MS(5));
    assert_int_equal(rv, 0);
    return s;
}

/* Send bytes as one message, then free them. */
static inline void rt_send_bytes(nng_socket s, uint8_t *buf, size_t len)
{
    assert_int_equal(nng_send(s, buf, len, 0), 0);
    free(buf);
}

/* Receive one frame: NULL if nothing came in the socket's timeout or it
 * does not parse. Free with dctx__wire__frame__free_unpacked. */
static inline Dctx__Wire__Frame *rt_recv_frame(nng_socket s)
{
    void *buf = NULL;
    size_t len = 0;
    if (nng_recv(s, &buf, &len, NNG_FLAG_ALLOC) != 0)
        return NULL;
    Dctx__Wire__Frame *f = dctx__wire__frame__unpack(NULL, len, buf);
    nng_free(buf, len);
    return f;
}

/* Receive a Reply: its code (message copied to msg if not NULL), or -1 if
 * none came or the frame is not a Reply. */
static inline int rt_recv_reply(nng_socket s, char *msg, size_t msg_len)
{
    Dctx__Wire__Frame *f = rt_recv_frame(s);
    int code = -1;
    if (f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_REPLY && f->reply->has_code) {
        code = (int)f->reply->code;
        if (msg != NULL)
            snprintf(msg, msg_len, "%s", f->reply->message ? f->reply->message : "");
    }
    if (f != NULL)
        dctx__wire__frame__free_unpacked(f, NULL);
    return code;
}

/* Receive a CancelAck: its outcome, or -1. */
static inline int rt_recv_cancel_ack(nng_socket s)
{
    Dctx__Wire__Frame *f = rt_recv_frame(s);
    int outcome = -1;
    if (f != NULL && f->body_case == DCTX__WIRE__FRAME__BODY_CANCEL_ACK &&
        f->cancel_ack->has_outcome)
        outcome = (int)f->cancel_ack->outcome;
    if (f != NULL)
        dctx__wire__frame__free_unpacked(f, NULL);
    return outcome;
}

/* Unpack the frame an nng message holds (NULL if it does not parse). */
static inline Dctx__Wire__Frame *rt_msg_frame(nng_msg *m)
{
    return dctx__wire__frame__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
}

/* ===== A relay: a channel talks to it, it talks to the server =====
 *
 * Front: a REP socket with two contexts the channel dials (a call and its
 * cancel travel on two REQ contexts). Back: a REQ socket (resend off) with
 * two contexts, dialed to the server. The test takes each frame, forwards
 * it and answers when it chooses: a real network hop whose delays and
 * reorderings the test decides. Every operation is bounded. */

struct rt_relay {
    nng_socket front, back;
    nng_ctx fctx[2], bctx[2];
    nng_aio *faio[2], *baio[2];
    char url[256];
};

static inline rt_relay *rt_relay_open(const char *server_url)
{
    rt_relay *r = calloc(1, sizeof *r);
    assert_non_null(r);
    assert_int_equal(nng_rep0_open(&r->front), 0);
    assert_int_equal(nng_req0_open(&r->back), 0);
    RT_TRACK(relays, r);
    assert_int_equal(nng_socket_set_ms(r->back, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(nng_ctx_open(&r->fctx[i], r->front), 0);
        assert_int_equal(nng_ctx_open(&r->bctx[i], r->back), 0);
        assert_int_equal(nng_aio_alloc(&r->faio[i], NULL, NULL), 0);
        assert_int_equal(nng_aio_alloc(&r->baio[i], NULL, NULL), 0);
        nng_aio_set_timeout(r->faio[i], 5000);
        nng_aio_set_timeout(r->baio[i], 5000);
    }
    rt_url(RT_INPROC, r->url, sizeof r->url);
    assert_int_equal(nng_listen(r->front, r->url, NULL, 0), 0);
    assert_int_equal(nng_dial(r->back, server_url, NULL, 0), 0);
    return r;
}

static void rt_relay_close(rt_relay *r)
{
    RT_UNTRACK(relays, r);
    nng_close(r->front);
    nng_close(r->back);
    for (int i = 0; i < 2; i++) {
        nng_aio_free(r->faio[i]);
        nng_aio_free(r->baio[i]);
    }
    free(r);
}

/* The next frame from the channel, on front context i (NULL: none in 5 s). */
static inline nng_msg *rt_relay_take(rt_relay *r, int i)
{
    nng_ctx_recv(r->fctx[i], r->faio[i]);
    nng_aio_wait(r->faio[i]);
    if (nng_aio_result(r->faio[i]) != 0)
        return NULL;
    return nng_aio_get_msg(r->faio[i]);
}

/* Send msg to the server on back context j and return its answer (NULL:
 * none in 5 s). */
static inline nng_msg *rt_relay_forward(rt_relay *r, int j, nng_msg *msg)
{
    nng_aio_set_msg(r->baio[j], msg);
    nng_ctx_send(r->bctx[j], r->baio[j]);
    nng_aio_wait(r->baio[j]);
    if (nng_aio_result(r->baio[j]) != 0) {
        nng_msg_free(msg);
        return NULL;
    }
    nng_ctx_recv(r->bctx[j], r->baio[j]);
    nng_aio_wait(r->baio[j]);
    if (nng_aio_result(r->baio[j]) != 0)
        return NULL;
    return nng_aio_get_msg(r->baio[j]);
}

/* Answer the frame taken on front context i with msg. */
static inline void rt_relay_answer(rt_relay *r, int i, nng_msg *msg)
{
    nng_aio_set_msg(r->faio[i], msg);
    nng_ctx_send(r->fctx[i], r->faio[i]);
    nng_aio_wait(r->faio[i]);
    if (nng_aio_result(r->faio[i]) != 0)
        nng_msg_free(msg);
}

/* ===== A server in a child process =====
 *
 * The test binary re-executes itself (fork, then exec of /proc/self/exe:
 * nng and dctx keep threads that a bare fork would lose) with
 * "--rt-child-server URL SHARED": the child serves
 *   /rt.Child/Block  counts its run in the shared file, then sleeps forever,
 *                    ignoring its context (a handler that never answers);
 *   /rt.Child/Ping   counts, answers OK at once.
 * It dies with its parent (PR_SET_PDEATHSIG) and after 120 s at most. */

typedef struct rt_child_shared {
    atomic_int ready, failed, block_runs, pings;
} rt_child_shared;

/* size bytes of the file at path, shared with a child (zeroed if create). */
static inline void *rt_shared_map(const char *path, size_t size, bool create)
{
    int fd = open(path, O_RDWR | (create ? O_CREAT | O_TRUNC : 0), 0600);
    if (fd < 0)
        return NULL;
    if (create && ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        return NULL;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

static inline rt_child_shared *rt_child_shared_map(const char *path, bool create)
{
    return rt_shared_map(path, sizeof(rt_child_shared), create);
}

static inline int rt_child_block(void *arg, dctx *ctx, const void *req, size_t len,
                                 dctx_rpc_reply *reply)
{
    (void)ctx;
    (void)req;
    (void)len;
    (void)reply;
    rt_child_shared *sh = arg;
    atomic_fetch_add(&sh->block_runs, 1);
    for (;;)
        pause();
    return DCTX_OK;
}

static inline int rt_child_ping(void *arg, dctx *ctx, const void *req, size_t len,
                                dctx_rpc_reply *reply)
{
    (void)ctx;
    (void)req;
    (void)len;
    (void)reply;
    rt_child_shared *sh = arg;
    atomic_fetch_add(&sh->pings, 1);
    return DCTX_OK;
}

/* Call first thing in main: returns -1 in a normal run; in a child, serves
 * until killed. */
static inline int rt_child_main(int argc, char **argv)
{
    if (argc != 4 || strcmp(argv[1], "--rt-child-server") != 0)
        return -1;
    alarm(120);
    rt_child_shared *sh = rt_child_shared_map(argv[3], false);
    if (sh == NULL)
        _exit(2);
    dctx_rpc_server *s = NULL;
    if (dctx_rpc_server_open(NULL, &s) != 0 ||
        dctx_rpc_server_register(s, "/rt.Child/Block", rt_child_block, sh) != 0 ||
        dctx_rpc_server_register(s, "/rt.Child/Ping", rt_child_ping, sh) != 0) {
        atomic_store(&sh->failed, 1);
        _exit(3);
    }
    if (dctx_rpc_server_listen(s, argv[2]) != 0 || dctx_rpc_server_start(s) != 0) {
        atomic_store(&sh->failed, 1);
        _exit(4);
    }
    atomic_store(&sh->ready, 1);
    for (;;)
        pause();
}

/* Run this program again in a child: argv[1..] are args (NULL-ended).
 * The child dies with us; the teardown kills it if the test does not. */
static inline pid_t rt_spawn_self(const char *const *args)
{
    const char *argv[8] = {"test-child"};
    size_t n = 1;
    for (; args[n - 1] != NULL && n < 7; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        execv("/proc/self/exe", (char *const *)argv);
        _exit(127);
    }
    RT_TRACK(children, pid);
    return pid;
}

/* Start a child server on url; false if it could not listen there (the
 * port is taken). Waits until it serves. */
static inline bool rt_child_start(const char *url, const char *shared_path, rt_child_shared *sh,
                                  pid_t *out)
{
    atomic_store(&sh->ready, 0);
    atomic_store(&sh->failed, 0);
    const char *args[] = {"--rt-child-server", url, shared_path, NULL};
    pid_t pid = rt_spawn_self(args);
    bool up = RT_WAIT_FOR(atomic_load(&sh->ready) || atomic_load(&sh->failed) ||
                              waitpid(pid, NULL, WNOHANG) == pid,
                          SEC(30));
    if (!up || !atomic_load(&sh->ready)) {
        rt_child_kill(pid);
        return false;
    }
    *out = pid;
    return true;
}

#endif /* DCTX_RPC_TESTUTIL_H */
