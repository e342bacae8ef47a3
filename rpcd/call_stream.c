/*
 * call_stream.c - `rpcd call URL METHOD --stream`: the first message is
 * --data (if given), the next ones the lines of standard input until its
 * end (then the client half-closes); every message that comes back is
 * printed on its own line as it arrives, then the status name and the
 * status message. Sending runs on a thread of its own, so a server that
 * streams while the client still sends is read at once.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dctx/stream.h>

#include "log.h"
#include "rpcd.h"

#define LINE_MAX_BYTES (1024 * 1024)

struct sender {
    dctx_rpc_stream *st;
    const char *data; /* NULL: no first message */
    atomic_bool stop; /* the stream ended: stop reading standard input */
    int rc;           /* the first send that failed, or 0 */
};

/* Send the line in buf[0..len) (without its newline). */
static bool send_line(struct sender *s, const char *buf, size_t len)
{
    if (s->rc == 0)
        s->rc = dctx_rpc_stream_send(s->st, buf, len);
    return s->rc == 0;
}

/* Lines of standard input, read as they come (polled, so the thread
 * stops soon after the stream ends even if input never does). */
static void send_stdin(struct sender *s)
{
    char *line = malloc(LINE_MAX_BYTES);
    size_t have = 0;
    bool eof = line == NULL;
    while (!eof && !atomic_load(&s->stop)) {
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t n = read(STDIN_FILENO, line + have, LINE_MAX_BYTES - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            eof = true;
            break;
        }
        have += (size_t)n;
        char *start = line, *nl;
        while ((nl = memchr(start, '\n', have - (size_t)(start - line))) != NULL) {
            if (!send_line(s, start, (size_t)(nl - start)))
                break;
            start = nl + 1;
        }
        have -= (size_t)(start - line);
        memmove(line, start, have);
        if (have == LINE_MAX_BYTES) { /* a line this long goes as it is */
            send_line(s, line, have);
            have = 0;
        }
        if (s->rc != 0)
            break;
    }
    if (eof && have > 0) /* a last line without its newline */
        send_line(s, line, have);
    free(line);
    if (eof && s->rc == 0)
        s->rc = dctx_rpc_stream_close_send(s->st);
}

static void *sender_main(void *arg)
{
    struct sender *s = arg;
    if (s->data == NULL || send_line(s, s->data, strlen(s->data)))
        send_stdin(s);
    return NULL;
}

struct cancel_timer {
    dctx *cancelable;
    int64_t started_ns;
    atomic_bool done; /* cancel_now returned */
};

static void cancel_now(void *arg)
{
    struct cancel_timer *c = arg;
    rpcd_log_message("cancel_sent", "after %lld us",
                     (long long)(dctx_now() - c->started_ns) / 1000);
    dctx_cancel_cause(c->cancelable, DCTX_CANCELED, "canceled by rpcd call --cancel-after");
    atomic_store(&c->done, true);
}

int rpcd_call_stream(dctx_rpc_channel *ch, dctx *ctx, dctx *cancelable, const char *method,
                     const char *data, int64_t cancel_after_ns, char *message, size_t message_len,
                     bool *opened)
{
    message[0] = '\0';
    dctx_rpc_stream *st = NULL;
    struct cancel_timer cancel = {.cancelable = cancelable, .started_ns = dctx_now()};
    atomic_init(&cancel.done, false);
    int rc = dctx_rpc_stream_open(ch, ctx, method, &st);
    *opened = rc == 0;
    if (rc != 0)
        return rc;
    /* --cancel-after: a timer whose end cancels the stream's context. */
    dctx *timer = NULL;
    dctx_after *fire = NULL;
    if (cancel_after_ns >= 0 && dctx_with_timeout(dctx_background(), cancel_after_ns, &timer) == 0)
        (void)dctx_after_func(timer, cancel_now, &cancel, &fire);
    struct sender s = {.st = st, .data = data};
    atomic_init(&s.stop, false);
    pthread_t t;
    bool sending = pthread_create(&t, NULL, sender_main, &s) == 0;
    dctx_rpc_message m;
    while (dctx_rpc_stream_recv(st, &m)) {
        fwrite(m.data, 1, m.len, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        dctx_rpc_message_free(&m);
    }
    dctx_rpc_result res;
    rc = dctx_rpc_stream_finish(st, &res);
    atomic_store(&s.stop, true);
    if (sending)
        pthread_join(t, NULL);
    snprintf(message, message_len, "%s", res.message != NULL ? res.message : "");
    printf("%s\n%s\n", dctx_code_name(rc), message);
    fflush(stdout);
    dctx_rpc_result_free(&res);
    /* A timer that fired has run cancel_now, or is running it: cancel
     * lives here, so wait for it to return (stop does not). */
    if (fire != NULL && !dctx_after_stop(fire))
        while (!atomic_load(&cancel.done))
            sched_yield();
    dctx_release(timer);
    dctx_rpc_stream_release(st);
    return rc;
}
