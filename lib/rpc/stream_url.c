/*
 * stream_url.c - dctx URLs as nng stream URLs (stream_url.h).
 */
#include "stream_url.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <dctx/dctx.h>

#define INPROC "inproc://"

int dctx__stream_url(const char *url, char *out)
{
    int n;
    if (strncmp(url, INPROC, strlen(INPROC)) == 0) {
        const char *name = url + strlen(INPROC);
        if (name[0] == '\0')
            return DCTX_INVALID_ARGUMENT;
        n = snprintf(out, DCTX__STREAM_URL_BYTES, "abstract://dctx.%ld.%s", (long)getpid(), name);
    } else {
        n = snprintf(out, DCTX__STREAM_URL_BYTES, "%s", url);
    }
    return n > 0 && n < DCTX__STREAM_URL_BYTES ? 0 : DCTX_INVALID_ARGUMENT;
}
