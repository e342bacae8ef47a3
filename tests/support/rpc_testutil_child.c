/*
 * rpc_testutil_child.c - a server in a re-executed child of the test
 * program, and the shared file through which it reports (rpc_testutil.h).
 */
#include "rpc_testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

void *rt_shared_map(const char *path, size_t size, bool create)
{
    int fd = open(path, O_RDWR | (create ? O_CREAT | O_TRUNC : 0), 0600);
    if (fd < 0)
        return NULL;
    if (create && ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        return NULL;
    }
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return p == MAP_FAILED ? NULL : p;
}

static int child_block(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)ctx;
    (void)req;
    (void)len;
    (void)reply;
    rt_child_shared *sh = arg;
    atomic_fetch_add(&sh->block_runs, 1);
    for (;;)
        pause();
    return DCTX_OK;
}

static int child_ping(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)ctx;
    (void)req;
    (void)len;
    (void)reply;
    rt_child_shared *sh = arg;
    atomic_fetch_add(&sh->pings, 1);
    return DCTX_OK;
}

int rt_child_main(int argc, char **argv)
{
    if (argc != 4 || strcmp(argv[1], "--rt-child-server") != 0)
        return -1;
    alarm(120);
    rt_child_shared *sh = rt_shared_map(argv[3], sizeof *sh, false);
    if (sh == NULL)
        _exit(2);
    dctx_rpc_server *s = NULL;
    if (dctx_rpc_server_open(NULL, &s) != 0 ||
        dctx_rpc_server_register(s, "/rt.Child/Block", child_block, sh) != 0 ||
        dctx_rpc_server_register(s, "/rt.Child/Ping", child_ping, sh) != 0) {
        atomic_store(&sh->failed, 1);
        _exit(3);
    }
    if (dctx_rpc_server_listen(s, argv[2]) != 0 || dctx_rpc_server_start(s) != 0) {
        atomic_store(&sh->failed, 1);
        _exit(4);
    }
    atomic_store(&sh->ready, 1);
    for (;;)
        pause();
}

pid_t rt_spawn_self(const char *const *args)
{
    const char *argv[8] = {"test-child"};
    size_t n = 1;
    for (; args[n - 1] != NULL && n < 7; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    pid_t parent = getpid();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        execv("/proc/self/exe", (char *const *)argv);
        _exit(127);
    }
    rt_track_child(pid);
    return pid;
}

bool rt_child_start(const char *url, const char *shared_path, rt_child_shared *sh, pid_t *out)
{
    atomic_store(&sh->ready, 0);
    atomic_store(&sh->failed, 0);
    const char *args[] = {"--rt-child-server", url, shared_path, NULL};
    pid_t pid = rt_spawn_self(args);
    bool up = WAIT_FOR(atomic_load(&sh->ready) || atomic_load(&sh->failed) ||
                           waitpid(pid, NULL, WNOHANG) == pid,
                       SEC(30));
    if (!up || !atomic_load(&sh->ready)) {
        rt_child_kill(pid);
        return false;
    }
    *out = pid;
    return true;
}

pid_t rt_child_server(char *url, char *shared_path, rt_child_shared **sh)
{
    rt_path("child", shared_path, 256);
    *sh = rt_shared_map(shared_path, sizeof **sh, true);
    assert_non_null(*sh);
    pid_t pid = 0;
    for (int tries = 0; tries < 20; tries++) {
        rt_url(RT_TCP, url, 256);
        if (rt_child_start(url, shared_path, *sh, &pid))
            return pid;
    }
    fail_msg("no child server could start");
    return 0;
}
