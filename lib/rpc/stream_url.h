/*
 * stream_url.h - the URL nng's stream API is given for a dctx URL. nng
 * 1.5.2 has no inproc stream, so inproc://NAME is served as a Linux
 * abstract socket whose name holds the process id and a random number of
 * the process's: it needs no file, is gone with the process, and another
 * process can reach it only by reading the name from /proc/net/unix
 * (abstract sockets have no permissions). Every other URL is passed as it
 * is. Never installed.
 */
#ifndef DCTX_RPC_STREAM_URL_H
#define DCTX_RPC_STREAM_URL_H

#include <stddef.h>

/* The longest URL handed to nng (its NNG_MAXADDRLEN, with the scheme). */
#define DCTX__STREAM_URL_BYTES 160

/* dctx__stream_url writes into out (DCTX__STREAM_URL_BYTES bytes) the URL
 * to give nng for url: "abstract://dctx.PID.NONCE.NAME" for inproc://NAME, else
 * url. Returns 0, or DCTX_INVALID_ARGUMENT (an empty inproc name, or a
 * URL that does not fit). */
int dctx__stream_url(const char *url, char *out);

#endif /* DCTX_RPC_STREAM_URL_H */
