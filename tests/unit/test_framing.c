/*
 * test_framing.c - frames on a byte stream (lib/rpc/framing.c): bodies
 * come out whole and in order however the bytes are cut (at every byte
 * boundary, a byte at a time, many frames in one piece); lengths of 0 or
 * over the limit are refused from the header alone; a body's memory
 * follows the bytes that arrived, not the length the peer announced.
 */
#include <stdlib.h>
#include <string.h>

#include "framing.h"
#include "testutil.h"

#define MAX_BODY 100000

/* A stream of n frames with bodies of the given sizes, each body byte
 * naming its frame and place, so a mixed-up body is seen. */
static unsigned char *make_stream(const size_t *sizes, int n, size_t *len)
{
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += DCTX__FRAME_HEADER_BYTES + sizes[i];
    unsigned char *s = malloc(total);
    assert_non_null(s);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        dctx__frame_header((uint32_t)sizes[i], s + at);
        at += DCTX__FRAME_HEADER_BYTES;
        for (size_t k = 0; k < sizes[i]; k++)
            s[at++] = (unsigned char)(i * 31 + k);
    }
    *len = total;
    return s;
}

static void check_body(int i, const unsigned char *body, size_t len, const size_t *sizes)
{
    assert_int_equal(len, sizes[i]);
    for (size_t k = 0; k < len; k++)
        if (body[k] != (unsigned char)(i * 31 + k))
            fail_msg("frame %d byte %zu is %u", i, k, body[k]);
}

/* Feed stream in pieces of the sizes cuts gives (0 ends), checking every
 * frame; returns how many came out. */
static int feed_in_pieces(struct dctx__frame_reader *r, const unsigned char *stream, size_t len,
                          const size_t *sizes, size_t (*cut)(size_t at, void *arg), void *arg)
{
    int frames = 0;
    size_t at = 0;
    while (at < len) {
        size_t piece = cut(at, arg);
        if (piece > len - at)
            piece = len - at;
        const unsigned char *p = stream + at;
        size_t left = piece;
        for (;;) {
            const unsigned char *body;
            size_t body_len;
            enum dctx__frame_status st = dctx__frame_reader_next(r, &p, &left, &body, &body_len);
            if (st == DCTX__FRAME_NEED_MORE)
                break;
            assert_int_equal(st, DCTX__FRAME_READY);
            check_body(frames++, body, body_len, sizes);
        }
        assert_int_equal(left, 0);
        at += piece;
    }
    return frames;
}

static size_t cut_at(size_t at, void *arg)
{
    size_t split = *(size_t *)arg;
    return at < split ? split - at : SIZE_MAX;
}

static size_t one_byte(size_t at, void *arg)
{
    (void)at;
    (void)arg;
    return 1;
}

static const size_t sizes[] = {1, 5, 4095, 4096, 4097, 9000, 3, 70000, 2};
enum { N = sizeof sizes / sizeof sizes[0] };

static void every_split_point_yields_every_frame_whole_and_in_order(void **state)
{
    (void)state;
    static const size_t small[] = {1, 7, 300, 2, 5000, 4};
    size_t len;
    unsigned char *s = make_stream(small, 6, &len);
    for (size_t split = 0; split <= len; split++) {
        struct dctx__frame_reader r;
        dctx__frame_reader_init(&r, MAX_BODY);
        assert_int_equal(feed_in_pieces(&r, s, len, small, cut_at, &split), 6);
        assert_true(dctx__frame_reader_idle(&r));
        dctx__frame_reader_fini(&r);
    }
    free(s);
}

static void frames_fed_a_byte_at_a_time_come_out_whole(void **state)
{
    (void)state;
    size_t len;
    unsigned char *s = make_stream(sizes, N, &len);
    struct dctx__frame_reader r;
    dctx__frame_reader_init(&r, MAX_BODY);
    assert_int_equal(feed_in_pieces(&r, s, len, sizes, one_byte, NULL), N);
    dctx__frame_reader_fini(&r);
    free(s);
}

static void many_frames_in_one_piece_come_out_in_place(void **state)
{
    (void)state;
    size_t len;
    unsigned char *s = make_stream(sizes, N, &len);
    struct dctx__frame_reader r;
    dctx__frame_reader_init(&r, MAX_BODY);
    const unsigned char *p = s;
    size_t left = len;
    for (int i = 0; i < N; i++) {
        const unsigned char *body;
        size_t body_len;
        assert_int_equal(dctx__frame_reader_next(&r, &p, &left, &body, &body_len),
                         DCTX__FRAME_READY);
        check_body(i, body, body_len, sizes);
        assert_true(body >= s && body + body_len <= s + len); /* no copy */
    }
    assert_int_equal(left, 0);
    assert_null(r.body); /* nothing was gathered */
    dctx__frame_reader_fini(&r);
    free(s);
}

static enum dctx__frame_status feed_header(struct dctx__frame_reader *r, uint32_t body_len)
{
    unsigned char h[DCTX__FRAME_HEADER_BYTES];
    dctx__frame_header(body_len, h);
    const unsigned char *p = h;
    size_t left = sizeof h;
    const unsigned char *body;
    size_t n;
    return dctx__frame_reader_next(r, &p, &left, &body, &n);
}

static void length_over_the_limit_is_refused_from_the_header_alone(void **state)
{
    (void)state;
    struct dctx__frame_reader r;
    dctx__frame_reader_init(&r, MAX_BODY);
    assert_int_equal(feed_header(&r, MAX_BODY), DCTX__FRAME_NEED_MORE);
    dctx__frame_reader_fini(&r);

    dctx__frame_reader_init(&r, MAX_BODY);
    assert_int_equal(feed_header(&r, MAX_BODY + 1), DCTX__FRAME_TOO_BIG);
    assert_int_equal(r.body_len, MAX_BODY + 1);
    assert_null(r.body);
    assert_int_equal(feed_header(&r, 1), DCTX__FRAME_TOO_BIG); /* it stays so */
    assert_false(dctx__frame_reader_idle(&r));
    dctx__frame_reader_fini(&r);

    dctx__frame_reader_init(&r, MAX_BODY);
    assert_int_equal(feed_header(&r, UINT32_MAX), DCTX__FRAME_TOO_BIG);
    dctx__frame_reader_fini(&r);
}

static void empty_body_is_refused(void **state)
{
    (void)state;
    struct dctx__frame_reader r;
    dctx__frame_reader_init(&r, MAX_BODY);
    assert_int_equal(feed_header(&r, 0), DCTX__FRAME_EMPTY);
    dctx__frame_reader_fini(&r);
}

/* A peer announces the largest body and sends 10 bytes of it: the reader
 * holds a block of the least size, not the announced one; as more comes
 * the block grows with it. */
static void announced_length_reserves_nothing_beyond_what_arrived(void **state)
{
    (void)state;
    enum { BIG = 4 << 20 };
    struct dctx__frame_reader r;
    dctx__frame_reader_init(&r, BIG);
    assert_int_equal(feed_header(&r, BIG), DCTX__FRAME_NEED_MORE);
    unsigned char *chunk = calloc(1, 100000);
    assert_non_null(chunk);
    const unsigned char *p = chunk, *body;
    size_t left = 10, n;
    assert_int_equal(dctx__frame_reader_next(&r, &p, &left, &body, &n), DCTX__FRAME_NEED_MORE);
    assert_int_equal(r.body_cap, DCTX__FRAMING_MIN_BLOCK);
    p = chunk;
    left = 100000;
    assert_int_equal(dctx__frame_reader_next(&r, &p, &left, &body, &n), DCTX__FRAME_NEED_MORE);
    assert_true(r.body_cap >= 100010 && r.body_cap <= 2 * 100010);
    assert_false(dctx__frame_reader_idle(&r)); /* a stream that ends here ends mid-frame */
    dctx__frame_reader_fini(&r);
    free(chunk);
}

/* After a large body was handed out, the reader lets its block go. */
static void block_of_a_large_body_is_freed_after_it(void **state)
{
    (void)state;
    static const size_t two[] = {70000, 10};
    size_t len;
    unsigned char *s = make_stream(two, 2, &len);
    struct dctx__frame_reader r;
    dctx__frame_reader_init(&r, MAX_BODY);
    size_t split = 100; /* the first body spread over two pieces: gathered */
    assert_int_equal(feed_in_pieces(&r, s, len, two, cut_at, &split), 2);
    assert_true(r.body_cap <= 64 * 1024);
    dctx__frame_reader_fini(&r);
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_split_point_yields_every_frame_whole_and_in_order),
        cmocka_unit_test(frames_fed_a_byte_at_a_time_come_out_whole),
        cmocka_unit_test(many_frames_in_one_piece_come_out_in_place),
        cmocka_unit_test(length_over_the_limit_is_refused_from_the_header_alone),
        cmocka_unit_test(empty_body_is_refused),
        cmocka_unit_test(announced_length_reserves_nothing_beyond_what_arrived),
        cmocka_unit_test(block_of_a_large_body_is_freed_after_it),
    };
    return cmocka_run_group_tests_name("framing", tests, NULL, NULL);
}
