/*
 * duration.h - "500us", "250ms", "3s", "1m": a number with a unit, as the
 * rpcd command line takes them, and as its --help shows defaults.
 */
#ifndef RPCD_DURATION_H
#define RPCD_DURATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Parse text into nanoseconds: decimal digits, a fraction if any ("1.5s"),
 * then a unit: ns, us, ms, s, m, h. False on anything else (space, a
 * sign, hex, an exponent) or an overflow. */
bool rpcd_parse_duration(const char *text, int64_t *ns);

/* ns as text rpcd_parse_duration reads back: a whole number of the largest
 * unit that divides it ("5s", "200ms", "1500us"); returns out. */
char *rpcd_format_duration(int64_t ns, char *out, size_t n);

#endif
