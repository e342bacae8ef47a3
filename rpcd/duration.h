/*
 * duration.h - "500us", "250ms", "3s", "1m": a number with a unit, as the
 * rpcd command line takes them.
 */
#ifndef RPCD_DURATION_H
#define RPCD_DURATION_H

#include <stdbool.h>
#include <stdint.h>

/* Parse text into nanoseconds. Units: ns, us, ms, s, m, h; the number may
 * have a fraction ("1.5s"). False on anything else, a negative number or
 * an overflow. */
bool parse_duration(const char *text, int64_t *ns);

#endif
