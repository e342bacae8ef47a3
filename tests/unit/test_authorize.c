/*
 * test_authorize.c - a server's decision on each call and the limit on
 * reporting refusals (lib/rpc/authorize.c, authorize.h).
 *
 * dctx__authorize: the allow list first (a listed key calls anything, a
 * key limited to methods calls only those, an unlisted key nothing, each
 * refusal PERMISSION_DENIED saying which), then the application's hook:
 * its code and message pass through, a code out of range becomes
 * PERMISSION_DENIED, and an empty or unterminated message gets the
 * library's. The hook is not asked about a call the allow list refused.
 *
 * dctx__report_limit_take, driven through its now_ns (no sleeps): a
 * slot reports once per second, counts what it leaves out and hands the
 * count to its next report; peers in different slots are reported side
 * by side; a slot busy with another peer within its second suppresses
 * (and counts) the second peer. The slot comes from SipHash under a key
 * random per limit, so the test cannot pick colliding names: it finds
 * two by trying names against one limit (about 40 tries for 1,024 slots).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/identity.h>
#include <dctx/rpc.h>

#include "authorize.h"
#include "testutil.h"

#define ONLY "/it.Auth/Only"
#define OTHER "/it.Auth/Other"

/* ===== dctx__authorize ===== */

#define assert_contains_text(hay, needle)                                                          \
    do {                                                                                           \
        if (strstr((hay), (needle)) == NULL)                                                       \
            fail_msg("\"%s\" does not contain \"%s\"", (hay), (needle));                           \
    } while (0)

/* Three keys: A on the list for everything, B for ONLY, C not listed. */
static unsigned char key_a[DCTX_PUBLIC_KEY_BYTES], key_b[DCTX_PUBLIC_KEY_BYTES],
    key_c[DCTX_PUBLIC_KEY_BYTES];
static char text_a[DCTX_PUBLIC_KEY_TEXT_BYTES], text_b[DCTX_PUBLIC_KEY_TEXT_BYTES],
    text_c[DCTX_PUBLIC_KEY_TEXT_BYTES];

static void make_key(unsigned char key[DCTX_PUBLIC_KEY_BYTES],
                     char text[DCTX_PUBLIC_KEY_TEXT_BYTES], unsigned char seed)
{
    for (int i = 0; i < DCTX_PUBLIC_KEY_BYTES; i++)
        key[i] = (unsigned char)(seed * 31 + i * 7);
    dctx_public_key_text(key, text);
}

static dctx_allow *allow_a_all_b_only(void)
{
    make_key(key_a, text_a, 1);
    make_key(key_b, text_b, 2);
    make_key(key_c, text_c, 3);
    char list[512], err[256] = "";
    snprintf(list, sizeof list, "# the test's list\n%s\n%s " ONLY "\n", text_a, text_b);
    dctx_allow *a = NULL;
    if (dctx_allow_parse(list, strlen(list), &a, err, sizeof err) != 0)
        fail_msg("the allow list does not parse: %s", err);
    assert_int_equal(dctx_allow_count(a), 2);
    return a;
}

/* What the hook does and what it saw. */
struct hook {
    int code;          /* returned */
    const char *why;   /* written into why; NULL: left as it is */
    bool unterminated; /* fill all of why with 'x', no NUL */
    int calls;
    bool had_key;
    unsigned char key[DCTX_PUBLIC_KEY_BYTES];
    char method[64];
};

static int hook_fn(void *arg, const unsigned char *caller_key, const char *method, char *why,
                   size_t why_len)
{
    struct hook *h = arg;
    h->calls++;
    h->had_key = caller_key != NULL;
    if (caller_key != NULL)
        memcpy(h->key, caller_key, sizeof h->key);
    snprintf(h->method, sizeof h->method, "%s", method);
    if (h->unterminated)
        memset(why, 'x', why_len);
    else if (h->why != NULL)
        snprintf(why, why_len, "%s", h->why);
    return h->code;
}

static dctx_rpc_server_options options(const dctx_allow *allow, struct hook *h)
{
    dctx_rpc_server_options o;
    dctx_rpc_server_options_init(&o);
    o.allow = allow;
    if (h != NULL) {
        o.authorize = hook_fn;
        o.authorize_arg = h;
    }
    return o;
}

static void nothing_set_lets_every_call_in(void **state)
{
    (void)state;
    dctx_rpc_server_options o = options(NULL, NULL);
    char why[128] = "stale";
    unsigned char key[DCTX_PUBLIC_KEY_BYTES] = {7};
    assert_int_equal(dctx__authorize(&o, key, OTHER, why, sizeof why), DCTX_OK);
    assert_string_equal(why, "");
    assert_int_equal(dctx__authorize(&o, NULL, OTHER, why, sizeof why), DCTX_OK);
    assert_string_equal(why, "");
}

static void allow_list_lets_listed_keys_call_what_it_says(void **state)
{
    (void)state;
    dctx_allow *a = allow_a_all_b_only();
    dctx_rpc_server_options o = options(a, NULL);
    char why[256];

    /* A key alone on its line calls every method. */
    assert_int_equal(dctx__authorize(&o, key_a, ONLY, why, sizeof why), DCTX_OK);
    assert_string_equal(why, "");
    assert_int_equal(dctx__authorize(&o, key_a, OTHER, why, sizeof why), DCTX_OK);

    /* A key limited to ONLY: ONLY yes, OTHER refused, naming key and method. */
    assert_int_equal(dctx__authorize(&o, key_b, ONLY, why, sizeof why), DCTX_OK);
    assert_int_equal(dctx__authorize(&o, key_b, OTHER, why, sizeof why), DCTX_PERMISSION_DENIED);
    char want[256];
    snprintf(want, sizeof want, "%s may not call %s", text_b, OTHER);
    assert_string_equal(why, want);

    /* A key not on the list: refused for any method, saying so. */
    assert_int_equal(dctx__authorize(&o, key_c, ONLY, why, sizeof why), DCTX_PERMISSION_DENIED);
    snprintf(want, sizeof want, "%s is not on the server's allow list", text_c);
    assert_string_equal(why, want);
    dctx_allow_free(a);
}

static void hook_decides_after_the_allow_list(void **state)
{
    (void)state;
    dctx_allow *a = allow_a_all_b_only();
    static struct hook h;
    memset(&h, 0, sizeof h);
    h.code = DCTX_UNAVAILABLE;
    h.why = "come back later";
    dctx_rpc_server_options o = options(a, &h);
    char why[256];

    /* Let in by the list: the hook decides, with the caller's key and the method. */
    assert_int_equal(dctx__authorize(&o, key_b, ONLY, why, sizeof why), DCTX_UNAVAILABLE);
    assert_string_equal(why, "come back later");
    assert_int_equal(h.calls, 1);
    assert_true(h.had_key);
    assert_memory_equal(h.key, key_b, sizeof h.key);
    assert_string_equal(h.method, ONLY);

    /* Refused by the list: the hook is not asked, the list's answer stands. */
    assert_int_equal(dctx__authorize(&o, key_b, OTHER, why, sizeof why), DCTX_PERMISSION_DENIED);
    assert_contains_text(why, "may not call " OTHER);
    assert_int_equal(dctx__authorize(&o, key_c, ONLY, why, sizeof why), DCTX_PERMISSION_DENIED);
    assert_contains_text(why, "is not on the server's allow list");
    assert_int_equal(h.calls, 1);

    /* The hook says OK: OK, with no message. */
    h.code = DCTX_OK;
    h.why = NULL;
    assert_int_equal(dctx__authorize(&o, key_a, OTHER, why, sizeof why), DCTX_OK);
    assert_string_equal(why, "");
    assert_int_equal(h.calls, 2);

    /* Without an allow list the hook alone decides, also for a caller
     * without keys (NULL key). */
    dctx_rpc_server_options no_list = options(NULL, &h);
    h.code = DCTX_RESOURCE_EXHAUSTED;
    h.why = "quota spent";
    assert_int_equal(dctx__authorize(&no_list, NULL, ONLY, why, sizeof why),
                     DCTX_RESOURCE_EXHAUSTED);
    assert_string_equal(why, "quota spent");
    assert_false(h.had_key);
    dctx_allow_free(a);
}

static void hook_code_out_of_range_is_permission_denied(void **state)
{
    (void)state;
    static struct hook h;
    const int bad[] = {DCTX_CODE_MAX + 1, 99, -1, -1000};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&h, 0, sizeof h);
        h.code = bad[i];
        h.why = "no";
        dctx_rpc_server_options o = options(NULL, &h);
        char why[128];
        int code = dctx__authorize(&o, NULL, ONLY, why, sizeof why);
        if (code != DCTX_PERMISSION_DENIED)
            fail_msg("hook code %d came out as %d", bad[i], code);
        assert_string_equal(why, "no"); /* its message kept */
    }
    /* The edges of the range pass through as they are. */
    h.code = DCTX_CODE_MAX;
    dctx_rpc_server_options o = options(NULL, &h);
    char why[128];
    assert_int_equal(dctx__authorize(&o, NULL, ONLY, why, sizeof why), DCTX_CODE_MAX);
    h.code = 1;
    assert_int_equal(dctx__authorize(&o, NULL, ONLY, why, sizeof why), 1);
}

static void hook_without_a_message_gets_the_default(void **state)
{
    (void)state;
    static struct hook h;
    memset(&h, 0, sizeof h);
    h.code = DCTX_PERMISSION_DENIED; /* why left empty */
    dctx_rpc_server_options o = options(NULL, &h);
    char why[128] = "stale";
    assert_int_equal(dctx__authorize(&o, NULL, ONLY, why, sizeof why), DCTX_PERMISSION_DENIED);
    assert_string_equal(why, ONLY " refused by the server's authorization");

    /* Out of range and silent: both fixes. */
    h.code = 250;
    assert_int_equal(dctx__authorize(&o, NULL, OTHER, why, sizeof why), DCTX_PERMISSION_DENIED);
    assert_string_equal(why, OTHER " refused by the server's authorization");

    /* A why filled to the end without a NUL is not read past its end. */
    h.code = DCTX_UNAVAILABLE;
    h.unterminated = true;
    char small[24];
    assert_int_equal(dctx__authorize(&o, NULL, ONLY, small, sizeof small), DCTX_UNAVAILABLE);
    assert_int_equal(strlen(small), sizeof small - 1); /* the default, cut to fit */
    assert_int_equal(strncmp(small, ONLY " refused by the server's authorization", strlen(small)),
                     0);
}

/* ===== dctx__report_limit_take ===== */

#define T0 SEC(1000) /* any monotonic time: the limit only compares */

static struct dctx__report_limit *open_limit(void)
{
    struct dctx__report_limit *l = dctx__report_limit_open();
    assert_non_null(l);
    return l;
}

static bool take(struct dctx__report_limit *l, const char *peer, int64_t now, uint64_t *sup)
{
    *sup = 12345; /* a report must set it */
    return dctx__report_limit_take(l, peer, strlen(peer), now, sup);
}

static void one_report_per_second_carrying_the_count(void **state)
{
    (void)state;
    struct dctx__report_limit *l = open_limit();
    uint64_t sup;
    assert_true(take(l, "peer-a", T0, &sup)); /* the first refusal */
    assert_int_equal(sup, 0);
    assert_false(take(l, "peer-a", T0 + MS(1), &sup)); /* within the second */
    assert_false(take(l, "peer-a", T0 + SEC(1) - 1, &sup));
    assert_true(take(l, "peer-a", T0 + SEC(1), &sup)); /* a second after: the two left out */
    assert_int_equal(sup, 2);
    assert_false(take(l, "peer-a", T0 + SEC(1) + 1, &sup));
    assert_true(take(l, "peer-a", T0 + SEC(3), &sup)); /* long after: the one since */
    assert_int_equal(sup, 1);
    assert_true(take(l, "peer-a", T0 + SEC(5), &sup)); /* counted once only */
    assert_int_equal(sup, 0);
    dctx__report_limit_close(l);
    dctx__report_limit_close(NULL);
}

static void peers_in_different_slots_are_both_reported(void **state)
{
    (void)state;
    /* Two names share a slot once in 1,024 limits: another name then, in
     * a fresh limit (4 tries: all sharing is one in 10^12). */
    struct dctx__report_limit *l = NULL;
    uint64_t sup;
    char b[32] = "";
    for (int i = 0; i < 4 && b[0] == '\0'; i++) {
        dctx__report_limit_close(l);
        l = open_limit();
        assert_true(take(l, "peer-a", T0, &sup));
        snprintf(b, sizeof b, "peer-b%d", i);
        if (!take(l, b, T0, &sup))
            b[0] = '\0';
        else
            assert_int_equal(sup, 0);
    }
    if (b[0] == '\0')
        fail_msg("a second peer was never reported beside the first: one slot for all?");
    /* Each counts its own. */
    assert_false(take(l, "peer-a", T0 + MS(500), &sup));
    assert_false(take(l, b, T0 + MS(500), &sup));
    assert_false(take(l, b, T0 + MS(600), &sup));
    assert_true(take(l, "peer-a", T0 + SEC(1), &sup));
    assert_int_equal(sup, 1);
    assert_true(take(l, b, T0 + SEC(1), &sup));
    assert_int_equal(sup, 2);
    dctx__report_limit_close(l);
}

static void slot_busy_with_another_peer_suppresses_and_counts(void **state)
{
    (void)state;
    struct dctx__report_limit *l = open_limit();
    uint64_t sup;
    enum { NAMES = 100000 }; /* 1,025 suffice for 1,024 slots; room if the table grows */
    char(*names)[16] = calloc(NAMES, sizeof *names);
    assert_non_null(names);

    /* At T0 every name reported takes a slot of its own; the first that
     * is not shares the slot of one of those. */
    int c = -1;
    for (int i = 0; i < NAMES && c < 0; i++) {
        snprintf(names[i], sizeof names[i], "peer%06d", i);
        if (!take(l, names[i], T0, &sup))
            c = i;
    }
    if (c < 0)
        fail_msg("%d peers at the same time were all reported: no slots shared", NAMES);
    assert_true(c >= 1);

    /* Which one: 10 s on, c reports (with its one refusal left out) and
     * takes the slot; of the others, only its partner is suppressed. */
    int64_t t1 = T0 + SEC(10);
    assert_true(take(l, names[c], t1, &sup));
    assert_int_equal(sup, 1);
    int p = -1, suppressed = 0;
    for (int i = 0; i < c; i++) {
        if (!take(l, names[i], t1, &sup)) {
            p = i;
            suppressed++;
        }
    }
    assert_int_equal(suppressed, 1);

    /* The slot busy with p within its second: c is left out and counted,
     * and reported with the slot's count once the second has passed. */
    int64_t t2 = t1 + SEC(10);
    assert_true(take(l, names[p], t2, &sup));
    assert_int_equal(sup, 1); /* its refusal at t1, in c's second */
    assert_false(take(l, names[c], t2 + MS(1), &sup));
    assert_false(take(l, names[p], t2 + MS(2), &sup));
    assert_false(take(l, names[c], t2 + SEC(1) - 1, &sup));
    assert_true(take(l, names[c], t2 + SEC(1), &sup));
    assert_int_equal(sup, 3);
    assert_false(take(l, names[p], t2 + SEC(1) + 1, &sup)); /* now c's second */
    free(names);
    dctx__report_limit_close(l);
}

/* Threads refusing the same peer at the same instant: one report, and
 * every other refusal counted for the next. */
enum { THREADS = 4, TAKES = 2000 };

struct racer {
    struct dctx__report_limit *l;
    atomic_int *reports;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    for (int i = 0; i < TAKES; i++) {
        uint64_t sup;
        if (dctx__report_limit_take(r->l, "peer-x", 6, T0, &sup))
            atomic_fetch_add(r->reports, 1);
    }
    return NULL;
}

static void threads_refusing_at_once_report_once(void **state)
{
    (void)state;
    static atomic_int reports;
    atomic_store(&reports, 0);
    struct racer r = {open_limit(), &reports};
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        t[i] = start_thread(race, &r);
    for (int i = 0; i < THREADS; i++)
        join_thread(t[i]);
    assert_int_equal(atomic_load(&reports), 1);
    uint64_t sup;
    assert_true(take(r.l, "peer-x", T0 + SEC(1), &sup));
    assert_int_equal(sup, THREADS * TAKES - 1);
    dctx__report_limit_close(r.l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(nothing_set_lets_every_call_in),
        cmocka_unit_test(allow_list_lets_listed_keys_call_what_it_says),
        cmocka_unit_test(hook_decides_after_the_allow_list),
        cmocka_unit_test(hook_code_out_of_range_is_permission_denied),
        cmocka_unit_test(hook_without_a_message_gets_the_default),
        cmocka_unit_test(one_report_per_second_carrying_the_count),
        cmocka_unit_test(peers_in_different_slots_are_both_reported),
        cmocka_unit_test(slot_busy_with_another_peer_suppresses_and_counts),
        cmocka_unit_test(threads_refusing_at_once_report_once),
    };
    return cmocka_run_group_tests_name("authorize", tests, NULL, NULL);
}
