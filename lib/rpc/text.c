/*
 * text.c - the wire's rules for text (text.h).
 */
#include "text.h"

#include <string.h>

size_t dctx__utf8_prefix(const char *s, size_t len, size_t max)
{
    if (len <= max)
        return len;
    while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
        max--;
    return max;
}

void dctx__message_copy(char *dst, const char *src)
{
    if (src == NULL)
        src = "";
    size_t n = dctx__utf8_prefix(src, strnlen(src, DCTX_WIRE_MESSAGE_BYTES_MAX + 1),
                                 DCTX_WIRE_MESSAGE_BYTES_MAX);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

bool dctx__method_name_valid(const char *name)
{
    size_t n = name != NULL ? strnlen(name, DCTX_WIRE_METHOD_BYTES_MAX + 1) : 0;
    return n > 1 && n <= DCTX_WIRE_METHOD_BYTES_MAX && name[0] == '/';
}
