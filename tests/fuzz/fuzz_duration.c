/*
 * fuzz_duration.c - rpcd's duration parser (rpcd/duration.c), on any text
 * a command line may hold.
 *
 * Invariants: what parses is a duration of 0 or more nanoseconds, and the
 * text rpcd_format_duration writes for it parses back to the same.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[128];
    if (size >= sizeof text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0'; /* an argument ends at its first NUL */
    int64_t ns = -1;
    if (!rpcd_parse_duration(text, &ns))
        return 0;
    CHECK(ns >= 0);
    char out[64];
    int64_t back = -1;
    CHECK(rpcd_parse_duration(rpcd_format_duration(ns, out, sizeof out), &back) && back == ns);
    return 0;
}
