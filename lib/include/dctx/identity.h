/*
 * identity.h - who a service is, and whom it lets call it: key files and
 * allow files, for authenticated connections (the handshake that proves an
 * identity on a connection builds on these).
 *
 * An identity is an Ed25519 key pair (libsodium's crypto_sign). Its
 * secret lives in a file that only its owner may read (mode 0600; a file
 * that group or others can read is refused), as the line
 *     dctx-ed25519-secret:<the 32-byte seed, URL-safe base64>
 * (lines starting with # are comments). Its public key is written as one
 * line an operator can paste:
 *     dctx-ed25519:<the 32-byte key, URL-safe base64, 43 characters>
 *
 * An allow file lists the peers a server lets in, one per line: a public
 * key, then the methods it may call, exact ("/pkg.Service/Method") or a
 * whole service ("/pkg.Service/" and a star); a key alone may call every
 * method.
 * Blank lines and everything from a # on are ignored; a key given on
 * several lines gets all their methods. A malformed line makes the whole
 * file refused, with an error that names the line.
 */
#ifndef DCTX_IDENTITY_H
#define DCTX_IDENTITY_H

#include <dctx/dctx.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DCTX_PUBLIC_KEY_BYTES 32
/* "dctx-ed25519:" and 43 characters of base64, with the NUL. */
#define DCTX_PUBLIC_KEY_TEXT_BYTES 57

typedef struct dctx_identity dctx_identity;
typedef struct dctx_allow dctx_allow;

/* dctx_identity_generate makes a new identity: its secret into a new file
 * at path (created with mode 0600; an existing file is never overwritten)
 * and its public key as text into public_text. Returns 0, or with err (if
 * not NULL, err_len bytes) saying why: DCTX_ALREADY_EXISTS (path exists),
 * DCTX_NOT_FOUND (its directory does not), DCTX_PERMISSION_DENIED,
 * DCTX_INVALID_ARGUMENT (a NULL argument), DCTX_INTERNAL (a write failed)
 * or DCTX_RESOURCE_EXHAUSTED. */
DCTX_API int dctx_identity_generate(const char *path, char public_text[DCTX_PUBLIC_KEY_TEXT_BYTES],
                                    char *err, size_t err_len);

/* dctx_identity_load reads the secret key file at path into *out (the
 * secret in memory libsodium guards and wipes; free it with
 * dctx_identity_free). Returns 0, or with err saying why: DCTX_NOT_FOUND,
 * DCTX_PERMISSION_DENIED (it cannot be read, or group or others can read
 * it: "chmod 600"), DCTX_INVALID_ARGUMENT (not a secret key file) or
 * DCTX_RESOURCE_EXHAUSTED. */
DCTX_API int dctx_identity_load(const char *path, dctx_identity **out, char *err, size_t err_len);

/* The identity's public key, as bytes and as text. */
DCTX_API void dctx_identity_public_key(const dctx_identity *id,
                                       unsigned char key[DCTX_PUBLIC_KEY_BYTES]);
DCTX_API void dctx_public_key_text(const unsigned char key[DCTX_PUBLIC_KEY_BYTES],
                                   char text[DCTX_PUBLIC_KEY_TEXT_BYTES]);

/* dctx_public_key_parse reads a public key's text (len bytes, no NUL
 * needed) into key; false if it is not one. */
DCTX_API bool dctx_public_key_parse(const char *text, size_t len,
                                    unsigned char key[DCTX_PUBLIC_KEY_BYTES]);

/* Wipe and free the identity. NULL is fine. */
DCTX_API void dctx_identity_free(dctx_identity *id);

/* dctx_allow_parse reads an allow file's text (len bytes) into *out;
 * dctx_allow_load reads the file at path. Returns 0, or with err saying
 * why (a malformed line by its number): DCTX_INVALID_ARGUMENT, or for
 * load DCTX_NOT_FOUND or DCTX_PERMISSION_DENIED; DCTX_RESOURCE_EXHAUSTED
 * past the limits (a line over 4096 bytes, 65536 lines with keys, 256
 * methods for one key) or out of memory. */
DCTX_API int dctx_allow_parse(const char *text, size_t len, dctx_allow **out, char *err,
                              size_t err_len);
DCTX_API int dctx_allow_load(const char *path, dctx_allow **out, char *err, size_t err_len);

/* Whether the peer with key is on the list at all, and whether it may
 * call method. */
DCTX_API bool dctx_allow_knows(const dctx_allow *a, const unsigned char key[DCTX_PUBLIC_KEY_BYTES]);
DCTX_API bool dctx_allow_permits(const dctx_allow *a,
                                 const unsigned char key[DCTX_PUBLIC_KEY_BYTES],
                                 const char *method);

/* The number of keys on the list. */
DCTX_API size_t dctx_allow_count(const dctx_allow *a);

/* Free the list. NULL is fine. */
DCTX_API void dctx_allow_free(dctx_allow *a);

#ifdef __cplusplus
}
#endif

#endif /* DCTX_IDENTITY_H */
