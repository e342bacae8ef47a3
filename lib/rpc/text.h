/*
 * text.h - the wire's rules for text: status and cause messages are cut to
 * DCTX_WIRE_MESSAGE_BYTES_MAX bytes on a UTF-8 character boundary, and
 * method names have one definition of valid. Never installed.
 */
#ifndef DCTX_RPC_TEXT_H
#define DCTX_RPC_TEXT_H

#include <stdbool.h>
#include <stddef.h>

#include <dctx/wire.h>

/* Room for a message as it travels: the bytes and their NUL. */
#define DCTX__MESSAGE_SIZE (DCTX_WIRE_MESSAGE_BYTES_MAX + 1)

/* dctx__utf8_prefix returns how many of s's first len bytes to keep so
 * that at most max remain and no UTF-8 character is split: it backs up
 * over continuation bytes (10xxxxxx). Bytes are kept as they are; this
 * only never makes a valid string invalid. */
size_t dctx__utf8_prefix(const char *s, size_t len, size_t max);

/* dctx__message_copy copies src (NULL: "") into dst (DCTX__MESSAGE_SIZE
 * bytes), cut as the wire cuts messages. */
void dctx__message_copy(char *dst, const char *src);

/* dctx__method_name_valid: 2..DCTX_WIRE_METHOD_BYTES_MAX bytes of UTF-8
 * starting with '/' ("/package.Service/Method"). */
bool dctx__method_name_valid(const char *name);

/* dctx__utf8_valid: len bytes of s are UTF-8 (shortest forms, no
 * surrogates, nothing past U+10FFFF) without a NUL. */
bool dctx__utf8_valid(const char *s, size_t len);

#endif /* DCTX_RPC_TEXT_H */
