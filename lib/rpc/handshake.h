/*
 * handshake.h - the cryptography of a connection with keys
 * (proto/PROTOCOL.md, section 9): an X25519 key exchange of keys made for
 * the connection, Ed25519 proofs of the two identities over the
 * transcript of the hellos, and every frame after the hellos sealed with
 * ChaCha20-Poly1305 under a key per direction and a frame counter as the
 * nonce. The session (session.c) decides when each step happens; this
 * file only computes. Never installed.
 */
#ifndef DCTX_RPC_HANDSHAKE_H
#define DCTX_RPC_HANDSHAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dctx/identity.h>

#define DCTX__KX_BYTES 32        /* an X25519 public key */
#define DCTX__SEAL_TAG_BYTES 16  /* what sealing adds to a frame */
#define DCTX__SIGNATURE_BYTES 64 /* an Ed25519 signature */
/* The server's hello's sealed_identity: its key and its signature, sealed. */
#define DCTX__SEALED_IDENTITY_BYTES                                                                \
    (DCTX_PUBLIC_KEY_BYTES + DCTX__SIGNATURE_BYTES + DCTX__SEAL_TAG_BYTES)

/* One direction of a connection: its key and the number of the next frame
 * (the nonce: a frame replayed, dropped or reordered does not open). */
struct dctx__seal_key {
    unsigned char key[32];
    uint64_t next;
};

/* What the transcript takes from a hello. */
struct dctx__hello_view {
    uint32_t version, max_frame_bytes, max_calls;
    const char *name; /* name_len bytes */
    size_t name_len;
    const unsigned char *kx_public; /* DCTX__KX_BYTES */
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

/* dctx__handshake_keys derives the two directions' keys from this side's
 * key pair and the peer's public key. False if the peer's key is not a
 * usable X25519 key (libsodium refuses it). */
bool dctx__handshake_keys(const struct dctx__handshake *h, bool server,
                          const unsigned char peer_kx[DCTX__KX_BYTES], struct dctx__seal_key *tx,
                          struct dctx__seal_key *rx);

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
