/*
 * test_stream_half.c - one side's view of a stream without sockets
 * (lib/rpc/stream_half.c, stream_half.h): the peer's messages and this
 * side's credit, as stream.c drives them.
 *
 * Receiving: push and take keep order and count; take says 0 once the
 * peer is done and all was taken, -1 once the stream ended with nothing
 * queued (queued messages are still taken after the end), -2 after
 * idle_ns with nothing pushed. The window: the first one's
 * DCTX_RPC_STREAM_FIRST_WINDOW_MESSAGES pushes, or its bytes that one
 * message may overdraw, then push refuses; taking half a window grants
 * what was taken and as much again as the window was (it doubles), and
 * the peer may push that much more; past DCTX_RPC_STREAM_WINDOW_MESSAGES
 * and _BYTES it grows no more and a grant is what was taken.
 *
 * Sending: reserve spends credit and waits when there is none until
 * credit comes (false once the stream ends); refund gives back.
 *
 * Waits run on threads: a waiter is shown to wait (still there after
 * BLOCKED_NS), then woken by a push, the peer's half-close, credit, the
 * end, or the cancel of the context given at init; every waiter gets
 * WAKE_NS to return and is joined (a stuck one is freed with an end, then
 * the test fails).
 *
 * The asynchronous receive: arm's results (1, 2, 0, -1), the kick that a
 * push or the peer's half-close runs on its own thread and the end runs
 * with on_this_thread false, end_held until conclude, and next with the
 * receiver's role (receiving). The test's kick records each call and
 * completes the delivery as stream.c's deliver does: take, end_delivered
 * when it got no message, the callback's re-arm, next.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <dctx/stream.h>

#include "stream_half.h"
#include "testutil.h"

/* The window each side starts with, and the most it grows to. */
#define WINDOW DCTX_RPC_STREAM_FIRST_WINDOW_MESSAGES
#define WINDOW_BYTES DCTX_RPC_STREAM_FIRST_WINDOW_BYTES
#define MOST DCTX_RPC_STREAM_WINDOW_MESSAGES
#define MOST_BYTES DCTX_RPC_STREAM_WINDOW_BYTES

/* What a grant adds to a window of w (doubling it, up to most). */
static int64_t growth(int64_t w, int64_t most)
{
    return w < most / 2 ? w : most - w;
}

/* How long a waiter must stay in its wait to count as waiting, and how
 * long a woken one gets to return. */
#define BLOCKED_NS MS(20)
#define WAKE_NS SEC(5)

static void init(struct dctx__stream_half *h, dctx *ctx)
{
    assert_int_equal(dctx__stream_half_init(h, ctx), 0);
}

static bool push_str(struct dctx__stream_half *h, const char *s)
{
    return dctx__stream_half_push(h, s, strlen(s));
}

/* Take one message and check it is s; no grant expected. */
static void take_str(struct dctx__stream_half *h, const char *s)
{
    struct dctx__stream_msg *m = NULL;
    uint32_t gm = 1, gb = 1;
    assert_int_equal(dctx__stream_half_take(h, &m, &gm, &gb), 1);
    assert_non_null(m);
    assert_int_equal(m->len, strlen(s));
    assert_memory_equal(m->data, s, strlen(s));
    assert_int_equal(gm, 0);
    assert_int_equal(gb, 0);
    dctx__msg_free(m);
}

/* take's result when it returns no message. */
static int take_none(struct dctx__stream_half *h)
{
    struct dctx__stream_msg *m = NULL;
    uint32_t gm, gb;
    int rc = dctx__stream_half_take(h, &m, &gm, &gb);
    if (rc == 1) {
        dctx__msg_free(m);
        fail_msg("take returned a message");
    }
    return rc;
}

static void assert_counts(struct dctx__stream_half *h, uint64_t received, uint64_t sent)
{
    uint64_t r = 99, s = 99;
    dctx__stream_half_counts(h, &r, &s);
    assert_int_equal(r, received);
    assert_int_equal(s, sent);
}

/* ===== A thread waiting in take or reserve ===== */

struct waiter {
    struct dctx__stream_half *h;
    bool reserve; /* else take */
    size_t len;   /* reserve's */
    atomic_bool started, done;
    int rc; /* take's, or reserve's as 1/0 */
    struct dctx__stream_msg *m;
    pthread_t t;
};

static void *waiter_run(void *arg)
{
    struct waiter *w = arg;
    atomic_store(&w->started, true);
    if (w->reserve) {
        w->rc = dctx__stream_half_reserve(w->h, w->len) ? 1 : 0;
    } else {
        uint32_t gm, gb;
        w->rc = dctx__stream_half_take(w->h, &w->m, &gm, &gb);
    }
    atomic_store(&w->done, true);
    return NULL;
}

static void start_waiter(struct waiter *w, struct dctx__stream_half *h, bool reserve, size_t len)
{
    memset(w, 0, sizeof *w);
    w->h = h;
    w->reserve = reserve;
    w->len = len;
    w->t = start_thread(waiter_run, w);
}

/* The waiter is in its wait: still there BLOCKED_NS after it started. */
static void assert_waiting(struct waiter *w)
{
    bool started = WAIT_FOR(atomic_load(&w->started), WAKE_NS);
    nanosleep(&(struct timespec){.tv_nsec = BLOCKED_NS}, NULL);
    if (!started || atomic_load(&w->done)) {
        join_thread(w->t);
        dctx__msg_free(w->m);
        fail_msg("the %s returned %d without waiting", w->reserve ? "reserve" : "take", w->rc);
    }
}

/* The waiter returns within WAKE_NS (else an end frees it and the test
 * fails) and is joined; its result. */
static int finish_waiter(struct waiter *w)
{
    bool done = WAIT_FOR(atomic_load(&w->done), WAKE_NS);
    if (!done)
        dctx__stream_half_end(w->h);
    join_thread(w->t);
    if (!done) {
        dctx__msg_free(w->m);
        fail_msg("the %s still waited after it was woken", w->reserve ? "reserve" : "take");
    }
    return w->rc;
}

/* ===== Receiving ===== */

static void take_returns_pushed_messages_in_order_and_counts_them(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    assert_true(push_str(&h, "a"));
    assert_true(push_str(&h, "bb"));
    assert_counts(&h, 2, 0);
    take_str(&h, "a"); /* moves both to the receiver's own list */
    assert_true(push_str(&h, "ccc"));
    take_str(&h, "bb");
    take_str(&h, "ccc");
    assert_true(dctx__stream_half_push(&h, NULL, 0)); /* empty messages count too */
    struct dctx__stream_msg *m = NULL;
    uint32_t gm, gb;
    assert_int_equal(dctx__stream_half_take(&h, &m, &gm, &gb), 1);
    assert_int_equal(m->len, 0);
    dctx__msg_free(m);
    assert_counts(&h, 4, 0);
    dctx__stream_half_fini(&h);
}

static void take_returns_0_after_peer_done_once_all_were_taken(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    assert_true(push_str(&h, "one"));
    assert_true(push_str(&h, "two"));
    dctx__stream_half_peer_done(&h);
    take_str(&h, "one");
    take_str(&h, "two");
    assert_int_equal(take_none(&h), 0);
    assert_int_equal(take_none(&h), 0); /* and stays so */
    dctx__stream_half_end(&h);          /* the peer's half-close still tells */
    assert_int_equal(take_none(&h), 0);
    dctx__stream_half_fini(&h);
}

static void take_returns_minus_1_after_end_with_nothing_queued(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    dctx__stream_half_end(&h);
    assert_int_equal(take_none(&h), -1);
    assert_int_equal(take_none(&h), -1);
    dctx__stream_half_fini(&h);
}

static void messages_queued_before_end_are_still_taken(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    assert_true(push_str(&h, "first"));
    take_str(&h, "first");
    assert_true(push_str(&h, "second"));
    assert_true(push_str(&h, "third"));
    dctx__stream_half_end(&h);
    take_str(&h, "second");
    take_str(&h, "third");
    assert_int_equal(take_none(&h), -1);
    dctx__stream_half_fini(&h);
}

/* fini frees what nobody took (ASan's leak check tells). */
static void fini_frees_messages_not_taken(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    assert_true(push_str(&h, "x"));
    assert_true(push_str(&h, "y"));
    take_str(&h, "x"); /* y is on the receiver's list now */
    assert_true(push_str(&h, "z"));
    dctx__stream_half_fini(&h);
}

static void blocked_take_wakes_for_a_push_and_for_peer_done(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    struct waiter w;
    start_waiter(&w, &h, false, 0);
    assert_waiting(&w);
    assert_true(push_str(&h, "wake"));
    assert_int_equal(finish_waiter(&w), 1);
    assert_int_equal(w.m->len, 4);
    assert_memory_equal(w.m->data, "wake", 4);
    dctx__msg_free(w.m);
    start_waiter(&w, &h, false, 0);
    assert_waiting(&w);
    dctx__stream_half_peer_done(&h);
    assert_int_equal(finish_waiter(&w), 0);
    dctx__stream_half_fini(&h);
}

static void blocked_take_wakes_at_end_with_minus_1(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    struct waiter w;
    start_waiter(&w, &h, false, 0);
    assert_waiting(&w);
    dctx__stream_half_end(&h);
    assert_int_equal(finish_waiter(&w), -1);
    dctx__stream_half_fini(&h);
}

/* ===== The window ===== */

static void window_accepts_its_messages_and_refuses_one_more(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    for (int i = 0; i < WINDOW; i++)
        if (!dctx__stream_half_push(&h, NULL, 0))
            fail_msg("push %d of a window of %d refused", i + 1, WINDOW);
    assert_false(dctx__stream_half_push(&h, "x", 1));
    assert_counts(&h, WINDOW, 0); /* the refused one was not queued */
    dctx__stream_half_end(&h);
    int n = 0;
    struct dctx__stream_msg *m;
    uint32_t gm, gb;
    while (dctx__stream_half_take(&h, &m, &gm, &gb) == 1) {
        assert_int_equal(m->len, 0);
        dctx__msg_free(m);
        n++;
    }
    assert_int_equal(n, WINDOW);
    dctx__stream_half_fini(&h);
}

static void one_message_may_overdraw_the_bytes_then_push_is_refused(void **state)
{
    (void)state;
    static unsigned char big[WINDOW_BYTES];
    struct dctx__stream_half h;
    init(&h, NULL);
    assert_true(dctx__stream_half_push(&h, big, WINDOW_BYTES - 1)); /* 1 byte left */
    assert_true(dctx__stream_half_push(&h, big, 100));              /* overdraws */
    assert_false(dctx__stream_half_push(&h, NULL, 0));              /* even an empty one */
    assert_counts(&h, 2, 0);
    dctx__stream_half_fini(&h);
    /* one message larger than the whole window passes alone */
    init(&h, NULL);
    assert_true(dctx__stream_half_push(&h, big, WINDOW_BYTES));
    assert_false(dctx__stream_half_push(&h, big, 1));
    dctx__stream_half_fini(&h);
}

/* Messages of 1 byte: the message half of the window is reached first. */
static void taking_half_the_messages_grants_them_and_doubles_the_window(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    for (int i = 0; i < WINDOW; i++)
        assert_true(dctx__stream_half_push(&h, "m", 1));
    assert_false(dctx__stream_half_push(&h, "m", 1));
    struct dctx__stream_msg *m;
    uint32_t gm, gb;
    for (int i = 0; i < WINDOW / 2 - 1; i++) {
        assert_int_equal(dctx__stream_half_take(&h, &m, &gm, &gb), 1);
        dctx__msg_free(m);
        if (gm != 0 || gb != 0)
            fail_msg("a grant of %u/%u after %d taken, before half a window", gm, gb, i + 1);
    }
    assert_false(dctx__stream_half_push(&h, "m", 1)); /* nothing granted yet */
    assert_int_equal(dctx__stream_half_take(&h, &m, &gm, &gb), 1);
    dctx__msg_free(m);
    assert_int_equal(gm, WINDOW / 2 + WINDOW);
    assert_int_equal(gb, WINDOW / 2 + WINDOW_BYTES); /* 1 byte each */
    /* Half a window is queued: the doubled window has room for the rest. */
    for (int i = 0; i < 2 * WINDOW - WINDOW / 2; i++)
        if (!dctx__stream_half_push(&h, "m", 1))
            fail_msg("push %d of the %d granted refused", i + 1, 2 * WINDOW - WINDOW / 2);
    assert_false(dctx__stream_half_push(&h, "m", 1));
    /* the next grant counts from the last one, against the new window */
    for (int i = 0; i < WINDOW - 1; i++) {
        assert_int_equal(dctx__stream_half_take(&h, &m, &gm, &gb), 1);
        dctx__msg_free(m);
        assert_int_equal(gm, 0);
    }
    assert_int_equal(dctx__stream_half_take(&h, &m, &gm, &gb), 1);
    dctx__msg_free(m);
    assert_int_equal(gm, WINDOW + growth(2 * WINDOW, MOST));
    dctx__stream_half_fini(&h);
}

/* A peer that always fills the window and a receiver that always takes:
 * every grant doubles the window until it is the most, and then grants
 * exactly what was taken; the peer never has more than the window
 * queued. */
static void the_window_grows_to_the_most_and_no_further(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    int64_t window = WINDOW, window_bytes = WINDOW_BYTES, queued = 0;
    int grants_at_most = 0;
    for (int round = 0; round < 40 && grants_at_most < 3; round++) {
        while (queued < window) {
            if (!dctx__stream_half_push(&h, "m", 1))
                fail_msg("push refused with %lld of a window of %lld queued", (long long)queued,
                         (long long)window);
            queued++;
        }
        assert_false(dctx__stream_half_push(&h, "m", 1));
        uint32_t gm = 0, gb = 0, taken = 0;
        while (gm == 0) {
            struct dctx__stream_msg *m;
            assert_int_equal(dctx__stream_half_take(&h, &m, &gm, &gb), 1);
            dctx__msg_free(m);
            taken++;
            queued--;
        }
        int64_t grow = growth(window, MOST), grow_bytes = growth(window_bytes, MOST_BYTES);
        assert_int_equal(gm, taken + grow);
        assert_int_equal(gb, taken + grow_bytes);
        window += grow;
        window_bytes += grow_bytes;
        assert_true(window <= MOST);
        assert_true(window_bytes <= MOST_BYTES);
        grants_at_most += grow == 0;
    }
    assert_int_equal(window, MOST);
    assert_int_equal(window_bytes, MOST_BYTES);
    assert_int_equal(grants_at_most, 3);
    dctx__stream_half_fini(&h);
}

/* Messages of an eighth of the window's bytes: four are half of it. */
static void taking_half_the_bytes_grants_them_and_doubles_the_window(void **state)
{
    (void)state;
    enum { PART = WINDOW_BYTES / 8 };
    static unsigned char part[PART];
    struct dctx__stream_half h;
    init(&h, NULL);
    for (int i = 0; i < 8; i++)
        assert_true(dctx__stream_half_push(&h, part, PART));
    assert_false(dctx__stream_half_push(&h, part, 1)); /* all the bytes used */
    struct dctx__stream_msg *m;
    uint32_t gm, gb;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dctx__stream_half_take(&h, &m, &gm, &gb), 1);
        dctx__msg_free(m);
        assert_int_equal(gm, 0);
        assert_int_equal(gb, 0);
    }
    assert_int_equal(dctx__stream_half_take(&h, &m, &gm, &gb), 1);
    dctx__msg_free(m);
    assert_int_equal(gm, 4 + WINDOW);
    assert_int_equal(gb, 4 * PART + WINDOW_BYTES);
    /* the doubled bytes window: 16 parts, 4 of them queued */
    for (int i = 0; i < 12; i++)
        assert_true(dctx__stream_half_push(&h, part, PART));
    assert_false(dctx__stream_half_push(&h, part, 1));
    assert_counts(&h, 20, 0);
    dctx__stream_half_fini(&h);
}

/* ===== Sending: credit ===== */

static void reserve_spends_the_window_then_waits_until_credit_comes(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    for (int i = 0; i < WINDOW; i++)
        assert_true(dctx__stream_half_reserve(&h, 0));
    assert_counts(&h, 0, WINDOW);
    struct waiter w;
    start_waiter(&w, &h, true, 0);
    assert_waiting(&w);
    dctx__stream_half_credit(&h, 1, 0);
    assert_int_equal(finish_waiter(&w), 1);
    assert_counts(&h, 0, WINDOW + 1);
    /* the one granted is spent: the next waits again */
    start_waiter(&w, &h, true, 0);
    assert_waiting(&w);
    dctx__stream_half_credit(&h, 2, 0);
    assert_int_equal(finish_waiter(&w), 1);
    assert_true(dctx__stream_half_reserve(&h, 0)); /* the second of the two */
    assert_counts(&h, 0, WINDOW + 3);
    dctx__stream_half_fini(&h);
}

static void reserve_overdraws_the_bytes_once_then_waits_for_byte_credit(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    assert_true(dctx__stream_half_reserve(&h, WINDOW_BYTES - 1));
    assert_true(dctx__stream_half_reserve(&h, 100)); /* 99 bytes over */
    struct waiter w;
    start_waiter(&w, &h, true, 1);
    assert_waiting(&w);
    dctx__stream_half_credit(&h, 0, 99); /* back to 0 bytes: not enough */
    assert_waiting(&w);
    dctx__stream_half_credit(&h, 0, 1);
    assert_int_equal(finish_waiter(&w), 1);
    assert_counts(&h, 0, 3);
    dctx__stream_half_fini(&h);
}

static void reserve_waiting_for_credit_returns_false_at_end(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    assert_true(dctx__stream_half_reserve(&h, WINDOW_BYTES));
    struct waiter w;
    start_waiter(&w, &h, true, 1);
    assert_waiting(&w);
    dctx__stream_half_end(&h);
    assert_int_equal(finish_waiter(&w), 0);
    assert_counts(&h, 0, 1);                        /* the refused one is not counted */
    dctx__stream_half_credit(&h, 10, WINDOW_BYTES); /* credit after the end: still over */
    assert_false(dctx__stream_half_reserve(&h, 1));
    dctx__stream_half_fini(&h);
}

static void refund_gives_back_what_reserve_took(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    init(&h, NULL);
    /* bytes: the whole window reserved, refunded, reserved again */
    assert_true(dctx__stream_half_reserve(&h, WINDOW_BYTES));
    assert_counts(&h, 0, 1);
    dctx__stream_half_refund(&h, WINDOW_BYTES);
    assert_counts(&h, 0, 0);
    struct waiter w;
    start_waiter(&w, &h, true, WINDOW_BYTES);
    assert_int_equal(finish_waiter(&w), 1); /* without credit from the peer */
    start_waiter(&w, &h, true, 1);
    assert_waiting(&w); /* and now the bytes are spent */
    dctx__stream_half_credit(&h, 0, WINDOW_BYTES);
    assert_int_equal(finish_waiter(&w), 1);
    dctx__stream_half_fini(&h);
    /* messages: the whole window reserved, one refunded */
    init(&h, NULL);
    for (int i = 0; i < WINDOW; i++)
        assert_true(dctx__stream_half_reserve(&h, 0));
    dctx__stream_half_refund(&h, 0);
    assert_counts(&h, 0, WINDOW - 1);
    start_waiter(&w, &h, true, 0);
    assert_int_equal(finish_waiter(&w), 1);
    start_waiter(&w, &h, true, 0);
    assert_waiting(&w);
    dctx__stream_half_end(&h);
    assert_int_equal(finish_waiter(&w), 0);
    assert_counts(&h, 0, WINDOW);
    dctx__stream_half_fini(&h);
}

/* ===== The context given at init ===== */

static void cancel_of_the_context_ends_a_waiting_take(void **state)
{
    (void)state;
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_cancel(dctx_background(), &ctx), 0);
    struct dctx__stream_half h;
    init(&h, ctx);
    struct waiter w;
    start_waiter(&w, &h, false, 0);
    assert_waiting(&w);
    dctx_cancel(ctx);
    assert_int_equal(finish_waiter(&w), -1);
    dctx__stream_half_fini(&h);
    dctx_release(ctx);
}

static void cancel_of_the_context_ends_a_waiting_reserve(void **state)
{
    (void)state;
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_cancel(dctx_background(), &ctx), 0);
    struct dctx__stream_half h;
    init(&h, ctx);
    for (int i = 0; i < WINDOW; i++)
        assert_true(dctx__stream_half_reserve(&h, 0));
    struct waiter w;
    start_waiter(&w, &h, true, 0);
    assert_waiting(&w);
    dctx_cancel(ctx);
    assert_int_equal(finish_waiter(&w), 0);
    dctx__stream_half_fini(&h);
    dctx_release(ctx);
}

/* A half released before its context is canceled leaves nothing behind
 * in the context (its wake is stopped), and the later cancel touches no
 * freed half (ASan). */
static void fini_before_cancel_stops_the_wake(void **state)
{
    (void)state;
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_cancel(dctx_background(), &ctx), 0);
    size_t before = children_of(ctx);
    struct dctx__stream_half *h = malloc(sizeof *h);
    assert_non_null(h);
    init(h, ctx);
    assert_int_equal(children_of(ctx), before + 1);
    dctx__stream_half_fini(h);
    assert_int_equal(children_of(ctx), before);
    free(h);
    dctx_cancel(ctx);
    dctx_release(ctx);
}

/* ===== Idle ===== */

static void take_returns_minus_2_after_idle_ns_with_nothing_pushed(void **state)
{
    (void)state;
    const int64_t idle = MS(50);
    struct dctx__stream_half h;
    init(&h, NULL);
    h.idle_ns = idle;
    int64_t t0 = dctx_now();
    struct waiter w;
    start_waiter(&w, &h, false, 0);
    int rc = finish_waiter(&w); /* ended after WAKE_NS if idle never comes */
    int64_t took = dctx_now() - t0;
    assert_int_equal(rc, -2);
    if (took < idle || took > idle + SEC(2))
        fail_msg("idle take returned after %lld ms, not about 50", (long long)(took / MS(1)));
    /* a message pushed meanwhile is taken at once, idle or not */
    assert_true(push_str(&h, "late"));
    take_str(&h, "late");
    dctx__stream_half_fini(&h);
}

/* ===== The asynchronous receive ===== */

#define KICKS_MAX 8

/* What the test's kick saw, and what its delivery took. */
struct kicks {
    struct dctx__stream_half *h;
    atomic_int calls;
    pthread_t thread[KICKS_MAX];
    bool on_this_thread[KICKS_MAX];
    int rearm; /* deliveries whose callback arms the next receive */
    int got[KICKS_MAX];
    char first[KICKS_MAX]; /* the first byte of each message delivered */
    int n_got;
    int bad_arm; /* a re-arm's result other than 1 (checked on the test's thread) */
};

static void recv_fn(void *arg, dctx_rpc_stream *st, dctx_rpc_message *m)
{
    (void)arg;
    (void)st;
    (void)m;
    fail_msg("stream_half never calls fn itself");
}

static void kick(void *arg, bool on_this_thread);

static int arm(struct kicks *k)
{
    return dctx__stream_half_arm(k->h, recv_fn, k, kick, k);
}

/* stream.c's deliver: take (due: never waits; the test's idle_ns bounds
 * it all the same), end_delivered when no message came, the callback
 * (which may arm the next, given a message), next. Runs on the thread
 * that kicked: it records, and the test's thread asserts. */
static void deliver(struct kicks *k)
{
    do {
        struct dctx__stream_msg *m = NULL;
        uint32_t gm, gb;
        int rc = dctx__stream_half_take(k->h, &m, &gm, &gb);
        if (rc != 1)
            dctx__stream_half_end_delivered(k->h);
        if (k->n_got < KICKS_MAX) {
            k->got[k->n_got] = rc;
            k->first[k->n_got] = rc == 1 && m->len > 0 ? (char)m->data[0] : 0;
            k->n_got++;
        }
        dctx__msg_free(m);
        if (rc == 1 && k->rearm > 0) {
            k->rearm--;
            int a = arm(k); /* inside a delivery: only armed (1) */
            if (a != 1)
                k->bad_arm = a;
        }
    } while (dctx__stream_half_next(k->h));
}

static void kick(void *arg, bool on_this_thread)
{
    struct kicks *k = arg;
    int i = atomic_fetch_add(&k->calls, 1);
    if (i < KICKS_MAX) {
        k->thread[i] = pthread_self();
        k->on_this_thread[i] = on_this_thread;
    }
    deliver(k);
}

/* A half for the asynchronous tests: the receiver's role taken as
 * dctx_rpc_stream_recv_start takes it, and takes bounded. */
static void init_async(struct dctx__stream_half *h, struct kicks *k, dctx *ctx)
{
    init(h, ctx);
    h->idle_ns = WAKE_NS;
    memset(k, 0, sizeof *k);
    k->h = h;
    atomic_store(&h->receiving, true);
}

static void arm_is_1_when_not_due_and_0_when_armed_twice(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    struct kicks k, other;
    init_async(&h, &k, NULL);
    memset(&other, 0, sizeof other);
    assert_int_equal(arm(&k), 1);
    assert_true(h.fn == recv_fn && h.fn_arg == &k);
    assert_int_equal(dctx__stream_half_arm(&h, recv_fn, &other, kick, &other), 0);
    assert_true(h.fn_arg == &k && h.kick_arg == &k); /* the first one stays */
    assert_int_equal(atomic_load(&k.calls), 0);
    assert_int_equal(atomic_load(&other.calls), 0);
    dctx__stream_half_end(&h); /* delivers the end to the armed one */
    assert_int_equal(atomic_load(&k.calls), 1);
    dctx__stream_half_fini(&h);
}

/* Due at arm: a message, the peer's half-close, or the end. The caller
 * defers the kick itself: arm runs none. */
static void arm_is_2_when_something_is_due_already(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    struct kicks k;
    for (int cause = 0; cause < 3; cause++) {
        init_async(&h, &k, NULL);
        if (cause == 0)
            assert_true(push_str(&h, "m"));
        else if (cause == 1)
            dctx__stream_half_peer_done(&h);
        else
            dctx__stream_half_end(&h);
        if (arm(&k) != 2)
            fail_msg("arm with %s was not due", cause == 0   ? "a message"
                                                : cause == 1 ? "the peer done"
                                                             : "the end");
        assert_int_equal(atomic_load(&k.calls), 0);
        deliver(&k); /* as the caller's deferred kick would */
        assert_int_equal(k.n_got, 1);
        assert_int_equal(k.got[0], cause == 0 ? 1 : cause == 1 ? 0 : -1);
        assert_false(atomic_load(&h.receiving));
        dctx__stream_half_fini(&h);
    }
}

static void arm_is_minus_1_after_end_delivered(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    struct kicks k;
    init_async(&h, &k, NULL);
    dctx__stream_half_peer_done(&h);
    assert_int_equal(arm(&k), 2);
    deliver(&k); /* gets 0: the end, so end_delivered */
    assert_int_equal(k.got[0], 0);
    assert_int_equal(arm(&k), -1);
    assert_true(push_str(&h, "late")); /* no receive: no kick */
    assert_int_equal(arm(&k), -1);
    assert_int_equal(atomic_load(&k.calls), 0);
    dctx__stream_half_fini(&h);
}

struct pusher {
    struct dctx__stream_half *h;
    bool peer_done; /* else push "p" */
    bool pushed;
};

static void *pusher_run(void *arg)
{
    struct pusher *p = arg;
    if (p->peer_done)
        dctx__stream_half_peer_done(p->h);
    else
        p->pushed = push_str(p->h, "p");
    return NULL;
}

static void push_while_armed_kicks_once_on_the_pushing_thread(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    struct kicks k;
    init_async(&h, &k, NULL);
    assert_int_equal(arm(&k), 1);
    struct pusher p = {&h, false, false};
    pthread_t t = start_thread(pusher_run, &p);
    join_thread(t);
    assert_true(p.pushed);
    assert_int_equal(atomic_load(&k.calls), 1);
    assert_true(pthread_equal(k.thread[0], t));
    assert_true(k.on_this_thread[0]);
    assert_int_equal(k.n_got, 1);
    assert_int_equal(k.got[0], 1);
    assert_int_equal(k.first[0], 'p');
    assert_false(atomic_load(&h.receiving)); /* delivered, none armed */
    assert_true(push_str(&h, "q"));          /* not armed: no kick */
    assert_int_equal(atomic_load(&k.calls), 1);
    dctx__stream_half_fini(&h);
}

static void peer_done_while_armed_kicks_on_its_thread(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    struct kicks k;
    init_async(&h, &k, NULL);
    assert_int_equal(arm(&k), 1);
    struct pusher p = {&h, true, false};
    pthread_t t = start_thread(pusher_run, &p);
    join_thread(t);
    assert_int_equal(atomic_load(&k.calls), 1);
    assert_true(pthread_equal(k.thread[0], t));
    assert_true(k.on_this_thread[0]);
    assert_int_equal(k.got[0], 0);
    assert_int_equal(arm(&k), -1);
    dctx__stream_half_fini(&h);
}

static void end_while_armed_kicks_not_on_this_thread(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    struct kicks k;
    init_async(&h, &k, NULL);
    assert_int_equal(arm(&k), 1);
    dctx__stream_half_end(&h);
    assert_int_equal(atomic_load(&k.calls), 1);
    assert_false(k.on_this_thread[0]);
    assert_int_equal(k.got[0], -1);
    assert_false(atomic_load(&h.receiving));
    assert_int_equal(arm(&k), -1);
    dctx__stream_half_fini(&h);
}

static void cancel_while_armed_kicks_not_on_this_thread(void **state)
{
    (void)state;
    dctx *ctx = NULL;
    assert_int_equal(dctx_with_cancel(dctx_background(), &ctx), 0);
    struct dctx__stream_half h;
    struct kicks k;
    init_async(&h, &k, ctx);
    assert_int_equal(arm(&k), 1);
    dctx_cancel(ctx);
    assert_int_equal(atomic_load(&k.calls), 1);
    assert_false(k.on_this_thread[0]);
    assert_int_equal(k.got[0], -1);
    dctx__stream_half_fini(&h);
    dctx_release(ctx);
}

static void end_held_is_not_due_until_conclude(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    struct kicks k;
    init_async(&h, &k, NULL);
    h.end_held = true; /* as a client's stream sets it at open */
    assert_int_equal(arm(&k), 1);
    dctx__stream_half_end(&h);
    assert_int_equal(atomic_load(&k.calls), 0);
    assert_int_equal(arm(&k), 0); /* still armed, not delivered */
    dctx__stream_half_conclude(&h);
    assert_int_equal(atomic_load(&k.calls), 1);
    assert_false(k.on_this_thread[0]);
    assert_int_equal(k.got[0], -1);
    assert_int_equal(arm(&k), -1);
    dctx__stream_half_fini(&h);
    /* armed after the end but before conclude: due at conclude */
    init_async(&h, &k, NULL);
    h.end_held = true;
    dctx__stream_half_end(&h);
    assert_int_equal(arm(&k), 1);
    dctx__stream_half_conclude(&h);
    assert_int_equal(atomic_load(&k.calls), 1);
    assert_int_equal(k.got[0], -1);
    dctx__stream_half_fini(&h);
}

static void next_is_true_when_rearmed_with_a_message_waiting(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    struct kicks k;
    init_async(&h, &k, NULL);
    assert_true(push_str(&h, "1"));
    assert_true(push_str(&h, "2"));
    assert_int_equal(arm(&k), 2); /* the caller delivers: */
    take_str(&h, "1");
    assert_int_equal(arm(&k), 1); /* the callback arms the next */
    assert_true(dctx__stream_half_next(&h));
    assert_true(atomic_load(&h.receiving));
    take_str(&h, "2");
    assert_true(push_str(&h, "3")); /* waiting, but nothing armed */
    assert_false(dctx__stream_half_next(&h));
    assert_false(atomic_load(&h.receiving));
    assert_int_equal(atomic_load(&k.calls), 0); /* the deliverer did it all */
    /* the message left is the next receive's */
    atomic_store(&h.receiving, true);
    assert_int_equal(arm(&k), 2);
    take_str(&h, "3");
    assert_false(dctx__stream_half_next(&h));
    dctx__stream_half_fini(&h);
}

static void next_keeps_receiving_while_a_receive_is_armed(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    struct kicks k;
    init_async(&h, &k, NULL);
    assert_true(push_str(&h, "1"));
    assert_int_equal(arm(&k), 2);
    take_str(&h, "1");
    assert_int_equal(arm(&k), 1);
    assert_false(dctx__stream_half_next(&h)); /* nothing waiting */
    assert_true(atomic_load(&h.receiving));   /* but armed */
    assert_true(push_str(&h, "2"));           /* due now: the kick delivers */
    assert_int_equal(atomic_load(&k.calls), 1);
    assert_true(k.on_this_thread[0]);
    assert_int_equal(k.first[0], '2');
    assert_false(atomic_load(&h.receiving));
    dctx__stream_half_fini(&h);
}

/* A delivery whose callback re-arms takes every waiting message through
 * next, from one kick. */
static void kick_delivers_what_waits_while_its_callback_rearms(void **state)
{
    (void)state;
    struct dctx__stream_half h;
    struct kicks k;
    init_async(&h, &k, NULL);
    k.rearm = 2; /* the callbacks of a and b arm the next */
    assert_int_equal(arm(&k), 1);
    assert_true(push_str(&h, "a")); /* kick: a; re-armed, nothing waiting */
    assert_int_equal(atomic_load(&k.calls), 1);
    assert_int_equal(k.n_got, 1);
    assert_true(atomic_load(&h.receiving));
    assert_true(push_str(&h, "b"));  /* kick: b; re-armed */
    dctx__stream_half_peer_done(&h); /* kick: the peer is done */
    assert_int_equal(atomic_load(&k.calls), 3);
    assert_int_equal(k.n_got, 3);
    assert_int_equal(k.first[0], 'a');
    assert_int_equal(k.first[1], 'b');
    assert_int_equal(k.got[2], 0);
    assert_int_equal(k.bad_arm, 0);
    assert_false(atomic_load(&h.receiving));
    assert_int_equal(arm(&k), -1);
    dctx__stream_half_fini(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(take_returns_pushed_messages_in_order_and_counts_them),
        cmocka_unit_test(take_returns_0_after_peer_done_once_all_were_taken),
        cmocka_unit_test(take_returns_minus_1_after_end_with_nothing_queued),
        cmocka_unit_test(messages_queued_before_end_are_still_taken),
        cmocka_unit_test(fini_frees_messages_not_taken),
        cmocka_unit_test(blocked_take_wakes_for_a_push_and_for_peer_done),
        cmocka_unit_test(blocked_take_wakes_at_end_with_minus_1),
        cmocka_unit_test(window_accepts_its_messages_and_refuses_one_more),
        cmocka_unit_test(one_message_may_overdraw_the_bytes_then_push_is_refused),
        cmocka_unit_test(taking_half_the_messages_grants_them_and_doubles_the_window),
        cmocka_unit_test(the_window_grows_to_the_most_and_no_further),
        cmocka_unit_test(taking_half_the_bytes_grants_them_and_doubles_the_window),
        cmocka_unit_test(reserve_spends_the_window_then_waits_until_credit_comes),
        cmocka_unit_test(reserve_overdraws_the_bytes_once_then_waits_for_byte_credit),
        cmocka_unit_test(reserve_waiting_for_credit_returns_false_at_end),
        cmocka_unit_test(refund_gives_back_what_reserve_took),
        cmocka_unit_test(cancel_of_the_context_ends_a_waiting_take),
        cmocka_unit_test(cancel_of_the_context_ends_a_waiting_reserve),
        cmocka_unit_test(fini_before_cancel_stops_the_wake),
        cmocka_unit_test(take_returns_minus_2_after_idle_ns_with_nothing_pushed),
        cmocka_unit_test(arm_is_1_when_not_due_and_0_when_armed_twice),
        cmocka_unit_test(arm_is_2_when_something_is_due_already),
        cmocka_unit_test(arm_is_minus_1_after_end_delivered),
        cmocka_unit_test(push_while_armed_kicks_once_on_the_pushing_thread),
        cmocka_unit_test(peer_done_while_armed_kicks_on_its_thread),
        cmocka_unit_test(end_while_armed_kicks_not_on_this_thread),
        cmocka_unit_test(cancel_while_armed_kicks_not_on_this_thread),
        cmocka_unit_test(end_held_is_not_due_until_conclude),
        cmocka_unit_test(next_is_true_when_rearmed_with_a_message_waiting),
        cmocka_unit_test(next_keeps_receiving_while_a_receive_is_armed),
        cmocka_unit_test(kick_delivers_what_waits_while_its_callback_rearms),
    };
    return cmocka_run_group_tests_name("stream_half", tests, NULL, NULL);
}
