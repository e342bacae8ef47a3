/*
 * handshake.h - the cryptography of a connection with keys
 * (proto/PROTOCOL.md, section 9): an X25519 key exchange of keys made for
 * the connection, Ed25519 proofs of the two identities over the
 * transcript of the hellos, and every frame after the hellos sealed with an
 * AEAD (AES-256-GCM where both peers' CPUs have it, else
 * ChaCha20-Poly1305) under a key per direction and a frame counter as the
 * nonce. The session (session.c) decides when each step happens; this
 * file only computes. Never installed.
 */
#ifndef DCTX_RPC_HANDSHAKE_H
#define DCTX_RPC_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dctx/identity.h>
#include <sodium.h>

#define DCTX__KX_BYTES 32        /* an X25519 public key */
#define DCTX__SEAL_TAG_BYTES 16  /* what sealing adds to a frame */
#define DCTX__SIGNATURE_BYTES 64 /* an Ed25519 signature */
/* The server's hello's sealed_identity: its key and its signature, sealed. */
#define DCTX__SEALED_IDENTITY_BYTES                                                                \
    (DCTX_PUBLIC_KEY_BYTES + DCTX__SIGNATURE_BYTES + DCTX__SEAL_TAG_BYTES)

/* The AEADs, as bits of a hello's ciphers field. */
#define DCTX__CIPHER_CHACHA20_POLY1305 1u
#define DCTX__CIPHER_AES256_GCM 2u

/* One direction of a connection: its AEAD, its key and the number of the
 * next frame (the nonce: a frame replayed, dropped or reordered does not
 * open). */
struct dctx__seal_key {
    crypto_aead_aes256gcm_state aes; /* the key expanded, for AES-256-GCM */
    unsigned char key[32];
    unsigned cipher;
    uint64_t next;
};

/* The AEADs this process can use (ChaCha20-Poly1305 always; AES-256-GCM
 * where the CPU has AES-NI and PCLMUL), within what dctx__test_ciphers
 * left (tests reach each AEAD so; all by default). */
uint32_t dctx__ciphers_supported(void);
void dctx__test_ciphers(uint32_t mask);

/* The AEAD two peers offering a and b use (the fastest both have); 0 if
 * none. */
unsigned dctx__cipher_choose(uint32_t a, uint32_t b);

/* dctx__seal_key_set: k seals with cipher under key from frame next on. */
void dctx__seal_key_set(struct dctx__seal_key *k, unsigned cipher, const unsigned char key[32],
                        uint64_t next);

/* What the transcript takes from a hello. */
struct dctx__hello_view {
    uint32_t version, max_frame_bytes, max_calls;
    const char *name; /* name_len bytes */
    size_t name_len;
    const unsigned char *kx_public; /* DCTX__KX_BYTES */
    uint32_t ciphers;               /* as sent; 0 if absent */
};

/* One side's state while the handshake runs; wiped by
 * dctx__handshake_wipe. */
struct dctx__handshake {
    unsigned char kx_public[DCTX__KX_BYTES], kx_secret[32];
    unsigned char transcript[32];
};

/* dctx__handshake_begin makes this connection's X25519 key pair. */
void dctx__handshake_begin(struct dctx__handshake *h);

/* dctx__handshake_transcript hashes the two hellos into h->transcript:
 * what both identities sign, so a peer in the middle that changed either
 * hello (a key, a limit, a name) is found. */
void dctx__handshake_transcript(struct dctx__handshake *h, const struct dctx__hello_view *client,
                                const struct dctx__hello_view *server);

/* dctx__handshake_keys derives the two directions' keys, for cipher,
 * from this side's key pair and the peer's public key. False if the
 * peer's key is not a usable X25519 key (libsodium refuses it). */
bool dctx__handshake_keys(const struct dctx__handshake *h, bool server,
                          const unsigned char peer_kx[DCTX__KX_BYTES], unsigned cipher,
                          struct dctx__seal_key *tx, struct dctx__seal_key *rx);

/* dctx__handshake_sign: id's signature of the transcript as the server or
 * the client (the two are signed apart, so one is never taken for the
 * other). */
void dctx__handshake_sign(const struct dctx__handshake *h, bool server, const dctx_identity *id,
                          unsigned char sig[DCTX__SIGNATURE_BYTES]);

/* dctx__handshake_verify checks a signature of the transcript by key, as
 * dctx__handshake_sign made it. */
bool dctx__handshake_verify(const struct dctx__handshake *h, bool server,
                            const unsigned char key[DCTX_PUBLIC_KEY_BYTES],
                            const unsigned char sig[DCTX__SIGNATURE_BYTES]);

void dctx__handshake_wipe(struct dctx__handshake *h);

/* dctx__seal encrypts len bytes at body in place and writes the tag after
 * them (body has len + DCTX__SEAL_TAG_BYTES bytes), as frame k->next. */
void dctx__seal(struct dctx__seal_key *k, unsigned char *body, size_t len);

/* dctx__open checks and decrypts a sealed frame (len bytes with its tag)
 * into out (len - DCTX__SEAL_TAG_BYTES bytes) as frame k->next. False,
 * and k unchanged, if it does not open: forged, altered, replayed,
 * reordered, or sealed under another key. */
bool dctx__open(struct dctx__seal_key *k, const unsigned char *in, size_t len, unsigned char *out);

/* dctx__identity_sign signs len bytes of m with id's secret key. */
void dctx__identity_sign(const dctx_identity *id, const unsigned char *m, size_t len,
                         unsigned char sig[DCTX__SIGNATURE_BYTES]);

#endif /* DCTX_RPC_HANDSHAKE_H */
