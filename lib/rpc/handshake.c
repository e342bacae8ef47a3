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
 *   Frames are sealed with an AEAD under the direction's key; the nonce is
 *   the frame's number in that direction, never sent: both sides count. A
 *   frame replayed, dropped, reordered or moved to another connection is
 *   opened under the wrong number or key and fails its tag, and a counter
 *   nonce cannot repeat within a connection (2^64 frames). The AEAD is
 *   AES-256-GCM when both peers' CPUs have AES-NI and PCLMUL (a 120-byte
 *   frame: 0.22 us here, against 0.68 us for ChaCha20-Poly1305, four of
 *   them per call), else ChaCha20-Poly1305 (IETF), which needs no hardware
 *   to be fast and constant-time. Each hello says which it can do, inside
 *   the transcript, so a peer in the middle cannot change the choice.
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

_Static_assert(crypto_aead_aes256gcm_NPUBBYTES == crypto_aead_chacha20poly1305_ietf_NPUBBYTES &&
                   crypto_aead_aes256gcm_ABYTES == DCTX__SEAL_TAG_BYTES &&
                   crypto_aead_aes256gcm_KEYBYTES == crypto_kx_SESSIONKEYBYTES,
               "one nonce, tag and key size for both AEADs");

static _Atomic uint32_t ciphers_allowed = ~0u;
void dctx__test_ciphers(uint32_t mask)
{
    ciphers_allowed = mask;
}

uint32_t dctx__ciphers_supported(void)
{
    return (DCTX__CIPHER_CHACHA20_POLY1305 |
            (crypto_aead_aes256gcm_is_available() ? DCTX__CIPHER_AES256_GCM : 0)) &
           ciphers_allowed;
}

unsigned dctx__cipher_choose(uint32_t a, uint32_t b)
{
    uint32_t both = a & b;
    return both & DCTX__CIPHER_AES256_GCM          ? DCTX__CIPHER_AES256_GCM
           : both & DCTX__CIPHER_CHACHA20_POLY1305 ? DCTX__CIPHER_CHACHA20_POLY1305
                                                   : 0;
}

void dctx__seal_key_set(struct dctx__seal_key *k, unsigned cipher, const unsigned char key[32],
                        uint64_t next)
{
    memcpy(k->key, key, sizeof k->key);
    k->cipher = cipher;
    k->next = next;
    if (cipher == DCTX__CIPHER_AES256_GCM)
        crypto_aead_aes256gcm_beforenm(&k->aes, k->key);
}

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
    hash_u32(st, v->ciphers);
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
                          const unsigned char peer_kx[DCTX__KX_BYTES], unsigned cipher,
                          struct dctx__seal_key *tx, struct dctx__seal_key *rx)
{
    unsigned char rk[crypto_kx_SESSIONKEYBYTES], tk[crypto_kx_SESSIONKEYBYTES];
    int rc = server ? crypto_kx_server_session_keys(rk, tk, h->kx_public, h->kx_secret, peer_kx)
                    : crypto_kx_client_session_keys(rk, tk, h->kx_public, h->kx_secret, peer_kx);
    if (rc == 0) {
        dctx__seal_key_set(tx, cipher, tk, 0);
        dctx__seal_key_set(rx, cipher, rk, 0);
    }
    sodium_memzero(rk, sizeof rk);
    sodium_memzero(tk, sizeof tk);
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
    if (k->cipher == DCTX__CIPHER_AES256_GCM)
        crypto_aead_aes256gcm_encrypt_detached_afternm(body, body + len, NULL, body, len, NULL, 0,
                                                       NULL, nonce, &k->aes);
    else
        crypto_aead_chacha20poly1305_ietf_encrypt_detached(body, body + len, NULL, body, len, NULL,
                                                           0, NULL, nonce, k->key);
}

bool dctx__open(struct dctx__seal_key *k, const unsigned char *in, size_t len, unsigned char *out)
{
    if (len < DCTX__SEAL_TAG_BYTES)
        return false;
    unsigned char nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES];
    nonce_of(k->next, nonce);
    size_t plain = len - DCTX__SEAL_TAG_BYTES;
    int rc = k->cipher == DCTX__CIPHER_AES256_GCM
                 ? crypto_aead_aes256gcm_decrypt_detached_afternm(out, NULL, in, plain, in + plain,
                                                                  NULL, 0, nonce, &k->aes)
                 : crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                       out, NULL, in, plain, in + plain, NULL, 0, nonce, k->key);
    if (rc != 0)
        return false;
    k->next++;
    return true;
}
