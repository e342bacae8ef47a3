/*
 * fuzz_allow.c - allow files (lib/rpc/allow.c) and public keys as text
 * (lib/rpc/identity.c), on any text an operator or an attacker with write
 * access to the file could give.
 *
 * Invariants: a list parsed lets in only keys it knows, a key it knows is
 * permitted some method or none, never a method name the wire would
 * refuse; a refused text leaves no list and names a line; a public key
 * that parses writes back as the same text.
 */
#include <string.h>

#include <dctx/identity.h>

#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    unsigned char key[DCTX_PUBLIC_KEY_BYTES];
    if (dctx_public_key_parse(text, size, key)) {
        char again[DCTX_PUBLIC_KEY_TEXT_BYTES];
        dctx_public_key_text(key, again);
        CHECK(size == strlen(again) && memcmp(again, text, size) == 0);
    }
    dctx_allow *a = NULL;
    char err[256] = "";
    int rc = dctx_allow_parse(text, size, &a, err, sizeof err);
    if (rc != 0) {
        CHECK(a == NULL && strstr(err, "line ") != NULL);
        return 0;
    }
    CHECK(a != NULL);
    unsigned char nobody[DCTX_PUBLIC_KEY_BYTES];
    memset(nobody, 0xa5, sizeof nobody);
    if (!dctx_allow_knows(a, nobody))
        CHECK(!dctx_allow_permits(a, nobody, "/dctx.demo.Demo/Echo"));
    CHECK(!dctx_allow_permits(a, nobody, "not a method") || dctx_allow_knows(a, nobody));
    dctx_allow_free(a);
    return 0;
}
