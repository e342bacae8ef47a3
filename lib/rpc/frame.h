/*
 * frame.h - dctx.proto's Frame unpacked from bytes into one block
 * (frame.c). Never installed.
 */
#ifndef DCTX_RPC_FRAME_H
#define DCTX_RPC_FRAME_H

#include <stddef.h>

#include "dctx.pb-c.h"

/* dctx__frame_unpack_bytes unpacks len bytes of body; NULL if they are not
 * a well-formed Frame (or no memory). Free it with dctx__frame_free only. */
Dctx__Wire__Frame *dctx__frame_unpack_bytes(const void *body, size_t len);
void dctx__frame_free(Dctx__Wire__Frame *f);

#endif /* DCTX_RPC_FRAME_H */
