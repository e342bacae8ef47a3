/*
 * stream_testutil.c - raw nng streams for the session protocol's tests
 * (stream_testutil.h).
 */
#include "stream_testutil.h"

#include <stdio.h>
#include <stdlib.h>

#include <nng/supplemental/util/platform.h>

#include "framing.h"
#include "testutil.h"

#define WAIT_MS 5000

static char scratch[96];

void st_init(const char *name)
{
    snprintf(scratch, sizeof scratch, "/tmp/dctx-%s-XXXXXX", name);
    if (mkdtemp(scratch) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
}

void st_fini(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", scratch);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", scratch);
}

void st_listen(enum st_transport t, struct st_place *p)
{
    static int n;
    if (t == ST_IPC)
        snprintf(p->url, sizeof p->url, "ipc://%s/s%d.ipc", scratch, n++);
    else
        snprintf(p->url, sizeof p->url, "tcp://127.0.0.1:0");
    assert_int_equal(nng_stream_listener_alloc(&p->l, p->url), 0);
    assert_int_equal(nng_stream_listener_listen(p->l), 0);
    if (t == ST_TCP) {
        int port = 0;
        assert_int_equal(nng_stream_listener_get_int(p->l, NNG_OPT_TCP_BOUND_PORT, &port), 0);
        snprintf(p->url, sizeof p->url, "tcp://127.0.0.1:%d", port);
    }
}

nng_stream *st_accept(struct st_place *p)
{
    nng_aio *aio;
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_aio_set_timeout(aio, WAIT_MS);
    nng_stream_listener_accept(p->l, aio);
    nng_aio_wait(aio);
    assert_int_equal(nng_aio_result(aio), 0);
    nng_stream *s = nng_aio_get_output(aio, 0);
    nng_aio_free(aio);
    return s;
}

nng_stream *st_dial(const char *url)
{
    /* The listen backlog refuses a dial for now (EAGAIN over ipc) when
     * peers come faster than accepts: try again, 100 times at most. */
    for (int tries = 0; tries < 100; tries++) {
        nng_stream_dialer *d;
        nng_aio *aio;
        assert_int_equal(nng_stream_dialer_alloc(&d, url), 0);
        assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
        nng_aio_set_timeout(aio, WAIT_MS);
        nng_stream_dialer_dial(d, aio);
        nng_aio_wait(aio);
        int rv = nng_aio_result(aio);
        nng_stream *s = rv == 0 ? nng_aio_get_output(aio, 0) : NULL;
        nng_stream_dialer_free(d); /* before the aio: TSan then sees nng's reap lock between */
        nng_aio_free(aio);
        if (rv == 0)
            return s;
        assert_int_equal(rv, NNG_EAGAIN);
        nng_msleep(2);
    }
    fail_msg("dial to %s refused 100 times", url);
    return NULL;
}

void st_close(nng_stream *s)
{
    nng_stream_close(s);
    nng_stream_free(s);
}

void st_send(nng_stream *s, const void *buf, size_t n)
{
    nng_aio *aio;
    assert_int_equal(nng_aio_alloc(&aio, NULL, NULL), 0);
    nng_aio_set_timeout(aio, WAIT_MS);
    while (n > 0) {
        nng_iov iov = {.iov_buf = (void *)buf, .iov_len = n};
        nng_aio_set_iov(aio, 1, &iov);
        nng_stream_send(s, aio);
        nng_aio_wait(aio);
        assert_int_equal(nng_aio_result(aio), 0);
        buf = (const char *)buf + nng_aio_count(aio);
        n -= nng_aio_count(aio);
    }
    nng_aio_free(aio);
}

void st_send_body(nng_stream *s, const void *body, size_t n)
{
    unsigned char h[DCTX__FRAME_HEADER_BYTES];
    dctx__frame_header((uint32_t)n, h);
    st_send(s, h, sizeof h);
    st_send(s, body, n);
}

void st_hello(Dctx__Wire__Frame *f, Dctx__Wire__Hello *h, uint32_t version,
              uint32_t max_frame_bytes, const char *name)
{
    dctx__wire__hello__init(h);
    h->has_version = 1;
    h->version = version;
    h->has_max_frame_bytes = 1;
    h->max_frame_bytes = max_frame_bytes;
    h->name = (char *)name;
    dctx__wire__frame__init(f);
    f->body_case = DCTX__WIRE__FRAME__BODY_HELLO;
    f->hello = h;
}

size_t st_frame(const Dctx__Wire__Frame *f, unsigned char *out, size_t cap)
{
    size_t n = dctx__wire__frame__get_packed_size(f);
    assert_true(n + DCTX__FRAME_HEADER_BYTES <= cap);
    dctx__frame_header((uint32_t)n, out);
    dctx__wire__frame__pack(f, out + DCTX__FRAME_HEADER_BYTES);
    return n + DCTX__FRAME_HEADER_BYTES;
}

size_t st_client_hello(const char *name, unsigned char *out, size_t cap)
{
    Dctx__Wire__Hello h;
    Dctx__Wire__Frame f;
    st_hello(&f, &h, 1, 65536, name);
    return st_frame(&f, out, cap);
}
