/*
 * fuzz_check.h - what the harnesses share: CHECK(c) aborts when an
 * invariant fails, in every build (assert may be compiled out), so
 * libFuzzer reports it as a crash and keeps the input.
 */
#ifndef DCTX_FUZZ_CHECK_H
#define DCTX_FUZZ_CHECK_H

#include <stdint.h>
#include <stdlib.h>

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c))                                                                                  \
            abort();                                                                               \
    } while (0)

/* libFuzzer's entry point, for -Wmissing-prototypes. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
