/*
 * stream_testutil.h - raw nng streams for the session protocol's tests: a
 * listener on a fresh ipc or tcp address, one accepted or dialed stream,
 * and whole writes of raw bytes or of one frame, for peers that speak the
 * protocol badly on purpose. Each helper fails the running cmocka test on
 * an error; waits are bounded (5 s).
 */
#ifndef DCTX_STREAM_TESTUTIL_H
#define DCTX_STREAM_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include <nng/nng.h>

#include "dctx.pb-c.h"

enum st_transport { ST_IPC, ST_TCP };

/* A listener and the URL to dial it at. */
struct st_place {
    nng_stream_listener *l;
    char url[256];
};

/* st_init makes the program's scratch directory for ipc paths (name is
 * the program's); st_fini removes it. */
void st_init(const char *name);
void st_fini(void);

/* st_listen listens on a fresh address (tcp: a port the kernel picks). */
void st_listen(enum st_transport t, struct st_place *p);
/* st_accept waits for one connection to p. */
nng_stream *st_accept(struct st_place *p);
/* st_dial connects to url (a dial the listen backlog refuses for now is
 * tried again). */
nng_stream *st_dial(const char *url);
/* st_close closes and frees a raw stream. */
void st_close(nng_stream *s);

/* st_send writes n bytes whole (a short write is finished). */
void st_send(nng_stream *s, const void *buf, size_t n);
/* st_send_body writes one frame: the header for n bytes, then body. */
void st_send_body(nng_stream *s, const void *body, size_t n);

/* st_hello makes f a hello (h its body) of version, max_frame_bytes and
 * name (NULL: none), as a raw peer sends one. */
void st_hello(Dctx__Wire__Frame *f, Dctx__Wire__Hello *h, uint32_t version,
              uint32_t max_frame_bytes, const char *name);
/* st_frame writes f, after its 4-byte length, into out (cap bytes: the
 * test fails if it does not fit); returns the bytes written. */
size_t st_frame(const Dctx__Wire__Frame *f, unsigned char *out, size_t cap);
/* st_client_hello writes a raw client's hello (version 1, 64 KiB frames,
 * name), framed, into out; returns the bytes written. */
size_t st_client_hello(const char *name, unsigned char *out, size_t cap);

#endif /* DCTX_STREAM_TESTUTIL_H */
