/*
 * keepalive.c - the keepalive flags of rpcd's commands (keepalive.h).
 */
#include "keepalive.h"

#include <string.h>

#include <dctx/rpc.h>

#include "duration.h"
#include "rpcd.h"

void rpcd_keepalive_init(struct rpcd_keepalive *k)
{
    k->interval_ns = DCTX_RPC_DEFAULT_KEEPALIVE_NS;
    k->timeout_ns = DCTX_RPC_DEFAULT_KEEPALIVE_TIMEOUT_NS;
}

/* A duration, or "0". */
static bool parse(const char *val, int64_t *ns)
{
    if (strcmp(val, "0") == 0) {
        *ns = 0;
        return true;
    }
    return rpcd_parse_duration(val, ns);
}

int rpcd_keepalive_flag(const char *command, const char *flag, const char *val,
                        struct rpcd_keepalive *k)
{
    if (strcmp(flag, "--keepalive") == 0) {
        if (!parse(val, &k->interval_ns))
            return rpcd_usage_error(command,
                                    "--keepalive takes a duration (10s, 500ms) or 0 (off), "
                                    "not \"%s\"",
                                    val);
        return 1;
    }
    if (strcmp(flag, "--keepalive-timeout") == 0) {
        if (!parse(val, &k->timeout_ns) || k->timeout_ns == 0)
            return rpcd_usage_error(
                command, "--keepalive-timeout takes a duration (10s, 500ms), not \"%s\"", val);
        return 1;
    }
    return 0;
}

void rpcd_keepalive_usage(FILE *out)
{
    char interval[32], timeout[32];
    fprintf(out,
            "  --keepalive D          ping a connection silent this long; 0: never (default %s)\n"
            "  --keepalive-timeout D  close it if the ping gets no answer in this (default %s)\n",
            rpcd_format_duration(DCTX_RPC_DEFAULT_KEEPALIVE_NS, interval, sizeof interval),
            rpcd_format_duration(DCTX_RPC_DEFAULT_KEEPALIVE_TIMEOUT_NS, timeout, sizeof timeout));
}
