/*
 * duration.c - parsing "250ms"-style durations (see duration.h).
 */
#include "duration.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *unit;
    double ns;
} units[] = {{"ns", 1}, {"us", 1e3}, {"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};

bool parse_duration(const char *text, int64_t *ns)
{
    if (text == NULL || *text == '\0' || *text == '-' || *text == '+')
        return false;
    char *end = NULL;
    double value = strtod(text, &end);
    if (end == text || !isfinite(value))
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
