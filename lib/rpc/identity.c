/*
 * identity.c - key files and public keys as text (see identity.h).
 *
 * The secret is the Ed25519 seed: 32 bytes, from which libsodium derives
 * the key pair. It is only ever in stack buffers wiped before return
 * (sodium_memzero) and in the identity, which lives in sodium_malloc'ed
 * memory (guard pages, wiped when freed). The file is created O_EXCL with
 * mode 0600, so a typo never overwrites another key, and read only when
 * nobody but its owner can read it: a key that others could have copied
 * proves nothing.
 */
#include <dctx/identity.h>

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "handshake.h"
#include "rpc_impl.h"

#define PUBLIC_PREFIX "dctx-ed25519:"
#define SECRET_PREFIX "dctx-ed25519-secret:"
#define B64 sodium_base64_VARIANT_URLSAFE_NO_PADDING
#define KEY_FILE_MAX 1024 /* a key file is one line and a comment */

struct dctx_identity {
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
    unsigned char sk[crypto_sign_SECRETKEYBYTES];
};

_Static_assert(DCTX_PUBLIC_KEY_BYTES == crypto_sign_PUBLICKEYBYTES, "an Ed25519 public key");
_Static_assert(DCTX_PUBLIC_KEY_TEXT_BYTES ==
                   sizeof PUBLIC_PREFIX - 1 + sodium_base64_ENCODED_LEN(DCTX_PUBLIC_KEY_BYTES, B64),
               "the text of a public key, with its NUL");

static int from_errno(int e)
{
    return e == ENOENT || e == ENOTDIR               ? DCTX_NOT_FOUND
           : e == EEXIST                             ? DCTX_ALREADY_EXISTS
           : e == EACCES || e == EPERM || e == ELOOP ? DCTX_PERMISSION_DENIED
           : e == ENOMEM                             ? DCTX_RESOURCE_EXHAUSTED
                                                     : DCTX_INTERNAL;
}

void dctx_public_key_text(const unsigned char key[DCTX_PUBLIC_KEY_BYTES],
                          char text[DCTX_PUBLIC_KEY_TEXT_BYTES])
{
    memcpy(text, PUBLIC_PREFIX, sizeof PUBLIC_PREFIX - 1);
    sodium_bin2base64(text + sizeof PUBLIC_PREFIX - 1,
                      DCTX_PUBLIC_KEY_TEXT_BYTES - (sizeof PUBLIC_PREFIX - 1), key,
                      DCTX_PUBLIC_KEY_BYTES, B64);
}

/* Decode prefix + base64 of exactly n bytes (n <= 64) from text (len
 * bytes). Only the canonical text of the bytes is taken: libsodium 1.0.18
 * decodes some bytes over 0x7f as if they were base64 (fuzz_allow found
 * two texts of one key), and a key must have one text. */
static bool decode(const char *text, size_t len, const char *prefix, unsigned char *out, size_t n)
{
    size_t p = strlen(prefix);
    if (text == NULL || len < p || memcmp(text, prefix, p) != 0 ||
        len - p != sodium_base64_ENCODED_LEN(n, B64) - 1 || sodium_init() < 0)
        return false;
    size_t got = 0;
    char again[sodium_base64_ENCODED_LEN(64, B64)];
    bool ok = sodium_base642bin(out, n, text + p, len - p, NULL, &got, NULL, B64) == 0 &&
              got == n && sodium_bin2base64(again, sizeof again, out, n, B64) != NULL &&
              memcmp(again, text + p, len - p) == 0;
    sodium_memzero(again, sizeof again); /* it may hold a secret */
    return ok;
}

bool dctx_public_key_parse(const char *text, size_t len, unsigned char key[DCTX_PUBLIC_KEY_BYTES])
{
    return decode(text, len, PUBLIC_PREFIX, key, DCTX_PUBLIC_KEY_BYTES);
}

int dctx_identity_generate(const char *path, char public_text[DCTX_PUBLIC_KEY_TEXT_BYTES],
                           char *err, size_t err_len)
{
    if (path == NULL || public_text == NULL)
        return dctx__error(DCTX_INVALID_ARGUMENT, err, err_len, "no path or no room for the key");
    if (sodium_init() < 0)
        return dctx__error(DCTX_RESOURCE_EXHAUSTED, err, err_len, "libsodium cannot start");
    unsigned char pk[crypto_sign_PUBLICKEYBYTES], sk[crypto_sign_SECRETKEYBYTES];
    unsigned char seed[crypto_sign_SEEDBYTES];
    char line[KEY_FILE_MAX];
    crypto_sign_keypair(pk, sk);
    crypto_sign_ed25519_sk_to_seed(seed, sk);
    int n = snprintf(line, sizeof line,
                     "# dctx identity: an Ed25519 secret key. Keep it to its owner (mode 0600).\n"
                     "# Its public key: ");
    dctx_public_key_text(pk, line + n);
    n += (int)strlen(line + n);
    n += snprintf(line + n, sizeof line - (size_t)n, "\n%s", SECRET_PREFIX);
    sodium_bin2base64(line + n, sizeof line - (size_t)n, seed, sizeof seed, B64);
    n += (int)strlen(line + n);
    line[n++] = '\n';
    sodium_memzero(seed, sizeof seed);
    sodium_memzero(sk, sizeof sk);

    int rc = 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = dctx__error(from_errno(errno), err, err_len, "cannot create %s: %s", path,
                         strerror(errno));
    } else {
        ssize_t w = write(fd, line, (size_t)n);
        if (w != n || fsync(fd) != 0)
            rc = dctx__error(DCTX_INTERNAL, err, err_len, "cannot write %s: %s", path,
                             w < 0 ? strerror(errno) : "short write");
        close(fd);
        if (rc != 0)
            unlink(path);
    }
    sodium_memzero(line, sizeof line);
    if (rc == 0)
        dctx_public_key_text(pk, public_text);
    return rc;
}

/* The secret line of a key file's text: the first line that is not a
 * comment or blank, its length in *len. */
static const char *secret_line(const char *text, size_t *len)
{
    for (const char *p = text; *p != '\0';) {
        size_t n = strcspn(p, "\n");
        size_t end = n;
        while (end > 0 && (p[end - 1] == '\r' || p[end - 1] == ' ' || p[end - 1] == '\t'))
            end--;
        if (end > 0 && p[0] != '#') {
            *len = end;
            return p;
        }
        p += n + (p[n] == '\n');
    }
    return NULL;
}

int dctx_identity_load(const char *path, dctx_identity **out, char *err, size_t err_len)
{
    if (out != NULL)
        *out = NULL;
    if (path == NULL || out == NULL)
        return dctx__error(DCTX_INVALID_ARGUMENT, err, err_len, "no path or no out");
    if (sodium_init() < 0)
        return dctx__error(DCTX_RESOURCE_EXHAUSTED, err, err_len, "libsodium cannot start");
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return dctx__error(from_errno(errno), err, err_len, "cannot read key file %s: %s", path,
                           strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return dctx__error(DCTX_INVALID_ARGUMENT, err, err_len, "%s is not a regular file", path);
    }
    if ((st.st_mode & 077) != 0) {
        close(fd);
        return dctx__error(
            DCTX_PERMISSION_DENIED, err, err_len,
            "key file %s can be read by group or others (mode %03o): a secret key must "
            "be its owner's alone (chmod 600 %s)",
            path, (unsigned)(st.st_mode & 0777), path);
    }
    char text[KEY_FILE_MAX + 1];
    ssize_t n = read(fd, text, KEY_FILE_MAX + 1);
    close(fd);
    if (n < 0 || n > KEY_FILE_MAX) {
        sodium_memzero(text, sizeof text);
        return dctx__error(DCTX_INVALID_ARGUMENT, err, err_len, "%s: %s", path,
                           n < 0 ? strerror(errno) : "too long for a key file");
    }
    text[n] = '\0';
    int rc = dctx__identity_from_text(text, out);
    sodium_memzero(text, sizeof text);
    if (rc == DCTX_INVALID_ARGUMENT)
        return dctx__error(rc, err, err_len,
                           "%s is not a dctx secret key file (a line " SECRET_PREFIX "...)", path);
    if (rc != 0)
        return dctx__error(rc, err, err_len, "no memory for the key");
    return 0;
}

int dctx__identity_from_text(const char *text, dctx_identity **out)
{
    *out = NULL;
    size_t len = 0;
    const char *line = secret_line(text, &len);
    unsigned char seed[crypto_sign_SEEDBYTES];
    if (line == NULL || !decode(line, len, SECRET_PREFIX, seed, sizeof seed))
        return DCTX_INVALID_ARGUMENT;
    dctx_identity *id = sodium_malloc(sizeof *id);
    if (id != NULL)
        crypto_sign_seed_keypair(id->pk, id->sk, seed);
    sodium_memzero(seed, sizeof seed);
    if (id == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    *out = id;
    return 0;
}

void dctx_identity_public_key(const dctx_identity *id, unsigned char key[DCTX_PUBLIC_KEY_BYTES])
{
    memcpy(key, id->pk, DCTX_PUBLIC_KEY_BYTES);
}

void dctx_identity_free(dctx_identity *id)
{
    if (id != NULL)
        sodium_free(id); /* wipes it */
}

void dctx__identity_sign(const dctx_identity *id, const unsigned char *m, size_t len,
                         unsigned char sig[DCTX__SIGNATURE_BYTES])
{
    crypto_sign_detached(sig, NULL, m, len, id->sk);
}
