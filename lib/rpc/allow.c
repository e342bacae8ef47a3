/*
 * allow.c - allow files: which peers a server lets in, and which methods
 * each may call (see identity.h).
 *
 * Parsed once at start-up into an array of keys sorted by their bytes, so
 * a lookup is a binary search; each key holds its methods, exact names
 * and services ("/pkg.Service/" and a star, kept without the star), or
 * none for "every method". Everything is bounded (ALLOW_*), and a file
 * that breaks a rule is refused whole: a server must never run with half
 * of the list its operator wrote.
 */
#include <dctx/identity.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_impl.h"
#include "text.h"

#define ALLOW_LINE_MAX 4096
#define ALLOW_KEYS_MAX 65536
#define ALLOW_METHODS_MAX 256
#define ALLOW_FILE_MAX (64u << 20)

struct peer {
    unsigned char key[DCTX_PUBLIC_KEY_BYTES];
    bool every_method; /* a line with the key alone */
    size_t n;
    char **methods; /* exact names, or a service's prefix ending in "/" with is_prefix */
    bool *is_prefix;
};

struct dctx_allow {
    struct peer *peers; /* sorted by key */
    size_t n;
};

static int fail(int code, char *err, size_t err_len, const char *fmt, ...) DCTX_PRINTF(4, 5);

static int fail(int code, char *err, size_t err_len, const char *fmt, ...)
{
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

void dctx_allow_free(dctx_allow *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->n; i++) {
        for (size_t m = 0; m < a->peers[i].n; m++)
            free(a->peers[i].methods[m]);
        free(a->peers[i].methods);
        free(a->peers[i].is_prefix);
    }
    free(a->peers);
    free(a);
}

static struct peer *find(const dctx_allow *a, const unsigned char key[DCTX_PUBLIC_KEY_BYTES])
{
    size_t lo = 0, hi = a != NULL ? a->n : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(key, a->peers[mid].key, DCTX_PUBLIC_KEY_BYTES);
        if (c == 0)
            return &a->peers[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* The peer for key, added (unsorted, at the end) if new; NULL when out of
 * memory or past ALLOW_KEYS_MAX. */
static struct peer *peer_for(dctx_allow *a, const unsigned char key[DCTX_PUBLIC_KEY_BYTES])
{
    for (size_t i = 0; i < a->n; i++) /* the file is read once: linear is fine */
        if (memcmp(a->peers[i].key, key, DCTX_PUBLIC_KEY_BYTES) == 0)
            return &a->peers[i];
    if (a->n == ALLOW_KEYS_MAX)
        return NULL;
    struct peer *p = realloc(a->peers, (a->n + 1) * sizeof *p);
    if (p == NULL)
        return NULL;
    a->peers = p;
    p = &a->peers[a->n++];
    memset(p, 0, sizeof *p);
    memcpy(p->key, key, DCTX_PUBLIC_KEY_BYTES);
    return p;
}

/* A method name, or a service ("/pkg.Service/" and a star): the text to keep and whether it is a
 * prefix; false if it is neither. */
static bool method_word(const char *w, size_t len, char **out, bool *prefix)
{
    char name[DCTX_WIRE_METHOD_BYTES_MAX + 1];
    if (len == 0 || len > DCTX_WIRE_METHOD_BYTES_MAX)
        return false;
    memcpy(name, w, len);
    name[len] = '\0';
    *prefix = len >= 4 && memcmp(name + len - 2, "/*", 2) == 0;
    if (*prefix) { /* check the service as a method named "x" */
        name[len - 1] = 'x';
        if (!dctx__method_name_valid(name) || strchr(name + 1, '/') != name + len - 2)
            return false;
        name[len - 1] = '\0';
    } else if (!dctx__method_name_valid(name) || strchr(name, '*') != NULL) {
        return false;
    }
    return (*out = strdup(name)) != NULL;
}

static int add_method(struct peer *p, char *m, bool prefix)
{
    if (p->n == ALLOW_METHODS_MAX) {
        free(m);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    char **ms = realloc(p->methods, (p->n + 1) * sizeof *ms);
    if (ms != NULL)
        p->methods = ms;
    bool *ps = ms != NULL ? realloc(p->is_prefix, (p->n + 1) * sizeof *ps) : NULL;
    if (ps == NULL) {
        free(m);
        return DCTX_RESOURCE_EXHAUSTED;
    }
    p->is_prefix = ps;
    p->methods[p->n] = m;
    p->is_prefix[p->n++] = prefix;
    return 0;
}

/* One line (without its newline); number for errors. */
static int parse_line(dctx_allow *a, const char *line, size_t len, size_t number, char *err,
                      size_t err_len)
{
    const char *hash = memchr(line, '#', len);
    if (hash != NULL)
        len = (size_t)(hash - line);
    const char *end = line + len, *p = line;
    struct peer *peer = NULL;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\r'))
            p++;
        const char *w = p;
        while (p < end && *p != ' ' && *p != '\t' && *p != '\r')
            p++;
        size_t wlen = (size_t)(p - w);
        if (wlen == 0)
            break;
        if (peer == NULL) {
            unsigned char key[DCTX_PUBLIC_KEY_BYTES];
            if (!dctx_public_key_parse(w, wlen, key))
                return fail(DCTX_INVALID_ARGUMENT, err, err_len,
                            "line %zu: \"%.*s\" is not a public key (dctx-ed25519:...)", number,
                            (int)(wlen > 64 ? 64 : wlen), w);
            if ((peer = peer_for(a, key)) == NULL)
                return fail(DCTX_RESOURCE_EXHAUSTED, err, err_len,
                            "line %zu: more than %d keys, or no memory", number, ALLOW_KEYS_MAX);
            continue;
        }
        char *m = NULL;
        bool prefix = false;
        if (!method_word(w, wlen, &m, &prefix))
            return fail(DCTX_INVALID_ARGUMENT, err, err_len,
                        "line %zu: \"%.*s\" is not a method (/package.Service/Method) or a "
                        "service (/package.Service/*)",
                        number, (int)(wlen > 64 ? 64 : wlen), w);
        if (add_method(peer, m, prefix) != 0)
            return fail(DCTX_RESOURCE_EXHAUSTED, err, err_len,
                        "line %zu: more than %d methods for one key, or no memory", number,
                        ALLOW_METHODS_MAX);
    }
    if (peer != NULL && peer->n == 0)
        peer->every_method = true;
    return 0;
}

static int by_key(const void *x, const void *y)
{
    return memcmp(((const struct peer *)x)->key, ((const struct peer *)y)->key,
                  DCTX_PUBLIC_KEY_BYTES);
}

int dctx_allow_parse(const char *text, size_t len, dctx_allow **out, char *err, size_t err_len)
{
    if (out != NULL)
        *out = NULL;
    if ((text == NULL && len > 0) || out == NULL)
        return fail(DCTX_INVALID_ARGUMENT, err, err_len, "no text or no out");
    dctx_allow *a = calloc(1, sizeof *a);
    if (a == NULL)
        return fail(DCTX_RESOURCE_EXHAUSTED, err, err_len, "no memory");
    size_t number = 0;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t n = nl != NULL ? (size_t)(nl - (text + at)) : len - at;
        number++;
        int rc = 0;
        if (n > ALLOW_LINE_MAX)
            rc = fail(DCTX_RESOURCE_EXHAUSTED, err, err_len, "line %zu: longer than %d bytes",
                      number, ALLOW_LINE_MAX);
        else if (memchr(text + at, '\0', n) != NULL)
            rc = fail(DCTX_INVALID_ARGUMENT, err, err_len, "line %zu: a NUL byte", number);
        else
            rc = parse_line(a, text + at, n, number, err, err_len);
        if (rc != 0) {
            dctx_allow_free(a);
            return rc;
        }
        at += n + 1;
    }
    if (a->n > 1) /* qsort takes no NULL, even for nothing */
        qsort(a->peers, a->n, sizeof *a->peers, by_key);
    *out = a;
    return 0;
}

int dctx_allow_load(const char *path, dctx_allow **out, char *err, size_t err_len)
{
    if (out != NULL)
        *out = NULL;
    if (path == NULL || out == NULL)
        return fail(DCTX_INVALID_ARGUMENT, err, err_len, "no path or no out");
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return fail(errno == ENOENT ? DCTX_NOT_FOUND : DCTX_PERMISSION_DENIED, err, err_len,
                    "cannot read allow file %s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len == cap) {
            size_t grown = cap ? 2 * cap : 65536;
            char *t = grown <= ALLOW_FILE_MAX ? realloc(text, grown) : NULL;
            if (t == NULL) {
                rc = fail(DCTX_RESOURCE_EXHAUSTED, err, err_len, "allow file %s: over %u bytes",
                          path, ALLOW_FILE_MAX);
                break;
            }
            text = t;
            cap = grown;
        }
        size_t got = fread(text + len, 1, cap - len, f);
        len += got;
        if (got == 0)
            break;
    }
    if (rc == 0 && ferror(f))
        rc = fail(DCTX_PERMISSION_DENIED, err, err_len, "cannot read allow file %s", path);
    fclose(f);
    if (rc == 0) {
        char why[200] = "";
        rc = dctx_allow_parse(text, len, out, why, sizeof why);
        if (rc != 0)
            fail(rc, err, err_len, "allow file %s: %s", path, why);
    }
    free(text);
    return rc;
}

bool dctx_allow_knows(const dctx_allow *a, const unsigned char key[DCTX_PUBLIC_KEY_BYTES])
{
    return find(a, key) != NULL;
}

bool dctx_allow_permits(const dctx_allow *a, const unsigned char key[DCTX_PUBLIC_KEY_BYTES],
                        const char *method)
{
    const struct peer *p = find(a, key);
    if (p == NULL || method == NULL)
        return false;
    if (p->every_method)
        return true;
    for (size_t i = 0; i < p->n; i++)
        if (p->is_prefix[i] ? strncmp(method, p->methods[i], strlen(p->methods[i])) == 0 &&
                                  strchr(method + strlen(p->methods[i]), '/') == NULL
                            : strcmp(method, p->methods[i]) == 0)
            return true;
    return false;
}

size_t dctx_allow_count(const dctx_allow *a)
{
    return a != NULL ? a->n : 0;
}
