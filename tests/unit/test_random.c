/*
 * test_random.c - the bytes behind cancel tokens and trace ids: no two
 * draws alike, across threads and across fork (a forked child's stream
 * must not replay its parent's: the same token in two processes would
 * let one caller's cancel stop another's call).
 */
#include <pthread.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"
#include "wire_impl.h"

#define DRAWS 20000
#define TOKEN 16

static int cmp_token(const void *a, const void *b)
{
    return memcmp(a, b, TOKEN);
}

static void draws_in_one_thread_never_repeat(void **state)
{
    (void)state;
    static unsigned char tokens[DRAWS][TOKEN];
    for (int i = 0; i < DRAWS; i++)
        assert_true(dctx__random(tokens[i], TOKEN));
    qsort(tokens, DRAWS, TOKEN, cmp_token);
    for (int i = 1; i < DRAWS; i++)
        assert_true(memcmp(tokens[i - 1], tokens[i], TOKEN) != 0);
}

/* Every bit is set about half the time: the stream is not stuck or zero. */
static void bits_are_balanced(void **state)
{
    (void)state;
    enum { N = 4096 };
    static unsigned char buf[N];
    assert_true(dctx__random(buf, N));
    long ones = 0;
    for (int i = 0; i < N; i++)
        ones += __builtin_popcount(buf[i]);
    /* 32768 bits: mean 16384, sd 90.5; 8 sd either side */
    assert_in_range(ones, 16384 - 724, 16384 + 724);
}

/* Draws larger than one refill, and odd sizes, come out whole. */
static void long_and_odd_draws_are_filled(void **state)
{
    (void)state;
    static unsigned char a[3001], b[3001];
    memset(a, 0, sizeof a);
    memset(b, 0, sizeof b);
    assert_true(dctx__random(a, sizeof a));
    assert_true(dctx__random(b, sizeof b));
    assert_true(memcmp(a, b, sizeof a) != 0);
    /* no run of 64 zero bytes anywhere: nothing was left unfilled */
    int zeros = 0;
    for (size_t i = 0; i < sizeof a; i++) {
        zeros = a[i] == 0 ? zeros + 1 : 0;
        assert_true(zeros < 64);
    }
}

struct thread_draws {
    unsigned char tokens[DRAWS / 4][TOKEN];
};

static void *draw_thread(void *arg)
{
    struct thread_draws *d = arg;
    for (int i = 0; i < DRAWS / 4; i++)
        if (!dctx__random(d->tokens[i], TOKEN))
            memset(d->tokens[i], 0, TOKEN);
    return NULL;
}

static void threads_draw_different_bytes(void **state)
{
    (void)state;
    enum { THREADS = 4 };
    static struct thread_draws d[THREADS];
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, draw_thread, &d[i]), 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    static unsigned char all[DRAWS][TOKEN];
    memcpy(all, d, sizeof d);
    qsort(all, DRAWS, TOKEN, cmp_token);
    for (int i = 1; i < DRAWS; i++)
        assert_true(memcmp(all[i - 1], all[i], TOKEN) != 0);
}

/* The parent has drawn (its stream is keyed); after fork the parent and
 * the child each draw: the two must differ. */
static void forked_child_does_not_replay_the_parents_stream(void **state)
{
    (void)state;
    unsigned char warm[TOKEN], mine[4][TOKEN], theirs[4][TOKEN];
    assert_true(dctx__random(warm, sizeof warm));
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        unsigned char out[4][TOKEN];
        bool ok = dctx__random(out, sizeof out);
        ssize_t n = ok ? write(fds[1], out, sizeof out) : -1;
        _exit(n == (ssize_t)sizeof out ? 0 : 1);
    }
    close(fds[1]);
    assert_true(dctx__random(mine, sizeof mine));
    size_t got = 0;
    while (got < sizeof theirs) {
        ssize_t n = read(fds[0], (unsigned char *)theirs + got, sizeof theirs - got);
        assert_true(n > 0);
        got += (size_t)n;
    }
    close(fds[0]);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            assert_true(memcmp(mine[i], theirs[j], TOKEN) != 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(draws_in_one_thread_never_repeat),
        cmocka_unit_test(bits_are_balanced),
        cmocka_unit_test(long_and_odd_draws_are_filled),
        cmocka_unit_test(threads_draw_different_bytes),
        cmocka_unit_test(forked_child_does_not_replay_the_parents_stream),
    };
    return cmocka_run_group_tests_name("random", tests, NULL, NULL);
}
