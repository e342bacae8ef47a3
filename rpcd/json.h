/*
 * json.h - rpcd's one JSON writer: objects, arrays, numbers and strings,
 * written into a buffer the caller owns. Whatever the input and whatever
 * the buffer's size, what it holds after rpcd_json_finish is one valid
 * JSON value:
 *   - strings are byte strings: quotes, backslashes and control bytes
 *     (NUL included) are escaped, valid UTF-8 is kept as it is, and each
 *     invalid byte or truncated sequence becomes \ufffd;
 *   - room to close every open container is always kept; a string that
 *     does not fit is cut on a character boundary and still closed; a
 *     member that does not fit at all is left out, and so is everything
 *     after it (rpcd_json_full says so). A buffer too small for even the
 *     top-level "{}" (under 3 bytes) holds "".
 */
#ifndef RPCD_JSON_H
#define RPCD_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How deep containers nest; deeper ones are left out like members that do
 * not fit. */
#define RPCD_JSON_DEPTH 8

struct rpcd_json {
    char *buf;
    size_t cap; /* bytes for the text: buf's size less its NUL */
    size_t len;
    int depth;                            /* containers open in buf */
    int dropped;                          /* containers begun but left out, inside the open ones */
    bool has_member[RPCD_JSON_DEPTH + 1]; /* by depth: a member was written there, so the
                                             next takes a comma (depth 0: the top value) */
    char closer[RPCD_JSON_DEPTH];         /* of each open container, outermost first */
    bool full;                            /* something was cut or left out */
};

/* Write into buf, of size bytes (at least 1; the text ends with a NUL). */
void rpcd_json_init(struct rpcd_json *j, char *buf, size_t size);

/* Members. key is the member's name inside an object; NULL for an element
 * of an array, or for the top-level value. */
void rpcd_json_object(struct rpcd_json *j, const char *key);
void rpcd_json_array(struct rpcd_json *j, const char *key);
/* Close the innermost container begun with rpcd_json_object or _array. */
void rpcd_json_end(struct rpcd_json *j);

/* A NUL-terminated string (NULL is written as ""). */
void rpcd_json_str(struct rpcd_json *j, const char *key, const char *s);
/* n bytes of s, which may hold NULs. */
void rpcd_json_strn(struct rpcd_json *j, const char *key, const void *s, size_t n);
void rpcd_json_int(struct rpcd_json *j, const char *key, long long v);
void rpcd_json_uint(struct rpcd_json *j, const char *key, uint64_t v);
void rpcd_json_bool(struct rpcd_json *j, const char *key, bool v);
/* v with that many decimals; null if it is not finite. */
void rpcd_json_fixed(struct rpcd_json *j, const char *key, double v, int decimals);

/* Close every container still open; returns the text's length (buf holds
 * it, NUL-terminated). Nothing may be written afterwards. */
size_t rpcd_json_finish(struct rpcd_json *j);

/* True once something was cut or left out for want of room. */
bool rpcd_json_full(const struct rpcd_json *j);

/* The length of s (n bytes) cut to at most max bytes without splitting a
 * UTF-8 character: for a string to hold to a size of its own. */
size_t rpcd_json_cut(const char *s, size_t n, size_t max);

#endif
