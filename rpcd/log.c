/*
 * log.c - JSON lines (see log.h), written off the call path.
 *
 * A line is built on its caller's stack, then copied whole into a byte
 * queue under a lock held only for that copy: no I/O on a handler's
 * thread. One writer thread takes the whole queue (swapping it for an
 * empty buffer) and writes it with one write(2), so a reader of the file
 * sees whole batches. Woken by the first line after a write, the writer
 * lets lines gather for BATCH_MS (or until KICK_BYTES are queued) before
 * it takes them: a line reaches the file within about BATCH_MS, and a
 * busy server pays one wake and one write per batch, not per line
 * (measured: waking the writer for every line cost a quarter of rpcd's
 * throughput). When the disk or the terminal is slower than the calls,
 * the queue (QUEUE_BYTES) fills and a line that does not fit is dropped
 * and counted, never waited for (so are lines a write refuses). Lines
 * never interleave: each is copied in one piece, and the writer writes
 * until the queue is empty before close lets anyone write directly. A
 * process killed (SIGKILL, a crash) loses the lines of its last BATCH_MS.
 * Close writes what is queued, waiting CLOSE_WAIT_S at most
 * (rpcd exits after it, so a writer stuck on a pipe nobody reads must not
 * keep the process).
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The instance name is cut to this in lines, so that the fields after it
 * always fit (a name may be as long as a command line). */
#define NAME_BYTES 256
#define QUEUE_BYTES (4 * 1024 * 1024)
#define BATCH_MS 5
#define KICK_BYTES (64 * 1024)
#define CLOSE_WAIT_S 2 /* how long close waits for the writer's last write */

static FILE *out;
static const char *instance = "rpcd";
static size_t instance_len = 4;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake; /* the writer's: a first line, a batch, closing; CLOCK_MONOTONIC */
static char *queue;         /* QUEUE_BYTES; protected by lock */
static size_t queued;       /* protected by lock */
static char *spare;         /* the writer's other buffer */
static bool closing;        /* protected by lock */
static pthread_t writer;
static bool writer_running; /* protected by lock */
static atomic_uint_fast64_t dropped;

/* Write n bytes whole, with as few write(2)s as the file takes: one
 * normally, so that a reader of the file sees whole batches of lines. */
/* Write n bytes whole, with as few write(2)s as the file takes: one
 * normally, so that a reader of the file sees whole batches of lines.
 * What a full disk or a closed terminal refuses is counted as dropped. */
static void write_all(const char *p, size_t n)
{
    int fd = fileno(out);
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        p += k;
        n -= (size_t)k;
    }
    uint64_t lost = 0;
    for (size_t i = 0; i < n; i++)
        lost += p[i] == '\n';
    atomic_fetch_add_explicit(&dropped, lost, memory_order_relaxed);
}

static void *write_lines(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (queued == 0 && !closing)
            pthread_cond_wait(&wake, &lock);
        if (queued == 0)
            break;                             /* closing, and every line queued is written */
        if (queued < KICK_BYTES && !closing) { /* let a batch gather */
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_nsec += BATCH_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&wake, &lock, &until);
        }
        char *batch = queue;
        size_t n = queued;
        queue = spare;
        queued = 0;
        pthread_mutex_unlock(&lock);
        write_all(batch, n);
        spare = batch;
        pthread_mutex_lock(&lock);
    }
    pthread_mutex_unlock(&lock);
    return NULL;
}

static void start_writer(void)
{
    queue = malloc(QUEUE_BYTES);
    spare = malloc(QUEUE_BYTES);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&wake, &ca);
    pthread_condattr_destroy(&ca);
    /* The writer takes no signal: they are rpcd's main thread's. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    bool running =
        queue != NULL && spare != NULL && pthread_create(&writer, NULL, write_lines, NULL) == 0;
    pthread_mutex_lock(&lock);
    writer_running = running;
    pthread_mutex_unlock(&lock);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int rpcd_log_open(const char *path, const char *name)
{
    instance = name != NULL ? name : "rpcd";
    instance_len = rpcd_json_cut(instance, strlen(instance), NAME_BYTES);
    if (path == NULL || strcmp(path, "-") == 0)
        out = stderr;
    else if ((out = fopen(path, "a")) == NULL)
        return -1;
    start_writer(); /* without it (no memory, no thread), lines are written inline */
    return 0;
}

void rpcd_log_close(void)
{
    if (writer_running) { /* only open and close write it: no lock to read it here */
        pthread_mutex_lock(&lock);
        closing = true;
        pthread_cond_signal(&wake);
        pthread_mutex_unlock(&lock);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += CLOSE_WAIT_S;
        if (pthread_timedjoin_np(writer, NULL, &until) != 0)
            return; /* a write that never returns (a pipe nobody reads): leave it to the exit */
    }
    pthread_mutex_lock(&lock);
    writer_running = false;
    closing = false;
    FILE *f = out;
    out = NULL; /* a late line is dropped from here on, not written to a closed file */
    free(queue);
    free(spare);
    queue = spare = NULL;
    pthread_mutex_unlock(&lock);
    if (f != NULL && f != stderr)
        fclose(f);
}

uint64_t rpcd_log_dropped(void)
{
    return atomic_load_explicit(&dropped, memory_order_relaxed);
}

void rpcd_log_begin(struct rpcd_log_line *l, const char *event)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* One byte of the buffer is kept for the line's '\n'. */
    rpcd_json_init(&l->json, l->buf, sizeof l->buf - 1);
    rpcd_json_object(&l->json, NULL);
    rpcd_json_int(&l->json, "ts", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    rpcd_json_strn(&l->json, "name", instance, instance_len);
    rpcd_json_str(&l->json, "event", event);
}

void rpcd_log_str(struct rpcd_log_line *l, const char *key, const char *value)
{
    rpcd_json_str(&l->json, key, value);
}

void rpcd_log_int(struct rpcd_log_line *l, const char *key, long long value)
{
    rpcd_json_int(&l->json, key, value);
}

struct rpcd_json *rpcd_log_json(struct rpcd_log_line *l)
{
    return &l->json;
}

void rpcd_log_end(struct rpcd_log_line *l)
{
    size_t len = rpcd_json_finish(&l->json);
    l->buf[len++] = '\n';
    pthread_mutex_lock(&lock);
    if (out == NULL || !writer_running) { /* closed; or no writer: written here, whole */
        if (out != NULL)
            write_all(l->buf, len);
        pthread_mutex_unlock(&lock);
        return;
    }
    bool fits = queued + len <= QUEUE_BYTES;
    if (fits) {
        memcpy(queue + queued, l->buf, len);
        /* The writer waits for a first line, then for a batch. */
        bool kick = queued == 0 || (queued < KICK_BYTES && queued + len >= KICK_BYTES);
        queued += len;
        if (kick)
            pthread_cond_signal(&wake);
    }
    pthread_mutex_unlock(&lock);
    if (!fits)
        atomic_fetch_add_explicit(&dropped, 1, memory_order_relaxed);
}

void rpcd_log_message(const char *event, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    struct rpcd_log_line l;
    rpcd_log_begin(&l, event);
    rpcd_log_str(&l, "message", text);
    rpcd_log_end(&l);
}
