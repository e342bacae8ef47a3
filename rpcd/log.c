/*
 * log.c - JSON lines (see log.h). Each line is built in a buffer and
 * written with one fwrite under a lock, then flushed, so lines from
 * concurrent handlers never interleave and a killed process loses none.
 */
#include "log.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

static FILE *out;
static const char *instance = "rpcd";
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

int log_open(const char *path, const char *name)
{
    instance = name != NULL ? name : "rpcd";
    if (path == NULL || strcmp(path, "-") == 0) {
        out = stderr;
        return 0;
    }
    out = fopen(path, "a");
    return out != NULL ? 0 : -1;
}

void log_close(void)
{
    if (out != NULL && out != stderr)
        fclose(out);
    out = NULL;
}

/* Lines longer than the buffer are cut; room for "}\n" is always kept. */
static void append(struct log_line *l, const char *s, size_t n)
{
    size_t room = sizeof l->buf - 2 - l->len;
    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void append_escaped(struct log_line *l, const char *s)
{
    append(l, "\"", 1);
    for (; s != NULL && *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            append(l, esc, 2);
        } else if (c < 0x20) {
            int n = snprintf(esc, sizeof esc, "\\u%04x", c);
            append(l, esc, (size_t)n);
        } else {
            append(l, (const char *)&c, 1);
        }
    }
    append(l, "\"", 1);
}

static void key(struct log_line *l, const char *k)
{
    append(l, ",", 1);
    append_escaped(l, k);
    append(l, ":", 1);
}

void log_begin(struct log_line *l, const char *event)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    l->len = 0;
    char head[64];
    int n = snprintf(head, sizeof head, "{\"ts\":%lld", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    append(l, head, (size_t)n);
    log_str(l, "name", instance);
    log_str(l, "event", event);
}

void log_str(struct log_line *l, const char *k, const char *value)
{
    key(l, k);
    append_escaped(l, value != NULL ? value : "");
}

void log_int(struct log_line *l, const char *k, long long value)
{
    char num[32];
    int n = snprintf(num, sizeof num, "%lld", value);
    key(l, k);
    append(l, num, (size_t)n);
}

void log_end(struct log_line *l)
{
    l->buf[l->len++] = '}';
    l->buf[l->len++] = '\n';
    if (out == NULL)
        return;
    pthread_mutex_lock(&out_lock);
    fwrite(l->buf, 1, l->len, out);
    fflush(out);
    pthread_mutex_unlock(&out_lock);
}

void log_message(const char *event, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    struct log_line l;
    log_begin(&l, event);
    log_str(&l, "message", text);
    log_end(&l);
}
