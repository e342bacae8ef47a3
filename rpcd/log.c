/*
 * log.c - JSON lines (see log.h). Each line is built in a buffer and
 * written with one fwrite under a lock, then flushed, so lines from
 * concurrent handlers never interleave and a killed process loses none.
 */
#include "log.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

/* The instance name is cut to this in lines, so that the fields after it
 * always fit (a name may be as long as a command line). */
#define NAME_BYTES 256

static FILE *out;
static const char *instance = "rpcd";
static size_t instance_len = 4;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

int rpcd_log_open(const char *path, const char *name)
{
    instance = name != NULL ? name : "rpcd";
    instance_len = rpcd_json_cut(instance, strlen(instance), NAME_BYTES);
    if (path == NULL || strcmp(path, "-") == 0) {
        out = stderr;
        return 0;
    }
    out = fopen(path, "a");
    return out != NULL ? 0 : -1;
}

void rpcd_log_close(void)
{
    if (out != NULL && out != stderr)
        fclose(out);
    out = NULL;
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
    if (out == NULL)
        return;
    pthread_mutex_lock(&out_lock);
    fwrite(l->buf, 1, len, out);
    fflush(out);
    pthread_mutex_unlock(&out_lock);
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
