/*
 * test_context.c - Go's context tests (x_test.go, context_test.go), ported
 * case by case to the C API. Each test names the Go test it ports; where Go
 * panics (nil parent, nil key) dctx returns DCTX_INVALID_ARGUMENT. Cause
 * is in test_cause.c, AfterFunc in test_after.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "testutil.h"

#define SHORT MS(20)
#define VERY_LONG SEC(10000)

/* An after-func that a test stops before it can run. */
static void must_not_run(void *arg)
{
    (void)arg;
    abort();
}

static void *cancel_thread(void *ctx)
{
    dctx_cancel(ctx);
    return NULL;
}

static dctx *cancelable(dctx *parent)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_cancel(parent, &c), 0);
    assert_non_null(c);
    return c;
}

static dctx *with_value_str(dctx *parent, const dctx_key *key, const char *s)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_value(parent, key, s, s ? strlen(s) + 1 : 0, &c), 0);
    return c;
}

/* TestBackground, TestTODO */
static void roots_are_never_done_and_immortal(void **state)
{
    (void)state;
    static const dctx_key key = {"k", 0};
    dctx *roots[2] = {dctx_background(), dctx_todo()};
    assert_non_null(roots[0]);
    assert_non_null(roots[1]);
    assert_ptr_not_equal(roots[0], roots[1]);
    for (int i = 0; i < 2; i++) {
        dctx *r = roots[i];
        assert_false(dctx_done(r));
        assert_int_equal(dctx_err(r), 0);
        assert_int_equal(dctx_cause(r, NULL), 0);
        assert_false(dctx_deadline(r, NULL));
        assert_null(dctx_value(r, &key, NULL));
        /* retain, release and cancel do nothing to a root */
        assert_ptr_equal(dctx_retain(r), r);
        dctx_release(r);
        dctx_release(r);
        dctx_cancel(r);
        dctx_cancel_cause(r, DCTX_ABORTED, "no");
        assert_false(dctx_done(r));
        assert_false(dctx_wait(r, 0));
        assert_false(dctx_wait(r, MS(5)));
        errno = EINVAL;
        assert_int_equal(dctx_done_fd(r), -1);
        assert_int_equal(errno, 0);
    }
}

/* TestWithCancel: c1, a value wrapper of it, and a child of the wrapper
 * are all done with DCTX_CANCELED synchronously. */
static void cancel_propagates_synchronously(void **state)
{
    (void)state;
    static const dctx_key key = {"k", 0};
    dctx *c1 = cancelable(dctx_background());
    dctx *o = with_value_str(c1, &key, "v");
    dctx *c2 = cancelable(o);
    dctx *all[] = {c1, o, c2};
    for (int i = 0; i < 3; i++) {
        assert_false(dctx_done(all[i]));
        assert_int_equal(dctx_err(all[i]), 0);
        assert_false(dctx_wait(all[i], 0));
    }
    dctx_cancel(c1);
    for (int i = 0; i < 3; i++) {
        assert_true(dctx_done(all[i]));
        assert_int_equal(dctx_err(all[i]), DCTX_CANCELED);
        assert_true(dctx_wait(all[i], 0));
    }
    dctx_cancel(c1); /* idempotent */
    assert_int_equal(dctx_err(c1), DCTX_CANCELED);
    dctx_release(c2);
    dctx_release(o);
    dctx_release(c1);
}

/* XTestParentFinishesChild */
static void canceling_a_parent_cancels_and_detaches_every_child(void **state)
{
    (void)state;
    static const dctx_key key = {"key", 0};
    dctx *parent = cancelable(dctx_background());
    dctx *cancel_child = cancelable(parent);
    dctx *value_child = with_value_str(parent, &key, "value");
    dctx *timer_child = NULL;
    assert_int_equal(dctx_with_timeout(value_child, VERY_LONG, &timer_child), 0);
    dctx_after *after = NULL;
    assert_int_equal(dctx_after_func(parent, must_not_run, NULL, &after), 0);

    dctx *all[] = {parent, cancel_child, value_child, timer_child};
    for (int i = 0; i < 4; i++)
        assert_false(dctx_done(all[i]));
    /* cancel_child, timer_child (through the value child) and the after-func */
    assert_int_equal(children_of(parent), 3);

    /* stop the after-func first: it must never run (abort) */
    assert_true(dctx_after_stop(after));
    assert_int_equal(children_of(parent), 2);

    dctx_cancel(parent);
    assert_int_equal(children_of(parent), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(dctx_err(all[i]), DCTX_CANCELED);

    /* A child of a canceled parent is born canceled. */
    dctx *precanceled = with_value_str(parent, &key, "value");
    assert_true(dctx_done(precanceled));
    assert_int_equal(dctx_err(precanceled), DCTX_CANCELED);
    dctx *born = cancelable(parent);
    assert_int_equal(dctx_err(born), DCTX_CANCELED);
    assert_int_equal(children_of(parent), 0);

    dctx_release(born);
    dctx_release(precanceled);
    dctx_release(timer_child);
    dctx_release(value_child);
    dctx_release(cancel_child);
    dctx_release(parent);
}

/* XTestChildFinishesFirst: for a cancelable parent and for Background. */
static void canceled_child_detaches_and_leaves_its_parent_live(void **state)
{
    (void)state;
    dctx *cancelable_parent = cancelable(dctx_background());
    dctx *parents[] = {cancelable_parent, dctx_background()};
    for (int i = 0; i < 2; i++) {
        dctx *parent = parents[i];
        dctx *child = cancelable(parent);
        if (parent != dctx_background())
            assert_int_equal(children_of(parent), 1);
        dctx_cancel(child);
        assert_int_equal(children_of(parent), 0);
        assert_int_equal(dctx_err(child), DCTX_CANCELED);
        assert_false(dctx_done(parent));
        assert_int_equal(dctx_err(parent), 0);
        dctx_release(child);
    }
    dctx_release(cancelable_parent);
}

/* XTestCancelRemoves */
static void cancel_removes_child_from_parent(void **state)
{
    (void)state;
    dctx *ctx = cancelable(dctx_background());
    assert_int_equal(children_of(ctx), 0);

    dctx *child = cancelable(ctx);
    assert_int_equal(children_of(ctx), 1);
    dctx_cancel(child);
    assert_int_equal(children_of(ctx), 0);
    dctx_release(child);

    assert_int_equal(dctx_with_timeout(ctx, MS(60 * 60 * 1000), &child), 0);
    assert_int_equal(children_of(ctx), 1);
    dctx_cancel(child);
    assert_int_equal(children_of(ctx), 0);
    dctx_release(child);

    dctx_after *h = NULL;
    assert_int_equal(dctx_after_func(ctx, must_not_run, NULL, &h), 0);
    assert_int_equal(children_of(ctx), 1);
    assert_true(dctx_after_stop(h));
    assert_int_equal(children_of(ctx), 0);

    /* Releasing without canceling removes the child too. */
    child = cancelable(ctx);
    assert_int_equal(children_of(ctx), 1);
    dctx_release(child);
    assert_int_equal(children_of(ctx), 0);

    dctx_release(ctx);
}

/* testDeadline: done within a generous bound with DEADLINE_EXCEEDED. */
static void expect_deadline(dctx *c)
{
    assert_true(dctx_wait(c, SEC(5) * stress_scale()));
    assert_int_equal(dctx_err(c), DCTX_DEADLINE_EXCEEDED);
    assert_int_equal(dctx_cause(c, NULL), DCTX_DEADLINE_EXCEEDED);
}

/* The same, but without dctx_wait (which can enact the deadline itself):
 * the timer thread must fire it. */
static void expect_timer_fires(dctx *c)
{
    int64_t give_up = dctx_now() + SEC(5) * stress_scale();
    while (!dctx_done(c) && dctx_now() < give_up) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(dctx_err(c), DCTX_DEADLINE_EXCEEDED);
}

/* TestDeadline */
static void deadline_ends_a_context_with_deadline_exceeded(void **state)
{
    (void)state;
    static const dctx_key key = {"k", 0};
    dctx *c, *o, *c2;

    assert_int_equal(dctx_with_deadline(dctx_background(), dctx_now() + SHORT, &c), 0);
    int64_t d = 0;
    assert_true(dctx_deadline(c, &d));
    expect_deadline(c);
    dctx_release(c);

    assert_int_equal(dctx_with_deadline(dctx_background(), dctx_now() + SHORT, &c), 0);
    expect_timer_fires(c);
    dctx_release(c);

    /* through a wrapper */
    assert_int_equal(dctx_with_deadline(dctx_background(), dctx_now() + SHORT, &c), 0);
    o = with_value_str(c, &key, "v");
    expect_deadline(o);
    dctx_release(o);
    dctx_release(c);

    /* a long child of a short parent keeps the parent's deadline */
    assert_int_equal(dctx_with_deadline(dctx_background(), dctx_now() + SHORT, &c), 0);
    o = with_value_str(c, &key, "v");
    assert_int_equal(dctx_with_deadline(o, dctx_now() + VERY_LONG, &c2), 0);
    int64_t pd = 0, cd = 0;
    assert_true(dctx_deadline(c, &pd));
    assert_true(dctx_deadline(c2, &cd));
    assert_int_equal(pd, cd);
    expect_timer_fires(c2);
    dctx_release(c2);
    dctx_release(o);
    dctx_release(c);

    /* in the past, and now: born done */
    assert_int_equal(dctx_with_deadline(dctx_background(), dctx_now() - SHORT, &c), 0);
    assert_int_equal(dctx_err(c), DCTX_DEADLINE_EXCEEDED);
    dctx_release(c);
    assert_int_equal(dctx_with_deadline(dctx_background(), dctx_now(), &c), 0);
    assert_int_equal(dctx_err(c), DCTX_DEADLINE_EXCEEDED);
    dctx_release(c);

    /* DCTX_DEADLINE_NONE is no deadline */
    assert_int_equal(dctx_with_deadline(dctx_background(), DCTX_DEADLINE_NONE, &c), 0);
    assert_false(dctx_deadline(c, NULL));
    dctx_cancel(c);
    assert_int_equal(dctx_err(c), DCTX_CANCELED);
    dctx_release(c);
}

/* TestTimeout */
static void timeout_ends_a_context_with_deadline_exceeded(void **state)
{
    (void)state;
    static const dctx_key key = {"k", 0};
    dctx *c, *o, *c2;
    int64_t before = dctx_now();
    assert_int_equal(dctx_with_timeout(dctx_background(), SHORT, &c), 0);
    int64_t d = 0;
    assert_true(dctx_deadline(c, &d));
    assert_true(d >= before + SHORT);
    assert_true(d <= dctx_now() + SHORT);
    expect_deadline(c);
    assert_true(dctx_now() >= d);
    dctx_release(c);

    assert_int_equal(dctx_with_timeout(dctx_background(), SHORT, &c), 0);
    o = with_value_str(c, &key, "v");
    assert_int_equal(dctx_with_timeout(o, VERY_LONG, &c2), 0);
    expect_deadline(c2);
    dctx_release(c2);
    dctx_release(o);
    dctx_release(c);

    /* zero and negative timeouts are born done */
    assert_int_equal(dctx_with_timeout(dctx_background(), 0, &c), 0);
    assert_int_equal(dctx_err(c), DCTX_DEADLINE_EXCEEDED);
    dctx_release(c);
    assert_int_equal(dctx_with_timeout(dctx_background(), -SEC(1), &c), 0);
    assert_int_equal(dctx_err(c), DCTX_DEADLINE_EXCEEDED);
    dctx_release(c);

    /* a huge timeout saturates to no deadline instead of overflowing */
    assert_int_equal(dctx_with_timeout(dctx_background(), INT64_MAX, &c), 0);
    assert_false(dctx_deadline(c, NULL));
    assert_false(dctx_done(c));
    dctx_release(c);
}

/* TestCanceledTimeout: canceling a timer context gives CANCELED, not
 * DEADLINE_EXCEEDED, synchronously. */
static void canceled_timeout_context_ends_canceled_not_deadline_exceeded(void **state)
{
    (void)state;
    static const dctx_key key = {"k", 0};
    dctx *c, *o, *c2;
    assert_int_equal(dctx_with_timeout(dctx_background(), SEC(1), &c), 0);
    o = with_value_str(c, &key, "v");
    assert_int_equal(dctx_with_timeout(o, SEC(2), &c2), 0);
    dctx_cancel(c2);
    assert_true(dctx_done(c2));
    assert_int_equal(dctx_err(c2), DCTX_CANCELED);
    assert_false(dctx_done(c));
    dctx_release(c2);
    dctx_release(o);
    dctx_release(c);
}

static void check_value(dctx *ctx, const dctx_key *key, const char *want)
{
    size_t len = 99;
    const char *got = dctx_value(ctx, key, &len);
    if (want == NULL) {
        assert_null(got);
        assert_int_equal(len, 0);
    } else if (*want == '\0') { /* present, zero length */
        assert_non_null(got);
        assert_int_equal(len, 0);
    } else {
        assert_non_null(got);
        assert_int_equal(len, strlen(want) + 1);
        assert_string_equal(got, want);
    }
}

/* TestValues: identity by address, shadowing, empty values, wrappers. */
static void values_are_found_by_key_identity_through_every_layer(void **state)
{
    (void)state;
    /* three keys with one name: distinct keys, as Go's key types are */
    static const dctx_key k1 = {"k", 0}, k2 = {"k", 0}, k3 = {"k", 0};
    dctx *c0 = dctx_background();
    check_value(c0, &k1, NULL);

    dctx *c1 = with_value_str(c0, &k1, "c1k1");
    check_value(c1, &k1, "c1k1");
    check_value(c1, &k2, NULL);
    dctx *c2 = with_value_str(c1, &k2, "c2k2");
    check_value(c2, &k1, "c1k1");
    check_value(c2, &k2, "c2k2");
    check_value(c2, &k3, NULL);
    dctx *c3 = with_value_str(c2, &k3, "c3k3");
    check_value(c3, &k3, "c3k3");
    dctx *c4 = NULL;
    assert_int_equal(dctx_with_value(c3, &k1, NULL, 0, &c4), 0);
    check_value(c4, &k1, "");
    check_value(c4, &k2, "c2k2");
    check_value(c4, &k3, "c3k3");

    /* through cancelable and detached layers */
    dctx *w = cancelable(c4);
    dctx *o4 = with_value_str(w, &k3, "o4k3");
    dctx *wo = NULL;
    assert_int_equal(dctx_without_cancel(o4, &wo), 0);
    check_value(wo, &k1, "");
    check_value(wo, &k2, "c2k2");
    check_value(wo, &k3, "o4k3");
    check_value(c3, &k3, "c3k3"); /* the parent is unchanged */

    /* values are copies and survive cancel */
    char buf[8] = "mutable";
    dctx *cp = NULL;
    assert_int_equal(dctx_with_value(w, &k2, buf, sizeof buf, &cp), 0);
    buf[0] = 'X';
    dctx_cancel(w);
    check_value(cp, &k2, "mutable");
    check_value(o4, &k3, "o4k3");

    /* NULL key or len without bytes is refused; a NULL key finds nothing */
    dctx *bad = (dctx *)&bad;
    assert_int_equal(dctx_with_value(c1, NULL, "x", 2, &bad), DCTX_INVALID_ARGUMENT);
    assert_null(bad);
    assert_int_equal(dctx_with_value(c1, &k1, NULL, 3, &bad), DCTX_INVALID_ARGUMENT);
    assert_null(dctx_value(c1, NULL, NULL));
    assert_null(dctx_value(NULL, &k1, NULL));

    dctx *rel[] = {cp, wo, o4, w, c4, c3, c2, c1};
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++)
        dctx_release(rel[i]);
}

/* TestInvalidDerivedFail, TestWithValueChecksKey */
static void null_arguments_are_invalid(void **state)
{
    (void)state;
    static const dctx_key key = {"k", 0};
    dctx *out = (dctx *)&out;
    assert_int_equal(dctx_with_cancel(NULL, &out), DCTX_INVALID_ARGUMENT);
    assert_null(out);
    out = (dctx *)&out;
    assert_int_equal(dctx_with_deadline(NULL, 0, &out), DCTX_INVALID_ARGUMENT);
    assert_null(out);
    out = (dctx *)&out;
    assert_int_equal(dctx_with_deadline_cause(NULL, 0, 1, "m", &out), DCTX_INVALID_ARGUMENT);
    assert_null(out);
    out = (dctx *)&out;
    assert_int_equal(dctx_with_timeout(NULL, 1, &out), DCTX_INVALID_ARGUMENT);
    assert_null(out);
    out = (dctx *)&out;
    assert_int_equal(dctx_with_value(NULL, &key, "v", 1, &out), DCTX_INVALID_ARGUMENT);
    assert_null(out);
    out = (dctx *)&out;
    assert_int_equal(dctx_without_cancel(NULL, &out), DCTX_INVALID_ARGUMENT);
    assert_null(out);
    assert_int_equal(dctx_with_cancel(dctx_background(), NULL), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_with_timeout(dctx_background(), 1, NULL), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_with_value(dctx_background(), &key, "v", 1, NULL), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_without_cancel(dctx_background(), NULL), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_after_func(NULL, free, NULL, NULL), DCTX_INVALID_ARGUMENT);
    assert_int_equal(dctx_after_func(dctx_background(), NULL, NULL, NULL), DCTX_INVALID_ARGUMENT);
    /* the NULL-tolerant calls */
    dctx_release(NULL);
    dctx_cancel(NULL);
    dctx_cancel_cause(NULL, 1, "x");
    assert_null(dctx_retain(NULL));
    assert_false(dctx_done(NULL));
    assert_int_equal(dctx_err(NULL), 0);
    assert_false(dctx_wait(NULL, 0));
    assert_false(dctx_after_stop(NULL));
}

/* cancel does nothing to contexts that are not cancelable */
static void cancel_ignores_value_and_detached_contexts(void **state)
{
    (void)state;
    static const dctx_key key = {"k", 0};
    dctx *parent = cancelable(dctx_background());
    dctx *v = with_value_str(parent, &key, "v");
    dctx *d = NULL;
    assert_int_equal(dctx_without_cancel(parent, &d), 0);
    dctx_cancel(v);
    dctx_cancel_cause(d, DCTX_ABORTED, "x");
    assert_false(dctx_done(parent));
    assert_false(dctx_done(v));
    assert_false(dctx_done(d));
    dctx_release(d);
    dctx_release(v);
    dctx_release(parent);
}

/* TestWithoutCancel */
static void without_cancel_keeps_values_drops_cancel(void **state)
{
    (void)state;
    static const dctx_key key = {"key", 0};
    dctx *parent = NULL;
    assert_int_equal(dctx_with_timeout(dctx_background(), SEC(100), &parent), 0);
    dctx *v = with_value_str(parent, &key, "value");
    dctx *wc = NULL;
    assert_int_equal(dctx_without_cancel(v, &wc), 0);
    assert_false(dctx_deadline(wc, NULL));
    dctx_cancel_cause(parent, DCTX_ABORTED, "gone");
    assert_true(dctx_done(v));
    assert_false(dctx_done(wc));
    assert_int_equal(dctx_err(wc), 0);
    assert_int_equal(dctx_cause(wc, NULL), 0);
    assert_false(dctx_wait(wc, MS(1)));
    check_value(wc, &key, "value");
    /* its own children are cancelable as usual */
    dctx *child = cancelable(wc);
    assert_false(dctx_done(child));
    dctx_cancel(child);
    assert_int_equal(dctx_err(child), DCTX_CANCELED);
    dctx_release(child);
    dctx_release(wc);
    dctx_release(v);
    dctx_release(parent);
}

/* TestWithCancelCanceledParent */
static void child_of_canceled_parent_is_born_canceled(void **state)
{
    (void)state;
    dctx *parent = cancelable(dctx_background());
    dctx_cancel_cause(parent, DCTX_ABORTED, "parentCause");
    dctx *child = cancelable(parent);
    assert_true(dctx_done(child));
    assert_int_equal(dctx_err(child), DCTX_CANCELED);
    const char *msg = NULL;
    assert_int_equal(dctx_cause(child, &msg), DCTX_ABORTED);
    assert_string_equal(msg, "parentCause");
    dctx *timer = NULL;
    assert_int_equal(dctx_with_timeout(parent, SEC(1), &timer), 0);
    assert_int_equal(dctx_err(timer), DCTX_CANCELED);
    assert_int_equal(dctx_cause(timer, NULL), DCTX_ABORTED);
    dctx_release(timer);
    dctx_release(child);
    dctx_release(parent);
}

struct cancel_arg {
    dctx *ctx;
};

static void *cancel_with_cause(void *p)
{
    dctx_cancel_cause(((struct cancel_arg *)p)->ctx, DCTX_ABORTED, "parentCause");
    return NULL;
}

/* TestWithCancelSimultaneouslyCanceledParent: 100 races of a cancel
 * against the birth of a child; the child always ends with the parent's
 * error and cause. */
static void child_born_during_parent_cancel_gets_its_cause(void **state)
{
    (void)state;
    for (int i = 0; i < 100; i++) {
        struct cancel_arg arg = {cancelable(dctx_background())};
        pthread_t t = start_thread(cancel_with_cause, &arg);
        dctx *child = cancelable(arg.ctx);
        assert_true(dctx_wait(child, SEC(10)));
        assert_int_equal(dctx_err(child), DCTX_CANCELED);
        const char *msg = NULL;
        assert_int_equal(dctx_cause(child, &msg), DCTX_ABORTED);
        assert_string_equal(msg, "parentCause");
        join_thread(t);
        dctx_release(child);
        dctx_release(arg.ctx);
    }
}

/* TestSimultaneousCancels: a 100-node tree, every node canceled from its
 * own thread at once: no deadlock, everything done. */
static void every_node_of_a_tree_canceled_at_once_ends_without_deadlock(void **state)
{
    (void)state;
    enum { NODES = 101 };
    struct cancel_arg nodes[NODES];
    nodes[0].ctx = cancelable(dctx_background());
    int n = 1;
    for (int q = 0; n < NODES; q++)
        for (int i = 0; i < 4 && n < NODES; i++)
            nodes[n++].ctx = cancelable(nodes[q].ctx);
    pthread_t threads[NODES];
    for (int i = NODES - 1; i >= 0; i--) /* leaves first: the opposite of a cascade */
        threads[i] = start_thread(cancel_thread, nodes[i].ctx);
    for (int i = 0; i < NODES; i++) {
        assert_true(dctx_wait(nodes[i].ctx, SEC(10)));
        assert_int_equal(dctx_err(nodes[i].ctx), DCTX_CANCELED);
    }
    for (int i = 0; i < NODES; i++)
        join_thread(threads[i]);
    for (int i = NODES - 1; i >= 0; i--)
        dctx_release(nodes[i].ctx);
}

static void *cancel_child_when_parent_done(void *p)
{
    dctx **pc = p;
    dctx_wait(pc[0], -1);
    dctx_cancel(pc[1]);
    return NULL;
}

/* TestInterlockedCancels */
static void interlocked_cancels_do_not_deadlock(void **state)
{
    (void)state;
    dctx *pc[2];
    pc[0] = cancelable(dctx_background());
    pc[1] = cancelable(pc[0]);
    pthread_t t = start_thread(cancel_child_when_parent_done, pc);
    dctx_cancel(pc[0]);
    assert_true(dctx_wait(pc[1], SEC(10)));
    join_thread(t);
    dctx_release(pc[1]);
    dctx_release(pc[0]);
}

/* testLayers: random stacks of value, cancel and timeout layers; canceling
 * any cancelable layer (or a timeout firing) reaches the leaf, and every
 * value stays readable. */
static void layers(unsigned seed, bool test_timeout)
{
    enum { MIN_LAYERS = 30, MAX_LAYERS = 200 };
    dctx_key keys[MAX_LAYERS];
    dctx *made[MAX_LAYERS], *cancels[MAX_LAYERS];
    int vals[MAX_LAYERS];
    int n = 0, nvals = 0, ncancels = 0, ntimers = 0;
    dctx *ctx = dctx_background();
    srand(seed);
    for (int i = 0; i < MIN_LAYERS || ntimers == 0 || ncancels == 0 || nvals == 0; i++) {
        assert_true(n < MAX_LAYERS);
        dctx *next = NULL;
        switch (rand() % 3) {
        case 0:
            keys[nvals] = (dctx_key){"layer", 0};
            assert_int_equal(dctx_with_value(ctx, &keys[nvals], &nvals, sizeof nvals, &next), 0);
            vals[nvals] = nvals;
            nvals++;
            break;
        case 1:
            assert_int_equal(dctx_with_cancel(ctx, &next), 0);
            cancels[ncancels++] = next;
            break;
        default:
            assert_int_equal(dctx_with_timeout(ctx, test_timeout ? SHORT : VERY_LONG, &next), 0);
            cancels[ncancels++] = next;
            ntimers++;
        }
        made[n++] = ctx = next;
    }
    for (int v = 0; v < nvals; v++)
        assert_int_equal(*(const int *)dctx_value(ctx, &keys[v], NULL), vals[v]);
    assert_false(dctx_done(ctx));
    if (test_timeout) {
        assert_true(dctx_wait(ctx, SEC(5) * stress_scale()));
        assert_int_equal(dctx_err(ctx), DCTX_DEADLINE_EXCEEDED);
    } else {
        dctx_cancel(cancels[rand() % ncancels]);
        assert_true(dctx_done(ctx));
        assert_int_equal(dctx_err(ctx), DCTX_CANCELED);
    }
    for (int v = 0; v < nvals; v++)
        assert_int_equal(*(const int *)dctx_value(ctx, &keys[v], NULL), vals[v]);
    /* release from the root end: the children still hold their parents */
    for (int i = 0; i < n; i++)
        dctx_release(made[i]);
}

/* TestLayersCancel, TestLayersTimeout */
static void cancel_or_timeout_of_any_layer_reaches_the_leaf_and_keeps_values(void **state)
{
    (void)state;
    for (unsigned seed = 1; seed <= 20; seed++) {
        layers(seed, false);
        layers(seed, true);
    }
}

/* TestAllocs: at most one allocation per constructor, none on cancel, on
 * lookup or on queries. */
static void constructors_allocate_once_and_cancel_allocates_nothing(void **state)
{
    (void)state;
    static const dctx_key key = {"k", 0};
    dctx *parent = cancelable(dctx_background());
    dctx *c = NULL;
    /* warm up the timer thread and heap */
    assert_int_equal(dctx_with_timeout(parent, SEC(3600), &c), 0);
    dctx_release(c);

    long before = dctx__test_alloc_count();
    assert_int_equal(dctx_with_cancel(parent, &c), 0);
    assert_int_equal(dctx__test_alloc_count() - before, 1);
    before = dctx__test_alloc_count();
    dctx_cancel(c);
    dctx_release(c);
    assert_int_equal(dctx__test_alloc_count() - before, 0);

    before = dctx__test_alloc_count();
    assert_int_equal(dctx_with_deadline_cause(parent, dctx_now() + SEC(3600), DCTX_ABORTED,
                                              "a cause shares the node's allocation", &c),
                     0);
    assert_int_equal(dctx__test_alloc_count() - before, 1);
    before = dctx__test_alloc_count();
    dctx_cancel(c);
    dctx_release(c);
    assert_int_equal(dctx__test_alloc_count() - before, 0);

    before = dctx__test_alloc_count();
    assert_int_equal(dctx_with_value(parent, &key, "value bytes", 12, &c), 0);
    assert_int_equal(dctx__test_alloc_count() - before, 1);
    before = dctx__test_alloc_count();
    for (int i = 0; i < 100; i++) {
        assert_non_null(dctx_value(c, &key, NULL));
        assert_false(dctx_done(c));
        assert_int_equal(dctx_err(c), 0);
        assert_int_equal(dctx_cause(c, NULL), 0);
        assert_true(dctx_deadline(c, NULL) == false);
    }
    dctx_cancel(parent); /* a cascade allocates nothing either */
    assert_int_equal(dctx__test_alloc_count() - before, 0);
    dctx_release(c);
    dctx_release(parent);
}

/* Every constructor fails cleanly when memory runs out: a code, a NULL
 * out, and nothing leaked (LeakSanitizer checks the last part). */
static void out_of_memory_is_resource_exhausted(void **state)
{
    (void)state;
    static const dctx_key key = {"k", 0};
    dctx *parent = cancelable(dctx_background());
    dctx *c = (dctx *)&c;
    dctx__test_fail_alloc_after(0);
    assert_int_equal(dctx_with_cancel(parent, &c), DCTX_RESOURCE_EXHAUSTED);
    assert_null(c);
    assert_int_equal(dctx_with_timeout(parent, SEC(1), &c), DCTX_RESOURCE_EXHAUSTED);
    assert_null(c);
    assert_int_equal(dctx_with_value(parent, &key, "v", 2, &c), DCTX_RESOURCE_EXHAUSTED);
    assert_null(c);
    assert_int_equal(dctx_without_cancel(parent, &c), DCTX_RESOURCE_EXHAUSTED);
    assert_null(c);
    assert_int_equal(dctx_after_func(parent, free, NULL, NULL), DCTX_RESOURCE_EXHAUSTED);
    /* a cause whose text cannot be copied keeps its code */
    dctx *child = NULL;
    dctx__test_fail_alloc_after(1);
    assert_int_equal(dctx_with_cancel(parent, &child), 0);
    dctx_cancel_cause(parent, DCTX_ABORTED, "lost");
    dctx__test_fail_alloc_after(-1);
    const char *msg = "x";
    assert_int_equal(dctx_cause(child, &msg), DCTX_ABORTED);
    assert_null(msg);
    /* a value too large to address */
    assert_int_equal(dctx_with_value(parent, &key, "v", SIZE_MAX - 8, &c), DCTX_RESOURCE_EXHAUSTED);
    dctx_release(child);
    dctx_release(parent);
}

static void status_codes_have_grpc_numbers_names_and_texts(void **state)
{
    (void)state;
    assert_string_equal(dctx_strerror(DCTX_CANCELED), "context canceled");
    assert_string_equal(dctx_strerror(DCTX_DEADLINE_EXCEEDED), "context deadline exceeded");
    assert_string_equal(dctx_code_name(DCTX_OK), "OK");
    assert_string_equal(dctx_code_name(DCTX_CANCELLED), "CANCELLED");
    assert_string_equal(dctx_code_name(DCTX_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
    assert_string_equal(dctx_code_name(DCTX_UNAUTHENTICATED), "UNAUTHENTICATED");
    assert_string_equal(dctx_code_name(-1), "UNKNOWN");
    assert_string_equal(dctx_code_name(17), "UNKNOWN");
    assert_string_equal(dctx_strerror(1000), "unknown status code");
    for (int code = 0; code <= DCTX_CODE_MAX; code++) {
        assert_int_equal(dctx_code_from_name(dctx_code_name(code)), code);
        assert_non_null(dctx_strerror(code));
    }
    assert_int_equal(dctx_code_from_name("NOPE"), -1);
    assert_int_equal(dctx_code_from_name(NULL), -1);
    /* the fixed numbering of gRPC */
    assert_int_equal(DCTX_UNIMPLEMENTED, 12);
    assert_int_equal(DCTX_UNAVAILABLE, 14);
    assert_int_equal(DCTX_UNAUTHENTICATED, 16);
}

static void now_is_monotonic_nanoseconds(void **state)
{
    (void)state;
    int64_t a = dctx_now();
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    int64_t b = dctx_now();
    assert_true(b - a >= MS(2));
    assert_true(b - a < SEC(10));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roots_are_never_done_and_immortal),
        cmocka_unit_test(cancel_propagates_synchronously),
        cmocka_unit_test(canceling_a_parent_cancels_and_detaches_every_child),
        cmocka_unit_test(canceled_child_detaches_and_leaves_its_parent_live),
        cmocka_unit_test(cancel_removes_child_from_parent),
        cmocka_unit_test(deadline_ends_a_context_with_deadline_exceeded),
        cmocka_unit_test(timeout_ends_a_context_with_deadline_exceeded),
        cmocka_unit_test(canceled_timeout_context_ends_canceled_not_deadline_exceeded),
        cmocka_unit_test(values_are_found_by_key_identity_through_every_layer),
        cmocka_unit_test(null_arguments_are_invalid),
        cmocka_unit_test(cancel_ignores_value_and_detached_contexts),
        cmocka_unit_test(without_cancel_keeps_values_drops_cancel),
        cmocka_unit_test(child_of_canceled_parent_is_born_canceled),
        cmocka_unit_test(child_born_during_parent_cancel_gets_its_cause),
        cmocka_unit_test(every_node_of_a_tree_canceled_at_once_ends_without_deadlock),
        cmocka_unit_test(interlocked_cancels_do_not_deadlock),
        cmocka_unit_test(cancel_or_timeout_of_any_layer_reaches_the_leaf_and_keeps_values),
        cmocka_unit_test(constructors_allocate_once_and_cancel_allocates_nothing),
        cmocka_unit_test(out_of_memory_is_resource_exhausted),
        cmocka_unit_test(status_codes_have_grpc_numbers_names_and_texts),
        cmocka_unit_test(now_is_monotonic_nanoseconds),
    };
    return cmocka_run_group_tests_name("context", tests, NULL, NULL);
}
