/* children.c - see children.h */
#include "children.h"

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <dctx/dctx.h>

#define CHILDREN_MAX 16

static int64_t t0;
static char dir[64];
static int reports[2] = {-1, -1}; /* children write [1], the parent reads [0] */
static pid_t pids[CHILDREN_MAX];
static int children;

bool example_begin(const char *tag)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    t0 = dctx_now(); /* only a clock read: no library thread exists before the forks */
    snprintf(dir, sizeof dir, "/tmp/dctx-%s-XXXXXX", tag);
    if (mkdtemp(dir) == NULL || pipe(reports) != 0) {
        perror(tag);
        return false;
    }
    return true;
}

void example_end(void)
{
    if (reports[0] >= 0)
        close(reports[0]);
    /* nng removes its sockets; this is in case it could not */
    DIR *d = opendir(dir);
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;) {
        char path[sizeof dir + 256 + 1];
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    if (d != NULL)
        closedir(d);
    rmdir(dir);
}

void example_url(const char *name, char *out, size_t n)
{
    snprintf(out, n, "ipc://%s/%s.ipc", dir, name);
}

void say(const char *who, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    printf("%8.1f ms  %-7s %s\n", (double)(dctx_now() - t0) / MS, who, text);
}

void tell_parent(char what)
{
    if (write(reports[1], &what, 1) != 1)
        perror("write");
}

bool wait_reports(char what, int n, int timeout_ms)
{
    int64_t end = dctx_now() + timeout_ms * MS;
    while (n > 0) {
        struct pollfd p = {.fd = reports[0], .events = POLLIN};
        int64_t left = (end - dctx_now()) / MS;
        char c;
        if (left <= 0 || poll(&p, 1, (int)left) != 1 || read(reports[0], &c, 1) != 1)
            return false;
        if (c == what)
            n--;
    }
    return true;
}

/* SIGTERM is taken by sigwait: block it before any thread exists (threads
 * inherit the mask). Die with the parent, too. */
static bool block_sigterm(void)
{
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &term, NULL) != 0 || prctl(PR_SET_PDEATHSIG, SIGTERM) != 0) {
        perror("sigprocmask/prctl");
        return false;
    }
    return true;
}

bool start_children(int n, int (*child_main)(int i))
{
    bool ok = n <= CHILDREN_MAX;
    children = ok ? n : 0;
    for (int i = children - 1; ok && i >= 0; i--) {
        fflush(stdout); /* or the child would print it again */
        pids[i] = fork();
        if (pids[i] == 0) {
            close(reports[0]);
            exit(block_sigterm() ? child_main(i) : DCTX_INTERNAL);
        }
        if (pids[i] < 0) {
            perror("fork");
            ok = false;
        } else if (!wait_reports('r', 1, 5000)) {
            fprintf(stderr, "child %d did not start\n", i);
            ok = false;
        }
    }
    close(reports[1]); /* the children hold their own copies */
    return ok;
}

int serve_until_sigterm(void)
{
    sigset_t term;
    sigemptyset(&term);
    sigaddset(&term, SIGTERM);
    tell_parent('r');
    int sig;
    return sigwait(&term, &sig) == 0 ? 0 : DCTX_INTERNAL;
}

bool stop_children(void)
{
    bool clean = true;
    for (int i = 0; i < children; i++)
        if (pids[i] > 0)
            kill(pids[i], SIGTERM);
    for (int i = 0; i < children; i++) {
        int status = 0;
        if (pids[i] <= 0)
            continue;
        if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) ||
            WEXITSTATUS(status) != 0) {
            fprintf(stderr, "child %d did not exit cleanly (status 0x%x)\n", i, status);
            clean = false;
        }
    }
    return clean;
}
