/*
 * fuzz_keyfile.c - a secret key file's text (lib/rpc/identity.c), as
 * dctx_identity_load reads it once it has checked the file's mode.
 *
 * Invariants: a text that loads gives the same public key every time, and
 * the same again with a comment line before it and a blank line after
 * (what an operator may add); its public key's text parses back to it; a
 * text refused leaves no identity; nothing stays allocated (LeakSanitizer,
 * and libsodium's guarded memory is freed).
 */
#include <stdio.h>
#include <string.h>

#include <dctx/identity.h>

#include "fuzz_check.h"
#include "rpc_impl.h"

#define TEXT_MAX 1024 /* what a key file may hold */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char text[TEXT_MAX + 1], framed[TEXT_MAX + 64];
    if (size > TEXT_MAX)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    dctx_identity *id = NULL;
    int rc = dctx__identity_from_text(text, &id);
    if (rc != 0) {
        CHECK(id == NULL && (rc == DCTX_INVALID_ARGUMENT || rc == DCTX_RESOURCE_EXHAUSTED));
        return 0;
    }
    unsigned char key[DCTX_PUBLIC_KEY_BYTES], again[DCTX_PUBLIC_KEY_BYTES];
    dctx_identity_public_key(id, key);
    dctx_identity_free(id);

    snprintf(framed, sizeof framed, "# an operator's note\n%s\n\n", text);
    CHECK(dctx__identity_from_text(framed, &id) == 0);
    dctx_identity_public_key(id, again);
    dctx_identity_free(id);
    CHECK(memcmp(key, again, sizeof key) == 0);

    char pub[DCTX_PUBLIC_KEY_TEXT_BYTES];
    dctx_public_key_text(key, pub);
    CHECK(dctx_public_key_parse(pub, strlen(pub), again) && memcmp(key, again, sizeof key) == 0);
    return 0;
}
