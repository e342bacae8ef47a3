/*
 * stream_url.c - dctx URLs as nng stream URLs (stream_url.h).
 */
#include "stream_url.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <dctx/dctx.h>

#include "wire_impl.h" /* dctx__random */

#define INPROC "inproc://"

/* A random number per process: another process that guesses the pid
 * still cannot name an inproc socket, and two processes with the same pid
 * (in different pid namespaces, one network namespace) do not clash. */
static uint64_t nonce;
static pthread_once_t nonce_once = PTHREAD_ONCE_INIT;

static void make_nonce(void)
{
    if (!dctx__random(&nonce, sizeof nonce))
        nonce = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull; /* no libsodium: unique, not secret */
}

int dctx__stream_url(const char *url, char *out)
{
    int n;
    if (strncmp(url, INPROC, strlen(INPROC)) == 0) {
        const char *name = url + strlen(INPROC);
        if (name[0] == '\0')
            return DCTX_INVALID_ARGUMENT;
        pthread_once(&nonce_once, make_nonce);
        n = snprintf(out, DCTX__STREAM_URL_BYTES, "abstract://dctx.%ld.%016llx.%s", (long)getpid(),
                     (unsigned long long)nonce, name);
    } else {
        n = snprintf(out, DCTX__STREAM_URL_BYTES, "%s", url);
    }
    return n > 0 && n < DCTX__STREAM_URL_BYTES ? 0 : DCTX_INVALID_ARGUMENT;
}
