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
    return n > 1 && n <= DCTX_WIRE_METHOD_BYTES_MAX && name[0] == '/' && dctx__utf8_valid(name, n);
}

/* The length of the UTF-8 character at s (at most left bytes), or 0 if it
 * is not a valid one. */
static size_t utf8_char(const unsigned char *s, size_t left)
{
    unsigned c = s[0];
    size_t n;
    unsigned min, cp;
    if (c < 0x80)
        return c != 0 ? 1 : 0;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2, min = 0x80, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3, min = 0x800, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4, min = 0x10000, cp = c & 0x07;
    } else {
        return 0;
    }
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

bool dctx__utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_char(p + i, len - i);
        if (n == 0)
            return false;
        i += n;
    }
    return true;
}
