/*
 * json.c - the bounded JSON writer (see json.h).
 *
 * One invariant keeps the text closable: len + depth <= cap, i.e. there is
 * always a byte left for the closer of every open container. Each write
 * checks it before it copies; a member that would break it is rolled back
 * to where it began.
 */
#include "json.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define REPLACEMENT "\\ufffd" /* U+FFFD, for invalid UTF-8 */

void rpcd_json_init(struct rpcd_json *j, char *buf, size_t size)
{
    memset(j, 0, sizeof *j);
    j->buf = buf;
    j->cap = size - 1;
    buf[0] = '\0';
}

bool rpcd_json_full(const struct rpcd_json *j)
{
    return j->full;
}

size_t rpcd_json_cut(const char *s, size_t n, size_t max)
{
    if (n <= max)
        return n;
    /* s[max] is the first byte left out: if it continues a character,
     * leave out the start of that character too (at most 3 bytes back). */
    size_t at = max;
    for (int back = 0; at > 0 && back < 3 && ((unsigned char)s[at] & 0xc0) == 0x80; back++)
        at--;
    return ((unsigned char)s[at] & 0xc0) == 0x80 ? max : at;
}

/* The bytes free for text now, the open containers' closers set apart. */
static size_t room(const struct rpcd_json *j)
{
    return j->cap - j->len - (size_t)j->depth;
}

static bool put(struct rpcd_json *j, const char *s, size_t n)
{
    if (n > room(j))
        return false;
    memcpy(j->buf + j->len, s, n);
    j->len += n;
    return true;
}

/* The length of the valid, complete UTF-8 sequence of 2 to 4 bytes at s
 * (n bytes left), or 0; then *bad is the length of the sequence's longest
 * valid beginning (at least 1), which is replaced by one U+FFFD, as
 * Unicode recommends (and as Python's "replace" decoding does). Overlong
 * forms, surrogates and code points past U+10FFFF are invalid. */
static size_t utf8_sequence(const unsigned char *s, size_t n, size_t *bad)
{
    unsigned char c = s[0], lo = 0x80, hi = 0xbf;
    size_t follow;
    if (c >= 0xc2 && c <= 0xdf) {
        follow = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
        follow = 2;
        lo = c == 0xe0 ? 0xa0 : 0x80; /* no overlong forms */
        hi = c == 0xed ? 0x9f : 0xbf; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        follow = 3;
        lo = c == 0xf0 ? 0x90 : 0x80; /* no overlong forms */
        hi = c == 0xf4 ? 0x8f : 0xbf; /* nothing past U+10FFFF */
    } else {
        *bad = 1;
        return 0;
    }
    for (size_t i = 1; i <= follow; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *bad = i;
            return 0;
        }
        lo = 0x80;
        hi = 0xbf;
    }
    return follow + 1;
}

/* The character at s (n > 0 bytes left), one that plain_run stopped at,
 * as it goes inside a JSON string, into out; returns its length and sets
 * *used to the bytes it stands for. */
static size_t escape_char(const unsigned char *s, size_t n, char out[8], size_t *used)
{
    static const char controls[] = "\b\f\n\r\t", short_forms[] = "bfnrt";
    unsigned char c = s[0];
    *used = 1;
    if (c == '"' || c == '\\') {
        out[0] = '\\';
        out[1] = (char)c;
        return 2;
    }
    if (c < 0x20 || c == 0x7f) {
        const char *at = c != 0 ? strchr(controls, c) : NULL;
        if (at != NULL) {
            out[0] = '\\';
            out[1] = short_forms[at - controls];
            return 2;
        }
        return (size_t)snprintf(out, 8, "\\u%04x", c);
    }
    size_t len = utf8_sequence(s, n, used);
    if (len == 0) {
        memcpy(out, REPLACEMENT, sizeof REPLACEMENT - 1);
        return sizeof REPLACEMENT - 1;
    }
    memcpy(out, s, len);
    *used = len;
    return len;
}

/* The bytes at s that JSON takes as they are: printable ASCII but the
 * quote and the backslash. */
static size_t plain_run(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n && s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"' && s[i] != '\\')
        i++;
    return i;
}

/* A quoted, escaped string. whole: all of it or nothing (false, with j
 * unchanged); otherwise cut on a character boundary to fit (j->full set),
 * false only if not even "" fits. */
static bool put_string(struct rpcd_json *j, const unsigned char *s, size_t n, bool whole)
{
    size_t mark = j->len;
    if (room(j) < 2 || !put(j, "\"", 1))
        return false;
    for (size_t i = 0; i < n;) {
        size_t run = plain_run(s + i, n - i);
        if (run > 0) {               /* copied as they are: most of every line */
            if (run + 1 > room(j)) { /* + 1: the closing quote */
                if (whole) {
                    j->len = mark;
                    return false;
                }
                put(j, (const char *)s + i, room(j) - 1);
                j->full = true;
                break;
            }
            put(j, (const char *)s + i, run);
            i += run;
            continue;
        }
        char esc[8];
        size_t used;
        size_t len = escape_char(s + i, n - i, esc, &used);
        if (len + 1 > room(j)) { /* + 1: the closing quote */
            if (whole) {
                j->len = mark;
                return false;
            }
            j->full = true;
            break;
        }
        put(j, esc, len);
        i += used;
    }
    put(j, "\"", 1);
    return true;
}

/* Begin a member: its comma, then its key. False, with j as it was and
 * full set, if they do not fit or j is full already. */
static bool member_begin(struct rpcd_json *j, const char *key, size_t *mark)
{
    *mark = j->len;
    if (j->full || j->dropped > 0)
        return false;
    bool ok = true;
    if (j->has_member[j->depth])
        ok = j->depth > 0 && put(j, ",", 1); /* a second top-level value is refused */
    if (ok && key != NULL)
        ok = put_string(j, (const unsigned char *)key, strlen(key), true) && put(j, ":", 1);
    if (!ok) {
        j->len = *mark;
        j->full = true;
    }
    return ok;
}

static void member_fail(struct rpcd_json *j, size_t mark)
{
    j->len = mark;
    j->full = true;
}

static void scalar(struct rpcd_json *j, const char *key, const char *text, size_t n)
{
    size_t mark;
    if (!member_begin(j, key, &mark))
        return;
    if (!put(j, text, n)) {
        member_fail(j, mark);
        return;
    }
    j->has_member[j->depth] = true;
}

static void container(struct rpcd_json *j, const char *key, char opener, char closer)
{
    size_t mark;
    if (!member_begin(j, key, &mark)) {
        j->dropped++;
        return;
    }
    if (j->depth == RPCD_JSON_DEPTH || room(j) < 2) { /* the opener, and its closer kept */
        member_fail(j, mark);
        j->dropped++;
        return;
    }
    j->has_member[j->depth] = true;
    j->buf[j->len++] = opener;
    j->closer[j->depth++] = closer;
    j->has_member[j->depth] = false;
}

void rpcd_json_object(struct rpcd_json *j, const char *key)
{
    container(j, key, '{', '}');
}

void rpcd_json_array(struct rpcd_json *j, const char *key)
{
    container(j, key, '[', ']');
}

void rpcd_json_end(struct rpcd_json *j)
{
    if (j->dropped > 0) {
        j->dropped--;
        return;
    }
    if (j->depth == 0)
        return;
    j->depth--;
    j->buf[j->len++] = j->closer[j->depth]; /* its byte was kept */
}

void rpcd_json_strn(struct rpcd_json *j, const char *key, const void *s, size_t n)
{
    size_t mark;
    if (!member_begin(j, key, &mark))
        return;
    if (!put_string(j, s, n, false)) {
        member_fail(j, mark);
        return;
    }
    j->has_member[j->depth] = true;
}

void rpcd_json_str(struct rpcd_json *j, const char *key, const char *s)
{
    rpcd_json_strn(j, key, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

/* The decimal digits of v, written backwards from end; returns where they
 * start. Two per log line: snprintf's cost showed in rpcd's profile. */
static char *decimal(uint64_t v, char *end)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return end;
}

void rpcd_json_int(struct rpcd_json *j, const char *key, long long v)
{
    char num[24], *end = num + sizeof num;
    /* The magnitude as unsigned: -LLONG_MIN does not fit a long long. */
    uint64_t mag = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    char *start = decimal(mag, end);
    if (v < 0)
        *--start = '-';
    scalar(j, key, start, (size_t)(end - start));
}

void rpcd_json_uint(struct rpcd_json *j, const char *key, uint64_t v)
{
    char num[24], *end = num + sizeof num;
    char *start = decimal(v, end);
    scalar(j, key, start, (size_t)(end - start));
}

void rpcd_json_bool(struct rpcd_json *j, const char *key, bool v)
{
    scalar(j, key, v ? "true" : "false", v ? 4 : 5);
}

void rpcd_json_fixed(struct rpcd_json *j, const char *key, double v, int decimals)
{
    char num[64];
    int n = isfinite(v) && fabs(v) < 1e18 ? snprintf(num, sizeof num, "%.*f", decimals, v) : -1;
    if (n < 0 || (size_t)n >= sizeof num)
        scalar(j, key, "null", 4); /* JSON has no infinities, NaN, nor room for 1e300 here */
    else
        scalar(j, key, num, (size_t)n);
}

size_t rpcd_json_finish(struct rpcd_json *j)
{
    j->dropped = 0;
    while (j->depth > 0)
        rpcd_json_end(j);
    j->buf[j->len] = '\0'; /* len <= cap, one less than the buffer's size */
    return j->len;
}
