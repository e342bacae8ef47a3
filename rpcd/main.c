/*
 * main.c - rpcd's entry: the subcommand, --help, --version.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "rpcd.h"

static const char usage[] =
    "usage: rpcd serve --listen URL [--listen URL]... [--name NAME] [--next URL]... [--workers N]\n"
    "                  [--log FILE|-] [--max-inflight N] [--module PATH.so]...\n"
    "       rpcd call  URL METHOD [--data TEXT] [--timeout DURATION] [--value KEY=VALUE]...\n"
    "                  [--cancel-after DURATION] [--trace] [--log FILE|-]\n"
    "       rpcd bench URL METHOD [--data TEXT] [--concurrency N] "
    "[--duration DURATION | --calls N]\n"
    "                  [--timeout DURATION] [--cancel-fraction F]\n"
    "       rpcd trace LOGFILE... [--trace-id ID] [--html FILE]\n"
    "       rpcd keygen FILE\n"
    "       rpcd --help | --version\n"
    "\n"
    "rpcd hosts dctx services: calls carry their deadline, cancel and values across hops.\n"
    "`rpcd COMMAND --help` tells more about each command.\n";

int rpcd_usage_error(const char *command, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "rpcd %s: ", command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(rpcd %s --help for usage)\n", command);
    va_end(ap);
    return RPCD_EXIT_USAGE;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? RPCD_EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("rpcd %s (dctx %s)\n", RPCD_VERSION, DCTX_VERSION_STRING);
        return 0;
    }
    if (strcmp(argv[1], "serve") == 0)
        return rpcd_serve(argc - 2, argv + 2);
    if (strcmp(argv[1], "call") == 0)
        return rpcd_call(argc - 2, argv + 2);
    if (strcmp(argv[1], "bench") == 0)
        return rpcd_bench(argc - 2, argv + 2);
    if (strcmp(argv[1], "trace") == 0)
        return rpcd_trace(argc - 2, argv + 2);
    if (strcmp(argv[1], "keygen") == 0)
        return rpcd_keygen(argc - 2, argv + 2);
    fprintf(stderr, "rpcd: unknown command \"%s\"\n%s", argv[1], usage);
    return RPCD_EXIT_USAGE;
}
