/*
 * procs.h - real processes for tests: start rpcd instances on ipc
 * addresses in a scratch directory, call them, read their JSON logs, and
 * stop or kill them. Header-only; include once per test program.
 */
#ifndef DCTX_PROCS_H
#define DCTX_PROCS_H

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dctx/rpc.h>

extern char **environ;

struct procs {
    char dir[128]; /* scratch directory for sockets and logs */
    pid_t pids[32];
    int n;
};

static inline void procs_init(struct procs *p)
{
    snprintf(p->dir, sizeof p->dir, "/tmp/dctx-procs-XXXXXX");
    if (mkdtemp(p->dir) == NULL)
        abort();
    p->n = 0;
}

/* "ipc://<dir>/<name>.ipc" */
static inline void procs_url(const struct procs *p, const char *name, char *out, size_t n)
{
    snprintf(out, n, "ipc://%s/%s.ipc", p->dir, name);
}

static inline void procs_log(const struct procs *p, const char *name, char *out, size_t n)
{
    snprintf(out, n, "%s/%s.log", p->dir, name);
}

/* Start argv (argv[0] is the program path); returns the pid. */
static inline pid_t procs_spawn(struct procs *p, const char *const argv[])
{
    pid_t pid = 0;
    /* posix_spawn's argv is char *const[] for history's sake; it is not written. */
    if (posix_spawn(&pid, argv[0], NULL, NULL, (char *const *)argv, environ) != 0)
        abort();
    p->pids[p->n++] = pid;
    return pid;
}

/* Call /dctx.Admin/Stats until the instance answers (or 10 s pass). */
static inline bool procs_wait_up(const char *url)
{
    dctx_rpc_channel *ch = NULL;
    if (dctx_rpc_channel_open(url, NULL, &ch) != 0)
        return false;
    bool up = false;
    for (int i = 0; i < 200 && !up; i++) {
        dctx *ctx = NULL;
        dctx_with_timeout(dctx_background(), 200 * 1000000LL, &ctx);
        up = dctx_rpc_call_raw(ch, ctx, "/dctx.Admin/Stats", NULL, 0, NULL) == DCTX_OK;
        dctx_release(ctx);
        if (!up)
            usleep(50000);
    }
    dctx_rpc_channel_close(ch);
    return up;
}

/* The Stats JSON of an instance, into buf. */
static inline bool procs_stats(const char *url, char *buf, size_t n)
{
    dctx_rpc_channel *ch = NULL;
    if (dctx_rpc_channel_open(url, NULL, &ch) != 0)
        return false;
    dctx *ctx = NULL;
    dctx_with_timeout(dctx_background(), 2000 * 1000000LL, &ctx);
    dctx_rpc_result res;
    int rc = dctx_rpc_call_raw(ch, ctx, "/dctx.Admin/Stats", NULL, 0, &res);
    if (rc == DCTX_OK)
        snprintf(buf, n, "%.*s", (int)res.payload_len, (const char *)res.payload);
    dctx_rpc_result_free(&res);
    dctx_release(ctx);
    dctx_rpc_channel_close(ch);
    return rc == DCTX_OK;
}

/* The number after "key": in a JSON text (first occurrence), or -1. */
static inline long long json_number(const char *json, const char *key)
{
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *at = strstr(json, pat);
    return at != NULL ? strtoll(at + strlen(pat), NULL, 10) : -1;
}

/* Read a whole file into a new string (NULL if it cannot be read). */
static inline char *procs_slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, len = 0, got;
    char *buf = malloc(cap);
    while (buf != NULL && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (len + 1 == cap) {
            char *grown = realloc(buf, cap * 2);
            if (grown == NULL)
                free(buf);
            buf = grown;
            cap *= 2;
        }
    }
    fclose(f);
    if (buf != NULL)
        buf[len] = '\0';
    return buf;
}

/* Wait up to timeout_ms until the file at path contains needle. */
static inline bool procs_log_has(const char *path, const char *needle, int timeout_ms)
{
    for (int waited = 0;; waited += 20) {
        char *text = procs_slurp(path);
        bool found = text != NULL && strstr(text, needle) != NULL;
        free(text);
        if (found)
            return true;
        if (waited >= timeout_ms)
            return false;
        usleep(20000);
    }
}

/* Stop every process (SIGTERM, then SIGKILL after 5 s) and clean up.
 * Returns how many did not exit cleanly (a sanitizer report, a crash, a
 * hang), not counting those the test killed itself. */
static inline int procs_stop_all(struct procs *p)
{
    int bad = 0;
    for (int i = 0; i < p->n; i++)
        if (p->pids[i] > 0)
            kill(p->pids[i], SIGTERM);
    for (int i = 0; i < p->n; i++) {
        if (p->pids[i] <= 0)
            continue;
        int status, waited = 0;
        while (waitpid(p->pids[i], &status, WNOHANG) == 0 && waited < 5000) {
            usleep(10000);
            waited += 10;
        }
        if (waited >= 5000) {
            kill(p->pids[i], SIGKILL);
            waitpid(p->pids[i], &status, 0);
            bad++;
        } else if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) &&
                   !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            fprintf(stderr, "process %d ended badly (status 0x%x)\n", (int)p->pids[i], status);
            bad++;
        }
    }
    p->n = 0;
    if (getenv("DCTX_TEST_KEEP") != NULL) { /* for a look at the logs */
        fprintf(stderr, "kept %s\n", p->dir);
        return bad;
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", p->dir);
    return bad;
}

#endif /* DCTX_PROCS_H */
