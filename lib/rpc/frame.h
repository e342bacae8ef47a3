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

/* The name of a frame kind as PROTOCOL.md writes it ("call", "cancel_ack",
 * ...); "?" for one this side does not know. A static string. */
const char *dctx__frame_kind_name(Dctx__Wire__Frame__BodyCase k);

#endif /* DCTX_RPC_FRAME_H */
