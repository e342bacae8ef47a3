/*
 * allow.c - allow files: which peers a server lets in, and which methods
 * each may call (see identity.h).
 *
 * Each line with a key becomes an entry; once the file is read, the
 * entries are sorted by key and the lines of one key merged into one
 * entry (O(n log n): 65536 keys load in milliseconds), so a lookup is a
 * binary search. An entry holds its methods, exact names and services
 * (kept as "/pkg.Service/", the star dropped), or none for "every
 * method". Everything is bounded (ALLOW_*), and a file that breaks a rule
 * is refused whole: a server must never run with half of the list its
 * operator wrote.
 */
#include <dctx/identity.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc_impl.h"
#include "text.h"

#define ALLOW_LINE_MAX 4096
#define ALLOW_KEYS_MAX 65536  /* lines with a key */
#define ALLOW_METHODS_MAX 256 /* for one key, all its lines together */
#define ALLOW_FILE_MAX (64u << 20)

struct method {
    char *name;  /* a method, or a service's prefix ending in "/" */
    bool prefix; /* name is a service's prefix */
};

struct peer {
    unsigned char key[DCTX_PUBLIC_KEY_BYTES];
    bool every_method; /* a line with the key alone */
    size_t line;       /* its first line, for errors */
    size_t n;
    struct method *methods;
};

struct dctx_allow {
    struct peer *peers; /* sorted by key, one per key, once parsed */
    size_t n;
};

static void peer_free(struct peer *p)
{
    for (size_t m = 0; m < p->n; m++)
        free(p->methods[m].name);
    free(p->methods);
}

void dctx_allow_free(dctx_allow *a)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < a->n; i++)
        peer_free(&a->peers[i]);
    free(a->peers);
    free(a);
}

static const struct peer *find(const dctx_allow *a, const unsigned char key[DCTX_PUBLIC_KEY_BYTES])
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

/* A method name, or a service ("/pkg.Service/" and a star): what to keep;
 * false if it is neither (or no memory: *out stays NULL then too). */
static bool method_word(const char *w, size_t len, struct method *out)
{
    char name[DCTX_WIRE_METHOD_BYTES_MAX + 1];
    if (len == 0 || len > DCTX_WIRE_METHOD_BYTES_MAX)
        return false;
    memcpy(name, w, len);
    name[len] = '\0';
    out->prefix = len >= 4 && memcmp(name + len - 2, "/*", 2) == 0;
    if (out->prefix) { /* check the service as a method named "x" */
        name[len - 1] = 'x';
        if (!dctx__method_name_valid(name) || strchr(name + 1, '/') != name + len - 2)
            return false;
        name[len - 1] = '\0';
    } else if (!dctx__method_name_valid(name) || strchr(name, '*') != NULL) {
        return false;
    }
    return (out->name = strdup(name)) != NULL;
}

/* Room for more methods in p; false past ALLOW_METHODS_MAX or no memory. */
static bool methods_room(struct peer *p, size_t more)
{
    if (p->n + more > ALLOW_METHODS_MAX)
        return false;
    struct method *m = realloc(p->methods, (p->n + more) * sizeof *m);
    if (m == NULL && p->n + more > 0)
        return false;
    p->methods = m;
    return true;
}

/* One line (without its newline), number for errors: an entry for its
 * key, if it has one. */
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
        int shown = (int)(wlen > 64 ? 64 : wlen);
        if (wlen == 0)
            break;
        if (peer == NULL) {
            unsigned char key[DCTX_PUBLIC_KEY_BYTES];
            if (!dctx_public_key_parse(w, wlen, key))
                return dctx__error(DCTX_INVALID_ARGUMENT, err, err_len,
                                   "line %zu: \"%.*s\" is not a public key (dctx-ed25519:...)",
                                   number, shown, w);
            struct peer *more =
                a->n < ALLOW_KEYS_MAX ? realloc(a->peers, (a->n + 1) * sizeof *a->peers) : NULL;
            if (more == NULL)
                return dctx__error(DCTX_RESOURCE_EXHAUSTED, err, err_len,
                                   "line %zu: more than %d keys, or no memory", number,
                                   ALLOW_KEYS_MAX);
            a->peers = more;
            peer = &a->peers[a->n++];
            *peer = (struct peer){.line = number};
            memcpy(peer->key, key, sizeof key);
            continue;
        }
        struct method m = {NULL, false};
        if (!method_word(w, wlen, &m))
            return dctx__error(DCTX_INVALID_ARGUMENT, err, err_len,
                               "line %zu: \"%.*s\" is not a method (/package.Service/Method) or "
                               "a service (/package.Service/*)",
                               number, shown, w);
        if (!methods_room(peer, 1)) {
            free(m.name);
            return dctx__error(DCTX_RESOURCE_EXHAUSTED, err, err_len,
                               "line %zu: more than %d methods for one key, or no memory", number,
                               ALLOW_METHODS_MAX);
        }
        peer->methods[peer->n++] = m;
    }
    if (peer != NULL && peer->n == 0)
        peer->every_method = true;
    return 0;
}

/* By key, then by line: the first line of a key leads its merged entry. */
static int by_key(const void *x, const void *y)
{
    const struct peer *a = x, *b = y;
    int c = memcmp(a->key, b->key, DCTX_PUBLIC_KEY_BYTES);
    return c != 0 ? c : (a->line > b->line) - (a->line < b->line);
}

/* Sort the entries and fold the lines of one key into its first. */
static int merge(dctx_allow *a, char *err, size_t err_len)
{
    if (a->n > 1) /* qsort takes no NULL, even for nothing */
        qsort(a->peers, a->n, sizeof *a->peers, by_key);
    size_t kept = 0;
    for (size_t i = 0; i < a->n; i++) {
        struct peer *into = kept > 0 ? &a->peers[kept - 1] : NULL;
        struct peer *p = &a->peers[i];
        if (into == NULL || memcmp(into->key, p->key, DCTX_PUBLIC_KEY_BYTES) != 0) {
            a->peers[kept++] = *p;
            continue;
        }
        if (!methods_room(into, p->n)) {
            int rc = dctx__error(DCTX_RESOURCE_EXHAUSTED, err, err_len,
                                 "line %zu: more than %d methods for the key of line %zu, or no "
                                 "memory",
                                 p->line, ALLOW_METHODS_MAX, into->line);
            for (size_t j = i; j < a->n; j++) /* not folded yet: still their own */
                peer_free(&a->peers[j]);
            a->n = kept;
            return rc;
        }
        if (p->n > 0) /* a key alone has no array to copy */
            memcpy(into->methods + into->n, p->methods, p->n * sizeof *p->methods);
        into->n += p->n;
        into->every_method |= p->every_method;
        free(p->methods); /* the names moved */
    }
    a->n = kept;
    return 0;
}

int dctx_allow_parse(const char *text, size_t len, dctx_allow **out, char *err, size_t err_len)
{
    if (out != NULL)
        *out = NULL;
    if ((text == NULL && len > 0) || out == NULL)
        return dctx__error(DCTX_INVALID_ARGUMENT, err, err_len, "no text or no out");
    dctx_allow *a = calloc(1, sizeof *a);
    if (a == NULL)
        return dctx__error(DCTX_RESOURCE_EXHAUSTED, err, err_len, "no memory");
    size_t number = 0;
    int rc = 0;
    for (size_t at = 0; rc == 0 && at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t n = nl != NULL ? (size_t)(nl - (text + at)) : len - at;
        number++;
        if (n > ALLOW_LINE_MAX)
            rc = dctx__error(DCTX_RESOURCE_EXHAUSTED, err, err_len,
                             "line %zu: longer than %d bytes", number, ALLOW_LINE_MAX);
        else if (memchr(text + at, '\0', n) != NULL)
            rc = dctx__error(DCTX_INVALID_ARGUMENT, err, err_len, "line %zu: a NUL byte", number);
        else
            rc = parse_line(a, text + at, n, number, err, err_len);
        at += n + 1;
    }
    if (rc == 0)
        rc = merge(a, err, err_len);
    if (rc != 0) {
        dctx_allow_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

int dctx_allow_load(const char *path, dctx_allow **out, char *err, size_t err_len)
{
    if (out != NULL)
        *out = NULL;
    if (path == NULL || out == NULL)
        return dctx__error(DCTX_INVALID_ARGUMENT, err, err_len, "no path or no out");
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return dctx__error(errno == ENOENT ? DCTX_NOT_FOUND : DCTX_PERMISSION_DENIED, err, err_len,
                           "cannot read allow file %s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len == cap) {
            size_t grown = cap ? 2 * cap : 65536;
            char *t = grown <= ALLOW_FILE_MAX ? realloc(text, grown) : NULL;
            if (t == NULL) {
                rc = dctx__error(DCTX_RESOURCE_EXHAUSTED, err, err_len,
                                 "allow file %s: over %u bytes", path, ALLOW_FILE_MAX);
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
        rc = dctx__error(DCTX_PERMISSION_DENIED, err, err_len, "cannot read allow file %s", path);
    fclose(f);
    if (rc == 0) {
        char why[200] = "";
        rc = dctx_allow_parse(text, len, out, why, sizeof why);
        if (rc != 0)
            dctx__error(rc, err, err_len, "allow file %s: %s", path, why);
    }
    free(text);
    return rc;
}

bool dctx_allow_knows(const dctx_allow *a, const unsigned char key[DCTX_PUBLIC_KEY_BYTES])
{
    return find(a, key) != NULL;
}

/* Does one method of the list cover name? */
static bool covers(const struct method *m, const char *name)
{
    if (!m->prefix)
        return strcmp(name, m->name) == 0;
    size_t n = strlen(m->name);
    return strncmp(name, m->name, n) == 0 && strchr(name + n, '/') == NULL;
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
        if (covers(&p->methods[i], method))
            return true;
    return false;
}

size_t dctx_allow_count(const dctx_allow *a)
{
    return a != NULL ? a->n : 0;
}
