/*
 * duration.c - "250ms"-style durations, parsed and written (see duration.h).
 */
#include "duration.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *unit;
    double ns;
} units[] = {{"ns", 1}, {"us", 1e3}, {"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};

bool rpcd_parse_duration(const char *text, int64_t *ns)
{
    if (text == NULL)
        return false;
    /* Digits, then a fraction if any: strtod alone would also take leading
     * space, a sign, hex, an exponent, inf and nan. */
    size_t whole = strspn(text, "0123456789"), len = whole, fraction = 0;
    if (text[len] == '.') {
        fraction = strspn(text + len + 1, "0123456789");
        len += 1 + fraction;
    }
    if (whole + fraction == 0)
        return false;
    char *end = NULL;
    double value = strtod(text, &end);
    if (end != text + len || !isfinite(value))
        return false;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) == 0) {
            double total = value * units[i].ns;
            if (total >= 9.2e18)
                return false;
            *ns = (int64_t)total;
            return true;
        }
    }
    return false;
}

char *rpcd_format_duration(int64_t ns, char *out, size_t n)
{
    size_t unit = 0; /* ns; the units are in increasing order */
    for (size_t i = 1; ns != 0 && i < sizeof units / sizeof units[0]; i++)
        if (ns % (int64_t)units[i].ns == 0)
            unit = i;
    snprintf(out, n, "%lld%s", (long long)(ns / (int64_t)units[unit].ns), units[unit].unit);
    return out;
}
