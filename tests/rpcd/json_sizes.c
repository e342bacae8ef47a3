/*
 * json_sizes.c - drives rpcd's JSON writer (rpcd/json.c) for
 * test_json_writer.sh: one document with hostile strings, numbers and
 * nested containers, written into buffers of every size from 1 byte to
 * past its full length. Prints one line per size: the size, 1 if the
 * writer said it cut something (else 0), and the text. Exits 1 if a write
 * went past its buffer, or the text's length is not what finish returned.
 */
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

#define CANARY_BYTES 64
#define CANARY 0x5a

/* Quotes, backslashes, control bytes and a NUL; valid 2-, 3- and 4-byte
 * UTF-8; then invalid: a stray byte, a truncated sequence, an overlong
 * form, a surrogate, a code point past U+10FFFF, a sequence cut by the end. */
static const char hostile[] = "a\"b\\c\n\t\0\x01\x1f\x7f \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"
                              " \xff \xc3 \xe0\x80\x80 \xed\xa0\x80 \xf4\x90\x80\x80 \xe2\x82";

static void document(struct rpcd_json *j)
{
    rpcd_json_object(j, NULL);
    rpcd_json_strn(j, "s", hostile, sizeof hostile - 1);
    rpcd_json_str(j, "key \"quoted\"\n", "v");
    rpcd_json_int(j, "n", LLONG_MIN);
    rpcd_json_uint(j, "u", UINT64_MAX);
    rpcd_json_bool(j, "t", true);
    rpcd_json_bool(j, "f", false);
    rpcd_json_fixed(j, "x", 1.5, 3);
    rpcd_json_fixed(j, "inf", INFINITY, 3);
    rpcd_json_str(j, "null", NULL);
    rpcd_json_array(j, "a");
    rpcd_json_str(j, NULL, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    rpcd_json_object(j, NULL);
    rpcd_json_str(j, "k", "v");
    rpcd_json_end(j);
    rpcd_json_array(j, NULL);
    rpcd_json_end(j);
    rpcd_json_int(j, NULL, 7);
    rpcd_json_end(j);
    /* Deeper than RPCD_JSON_DEPTH: left out, and everything after it. */
    for (int i = 0; i < RPCD_JSON_DEPTH + 2; i++)
        rpcd_json_array(j, i == 0 ? "deep" : NULL);
    rpcd_json_str(j, NULL, "too deep");
    for (int i = 0; i < RPCD_JSON_DEPTH + 2; i++)
        rpcd_json_end(j);
    rpcd_json_str(j, "after", "never written");
    rpcd_json_end(j);
}

int main(void)
{
    char probe[4096];
    struct rpcd_json j;
    rpcd_json_init(&j, probe, sizeof probe);
    document(&j);
    size_t full = rpcd_json_finish(&j);
    for (size_t size = 1; size <= full + 8; size++) {
        unsigned char *buf = malloc(size + CANARY_BYTES);
        if (buf == NULL)
            return 1;
        memset(buf, CANARY, size + CANARY_BYTES);
        rpcd_json_init(&j, (char *)buf, size);
        document(&j);
        size_t len = rpcd_json_finish(&j);
        for (size_t i = size; i < size + CANARY_BYTES; i++) {
            if (buf[i] != CANARY) {
                fprintf(stderr, "size %zu: wrote byte %zu, past the buffer\n", size, i);
                return 1;
            }
        }
        if (len >= size || strlen((char *)buf) != len) {
            fprintf(stderr, "size %zu: length %zu, text of %zu bytes\n", size, len,
                    strlen((char *)buf));
            return 1;
        }
        printf("%zu %d %s\n", size, rpcd_json_full(&j) ? 1 : 0, (char *)buf);
        free(buf);
    }
    return 0;
}
