/*
 * random.c - unguessable bytes for cancel tokens and trace ids, without a
 * system call per call.
 *
 * libsodium's randombytes_buf asks the kernel (getrandom) every time: one
 * system call per RPC, a few percent of a call's CPU. Instead each thread
 * keys a ChaCha20 stream once from randombytes_buf and draws from it.
 * Every refill makes the next key first and keeps it out of what it hands
 * out (fast key erasure), so a thread's state, read later, does not reveal
 * bytes it already gave. A forked child re-keys (pthread_atfork): two
 * processes never hand out the same tokens.
 */
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include <sodium.h>

#include "wire_impl.h"

#define REFILL_BYTES 512

struct stream {
    bool keyed;
    size_t left;      /* unused bytes at the end of out */
    uint64_t refills; /* the nonce: a key is used for one refill only anyway */
    unsigned char key[crypto_stream_chacha20_KEYBYTES];
    unsigned char out[REFILL_BYTES];
};

static _Thread_local struct stream stream;

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static bool sodium_ready; /* written once under sodium_once */

/* In a forked child only the forking thread runs: its stream was the
 * parent's, so it starts over. */
static void forget_after_fork(void)
{
    sodium_memzero(&stream, sizeof stream);
}

static void sodium_start(void)
{
    /* Fails only without a source of randomness. */
    sodium_ready = sodium_init() >= 0 && pthread_atfork(NULL, NULL, forget_after_fork) == 0;
}

static void refill(struct stream *s)
{
    unsigned char block[crypto_stream_chacha20_KEYBYTES + REFILL_BYTES];
    unsigned char nonce[crypto_stream_chacha20_NONCEBYTES];
    memcpy(nonce, &s->refills, sizeof nonce < sizeof s->refills ? sizeof nonce : sizeof s->refills);
    s->refills++;
    crypto_stream_chacha20(block, sizeof block, nonce, s->key);
    memcpy(s->key, block, sizeof s->key);
    memcpy(s->out, block + sizeof s->key, sizeof s->out);
    sodium_memzero(block, sizeof block);
    s->left = sizeof s->out;
}

bool dctx__random(void *buf, size_t n)
{
    pthread_once(&sodium_once, sodium_start);
    if (!sodium_ready)
        return false;
    struct stream *s = &stream;
    if (!s->keyed) {
        randombytes_buf(s->key, sizeof s->key);
        s->keyed = true;
        s->left = 0;
    }
    unsigned char *p = buf;
    while (n > 0) {
        if (s->left == 0)
            refill(s);
        size_t take = n < s->left ? n : s->left;
        unsigned char *from = s->out + sizeof s->out - s->left;
        memcpy(p, from, take);
        sodium_memzero(from, take); /* given out: not kept */
        s->left -= take;
        p += take;
        n -= take;
    }
    return true;
}
