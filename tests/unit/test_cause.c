/*
 * test_cause.c - Go's TestCause table, row by row, and TestCauseRace.
 *
 * Go's causes are errors; here a cause is a code and a message, so each Go
 * error becomes a distinct (code, text) pair and both are checked.
 */
#include <string.h>

#include "testutil.h"

#define FOREVER SEC(1000000)

/* Go's cause errors */
#define PARENT_CAUSE DCTX_ABORTED, "parentCause"
#define CHILD_CAUSE DCTX_UNAVAILABLE, "childCause"
#define TOO_SLOW DCTX_RESOURCE_EXHAUSTED, "tooSlow"
#define FINISHED_EARLY DCTX_FAILED_PRECONDITION, "finishedEarly"

/* Every context a row makes, released after the row. */
struct row_state {
    dctx *made[4];
    int n;
};

static dctx *keep(struct row_state *rs, dctx *ctx)
{
    rs->made[rs->n++] = ctx;
    return ctx;
}

static dctx *new_cancel(struct row_state *rs, dctx *parent)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_cancel(parent, &c), 0);
    return keep(rs, c);
}

static dctx *new_timeout_cause(struct row_state *rs, dctx *parent, int64_t timeout, int cause,
                               const char *msg)
{
    dctx *c = NULL;
    assert_int_equal(dctx_with_timeout_cause(parent, timeout, cause, msg, &c), 0);
    return keep(rs, c);
}

static dctx *new_without_cancel(struct row_state *rs, dctx *parent)
{
    dctx *c = NULL;
    assert_int_equal(dctx_without_cancel(parent, &c), 0);
    return keep(rs, c);
}

static dctx *row_background(struct row_state *rs)
{
    (void)rs;
    return dctx_background();
}

static dctx *row_todo(struct row_state *rs)
{
    (void)rs;
    return dctx_todo();
}

static dctx *row_with_cancel(struct row_state *rs)
{
    dctx *ctx = new_cancel(rs, dctx_background());
    dctx_cancel(ctx);
    return ctx;
}

static dctx *row_with_cancel_cause(struct row_state *rs)
{
    dctx *ctx = new_cancel(rs, dctx_background());
    dctx_cancel_cause(ctx, PARENT_CAUSE);
    return ctx;
}

static dctx *row_with_cancel_cause_nil(struct row_state *rs)
{
    dctx *ctx = new_cancel(rs, dctx_background());
    dctx_cancel_cause(ctx, 0, NULL);
    return ctx;
}

static dctx *row_parent_cause_before_child(struct row_state *rs)
{
    dctx *parent = new_cancel(rs, dctx_background());
    dctx *child = new_cancel(rs, parent);
    dctx_cancel_cause(parent, PARENT_CAUSE);
    dctx_cancel_cause(child, CHILD_CAUSE);
    return child;
}

static dctx *row_parent_cause_after_child(struct row_state *rs)
{
    dctx *parent = new_cancel(rs, dctx_background());
    dctx *child = new_cancel(rs, parent);
    dctx_cancel_cause(child, CHILD_CAUSE);
    dctx_cancel_cause(parent, PARENT_CAUSE);
    return child;
}

static dctx *row_parent_cause_before_nil(struct row_state *rs)
{
    dctx *parent = new_cancel(rs, dctx_background());
    dctx *child = new_cancel(rs, parent);
    dctx_cancel_cause(parent, PARENT_CAUSE);
    dctx_cancel_cause(child, 0, NULL);
    return child;
}

static dctx *row_parent_cause_after_nil(struct row_state *rs)
{
    dctx *parent = new_cancel(rs, dctx_background());
    dctx *child = new_cancel(rs, parent);
    dctx_cancel_cause(child, 0, NULL);
    dctx_cancel_cause(parent, PARENT_CAUSE);
    return child;
}

static dctx *row_child_cause_after_nil(struct row_state *rs)
{
    dctx *parent = new_cancel(rs, dctx_background());
    dctx *child = new_cancel(rs, parent);
    dctx_cancel_cause(parent, 0, NULL);
    dctx_cancel_cause(child, CHILD_CAUSE);
    return child;
}

static dctx *row_child_cause_before_nil(struct row_state *rs)
{
    dctx *parent = new_cancel(rs, dctx_background());
    dctx *child = new_cancel(rs, parent);
    dctx_cancel_cause(child, CHILD_CAUSE);
    dctx_cancel_cause(parent, 0, NULL);
    return child;
}

static dctx *row_with_timeout(struct row_state *rs)
{
    dctx *ctx = new_timeout_cause(rs, dctx_background(), 0, 0, NULL);
    dctx_cancel(ctx);
    return ctx;
}

static dctx *row_with_timeout_canceled(struct row_state *rs)
{
    dctx *ctx = new_timeout_cause(rs, dctx_background(), FOREVER, 0, NULL);
    dctx_cancel(ctx);
    return ctx;
}

static dctx *row_with_timeout_cause(struct row_state *rs)
{
    dctx *ctx = new_timeout_cause(rs, dctx_background(), 0, TOO_SLOW);
    dctx_cancel(ctx);
    return ctx;
}

static dctx *row_with_timeout_cause_canceled(struct row_state *rs)
{
    dctx *ctx = new_timeout_cause(rs, dctx_background(), FOREVER, TOO_SLOW);
    dctx_cancel(ctx);
    return ctx;
}

static dctx *row_with_timeout_cause_stacked(struct row_state *rs)
{
    dctx *parent = new_cancel(rs, dctx_background());
    dctx *ctx = new_timeout_cause(rs, parent, 0, TOO_SLOW);
    dctx_cancel_cause(parent, FINISHED_EARLY);
    return ctx;
}

static dctx *row_with_timeout_cause_stacked_canceled(struct row_state *rs)
{
    dctx *parent = new_cancel(rs, dctx_background());
    dctx *ctx = new_timeout_cause(rs, parent, FOREVER, TOO_SLOW);
    dctx_cancel_cause(parent, FINISHED_EARLY);
    return ctx;
}

static dctx *row_without_cancel(struct row_state *rs)
{
    return new_without_cancel(rs, dctx_background());
}

static dctx *row_without_cancel_canceled(struct row_state *rs)
{
    dctx *parent = new_cancel(rs, dctx_background());
    dctx *ctx = new_without_cancel(rs, parent);
    dctx_cancel_cause(parent, FINISHED_EARLY);
    return ctx;
}

static dctx *row_without_cancel_timeout(struct row_state *rs)
{
    dctx *parent = new_timeout_cause(rs, dctx_background(), 0, TOO_SLOW);
    dctx *ctx = new_without_cancel(rs, parent);
    dctx_cancel(parent);
    return ctx;
}

struct row {
    const char *name;
    dctx *(*make)(struct row_state *);
    int err;
    int cause;
    const char *msg; /* the cause's text, NULL for none */
};

#define NONE 0, NULL

static const struct row rows[] = {
    {"Background", row_background, 0, NONE},
    {"TODO", row_todo, 0, NONE},
    {"WithCancel", row_with_cancel, DCTX_CANCELED, DCTX_CANCELED, NULL},
    {"WithCancelCause", row_with_cancel_cause, DCTX_CANCELED, PARENT_CAUSE},
    {"WithCancelCause nil", row_with_cancel_cause_nil, DCTX_CANCELED, DCTX_CANCELED, NULL},
    {"parent cause before child", row_parent_cause_before_child, DCTX_CANCELED, PARENT_CAUSE},
    {"parent cause after child", row_parent_cause_after_child, DCTX_CANCELED, CHILD_CAUSE},
    {"parent cause before nil", row_parent_cause_before_nil, DCTX_CANCELED, PARENT_CAUSE},
    {"parent cause after nil", row_parent_cause_after_nil, DCTX_CANCELED, DCTX_CANCELED, NULL},
    {"child cause after nil", row_child_cause_after_nil, DCTX_CANCELED, DCTX_CANCELED, NULL},
    {"child cause before nil", row_child_cause_before_nil, DCTX_CANCELED, CHILD_CAUSE},
    {"WithTimeout", row_with_timeout, DCTX_DEADLINE_EXCEEDED, DCTX_DEADLINE_EXCEEDED, NULL},
    {"WithTimeout canceled", row_with_timeout_canceled, DCTX_CANCELED, DCTX_CANCELED, NULL},
    {"WithTimeoutCause", row_with_timeout_cause, DCTX_DEADLINE_EXCEEDED, TOO_SLOW},
    {"WithTimeoutCause canceled", row_with_timeout_cause_canceled, DCTX_CANCELED, DCTX_CANCELED,
     NULL},
    {"WithTimeoutCause stacked", row_with_timeout_cause_stacked, DCTX_DEADLINE_EXCEEDED, TOO_SLOW},
    {"WithTimeoutCause stacked canceled", row_with_timeout_cause_stacked_canceled, DCTX_CANCELED,
     FINISHED_EARLY},
    {"WithoutCancel", row_without_cancel, 0, NONE},
    {"WithoutCancel canceled", row_without_cancel_canceled, 0, NONE},
    {"WithoutCancel timeout", row_without_cancel_timeout, 0, NONE},
};

static void each_row_of_gos_cause_table_ends_with_its_error_and_cause(void **state)
{
    (void)state;
    assert_int_equal(sizeof rows / sizeof rows[0], 20);
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        const struct row *r = &rows[i];
        struct row_state rs = {.n = 0};
        dctx *ctx = r->make(&rs);
        const char *msg = "unset";
        int err = dctx_err(ctx), cause = dctx_cause(ctx, &msg);
        if (err != r->err || cause != r->cause ||
            (r->msg == NULL ? msg != NULL : (msg == NULL || strcmp(msg, r->msg) != 0)))
            fail_msg("%s: got err %d cause %d msg %s, want err %d cause %d msg %s", r->name, err,
                     cause, msg ? msg : "(null)", r->err, r->cause, r->msg ? r->msg : "(null)");
        while (rs.n > 0)
            dctx_release(rs.made[--rs.n]);
    }
}

/* Go's rule for a cause given to a cancel that loses: the context keeps
 * the first, and so do children created afterwards. */
static void first_cause_wins_and_children_inherit_it(void **state)
{
    (void)state;
    dctx *parent = NULL, *child = NULL, *late = NULL;
    assert_int_equal(dctx_with_cancel(dctx_background(), &parent), 0);
    assert_int_equal(dctx_with_cancel(parent, &child), 0);
    dctx_cancel_cause(parent, DCTX_DATA_LOSS, "first");
    dctx_cancel_cause(parent, DCTX_ABORTED, "second");
    dctx_cancel(parent);
    const char *msg = NULL;
    assert_int_equal(dctx_cause(parent, &msg), DCTX_DATA_LOSS);
    assert_string_equal(msg, "first");
    assert_int_equal(dctx_cause(child, &msg), DCTX_DATA_LOSS);
    assert_string_equal(msg, "first");
    assert_int_equal(dctx_with_cancel(child, &late), 0);
    assert_int_equal(dctx_cause(late, &msg), DCTX_DATA_LOSS);
    assert_string_equal(msg, "first");
    /* the text is a copy, and lives as long as the context */
    dctx_release(parent);
    dctx_release(child);
    assert_int_equal(dctx_cause(late, &msg), DCTX_DATA_LOSS);
    assert_string_equal(msg, "first");
    dctx_release(late);
}

static void cause_codes_outside_the_space_become_unknown(void **state)
{
    (void)state;
    int bad[] = {-1, DCTX_CODE_MAX + 1, 1000};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dctx *c = NULL;
        assert_int_equal(dctx_with_cancel(dctx_background(), &c), 0);
        dctx_cancel_cause(c, bad[i], NULL);
        assert_int_equal(dctx_err(c), DCTX_CANCELED);
        assert_int_equal(dctx_cause(c, NULL), DCTX_UNKNOWN);
        dctx_release(c);
    }
    /* a deadline cause of 0 means DEADLINE_EXCEEDED; and a cancel may carry
     * a deadline cause from elsewhere (the RPC layer does this) */
    dctx *c = NULL;
    assert_int_equal(dctx_with_timeout_cause(dctx_background(), 0, 0, "late", &c), 0);
    const char *msg = NULL;
    assert_int_equal(dctx_cause(c, &msg), DCTX_DEADLINE_EXCEEDED);
    assert_string_equal(msg, "late");
    dctx_release(c);
    assert_int_equal(dctx_with_cancel(dctx_background(), &c), 0);
    dctx_cancel_cause(c, DCTX_DEADLINE_EXCEEDED, "upstream deadline");
    assert_int_equal(dctx_err(c), DCTX_CANCELED);
    assert_int_equal(dctx_cause(c, NULL), DCTX_DEADLINE_EXCEEDED);
    dctx_release(c);
}

static void *cancel_with_cause(void *ctx)
{
    dctx_cancel_cause(ctx, DCTX_PERMISSION_DENIED, "raced");
    return NULL;
}

/* TestCauseRace: polling dctx_cause while another thread cancels is race
 * free (ThreadSanitizer) and ends with the cause and its text. */
static void cause_polled_while_another_thread_cancels_ends_with_its_text(void **state)
{
    (void)state;
    for (int i = 0; i < 200; i++) {
        dctx *c = NULL;
        assert_int_equal(dctx_with_cancel(dctx_background(), &c), 0);
        pthread_t t = start_thread(cancel_with_cause, c);
        const char *msg = NULL;
        int cause;
        while ((cause = dctx_cause(c, &msg)) == 0)
            ;
        assert_int_equal(cause, DCTX_PERMISSION_DENIED);
        assert_string_equal(msg, "raced");
        join_thread(t);
        dctx_release(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(each_row_of_gos_cause_table_ends_with_its_error_and_cause),
        cmocka_unit_test(first_cause_wins_and_children_inherit_it),
        cmocka_unit_test(cause_codes_outside_the_space_become_unknown),
        cmocka_unit_test(cause_polled_while_another_thread_cancels_ends_with_its_text),
    };
    return cmocka_run_group_tests_name("cause", tests, NULL, NULL);
}
