/*
 * handshake.c - the key exchange, the proofs and the sealing of frames
 * (handshake.h; proto/PROTOCOL.md, section 9).
 *
 * Design
 *   Each connection gets fresh X25519 key pairs on both sides; libsodium's
 *   crypto_kx hashes the shared secret with both public keys into one key
 *   per direction, so what a connection seals opens on no other
 *   connection, and a stolen identity key does not open connections
 *   recorded before (forward secrecy). The identities sign the transcript
 *   (both hellos, the exchanged keys among them), each side under its own
 *   label: SIGMA's shape, with the signature proving the identity holds
 *   its key on this very connection.
 *
 *   Frames are sealed with ChaCha20-Poly1305 (IETF) under the direction's
 *   key; the nonce is the frame's number in that direction, never sent:
 *   both sides count. A frame replayed, dropped, reordered or moved to
 *   another connection is opened under the wrong number or key and fails
 *   its tag. ChaCha20 needs no hardware support to be fast and
 *   constant-time, and a 96-bit counter nonce cannot repeat within a
 *   connection (2^64 frames).
 */
#include "handshake.h"

#include <sodium.h>
#include <string.h>

_Static_assert(DCTX__KX_BYTES == crypto_kx_PUBLICKEYBYTES, "an X25519 key");
_Static_assert(DCTX__SEAL_TAG_BYTES == crypto_aead_chacha20poly1305_ietf_ABYTES, "the AEAD's tag");
_Static_assert(DCTX__SIGNATURE_BYTES == crypto_sign_BYTES, "an Ed25519 signature");
_Static_assert(sizeof(((struct dctx__seal_key *)0)->key) ==
                       crypto_aead_chacha20poly1305_ietf_KEYBYTES &&
                   crypto_kx_SESSIONKEYBYTES == crypto_aead_chacha20poly1305_ietf_KEYBYTES,
               "crypto_kx's keys are the AEAD's");

#define TRANSCRIPT_LABEL "dctx-session-1"
#define SERVER_LABEL "dctx-server-proof"
#define CLIENT_LABEL "dctx-client-proof"
#define LABEL_BYTES (sizeof SERVER_LABEL - 1)
_Static_assert(sizeof SERVER_LABEL == sizeof CLIENT_LABEL, "labels of one length");

void dctx__handshake_begin(struct dctx__handshake *h)
{
    crypto_kx_keypair(h->kx_public, h->kx_secret);
}

static void hash_u32(crypto_generichash_state *st, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    crypto_generichash_update(st, b, sizeof b);
}

/* Every field with its length fixed or given: no two hellos hash alike. */
static void hash_hello(crypto_generichash_state *st, const struct dctx__hello_view *v)
{
    hash_u32(st, v->version);
    hash_u32(st, v->max_frame_bytes);
    hash_u32(st, v->max_calls);
    hash_u32(st, (uint32_t)v->name_len);
    crypto_generichash_update(st, (const unsigned char *)v->name, v->name_len);
    crypto_generichash_update(st, v->kx_public, DCTX__KX_BYTES);
}

void dctx__handshake_transcript(struct dctx__handshake *h, const struct dctx__hello_view *client,
                                const struct dctx__hello_view *server)
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof h->transcript);
    crypto_generichash_update(&st, (const unsigned char *)TRANSCRIPT_LABEL,
                              sizeof TRANSCRIPT_LABEL - 1);
    hash_hello(&st, client);
    hash_hello(&st, server);
    crypto_generichash_final(&st, h->transcript, sizeof h->transcript);
}

bool dctx__handshake_keys(const struct dctx__handshake *h, bool server,
                          const unsigned char peer_kx[DCTX__KX_BYTES], struct dctx__seal_key *tx,
                          struct dctx__seal_key *rx)
{
    int rc =
        server
            ? crypto_kx_server_session_keys(rx->key, tx->key, h->kx_public, h->kx_secret, peer_kx)
            : crypto_kx_client_session_keys(rx->key, tx->key, h->kx_public, h->kx_secret, peer_kx);
    tx->next = 0;
    rx->next = 0;
    return rc == 0;
}

/* The message an identity signs: its side's label, then the transcript. */
static void proof_message(const struct dctx__handshake *h, bool server,
                          unsigned char m[LABEL_BYTES + sizeof h->transcript])
{
    memcpy(m, server ? SERVER_LABEL : CLIENT_LABEL, LABEL_BYTES);
    memcpy(m + LABEL_BYTES, h->transcript, sizeof h->transcript);
}

void dctx__handshake_sign(const struct dctx__handshake *h, bool server, const dctx_identity *id,
                          unsigned char sig[DCTX__SIGNATURE_BYTES])
{
    unsigned char m[LABEL_BYTES + sizeof h->transcript];
    proof_message(h, server, m);
    dctx__identity_sign(id, m, sizeof m, sig);
}

bool dctx__handshake_verify(const struct dctx__handshake *h, bool server,
                            const unsigned char key[DCTX_PUBLIC_KEY_BYTES],
                            const unsigned char sig[DCTX__SIGNATURE_BYTES])
{
    unsigned char m[LABEL_BYTES + sizeof h->transcript];
    proof_message(h, server, m);
    return crypto_sign_verify_detached(sig, m, sizeof m, key) == 0;
}

void dctx__handshake_wipe(struct dctx__handshake *h)
{
    sodium_memzero(h, sizeof *h);
}

static void nonce_of(uint64_t n, unsigned char nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES])
{
    memset(nonce, 0, crypto_aead_chacha20poly1305_ietf_NPUBBYTES);
    for (int i = 0; i < 8; i++)
        nonce[i] = (unsigned char)(n >> (8 * i));
}

void dctx__seal(struct dctx__seal_key *k, unsigned char *body, size_t len)
{
    unsigned char nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    nonce_of(k->next++, nonce);
    crypto_aead_chacha20poly1305_ietf_encrypt_detached(body, body + len, NULL, body, len, NULL, 0,
                                                       NULL, nonce, k->key);
}

bool dctx__open(struct dctx__seal_key *k, const unsigned char *in, size_t len, unsigned char *out)
{
    if (len < DCTX__SEAL_TAG_BYTES)
        return false;
    unsigned char nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    nonce_of(k->next, nonce);
    size_t plain = len - DCTX__SEAL_TAG_BYTES;
    if (crypto_aead_chacha20poly1305_ietf_decrypt_detached(out, NULL, in, plain, in + plain, NULL,
                                                           0, nonce, k->key) != 0)
        return false;
    k->next++;
    return true;
}
