/*
 * fuzz_sealed.c - sealed frames (lib/rpc/handshake.c) under keys the
 * input picks: what a peer that does not hold the key sends, and what it
 * makes of a genuine frame by replaying, altering or moving it.
 *
 * Input: a key byte (the key is a hash of it, the AEAD its low bit), a
 * frame number, two bytes
 * that pick a bit to flip, then the bytes. Invariants: the bytes as they
 * came never open (nobody without the key makes a tag) and a failed open
 * leaves the frame number where it was; sealed, they open to themselves
 * exactly once (a replay under the next number fails), and with any one
 * bit flipped, or under another number or key, not at all; what opens is
 * decoded as a frame or refused; nothing stays allocated (LeakSanitizer).
 */
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dctx.pb-c.h"
#include "frame.h"
#include "fuzz_check.h"
#include "handshake.h"

#define PREFIX 4

/* The key the seed names, with the AEAD its low bit picks (AES-256-GCM
 * where the CPU has it). */
static void key_of(uint8_t seed, uint64_t next, struct dctx__seal_key *k)
{
    unsigned char key[32];
    crypto_generichash(key, sizeof key, &seed, 1, NULL, 0);
    unsigned cipher = (seed & 1) && crypto_aead_aes256gcm_is_available()
                          ? DCTX__CIPHER_AES256_GCM
                          : DCTX__CIPHER_CHACHA20_POLY1305;
    dctx__seal_key_set(k, cipher, key, next);
}

/* What opened is decoded as a frame (or refused), leaving nothing. */
static void decode_opened(const unsigned char *plain, size_t len)
{
    dctx__frame_free(dctx__frame_unpack_bytes(plain, len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < PREFIX || sodium_init() < 0)
        return 0;
    uint8_t seed = data[0];
    uint64_t next = data[1];
    size_t flip = (size_t)data[2] << 8 | data[3];
    data += PREFIX;
    size -= PREFIX;

    static struct dctx__seal_key rx, tx; /* AES-GCM's state: 16-byte aligned */
    key_of(seed, next, &rx);
    unsigned char *out = malloc(size + 1);
    CHECK(out != NULL);
    CHECK(!dctx__open(&rx, data, size, out)); /* as they came: no tag of ours */
    CHECK(rx.next == next);

    unsigned char *sealed = malloc(size + DCTX__SEAL_TAG_BYTES);
    CHECK(sealed != NULL);
    memcpy(sealed, data, size);
    key_of(seed, next, &tx);
    dctx__seal(&tx, sealed, size);
    CHECK(tx.next == next + 1);
    size_t len = size + DCTX__SEAL_TAG_BYTES;
    CHECK(dctx__open(&rx, sealed, len, out)); /* once */
    CHECK(memcmp(out, data, size) == 0 && rx.next == next + 1);
    CHECK(!dctx__open(&rx, sealed, len, out)); /* replayed */
    decode_opened(out, size);

    key_of(seed, next, &rx);
    sealed[flip % len] ^= (unsigned char)(1u << (flip >> 13));
    CHECK(!dctx__open(&rx, sealed, len, out)); /* altered */
    sealed[flip % len] ^= (unsigned char)(1u << (flip >> 13));
    key_of((uint8_t)(seed + 2), next, &rx);
    CHECK(!dctx__open(&rx, sealed, len, out)); /* another connection's key */
    key_of(seed, next + 1, &rx);
    CHECK(!dctx__open(&rx, sealed, len, out)); /* out of order */
    free(sealed);
    free(out);
    return 0;
}
