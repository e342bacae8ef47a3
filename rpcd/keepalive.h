/*
 * keepalive.h - the --keepalive and --keepalive-timeout flags that `rpcd
 * serve`, `call` and `bench` share: how often a silent connection is
 * pinged (0 turns it off) and how long the ping waits for an answer.
 */
#ifndef RPCD_KEEPALIVE_H
#define RPCD_KEEPALIVE_H

#include <stdint.h>
#include <stdio.h>

struct rpcd_keepalive {
    int64_t interval_ns, timeout_ns;
};

/* The library's defaults. */
void rpcd_keepalive_init(struct rpcd_keepalive *k);

/* If flag is one of the two, parse val into k and return 1; a value that
 * is not a duration (or 0 for --keepalive): the usage error's exit code
 * (RPCD_EXIT_USAGE, reported for command); another flag: 0. */
int rpcd_keepalive_flag(const char *command, const char *flag, const char *val,
                        struct rpcd_keepalive *k);

/* The two flags' lines for a --help, with their defaults. */
void rpcd_keepalive_usage(FILE *out);

#endif
