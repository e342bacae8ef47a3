/*
 * test_rpc_keys.c - connections with keys (SECURITY.md; PROTOCOL.md
 * section 9) over real sockets: calls between identities, the caller's key
 * in the handler's context, every way a handshake is refused (no keys, a
 * server with another key or none), the allow list and the authorize hook
 * (PERMISSION_DENIED, counted, reported at most once per peer per second),
 * cancels honoured only from the caller's identity, frames that cross the
 * wire sealed (no payload, value or method in the clear), and recorded
 * frames replayed, duplicated or altered on the way: each refused, the
 * handler never run twice.
 *
 * Callers of its own (a keyed session on the library's session layer) let
 * a test send a Cancel from another identity; a tcp proxy of its own sits
 * between a channel and a server to record, duplicate or alter frames.
 */
#define _GNU_SOURCE /* memmem */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <nng/nng.h>

#include <dctx/identity.h>
#include <dctx/stream.h>

#include "frame.h"
#include "framing.h"
#include "handshake.h"
#include "rpc_testutil.h"
#include "session.h"

#define ECHO "/it.Keys/Echo"
#define OTHER "/it.Keys/Other"

/* ===== Identities ===== */

struct ident {
    dctx_identity *id;
    unsigned char pub[DCTX_PUBLIC_KEY_BYTES];
    char text[DCTX_PUBLIC_KEY_TEXT_BYTES];
};

static struct ident make_identity(const char *name)
{
    char path[512], err[256];
    struct ident i;
    rt_path(name, path, sizeof path);
    assert_int_equal(dctx_identity_generate(path, i.text, err, sizeof err), 0);
    assert_int_equal(dctx_identity_load(path, &i.id, err, sizeof err), 0);
    dctx_identity_public_key(i.id, i.pub);
    return i;
}

static dctx_rpc_channel_options keyed_channel(const struct ident *me, const struct ident *server)
{
    dctx_rpc_channel_options o;
    dctx_rpc_channel_options_init(&o);
    o.identity = me->id;
    o.server_key = server->pub;
    return o;
}

/* ===== What the handler and the hooks saw ===== */

struct seen {
    atomic_int calls;
    atomic_bool has_key;
    unsigned char key[DCTX_PUBLIC_KEY_BYTES];
};

static int caller_handler(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    struct seen *s = arg;
    unsigned char key[DCTX_PUBLIC_KEY_BYTES];
    if (dctx_rpc_caller(ctx, key)) {
        memcpy(s->key, key, sizeof key);
        atomic_store(&s->has_key, true);
    }
    atomic_fetch_add(&s->calls, 1);
    return dctx_rpc_reply_set_payload(reply, req, len);
}

struct events {
    atomic_int denied, unauthenticated;
    atomic_uint_fast64_t suppressed;
    char last_peer[128]; /* written before the count is raised */
};

static void on_event(void *arg, const dctx_rpc_event *ev)
{
    struct events *e = arg;
    if (ev->kind == DCTX_RPC_EVENT_DENIED || ev->kind == DCTX_RPC_EVENT_UNAUTHENTICATED) {
        snprintf(e->last_peer, sizeof e->last_peer, "%s", ev->peer != NULL ? ev->peer : "");
        atomic_fetch_add(&e->suppressed, ev->suppressed);
        atomic_fetch_add(ev->kind == DCTX_RPC_EVENT_DENIED ? &e->denied : &e->unauthenticated, 1);
    }
}

static dctx_rpc_server *keyed_server(enum rt_transport t, dctx_rpc_server_options *o,
                                     struct seen *seen, char *url)
{
    struct rt_method m[] = {{ECHO, caller_handler, seen, NULL},
                            {OTHER, caller_handler, seen, NULL}};
    return rt_server_open(t, o, m, 2, url, 256);
}

/* keyed_server with the identity of server and nothing else set. */
static dctx_rpc_server *server_with_key(enum rt_transport t, const struct ident *server,
                                        int workers, struct seen *seen, char *url)
{
    dctx_rpc_server_options so = rt_server_options(workers);
    so.identity = server->id;
    return keyed_server(t, &so, seen, url);
}

static int call(dctx_rpc_channel *ch, const char *method, const char *req, dctx_rpc_result *res)
{
    dctx *ctx = rt_with_timeout(SEC(5));
    int rc = dctx_rpc_call_raw(ch, ctx, method, req, strlen(req), res);
    rt_ctx_release(ctx);
    return rc;
}

/* The code of a call, its message into msg. */
static int call_code(dctx_rpc_channel *ch, const char *method, char *msg, size_t len)
{
    dctx_rpc_result res;
    int code = call(ch, method, "hi", &res);
    assert_int_equal(code, res.code);
    snprintf(msg, len, "%s", res.message != NULL ? res.message : "");
    dctx_rpc_result_free(&res);
    return code;
}

/* ===== Calls with keys ===== */

/* A channel and a server that each prove their key: the call works on
 * tcp and ipc, and the handler finds the caller's key in its context. */
static void keyed_call_works_and_the_handler_knows_its_caller(void **state)
{
    (void)state;
    struct ident server = make_identity("server"), client = make_identity("client");
    enum rt_transport ts[] = {RT_TCP, RT_IPC};
    for (size_t i = 0; i < 2; i++) {
        static struct seen seen;
        memset(&seen, 0, sizeof seen);
        dctx_rpc_server_options so = rt_server_options(2);
        so.identity = server.id;
        char url[256];
        dctx_rpc_server *srv = keyed_server(ts[i], &so, &seen, url);
        dctx_rpc_channel_options co = keyed_channel(&client, &server);
        dctx_rpc_channel *ch = rt_channel_open(url, &co);
        dctx_rpc_result res;
        assert_int_equal(call(ch, ECHO, "hello with keys", &res), 0);
        assert_int_equal(res.code, DCTX_OK);
        assert_int_equal(res.payload_len, strlen("hello with keys"));
        assert_memory_equal(res.payload, "hello with keys", res.payload_len);
        dctx_rpc_result_free(&res);
        assert_true(atomic_load(&seen.has_key));
        assert_memory_equal(seen.key, client.pub, DCTX_PUBLIC_KEY_BYTES);
        assert_int_equal(rt_server_stats(srv).unauthenticated, 0);
        rt_channel_close(ch);
        rt_server_close(srv);
    }
    dctx_identity_free(client.id);
    dctx_identity_free(server.id);
}

/* Both AEADs carry calls: ChaCha20-Poly1305 when a peer cannot do
 * AES-256-GCM (here: neither may), AES-256-GCM when both can (where the
 * CPU has it); a 100 kB call each way. */
static void each_cipher_carries_calls(void **state)
{
    (void)state;
    struct ident server = make_identity("server"), client = make_identity("client");
    uint32_t masks[] = {DCTX__CIPHER_CHACHA20_POLY1305, ~0u};
    for (size_t i = 0; i < 2; i++) {
        dctx__test_ciphers(masks[i]);
        static struct seen seen;
        memset(&seen, 0, sizeof seen);
        char url[256];
        dctx_rpc_server *srv = server_with_key(RT_IPC, &server, 1, &seen, url);
        dctx_rpc_channel_options co = keyed_channel(&client, &server);
        dctx_rpc_channel *ch = rt_channel_open(url, &co);
        char big[100000];
        memset(big, 'x', sizeof big - 1);
        big[sizeof big - 1] = '\0';
        dctx_rpc_result res;
        assert_int_equal(call(ch, ECHO, big, &res), DCTX_OK);
        assert_int_equal(res.payload_len, sizeof big - 1);
        dctx_rpc_result_free(&res);
        unsigned want = i == 0 || !crypto_aead_aes256gcm_is_available()
                            ? DCTX__CIPHER_CHACHA20_POLY1305
                            : DCTX__CIPHER_AES256_GCM;
        dctx_rpc_server_stats st = rt_server_stats(srv);
        assert_int_equal(st.sealed_aes256gcm, want == DCTX__CIPHER_AES256_GCM);
        assert_int_equal(st.sealed_chacha20poly1305, want == DCTX__CIPHER_CHACHA20_POLY1305);
        rt_channel_close(ch);
        rt_server_close(srv);
    }
    dctx__test_ciphers(~0u);
    dctx_identity_free(client.id);
    dctx_identity_free(server.id);
}

/* A channel without keys to a server with an identity is refused in the
 * handshake: its calls fail UNAUTHENTICATED saying the server takes only
 * peers with keys, the server counts it and reports it with the peer's
 * address. */
static void caller_without_keys_is_refused_unauthenticated(void **state)
{
    (void)state;
    struct ident server = make_identity("server");
    static struct seen seen;
    static struct events ev;
    memset(&seen, 0, sizeof seen);
    memset(&ev, 0, sizeof ev);
    dctx_rpc_server_options so = rt_server_options(1);
    so.identity = server.id;
    so.on_event = on_event;
    so.event_arg = &ev;
    char url[256], msg[256];
    dctx_rpc_server *srv = keyed_server(RT_TCP, &so, &seen, url);
    dctx_rpc_channel *ch = rt_channel_open(url, NULL);
    assert_int_equal(call_code(ch, ECHO, msg, sizeof msg), DCTX_UNAUTHENTICATED);
    assert_contains(msg, "admits only peers with keys");
    assert_int_equal(atomic_load(&seen.calls), 0);
    assert_true(WAIT_FOR(rt_server_stats(srv).unauthenticated >= 1, SEC(5)));
    assert_true(WAIT_FOR(atomic_load(&ev.unauthenticated) >= 1, SEC(5)));
    assert_contains(ev.last_peer, "127.0.0.1:");
    rt_channel_close(ch);
    rt_server_close(srv);
    dctx_identity_free(server.id);
}

/* A keyed channel takes nothing unproven from the server: a GoAway in the
 * clear before any hello (anyone on the path could send it) ends the
 * connection UNAVAILABLE, its words shown as unauthenticated, and does
 * not put the channel into the fast failure a refused handshake does. */
static void keyed_client_takes_a_clear_goaway_as_unavailable(void **state)
{
    (void)state;
    struct ident server = make_identity("server"), client = make_identity("client");
    char url[256], msg[256];
    rt_url(RT_IPC, url, sizeof url);
    nng_stream_listener *l = rt_raw_listen(url);
    dctx_rpc_channel_options co = keyed_channel(&client, &server);
    co.connect_wait_ns = MS(300);
    dctx_rpc_channel *ch = rt_channel_open(url, &co);
    rt_raw *raw = rt_raw_accept_bare(l); /* the channel's hello, unanswered */
    size_t len;
    uint8_t *goaway = rt_pack_goaway(DCTX_UNAUTHENTICATED, "keys refused here", &len);
    rt_raw_send(raw, goaway, len);
    assert_int_equal(call_code(ch, ECHO, msg, sizeof msg), DCTX_UNAVAILABLE);
    assert_contains(msg, "(an unauthenticated goaway): keys refused here");
    rt_raw_close(raw);
    rt_channel_close(ch);
    nng_stream_listener_free(l);
    dctx_identity_free(client.id);
    dctx_identity_free(server.id);
}

/* A channel that expects another server key, or a server without one, is
 * refused by the channel: UNAUTHENTICATED naming the key the server
 * proved (or that it proved none); nothing runs. */
static void server_with_another_key_or_none_is_refused(void **state)
{
    (void)state;
    struct ident server = make_identity("server"), impostor = make_identity("impostor"),
                 client = make_identity("client");
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    char url[256], msg[256];

    dctx_rpc_server_options so = rt_server_options(1);
    so.identity = impostor.id;
    dctx_rpc_server *srv = keyed_server(RT_TCP, &so, &seen, url);
    dctx_rpc_channel_options co = keyed_channel(&client, &server);
    dctx_rpc_channel *ch = rt_channel_open(url, &co);
    assert_int_equal(call_code(ch, ECHO, msg, sizeof msg), DCTX_UNAUTHENTICATED);
    assert_contains(msg, impostor.text);
    assert_contains(msg, "not the key expected");
    /* and again, at once: the refusal stands until a handshake succeeds */
    assert_int_equal(call_code(ch, ECHO, msg, sizeof msg), DCTX_UNAUTHENTICATED);
    /* the channel closed without a word in the clear: the server, which
     * awaited a sealed proof, saw a peer leave, not a forged frame */
    assert_true(WAIT_FOR(rt_server_stats(srv).peers_lost >= 2, SEC(5)));
    assert_int_equal(rt_server_stats(srv).unauthenticated, 0);
    assert_int_equal(rt_server_stats(srv).bad_frames, 0);
    rt_channel_close(ch);
    rt_server_close(srv);

    srv = keyed_server(RT_IPC, NULL, &seen, url); /* no keys at all */
    ch = rt_channel_open(url, &co);
    assert_int_equal(call_code(ch, ECHO, msg, sizeof msg), DCTX_UNAUTHENTICATED);
    assert_contains(msg, "proved no identity");
    assert_int_equal(atomic_load(&seen.calls), 0);
    rt_channel_close(ch);
    rt_server_close(srv);

    /* half the keys is a mistake, said at once */
    co.server_key = NULL;
    dctx_rpc_channel *bad = NULL;
    assert_int_equal(dctx_rpc_channel_open(url, &co, &bad), DCTX_INVALID_ARGUMENT);
    assert_null(bad);
    dctx_identity_free(client.id);
    dctx_identity_free(impostor.id);
    dctx_identity_free(server.id);
}

/* ===== Who may call what ===== */

/* The allow list: a key listed alone calls everything, a key listed with
 * a method calls only it, an unlisted key nothing: PERMISSION_DENIED with
 * a message that says which, counted; 20 refusals in a row of one peer
 * are reported at most once per second, the rest counted as suppressed. */
static void allow_list_decides_who_calls_what(void **state)
{
    (void)state;
    struct ident server = make_identity("server"), all = make_identity("all"),
                 echo_only = make_identity("echo"), stranger = make_identity("stranger");
    char text[512], err[256];
    snprintf(text, sizeof text, "# test\n%s\n%s " ECHO "\n", all.text, echo_only.text);
    dctx_allow *allow = NULL;
    assert_int_equal(dctx_allow_parse(text, strlen(text), &allow, err, sizeof err), 0);
    static struct seen seen;
    static struct events ev;
    memset(&seen, 0, sizeof seen);
    memset(&ev, 0, sizeof ev);
    dctx_rpc_server_options so = rt_server_options(2);
    so.identity = server.id;
    so.allow = allow;
    so.on_event = on_event;
    so.event_arg = &ev;
    char url[256], msg[256];
    dctx_rpc_server *srv = keyed_server(RT_TCP, &so, &seen, url);

    dctx_rpc_channel_options co = keyed_channel(&all, &server);
    dctx_rpc_channel *ch_all = rt_channel_open(url, &co);
    co = keyed_channel(&echo_only, &server);
    dctx_rpc_channel *ch_echo = rt_channel_open(url, &co);
    co = keyed_channel(&stranger, &server);
    dctx_rpc_channel *ch_stranger = rt_channel_open(url, &co);

    assert_int_equal(call_code(ch_all, ECHO, msg, sizeof msg), DCTX_OK);
    assert_int_equal(call_code(ch_all, OTHER, msg, sizeof msg), DCTX_OK);
    assert_int_equal(call_code(ch_echo, ECHO, msg, sizeof msg), DCTX_OK);
    assert_int_equal(call_code(ch_echo, OTHER, msg, sizeof msg), DCTX_PERMISSION_DENIED);
    assert_contains(msg, echo_only.text);
    assert_contains(msg, "may not call " OTHER);
    assert_int_equal(call_code(ch_stranger, "/it.Keys/Missing", msg, sizeof msg),
                     DCTX_PERMISSION_DENIED); /* refused before the method is looked up */
    assert_contains(msg, "is not on the server's allow list");
    assert_int_equal(atomic_load(&seen.calls), 3);
    assert_int_equal(rt_server_stats(srv).denied, 2);

    int64_t t0 = dctx_now();
    for (int i = 0; i < 20; i++)
        assert_int_equal(call_code(ch_stranger, ECHO, msg, sizeof msg), DCTX_PERMISSION_DENIED);
    int64_t seconds = (dctx_now() - t0) / SEC(1);
    assert_int_equal(rt_server_stats(srv).denied, 22);
    int reported = atomic_load(&ev.denied);
    /* one for echo_only, then the stranger's 21 at most once per second */
    assert_in_range(reported, 2, 3 + seconds);
    /* a second later the stranger's next refusal is reported with how many
     * were left out: every refusal is reported or counted in one */
    rt_sleep(MS(1100));
    assert_int_equal(call_code(ch_stranger, ECHO, msg, sizeof msg), DCTX_PERMISSION_DENIED);
    assert_true(WAIT_FOR(atomic_load(&ev.denied) == reported + 1, SEC(5)));
    assert_int_equal(atomic_load(&ev.denied) + (int)atomic_load(&ev.suppressed), 23);
    assert_int_equal(rt_server_stats(srv).denied, 23);
    assert_string_equal(ev.last_peer, stranger.text);
    rt_channel_close(ch_stranger);
    rt_channel_close(ch_echo);
    rt_channel_close(ch_all);
    rt_server_close(srv);
    dctx_allow_free(allow);
    dctx_identity_free(stranger.id);
    dctx_identity_free(echo_only.id);
    dctx_identity_free(all.id);
    dctx_identity_free(server.id);
}

struct hook_seen {
    atomic_int calls;
    bool had_key;
    unsigned char key[DCTX_PUBLIC_KEY_BYTES];
};

static int refuse_other(void *arg, const unsigned char *caller_key, const char *method, char *why,
                        size_t why_len)
{
    struct hook_seen *h = arg;
    h->had_key = caller_key != NULL;
    if (caller_key != NULL)
        memcpy(h->key, caller_key, DCTX_PUBLIC_KEY_BYTES);
    atomic_fetch_add(&h->calls, 1);
    if (strcmp(method, OTHER) != 0)
        return DCTX_OK;
    snprintf(why, why_len, "not today");
    return DCTX_FAILED_PRECONDITION;
}

/* The authorize hook decides per call with the caller's key and the
 * method; its code and message reach the caller. Without keys it is
 * called with no key. */
static void authorize_hook_decides_per_call(void **state)
{
    (void)state;
    struct ident server = make_identity("server"), client = make_identity("client");
    for (int keyed = 1; keyed >= 0; keyed--) {
        static struct seen seen;
        static struct hook_seen hook;
        memset(&seen, 0, sizeof seen);
        memset(&hook, 0, sizeof hook);
        dctx_rpc_server_options so = rt_server_options(1);
        so.identity = keyed ? server.id : NULL;
        so.authorize = refuse_other;
        so.authorize_arg = &hook;
        char url[256], msg[256];
        dctx_rpc_server *srv = keyed_server(RT_IPC, &so, &seen, url);
        dctx_rpc_channel_options co = keyed_channel(&client, &server);
        dctx_rpc_channel *ch = rt_channel_open(url, keyed ? &co : NULL);
        assert_int_equal(call_code(ch, ECHO, msg, sizeof msg), DCTX_OK);
        assert_int_equal(call_code(ch, OTHER, msg, sizeof msg), DCTX_FAILED_PRECONDITION);
        assert_string_equal(msg, "not today");
        assert_int_equal(atomic_load(&hook.calls), 2);
        assert_int_equal(hook.had_key, keyed);
        if (keyed)
            assert_memory_equal(hook.key, client.pub, DCTX_PUBLIC_KEY_BYTES);
        assert_int_equal(atomic_load(&seen.calls), 1);
        assert_int_equal(rt_server_stats(srv).denied, 1);
        rt_channel_close(ch);
        rt_server_close(srv);
    }
    dctx_identity_free(client.id);
    dctx_identity_free(server.id);
}

/* ===== Callers of the test's own, with keys ===== */

struct keyed {
    struct dctx__session *s;
    pthread_mutex_t mu;
    Dctx__Wire__Frame *frames[16];
    int n;
    atomic_bool ready, ended;
};

static bool keyed_frame(void *owner, struct dctx__session *s, Dctx__Wire__Frame *f)
{
    (void)s;
    struct keyed *k = owner;
    pthread_mutex_lock(&k->mu);
    bool kept = k->n < 16;
    if (kept)
        k->frames[k->n++] = f;
    pthread_mutex_unlock(&k->mu);
    return kept;
}

static void keyed_ready(void *owner, struct dctx__session *s, const struct dctx__session_peer *p)
{
    (void)s;
    (void)p;
    atomic_store(&((struct keyed *)owner)->ready, true);
}

static void keyed_end(void *owner, struct dctx__session *s, int code, const char *why)
{
    (void)s;
    (void)code;
    (void)why;
    atomic_store(&((struct keyed *)owner)->ended, true);
}

/* A session with keys to the tcp server at url, ready. */
static struct keyed *keyed_open(const char *url, const struct ident *me, const struct ident *server)
{
    struct keyed *k = calloc(1, sizeof *k);
    assert_non_null(k);
    pthread_mutex_init(&k->mu, NULL);
    nng_aio *aio;
    nng_stream_dialer *d;
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    assert_int_equal(nng_stream_dialer_alloc(&d, url), 0);
    nng_aio_set_timeout(aio, 5000);
    nng_stream_dialer_dial(d, aio);
    nng_aio_wait(aio);
    int rv = nng_aio_result(aio);
    nng_stream *st = rv == 0 ? nng_aio_get_output(aio, 0) : NULL;
    nng_stream_dialer_free(d); /* before the aio, as rpc_testutil does (tests/tsan.supp) */
    nng_aio_free(aio);
    assert_int_equal(rv, 0);
    struct dctx__session_options o = {.max_frame_bytes = 1 << 20,
                                      .identity = me->id,
                                      .server_key = server->pub,
                                      .on_ready = keyed_ready,
                                      .on_frame = keyed_frame,
                                      .on_end = keyed_end,
                                      .owner = k};
    assert_int_equal(dctx__session_open(st, &o, &k->s), 0);
    dctx__session_start(k->s);
    assert_true(WAIT_FOR(atomic_load(&k->ready), SEC(5)));
    return k;
}

/* Send a frame packed by rt_pack_* (freed). */
static void keyed_send(struct keyed *k, uint8_t *buf, size_t len)
{
    Dctx__Wire__Frame *f = dctx__wire__frame__unpack(NULL, len, buf);
    assert_non_null(f);
    assert_int_equal(dctx__session_send(k->s, f), 0);
    dctx__wire__frame__free_unpacked(f, NULL);
    free(buf);
}

/* The next frame of kind, within 5 s (others are dropped); NULL if none. */
static Dctx__Wire__Frame *keyed_next(struct keyed *k, Dctx__Wire__Frame__BodyCase kind)
{
    int64_t until = dctx_now() + SEC(5);
    while (dctx_now() < until) {
        Dctx__Wire__Frame *f = NULL;
        pthread_mutex_lock(&k->mu);
        if (k->n > 0) {
            f = k->frames[0];
            memmove(k->frames, k->frames + 1, (size_t)--k->n * sizeof k->frames[0]);
        }
        pthread_mutex_unlock(&k->mu);
        if (f != NULL && f->body_case == kind)
            return f;
        dctx__frame_free(f);
        if (f == NULL)
            rt_sleep(MS(1));
    }
    return NULL;
}

static void keyed_close(struct keyed *k)
{
    dctx__session_close(k->s);
    for (int i = 0; i < k->n; i++)
        dctx__frame_free(k->frames[i]);
    pthread_mutex_destroy(&k->mu);
    free(k);
}

/* With keys, a cancel is honoured only from the caller's identity: a
 * peer with another key that holds the call's token and id (it cannot
 * read them off the wire, but say it learned them) stops nothing and is
 * told nothing; the caller's own key on another connection (a channel
 * that reconnected) stops it, and the reply reaches the caller. */
static void cancel_is_honoured_only_from_the_callers_identity(void **state)
{
    (void)state;
    struct ident server = make_identity("server"), caller_id = make_identity("caller"),
                 thief_id = make_identity("thief");
    static rt_probe p;
    rt_probe_init(&p, RT_PROBE_WAIT_CTX, SEC(10));
    dctx_rpc_server_options so = rt_server_options(1);
    so.identity = server.id;
    char url[256];
    dctx_rpc_server *srv = rt_serve(RT_TCP, &so, "/it.Wait/Wait", rt_probe_handler, &p, url);
    struct keyed *caller = keyed_open(url, &caller_id, &server);
    struct keyed *thief = keyed_open(url, &thief_id, &server);
    uint8_t token[DCTX_TOKEN_BYTES];
    rt_token(token);
    size_t len;
    uint8_t *buf = rt_pack_call(1, "/it.Wait/Wait", token, 0, NULL, 0, &len);
    keyed_send(caller, buf, len);
    assert_true(WAIT_FOR(atomic_load(&p.started), SEC(5)));

    buf = rt_pack_cancel(1, token, DCTX_CANCELED, "stolen", 0, &len);
    keyed_send(thief, buf, len);
    Dctx__Wire__Frame *ack = keyed_next(thief, DCTX__WIRE__FRAME__BODY_CANCEL_ACK);
    assert_non_null(ack);
    assert_int_equal(ack->cancel_ack->outcome, DCTX_RPC_CANCEL_PREVENTED);
    dctx__frame_free(ack);
    rt_sleep(MS(100));
    assert_int_equal(atomic_load(&p.finished), 0); /* still running */

    struct keyed *again = keyed_open(url, &caller_id, &server);
    buf = rt_pack_cancel(1, token, DCTX_CANCELED, "mine", 0, &len);
    keyed_send(again, buf, len);
    ack = keyed_next(again, DCTX__WIRE__FRAME__BODY_CANCEL_ACK);
    assert_non_null(ack);
    assert_int_equal(ack->cancel_ack->outcome, DCTX_RPC_CANCEL_STOPPED);
    dctx__frame_free(ack);
    Dctx__Wire__Frame *reply = keyed_next(caller, DCTX__WIRE__FRAME__BODY_REPLY);
    assert_non_null(reply); /* the caller gets its call's end */
    assert_int_equal(reply->reply->code, DCTX_CANCELED);
    dctx__frame_free(reply);
    assert_true(WAIT_FOR(atomic_load(&p.finished), SEC(5)));
    assert_contains(p.cause_msg, "mine");
    keyed_close(again);
    keyed_close(thief);
    keyed_close(caller);
    rt_server_close(srv);
    dctx_identity_free(thief_id.id);
    dctx_identity_free(caller_id.id);
    dctx_identity_free(server.id);
}

/* ===== A tcp proxy that records and tampers ===== */

enum proxy_mode { PASS, DUPLICATE, FLIP };

struct proxy {
    int listen_fd, server_port;
    enum proxy_mode mode;
    int target; /* the client's frame (0: its hello) to duplicate or alter */
    pthread_t thread;
    atomic_bool stop;
    pthread_mutex_t mu;
    unsigned char *recorded; /* every byte the client sent, as it sent it */
    size_t recorded_len, recorded_cap;
};

static int tcp_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool write_all(int fd, const unsigned char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w <= 0)
            return false;
        b += w;
        n -= (size_t)w;
    }
    return true;
}

/* Read and drop what the server sends until it closes: true if it did
 * within 5 s. */
static bool server_closes(int fd)
{
    unsigned char sink[4096];
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int64_t until = dctx_now() + SEC(5);
    while (dctx_now() < until)
        if (poll(&pf, 1, 50) > 0 && read(fd, sink, sizeof sink) <= 0)
            return true;
    return false;
}

static void record(struct proxy *p, const unsigned char *b, size_t n)
{
    pthread_mutex_lock(&p->mu);
    if (p->recorded_len + n > p->recorded_cap) {
        p->recorded_cap = (p->recorded_len + n) * 2;
        p->recorded = realloc(p->recorded, p->recorded_cap);
        assert_non_null(p->recorded);
    }
    memcpy(p->recorded + p->recorded_len, b, n);
    p->recorded_len += n;
    pthread_mutex_unlock(&p->mu);
}

/* One connection: the client's bytes go on frame by frame (the target
 * frame duplicated or altered), the server's as they come. 30 s at most. */
static void *proxy_main(void *arg)
{
    struct proxy *p = arg;
    int client = accept(p->listen_fd, NULL, NULL);
    int server = client >= 0 ? tcp_connect(p->server_port) : -1;
    unsigned char pending[1 << 16], buf[1 << 14];
    size_t have = 0;
    int frame = 0;
    int64_t until = dctx_now() + SEC(30);
    while (client >= 0 && server >= 0 && !atomic_load(&p->stop) && dctx_now() < until) {
        struct pollfd fds[2] = {{.fd = client, .events = POLLIN}, {.fd = server, .events = POLLIN}};
        if (poll(fds, 2, 50) <= 0)
            continue;
        if (fds[1].revents) {
            ssize_t n = read(server, buf, sizeof buf);
            if (n <= 0 || !write_all(client, buf, (size_t)n))
                break;
        }
        if (fds[0].revents) {
            ssize_t n = read(client, pending + have, sizeof pending - have);
            if (n <= 0)
                break;
            record(p, pending + have, (size_t)n);
            have += (size_t)n;
            for (;;) { /* each whole frame */
                if (have < 4)
                    break;
                size_t body = (size_t)pending[0] << 24 | (size_t)pending[1] << 16 |
                              (size_t)pending[2] << 8 | pending[3];
                if (have < 4 + body)
                    break;
                bool target = frame++ == p->target;
                if (target && p->mode == FLIP)
                    pending[4 + body / 2] ^= 0x01;
                bool ok = write_all(server, pending, 4 + body);
                if (ok && target && p->mode == DUPLICATE)
                    ok = write_all(server, pending, 4 + body);
                if (!ok)
                    goto out;
                memmove(pending, pending + 4 + body, have - 4 - body);
                have -= 4 + body;
            }
        }
    }
out:
    if (client >= 0)
        close(client);
    if (server >= 0)
        close(server);
    return NULL;
}

/* A proxy to the server at tcp url; its own url into out. */
static struct proxy *proxy_open(const char *url, enum proxy_mode mode, int target, char *out)
{
    struct proxy *p = calloc(1, sizeof *p);
    assert_non_null(p);
    p->mode = mode;
    p->target = target;
    pthread_mutex_init(&p->mu, NULL);
    const char *colon = strrchr(url, ':');
    assert_non_null(colon);
    p->server_port = atoi(colon + 1);
    p->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(p->listen_fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(p->listen_fd, 4), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(p->listen_fd, (struct sockaddr *)&a, &alen), 0);
    snprintf(out, 256, "tcp://127.0.0.1:%u", ntohs(a.sin_port));
    assert_int_equal(pthread_create(&p->thread, NULL, proxy_main, p), 0);
    return p;
}

static void proxy_close(struct proxy *p)
{
    atomic_store(&p->stop, true);
    shutdown(p->listen_fd, SHUT_RDWR); /* wakes an accept that never came */
    pthread_join(p->thread, NULL);
    close(p->listen_fd);
    pthread_mutex_destroy(&p->mu);
    free(p->recorded);
    free(p);
}

static bool recorded_has(struct proxy *p, const char *text)
{
    pthread_mutex_lock(&p->mu);
    bool has = memmem(p->recorded, p->recorded_len, text, strlen(text)) != NULL;
    pthread_mutex_unlock(&p->mu);
    return has;
}

/* One call through a recording proxy, with a payload and a propagated
 * value: with keys none of the payload, the value or the method crosses
 * the wire in the clear; without keys all of them do (so the check can
 * fail). */
static void frames_cross_the_wire_sealed(void **state)
{
    (void)state;
    struct ident server = make_identity("server"), client = make_identity("client");
    for (int keyed = 0; keyed <= 1; keyed++) {
        static struct seen seen;
        memset(&seen, 0, sizeof seen);
        dctx_rpc_server_options so = rt_server_options(1);
        so.identity = keyed ? server.id : NULL;
        char url[256], via[256];
        dctx_rpc_server *srv = keyed_server(RT_TCP, &so, &seen, url);
        struct proxy *p = proxy_open(url, PASS, -1, via);
        dctx_rpc_channel_options co = keyed_channel(&client, &server);
        dctx_rpc_channel *ch = rt_channel_open(via, keyed ? &co : NULL);
        dctx *ctx = rt_with_value(rt_with_timeout(SEC(5)), &rt_key_tenant, "value-in-the-clear");
        dctx_rpc_result res;
        const char *req = "payload-in-the-clear";
        assert_int_equal(dctx_rpc_call_raw(ch, ctx, ECHO, req, strlen(req), &res), 0);
        assert_int_equal(res.code, DCTX_OK);
        dctx_rpc_result_free(&res);
        rt_ctx_release(ctx);
        rt_channel_close(ch);
        rt_server_close(srv);
        assert_int_equal(recorded_has(p, "payload-in-the-clear"), !keyed);
        assert_int_equal(recorded_has(p, "value-in-the-clear"), !keyed);
        assert_int_equal(recorded_has(p, ECHO), !keyed);
        assert_int_equal(recorded_has(p, "it-tenant"), !keyed);
        proxy_close(p);
    }
    dctx_identity_free(client.id);
    dctx_identity_free(server.id);
}

/* What a channel sent to a keyed server, recorded, then written again on
 * a connection of its own: the server answers the replayed hello with
 * keys of the new connection, the recorded proof does not open under
 * them, and the connection is refused: the call never runs twice. */
static void recorded_connection_replayed_is_refused(void **state)
{
    (void)state;
    struct ident server = make_identity("server"), client = make_identity("client");
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    char url[256], via[256];
    dctx_rpc_server *srv = server_with_key(RT_TCP, &server, 1, &seen, url);
    struct proxy *p = proxy_open(url, PASS, -1, via);
    dctx_rpc_channel_options co = keyed_channel(&client, &server);
    dctx_rpc_channel *ch = rt_channel_open(via, &co);
    dctx_rpc_result res;
    assert_int_equal(call(ch, ECHO, "once", &res), 0);
    assert_int_equal(res.code, DCTX_OK);
    dctx_rpc_result_free(&res);
    rt_channel_close(ch);
    assert_int_equal(atomic_load(&seen.calls), 1);

    int fd = tcp_connect(p->server_port);
    assert_true(fd >= 0);
    pthread_mutex_lock(&p->mu);
    assert_true(write_all(fd, p->recorded, p->recorded_len));
    pthread_mutex_unlock(&p->mu);
    assert_true(server_closes(fd)); /* it answers, then closes */
    close(fd);
    assert_true(WAIT_FOR(rt_server_stats(srv).unauthenticated == 1, SEC(5)));
    assert_int_equal(atomic_load(&seen.calls), 1);
    rt_server_close(srv);
    proxy_close(p);
    dctx_identity_free(client.id);
    dctx_identity_free(server.id);
}

/* A frame of the client's, duplicated or altered on the way (the proxy
 * does it to its frame 2, the call after the hello and the proof): the
 * duplicate is refused (its number is past), so the call runs at most
 * once; the altered call never runs; either way the server ends the connection,
 * counted, and the caller is told the frame failed authentication. */
static void duplicated_or_altered_frame_is_refused(void **state)
{
    (void)state;
    struct ident server = make_identity("server"), client = make_identity("client");
    enum proxy_mode modes[] = {DUPLICATE, FLIP};
    for (size_t i = 0; i < 2; i++) {
        static struct seen seen;
        memset(&seen, 0, sizeof seen);
        char url[256], via[256];
        dctx_rpc_server *srv = server_with_key(RT_TCP, &server, 1, &seen, url);
        struct proxy *p = proxy_open(url, modes[i], 2, via);
        dctx_rpc_channel_options co = keyed_channel(&client, &server);
        co.keepalive_ns = 0; /* no ping among the client's first frames */
        dctx_rpc_channel *ch = rt_channel_open(via, &co);
        dctx_rpc_result res;
        int code = call(ch, ECHO, "only once", &res);
        /* an altered call fails; a duplicated one was answered before the
         * duplicate was read, or fails with its connection */
        if (modes[i] == FLIP || code != DCTX_OK) {
            assert_int_equal(code, DCTX_UNAVAILABLE);
            assert_contains(res.message, "failed authentication");
        }
        dctx_rpc_result_free(&res);
        assert_true(WAIT_FOR(rt_server_stats(srv).unauthenticated == 1, SEC(5)));
        /* the original may have run, or been canceled with its connection */
        assert_in_range(atomic_load(&seen.calls), 0, modes[i] == DUPLICATE ? 1 : 0);
        rt_channel_close(ch);
        rt_server_close(srv);
        proxy_close(p);
    }
    dctx_identity_free(client.id);
    dctx_identity_free(server.id);
}

/* ===== Floods beside a caller (SECURITY.md, "Measured") ===== */

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return kib;
}

/* A steady caller on its own thread: calls until told to stop, keeping
 * its failures and its worst round trip. */
struct steady {
    dctx_rpc_channel *ch;
    atomic_bool stop;
    int calls, failed;
    int64_t worst_ns;
};

static void *steady_main(void *arg)
{
    struct steady *st = arg;
    while (!atomic_load(&st->stop) && st->calls < 100000) {
        int64_t t0 = dctx_now();
        dctx_rpc_result res;
        dctx *ctx = NULL;
        if (dctx_with_timeout(dctx_background(), SEC(5), &ctx) != 0)
            break;
        int rc = dctx_rpc_call_raw(st->ch, ctx, ECHO, "steady", 6, &res);
        dctx_release(ctx);
        dctx_rpc_result_free(&res);
        int64_t took = dctx_now() - t0;
        st->calls++;
        st->failed += rc != DCTX_OK;
        if (took > st->worst_ns)
            st->worst_ns = took;
        rt_sleep(MS(1));
    }
    return NULL;
}

/* A hello with keys (offering the AEADs in ciphers; 0: the field left
 * out), packed with its frame header: what a peer that does not hold a
 * key, or floods handshakes, sends first. */
static size_t hostile_hello(unsigned char *out, size_t cap, uint32_t ciphers)
{
    unsigned char kx[32];
    for (int i = 0; i < 4; i++) {
        uint64_t r = rt_random64();
        memcpy(kx + 8 * i, &r, 8);
    }
    Dctx__Wire__Hello h = DCTX__WIRE__HELLO__INIT;
    h.has_version = h.has_max_frame_bytes = h.has_kx_public = 1;
    h.version = 1;
    h.max_frame_bytes = 1 << 20;
    h.kx_public.data = kx;
    h.kx_public.len = sizeof kx;
    h.has_ciphers = ciphers != 0;
    h.ciphers = ciphers;
    Dctx__Wire__Frame f = DCTX__WIRE__FRAME__INIT;
    f.body_case = DCTX__WIRE__FRAME__BODY_HELLO;
    f.hello = &h;
    size_t len = dctx__wire__frame__get_packed_size(&f);
    assert_true(len + DCTX__FRAME_HEADER_BYTES <= cap);
    dctx__frame_header((uint32_t)len, out);
    dctx__wire__frame__pack(&f, out + DCTX__FRAME_HEADER_BYTES);
    return len + DCTX__FRAME_HEADER_BYTES;
}

/* Handshake churn and forged frames: peers that send a hello with keys
 * then a frame sealed under no key they share with the server, one after
 * another, each closing its end and waiting for the server to close. Every one is refused
 * and counted; a keyed caller beside them loses no call; the server's
 * memory comes back. The figures are printed for SECURITY.md. */
static void forged_handshakes_beside_a_caller_are_refused(void **state)
{
    (void)state;
    const int peers = SANITIZED ? 200 : 1000;
    struct ident server = make_identity("server"), client = make_identity("client");
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    char url[256];
    dctx_rpc_server *srv = server_with_key(RT_TCP, &server, 2, &seen, url);
    int port = atoi(strrchr(url, ':') + 1);
    dctx_rpc_channel_options co = keyed_channel(&client, &server);
    static struct steady st;
    memset(&st, 0, sizeof st);
    st.ch = rt_channel_open(url, &co);
    dctx_rpc_result res;
    assert_int_equal(call(st.ch, ECHO, "warm", &res), DCTX_OK);
    dctx_rpc_result_free(&res);
    long rss_before = rss_kib();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, steady_main, &st), 0);
    int64_t t0 = dctx_now();
    int closed = 0;
    for (int i = 0; i < peers; i++) {
        unsigned char buf[512];
        size_t n = hostile_hello(buf, sizeof buf, 0);
        unsigned char forged[4 + 100] = {0, 0, 0, 100};
        for (size_t j = 4; j < sizeof forged; j++)
            forged[j] = (unsigned char)rt_random64();
        int fd = tcp_connect(port);
        assert_true(fd >= 0);
        /* then it closes its end, as a peer told GoAway does: the server
         * closes once it sees that (it lingers for a peer that does not) */
        if (write_all(fd, buf, n) && write_all(fd, forged, sizeof forged) &&
            shutdown(fd, SHUT_WR) == 0) {
            closed += server_closes(fd);
        }
        close(fd);
    }
    int64_t took = dctx_now() - t0;
    atomic_store(&st.stop, true);
    pthread_join(t, NULL);
    assert_int_equal(closed, peers);
    assert_true(WAIT_FOR(rt_server_stats(srv).unauthenticated == (uint64_t)peers, SEC(10)));
    assert_int_equal(st.failed, 0);
    assert_true(st.calls > 0);
    long rss_after = rss_kib();
    printf("# measured: %d forged handshakes refused one after another in %.2f s (%.0f us "
           "each, the server's key exchange, signature and refusal included); a keyed caller "
           "beside them: %d calls, %d failed, worst %.1f ms; process RSS %ld KiB before, %ld "
           "KiB after\n",
           peers, took / 1e9, took / 1e3 / peers, st.calls, st.failed, st.worst_ns / 1e6,
           rss_before, rss_after);
    rt_channel_close(st.ch);
    rt_server_close(srv);
    dctx_identity_free(client.id);
    dctx_identity_free(server.id);
}

/* A peer that has proved nothing may send nothing larger than a proof: a
 * first sealed frame announced at 1 MiB is refused from its length (the
 * server holds none of it) and the connection ends. */
static void unproven_peer_cannot_send_a_large_frame(void **state)
{
    (void)state;
    struct ident server = make_identity("server");
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    char url[256];
    dctx_rpc_server *srv = server_with_key(RT_TCP, &server, 1, &seen, url);
    unsigned char buf[512];
    size_t n = hostile_hello(buf, sizeof buf, 0);
    const unsigned char big[4 + 64] = {0, 0x10, 0, 0}; /* 1 MiB announced, 64 bytes sent */
    int fd = tcp_connect(atoi(strrchr(url, ':') + 1));
    assert_true(fd >= 0);
    assert_true(write_all(fd, buf, n) && write_all(fd, big, sizeof big));
    assert_true(WAIT_FOR(rt_server_stats(srv).bad_frames == 1, SEC(5)));
    shutdown(fd, SHUT_WR);
    assert_true(server_closes(fd));
    close(fd);
    rt_server_close(srv);
    dctx_identity_free(server.id);
}

/* A hello that offers only AEADs this server cannot seal with (bit 4:
 * none defined) is refused in the handshake: UNAUTHENTICATED, counted,
 * the connection closed. */
static void hello_with_no_cipher_in_common_is_refused(void **state)
{
    (void)state;
    struct ident server = make_identity("server");
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    char url[256];
    dctx_rpc_server *srv = server_with_key(RT_TCP, &server, 1, &seen, url);
    unsigned char buf[512];
    size_t n = hostile_hello(buf, sizeof buf, 4);
    int fd = tcp_connect(atoi(strrchr(url, ':') + 1));
    assert_true(fd >= 0);
    assert_true(write_all(fd, buf, n));
    shutdown(fd, SHUT_WR);
    assert_true(server_closes(fd));
    close(fd);
    assert_true(WAIT_FOR(rt_server_stats(srv).unauthenticated == 1, SEC(5)));
    rt_server_close(srv);
    dctx_identity_free(server.id);
}

/* A keyed peer floods cancels of tokens nobody called with: each answered
 * PREVENTED (remembered in the bounded tombstone table), the caller
 * beside it unaffected. */
static void flood_of_unknown_cancels_with_keys_is_bounded(void **state)
{
    (void)state;
    const int cancels = SANITIZED ? 5000 : 20000;
    struct ident server = make_identity("server"), client = make_identity("client"),
                 flooder_id = make_identity("flooder");
    static struct seen seen;
    memset(&seen, 0, sizeof seen);
    char url[256];
    dctx_rpc_server *srv = server_with_key(RT_TCP, &server, 2, &seen, url);
    dctx_rpc_channel_options co = keyed_channel(&client, &server);
    static struct steady st;
    memset(&st, 0, sizeof st);
    st.ch = rt_channel_open(url, &co);
    dctx_rpc_result res;
    assert_int_equal(call(st.ch, ECHO, "warm", &res), DCTX_OK);
    dctx_rpc_result_free(&res);
    struct keyed *flooder = keyed_open(url, &flooder_id, &server);
    long rss_before = rss_kib();
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, steady_main, &st), 0);
    int64_t t0 = dctx_now();
    int acked = 0;
    for (int i = 0; i < cancels; i++) {
        uint8_t token[DCTX_TOKEN_BYTES];
        rt_token(token);
        size_t len;
        uint8_t *buf =
            rt_pack_cancel((uint32_t)i + 1, token, DCTX_CANCELED, "flood", 1000000, &len);
        keyed_send(flooder, buf, len);
        if (i % 8 ==
            7) { /* read the answers as they come: the server stops reading a peer that does not */
            for (int j = 0; j < 8; j++) {
                Dctx__Wire__Frame *ack = keyed_next(flooder, DCTX__WIRE__FRAME__BODY_CANCEL_ACK);
                assert_non_null(ack);
                acked += (int)ack->cancel_ack->outcome == DCTX_RPC_CANCEL_PREVENTED;
                dctx__frame_free(ack);
            }
        }
    }
    int64_t took = dctx_now() - t0;
    atomic_store(&st.stop, true);
    pthread_join(t, NULL);
    assert_int_equal(acked, cancels / 8 * 8);
    assert_int_equal(st.failed, 0);
    printf("# measured: %d cancels of unknown tokens from a keyed peer in %.2f s, each "
           "answered PREVENTED; a keyed caller beside them: %d calls, %d failed, worst %.1f ms; "
           "process RSS %ld KiB before, %ld KiB after\n",
           cancels, took / 1e9, st.calls, st.failed, st.worst_ns / 1e6, rss_before, rss_kib());
    keyed_close(flooder);
    rt_channel_close(st.ch);
    rt_server_close(srv);
    dctx_identity_free(flooder_id.id);
    dctx_identity_free(client.id);
    dctx_identity_free(server.id);
}

/* Streams ride sealed frames too: a bidirectional stream of 10,000
 * messages (past the window, so credit frames flow sealed both ways)
 * between identities, every message back in order. */
static void streams_work_with_keys(void **state)
{
    (void)state;
    struct ident server = make_identity("server"), client = make_identity("client");
    dctx_rpc_server_options so = rt_server_options(2);
    so.identity = server.id;
    dctx_rpc_server *srv = NULL;
    assert_int_equal(dctx_rpc_server_open(&so, &srv), 0);
    assert_int_equal(
        dctx_rpc_server_register_stream(srv, "/it.Keys/EchoStream", rt_echo_stream_handler, NULL),
        0);
    char url[256];
    rt_server_listen(srv, RT_TCP, url, sizeof url);
    assert_int_equal(dctx_rpc_server_start(srv), 0);
    rt_track_server(srv);
    dctx_rpc_channel_options co = keyed_channel(&client, &server);
    dctx_rpc_channel *ch = rt_channel_open(url, &co);
    dctx_rpc_stream *st = NULL;
    assert_int_equal(dctx_rpc_stream_open(ch, NULL, "/it.Keys/EchoStream", &st), 0);
    int sent = 0, got = 0;
    dctx_rpc_message m;
    for (; sent < 10000; sent++) {
        char text[16];
        snprintf(text, sizeof text, "%d", sent);
        assert_int_equal(dctx_rpc_stream_send(st, text, strlen(text)), 0);
        if (sent % 100 == 99) /* read what came back so far, in order */
            for (; got <= sent; got++) {
                assert_true(dctx_rpc_stream_recv(st, &m));
                snprintf(text, sizeof text, "%d", got);
                assert_int_equal(m.len, strlen(text));
                assert_memory_equal(m.data, text, m.len);
                dctx_rpc_message_free(&m);
            }
    }
    assert_int_equal(dctx_rpc_stream_close_send(st), 0);
    assert_false(dctx_rpc_stream_recv(st, &m));
    assert_int_equal(dctx_rpc_stream_finish(st, NULL), DCTX_OK);
    assert_int_equal(got, 10000);
    assert_int_equal(rt_server_stats(srv).unauthenticated, 0);
    dctx_rpc_stream_release(st);
    rt_channel_close(ch);
    dctx_identity_free(client.id);
    dctx_identity_free(server.id);
}

int main(void)
{
    rt_init("rpc_keys", RT_PORTS_KEYS);
    const struct CMUnitTest tests[] = {
        RT_TEST(keyed_call_works_and_the_handler_knows_its_caller),
        RT_TEST(each_cipher_carries_calls),
        RT_TEST(caller_without_keys_is_refused_unauthenticated),
        RT_TEST(keyed_client_takes_a_clear_goaway_as_unavailable),
        RT_TEST(server_with_another_key_or_none_is_refused),
        RT_TEST(allow_list_decides_who_calls_what),
        RT_TEST(authorize_hook_decides_per_call),
        RT_TEST(cancel_is_honoured_only_from_the_callers_identity),
        RT_TEST(frames_cross_the_wire_sealed),
        RT_TEST(recorded_connection_replayed_is_refused),
        RT_TEST(duplicated_or_altered_frame_is_refused),
        RT_TEST(forged_handshakes_beside_a_caller_are_refused),
        RT_TEST(unproven_peer_cannot_send_a_large_frame),
        RT_TEST(hello_with_no_cipher_in_common_is_refused),
        RT_TEST(flood_of_unknown_cancels_with_keys_is_bounded),
        RT_TEST(streams_work_with_keys),
    };
    return cmocka_run_group_tests_name("rpc_keys", tests, rt_group_setup, NULL);
}
