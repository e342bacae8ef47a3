/*
 * rpc_testutil.h - the support library of the RPC integration tests
 * (dctx_rpc_testutil, built once from rpc_testutil*.c): a program's
 * addresses on inproc, ipc and tcp; servers, channels and contexts that a
 * teardown closes even when a test fails half way; handlers that record
 * what they saw; the protobuf-c Echo service; raw client sessions on
 * nng byte streams that speak dctx frames, well or badly; a relay that
 * holds frames so a test can order them; and a server in a re-executed
 * child of the program, to kill.
 *
 * Handlers run on library threads: they never call cmocka's assert_*
 * (that longjmps on the test's thread); they record, and the test checks.
 * What handlers and callbacks write (probes, outcomes, recorders) must be
 * static, never on a test's stack: a failing test leaves before the
 * teardown has ended its calls.
 */
#ifndef DCTX_RPC_TESTUTIL_H
#define DCTX_RPC_TESTUTIL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include <nng/nng.h>
#include <protobuf-c/protobuf-c.h>

#include <dctx/rpc.h>
#include <dctx/stream.h>

#include "dctx.pb-c.h"
#include "testutil.h"

/* ===== The program =====
 *
 * Each test program has its own block of RT_PORT_SPAN tcp ports, so that
 * programs run side by side (ctest -j) never listen on the same port; ipc
 * sockets live in a directory of the program's own, inproc names carry
 * its pid. */

enum { RT_PORT_SPAN = 1000 };
enum rt_port_base {
    RT_PORTS_CALLS = 21000,
    RT_PORTS_CANCEL = 22000,
    RT_PORTS_DEADLINES = 23000,
    RT_PORTS_VALUES = 24000,
    RT_PORTS_LIMITS = 25000,
    RT_PORTS_PEERS = 26000,
    RT_PORTS_LOAD = 27000,
    RT_PORTS_LIFECYCLE = 28000,
    RT_PORTS_KEYS = 30000,
    RT_PORTS_STREAMS = 32000,
    RT_PORTS_STREAMS_ASYNC = 33000,
    RT_PORTS_STREAM_FRAMES = 34000,
    RT_PORTS_GRPC = 35000,
    RT_PORTS_LOCAL = 36000
};

/* rt_init names the program (for its ipc directory and inproc names) and
 * its port block; call it first thing in main. It also unbuffers stdout
 * (a hang still shows where it happened) and applies RT_TEST_FILTER=glob,
 * which runs only the matching tests. */
void rt_init(const char *program, enum rt_port_base ports);

/* A test of the program: runs with rt_teardown after it. */
#define RT_TEST(f) cmocka_unit_test_teardown(f, rt_teardown)

/* A cmocka group setup: registers rt_key_tenant and rt_key_trace. */
int rt_group_setup(void **state);

/* Keys. The process-wide registry files values received under a name as
 * the key registered for it. tenant and trace are registered by
 * rt_group_setup; secret is never propagated; pass is registered only by
 * a hop with register_pass set, in the middle of its call (struct rt_hop). */
extern const dctx_key rt_key_tenant, rt_key_trace, rt_key_secret, rt_key_pass;

/* ===== Time, waiting, randomness ===== */

/* Sleep ns nanoseconds (nothing for ns <= 0), resuming after signals. */
void rt_sleep(int64_t ns);

/* 64 random bits from the kernel (the clock and pid if it has none). */
uint64_t rt_random64(void);

/* The next value of a small deterministic generator (xorshift64*) whose
 * state is *s (not 0): for shuffles and garbage a run can repeat. */
uint64_t rt_next(uint64_t *s);

/* ===== Addresses and paths ===== */

enum rt_transport { RT_INPROC, RT_IPC, RT_TCP };

static inline const char *rt_transport_name(enum rt_transport t)
{
    return t == RT_INPROC ? "inproc" : t == RT_IPC ? "ipc" : "tcp";
}

/* The program's scratch directory for ipc sockets and shared files,
 * made on first use and removed at exit. */
const char *rt_tmpdir(void);

/* A fresh address of transport t into buf: an inproc name, an ipc socket
 * in rt_tmpdir(), or a loopback tcp port of the program's block (the
 * block is walked from a random start; a port found taken is skipped by
 * whoever listens, as rt_server_listen does). */
void rt_url(enum rt_transport t, char *buf, size_t len);

/* A fresh path "<rt_tmpdir()>/<name>-<n>" into buf, for a shared file. */
void rt_path(const char *name, char *buf, size_t len);

/* ===== Tracked resources =====
 *
 * Everything a test opens through these helpers is recorded, and
 * rt_teardown (a cmocka teardown) closes what the test did not: raw
 * sessions, relays and channels first (so handlers blocked on them wake),
 * then servers, then child processes, then call handles and contexts. A failing test so
 * leaves nothing running, and LeakSanitizer reports only real leaks. */

/* Track c (a context the test holds); returns c. */
dctx *rt_track_ctx(dctx *c);
/* Untrack and release c. */
void rt_ctx_release(dctx *c);
/* Untrack and release a handle from rt_start. */
void rt_handle_release(dctx_rpc_handle *h);
/* Track a server the test opened itself; rt_untrack_server hands the
 * closing back to the test (another thread closes it, say). */
void rt_track_server(dctx_rpc_server *s);
void rt_untrack_server(dctx_rpc_server *s);
/* Hand the closing of a tracked channel back to the test. */
void rt_untrack_channel(dctx_rpc_channel *ch);
/* The library's own trackings, for rt_raw_open, rt_relay_open, their
 * closes and rt_spawn_self. */
typedef struct rt_raw rt_raw;
typedef struct rt_relay rt_relay;
void rt_track_raw(rt_raw *r);
void rt_untrack_raw(rt_raw *r);
void rt_track_relay(rt_relay *r);
void rt_untrack_relay(rt_relay *r);
void rt_track_child(pid_t pid);
/* Forget a child process the test reaped itself. */
void rt_untrack_child(pid_t pid);
/* Untrack, SIGKILL and reap a child process. */
void rt_child_kill(pid_t pid);

/* Cancels pushed by ch whose answer has not come back yet. */
uint64_t rt_acks_pending(dctx_rpc_channel *ch);

/* Let the traffic of a test die down before closing (5 s at most):
 * servers with no calls in flight, channels with no cancel awaiting its
 * answer, then 20 ms for replies already on their way. A channel closed
 * while a reply arrives can hang for good with nng 1.5.2 (see
 * test_rpc_lifecycle.c), and with it every later close in the process;
 * this keeps that one bug from stopping a whole program. */
void rt_quiesce(void);

/* The cmocka teardown of every test: rt_quiesce, then closes and releases
 * all that is still tracked. Returns 0. */
int rt_teardown(void **state);

/* ===== Servers, channels, contexts ===== */

/* A method: unary (fn) or, with stream_fn set instead, a stream. */
struct rt_method {
    const char *name;
    dctx_rpc_handler_fn fn;
    void *arg;
    dctx_rpc_stream_handler_fn stream_fn;
};

/* Listen s on a fresh address of transport t (tcp: skipping ports found
 * taken, 50 tries); the address goes to url. Fails the test otherwise. */
void rt_server_listen(dctx_rpc_server *s, enum rt_transport t, char *url, size_t url_len);

/* A started, tracked server with n methods, listening on a fresh address
 * of t (into url). opts NULL: defaults. */
dctx_rpc_server *rt_server_open(enum rt_transport t, const dctx_rpc_server_options *opts,
                                const struct rt_method *methods, size_t n, char *url,
                                size_t url_len);

/* rt_server_open with one method; url has room for 256 bytes. */
dctx_rpc_server *rt_serve(enum rt_transport t, const dctx_rpc_server_options *opts,
                          const char *method, dctx_rpc_handler_fn fn, void *arg, char *url);

/* Default server options with the given number of workers. */
dctx_rpc_server_options rt_server_options(int workers);

/* Untrack and close s; returns what dctx_rpc_server_close returned. */
int rt_server_close(dctx_rpc_server *s);

dctx_rpc_server_stats rt_server_stats(dctx_rpc_server *s);

/* A tracked channel to url (opts NULL: defaults); rt_channel_close
 * untracks and closes it. */
dctx_rpc_channel *rt_channel_open(const char *url, const dctx_rpc_channel_options *opts);
void rt_channel_close(dctx_rpc_channel *ch);

dctx_rpc_channel_stats rt_channel_stats(dctx_rpc_channel *ch);

/* Tracked contexts: a cancelable child of background, one with a
 * timeout of ns, and a child of parent with key set to the string s (its
 * NUL included). rt_with_value takes over the test's reference to
 * parent (the child holds it); release the child with rt_ctx_release. */
dctx *rt_with_cancel(void);
dctx *rt_with_timeout(int64_t ns);
dctx *rt_with_value(dctx *parent, const dctx_key *key, const char *s);

/* ===== Checks ===== */

#define assert_contains(hay, needle)                                                               \
    do {                                                                                           \
        const char *h_ = (hay), *n_ = (needle);                                                    \
        if (h_ == NULL || strstr(h_, n_) == NULL)                                                  \
            fail_msg("\"%s\" does not contain \"%s\"", h_ ? h_ : "(null)", n_);                    \
    } while (0)

/* lo <= v <= hi, in ns, reported in ms */
#define assert_ns_in(v, lo, hi)                                                                    \
    do {                                                                                           \
        int64_t v_ = (v), lo_ = (lo), hi_ = (hi);                                                  \
        if (v_ < lo_ || v_ > hi_)                                                                  \
            fail_msg("%s = %.3f ms, expected %.3f..%.3f ms", #v, v_ / 1e6, lo_ / 1e6, hi_ / 1e6);  \
    } while (0)

/* Whether the n bytes at s are whole, well-formed UTF-8 sequences (by
 * their lead and continuation bytes). */
bool rt_utf8_valid(const char *s, size_t n);

/* ===== Handlers ===== */

/* Echo: the request is the response. */
int rt_echo_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply);

/* A stream handler: every message back as it comes, until the client
 * half-closes (OK) or the stream's context ends (its error). */
int rt_echo_stream_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply);

/* A stream handler: the first message is N; sends "1" .. "N", then OK
 * (or the error a send returned, saying where). */
int rt_count_stream_handler(void *arg, dctx *ctx, dctx_rpc_stream *st, dctx_rpc_reply *reply);

/* Status: answers with the code in the request's first byte (0xff: 99,
 * out of range) and the rest as the status message; sets a 17-byte
 * payload that only an OK answer may carry. An empty request is
 * DCTX_INVALID_ARGUMENT. arg unused. */
int rt_status_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply);

enum rt_probe_mode {
    RT_PROBE_RETURN,   /* return at once */
    RT_PROBE_WAIT_CTX, /* wait on the context, at most wait_ns */
    RT_PROBE_SLEEP,    /* sleep wait_ns, ignoring the context */
    RT_PROBE_HOLD      /* ignore the context until the test sets release (at most wait_ns) */
};

/* What a handler saw. The test sets mode, wait_ns and code before the
 * call (rt_probe_init); the handler writes the rest and then raises
 * started / finished (whose loads order the plain fields for the test),
 * and touches nothing after finished. */
typedef struct rt_probe {
    enum rt_probe_mode mode;
    int64_t wait_ns;
    int code; /* returned when the context is still live at the end */

    atomic_int runs, started, finished, release;
    int64_t entered_ns, returned_ns, deadline_ns;
    bool had_deadline;
    int err, cause;
    bool has_cause_msg;
    size_t cause_msg_len; /* strlen of the cause's message as the handler saw it */
    char cause_msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
} rt_probe;

/* Clear p and set its mode, wait and code (DCTX_OK). */
void rt_probe_init(rt_probe *p, enum rt_probe_mode mode, int64_t wait_ns);

/* Run probe p in a handler with ctx; returns the context's cause once it
 * is done, else the probe's code. */
int rt_probe_run(rt_probe *p, dctx *ctx);

/* Handler whose arg is one rt_probe. */
int rt_probe_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply);

/* Handler whose arg is an array of probes, picked by the request's first
 * byte (so a test can tell its calls apart). */
int rt_probes_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply);

/* What rt_values_handler saw of the four keys and the deadline. */
struct rt_seen_values {
    atomic_int done;
    bool tenant, trace, secret, pass, had_deadline;
    char tenant_v[64], trace_v[64], pass_v[64];
    int64_t deadline_ns, entered_ns;
};

/* Handler whose arg is a struct rt_seen_values: records, answers OK. */
int rt_values_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply);

/* A hop: a handler that calls next_method on next with the context it
 * was given and the request, and answers with that call's code and
 * message. */
struct rt_hop {
    dctx_rpc_channel *next;
    const char *next_method;
    bool register_pass; /* register rt_key_pass between rebuilding and calling on */
    int register_rc;
    int onward_rc;
    char onward_msg[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
    /* what this hop saw */
    atomic_int done;
    bool has_tenant, has_secret, has_pass, had_deadline;
    int64_t deadline_ns, entered_ns;
};

/* Handler whose arg is a struct rt_hop. */
int rt_hop_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply);

/* The protobuf-c service dctx.itest.Echo (echo.proto, echo.pb-c.h), to
 * register with dctx_rpc_server_register_service: Echo answers with the
 * text and what it saw of its context (deadline, budget, rt_key_tenant);
 * Fail fails with the request's code and message. Static; never freed. */
ProtobufCService *rt_echo_service(void);

/* ===== Calls ===== */

/* Where a completion callback puts what it got (static storage, as for
 * probes). */
typedef struct rt_outcome {
    atomic_int callbacks;
    int code;
    int cancel_outcome;
    int64_t ended_ns;
    char message[DCTX_WIRE_MESSAGE_BYTES_MAX + 1];
    size_t payload_len;
    unsigned char payload[64]; /* its first bytes */
    pthread_t thread;          /* the callback's */
} rt_outcome;

/* A completion callback whose arg is an rt_outcome. */
void rt_outcome_done(void *arg, const dctx_rpc_result *res);

/* Start an asynchronous call that reports into o (cleared first);
 * returns its handle, tracked: release with rt_handle_release. */
dctx_rpc_handle *rt_start(dctx_rpc_channel *ch, dctx *ctx, const char *method, const void *req,
                          size_t len, rt_outcome *o);

/* Wait (at most timeout_ns) for a call to end; its callback has then run. */
void rt_finish(dctx_rpc_handle *h, int64_t timeout_ns);

/* A blocking call with no request, made on a thread of its own:
 * rt_thread_call_main (a pthread start routine) fills rc, res (to free
 * with dctx_rpc_result_free) and returned_ns. */
struct rt_thread_call {
    dctx_rpc_channel *ch;
    dctx *ctx;
    const char *method;
    int rc;
    dctx_rpc_result res;
    int64_t returned_ns;
};

void *rt_thread_call_main(void *arg);

/* ===== Raw frames ===== */

/* A fresh random cancel token. */
void rt_token(uint8_t token[DCTX_TOKEN_BYTES]);

/* Pack a frame into a new buffer of *len bytes (free with free). */
uint8_t *rt_pack(const Dctx__Wire__Frame *f, size_t *len);

/* A Call frame for call_id (0: none, a protocol error), packed. budget_us
 * 0: no deadline. */
uint8_t *rt_pack_call(uint32_t call_id, const char *method, const uint8_t token[DCTX_TOKEN_BYTES],
                      uint64_t budget_us, const void *payload, size_t payload_len, size_t *len);

/* A Cancel frame for call_id, naming the call's token, packed. */
uint8_t *rt_pack_cancel(uint32_t call_id, const uint8_t token[DCTX_TOKEN_BYTES], int code,
                        const char *msg, uint64_t budget_us, size_t *len);

/* A Reply frame for call_id with code and no payload, packed. */
uint8_t *rt_pack_reply(uint32_t call_id, int code, size_t *len);

/* A Ping frame carrying data, packed. */
uint8_t *rt_pack_ping(uint64_t data, size_t *len);
/* A GoAway with code and message. */
uint8_t *rt_pack_goaway(uint32_t code, const char *message, size_t *len);

/* Streams (PROTOCOL.md section 10), packed; call_id 0: none, a protocol
 * error. rt_pack_stream_call: a Call with stream set and no payload.
 * rt_pack_stream_message: one message of len bytes. rt_pack_half_close:
 * the client's last message went. rt_pack_credit: room for messages and
 * bytes more (0: the field left out). */
uint8_t *rt_pack_stream_call(uint32_t call_id, const char *method,
                             const uint8_t token[DCTX_TOKEN_BYTES], uint64_t budget_us,
                             size_t *len);
uint8_t *rt_pack_stream_message(uint32_t call_id, const void *payload, size_t payload_len,
                                size_t *len);
uint8_t *rt_pack_half_close(uint32_t call_id, size_t *len);
uint8_t *rt_pack_credit(uint32_t call_id, uint32_t messages, uint32_t bytes, size_t *len);

/* The name of a frame's kind ("call", "goaway", ...), for messages. */
const char *rt_frame_kind(const Dctx__Wire__Frame *f);

/* ===== Raw sessions =====
 *
 * A test's own client end of the session protocol (proto/PROTOCOL.md) on
 * an nng byte stream: it writes the frames it chooses, well formed or not,
 * and reads the server's one at a time. Every wait is bounded: 2 s for a
 * frame, 5 s for a connection. */

/* A tracked session with the server at url (an inproc://, ipc:// or
 * tcp:// dctx URL), dialed (retried for 5 s while the server comes up);
 * the client's hello (version 1, max_frame_bytes 4 MiB + 4 KiB) is sent
 * and the server's read: a first frame that is not a hello fails the test. */
rt_raw *rt_raw_open(const char *url);

/* The same, without the hellos: the test writes the first frame. */
rt_raw *rt_raw_dial(const char *url);
/* A raw server, for a channel to dial: rt_raw_listen listens on url
 * (nng_stream_listener_free it at the end); rt_raw_accept waits (5 s) for
 * one connection, reads the client's hello and answers with a hello. */
nng_stream_listener *rt_raw_listen(const char *url);
rt_raw *rt_raw_accept(nng_stream_listener *l);
/* The same, but the client's hello goes unanswered: the test answers. */
rt_raw *rt_raw_accept_bare(nng_stream_listener *l);

/* What the server's hello said (rt_raw_open). */
uint32_t rt_raw_peer_max_frame_bytes(const rt_raw *r);
uint32_t rt_raw_peer_max_calls(const rt_raw *r);

/* Untrack and close r (NULL is fine). */
void rt_raw_close(rt_raw *r);

/* Write one frame, its header then the len bytes of buf, and free buf. */
void rt_raw_send(rt_raw *r, uint8_t *buf, size_t len);

/* rt_raw_write_frame is rt_raw_send that returns nng's error (0: sent)
 * instead of failing the test: for a peer the server may have closed. */
int rt_raw_write_frame(rt_raw *r, uint8_t *buf, size_t len);

/* Write n bytes as they are (no header added): 0, or nng's error (not in
 * timeout_ms, say). Never fails the test: for a peer that writes until
 * the server stops reading it, from any thread. */
int rt_raw_write(rt_raw *r, const void *bytes, size_t n, int timeout_ms);

/* The next frame (2 s at most): NULL if none came or the stream ended. A
 * Ping is answered with its Pong and not returned (a peer must; the tests
 * look at calls). Bytes that do not parse fail the test. Free with
 * dctx__wire__frame__free_unpacked. */
Dctx__Wire__Frame *rt_raw_recv_frame(rt_raw *r);

/* The next frame, which must be a Reply: its code, its call id into
 * *call_id and its message into msg (each if not NULL). -1 if no frame
 * came (2 s) or the stream ended; a frame of another kind fails the test,
 * naming it. */
int rt_raw_recv_reply(rt_raw *r, uint32_t *call_id, char *msg, size_t msg_len);

/* The next frame, which must be a CancelAck: its outcome, its call id into
 * *call_id; -1 or a failed test as rt_raw_recv_reply. */
int rt_raw_recv_cancel_ack(rt_raw *r, uint32_t *call_id);

/* The next frame, which must be a GoAway: its code, its message into msg;
 * -1 or a failed test as rt_raw_recv_reply. */
int rt_raw_recv_goaway(rt_raw *r, char *msg, size_t msg_len);

/* True if the server closed the stream with nothing more to read (2 s at
 * most); false if bytes came or it stayed open. */
bool rt_raw_closed(rt_raw *r);

/* ===== A relay: a channel talks to it, it talks to the server =====
 *
 * A man in the middle of one session. It listens at url (an ipc address)
 * for the channel; a thread of its own accepts the channel's stream (a
 * channel dials when it is opened, and sends no call before the hellos),
 * dials the server's and passes the hellos both ways. From then on the
 * test moves each frame itself: takes the channel's next frame and
 * forwards it to the server, takes the server's next and answers it to
 * the channel, when and in the order it chooses: a network hop whose
 * delays and reorderings the test decides. Pings and pongs go through at
 * once, by themselves. Each operation first waits (5 s at most) for the
 * hellos to have passed, and fails the test if they could not. A side's
 * reads and writes may come from different threads. Every wait is
 * bounded (5 s). */

/* A frame as it came: its body's bytes, passed on unchanged, and the body
 * unpacked (NULL if it does not parse), for the test to look at. */
typedef struct rt_frame {
    uint8_t *body;
    size_t len;
    Dctx__Wire__Frame *f;
} rt_frame;

void rt_frame_free(rt_frame *fr);

struct rt_relay {
    char url[256]; /* where channels dial it */
    struct rt_relay_impl *impl;
};

/* A tracked relay in front of the server at server_url. */
rt_relay *rt_relay_open(const char *server_url);

/* Untrack and close r: both streams end. */
void rt_relay_close(rt_relay *r);

/* The channel's next frame (NULL: none in 5 s, or its stream ended). */
rt_frame *rt_relay_from_channel(rt_relay *r);

/* Send fr (taken over) to the server. */
void rt_relay_to_server(rt_relay *r, rt_frame *fr);

/* The server's next frame (NULL: none in 5 s, or its stream ended). */
rt_frame *rt_relay_from_server(rt_relay *r);

/* Send fr (taken over) to the channel. */
void rt_relay_to_channel(rt_relay *r, rt_frame *fr);

/* ===== A server in a child process =====
 *
 * The test program re-executes itself (fork, then exec of /proc/self/exe:
 * nng and dctx keep threads that a bare fork would lose) with
 * "--rt-child-server URL SHARED": the child serves
 *   /rt.Child/Block  counts its run in the shared file, then sleeps forever,
 *                    ignoring its context (a handler that never answers);
 *   /rt.Child/Ping   counts, answers OK at once.
 * It dies with its parent (PR_SET_PDEATHSIG) and after 120 s at most.
 * Every program that starts one calls rt_child_main first thing in main. */

typedef struct rt_child_shared {
    atomic_int ready, failed, block_runs, pings;
} rt_child_shared;

/* size bytes of the file at path, mapped shared with a child (created and
 * zeroed if create); NULL on failure. Unmap with munmap. */
void *rt_shared_map(const char *path, size_t size, bool create);

/* In a re-executed child (argv says so): serves until killed, never
 * returns. In a normal run: returns -1. */
int rt_child_main(int argc, char **argv);

/* Run this program again in a child with args (NULL-ended, at most 6);
 * returns its pid. The child dies with us; the teardown kills it if the
 * test does not. */
pid_t rt_spawn_self(const char *const *args);

/* Start a child server on url with the shared file at shared_path (sh,
 * mapped); waits (30 s at most) until it serves. false if it could not
 * (the port is taken, say); else *out is its pid. */
bool rt_child_start(const char *url, const char *shared_path, rt_child_shared *sh, pid_t *out);

/* A child server on a fresh tcp address (into url, 256 bytes), with a new
 * shared file (its path into shared_path, 256 bytes; mapped into *sh, to
 * munmap). Returns its pid; fails the test after 20 tries. */
pid_t rt_child_server(char *url, char *shared_path, rt_child_shared **sh);

#endif /* DCTX_RPC_TESTUTIL_H */
