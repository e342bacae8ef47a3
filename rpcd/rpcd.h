/*
 * rpcd.h - what the parts of rpcd share: the subcommands, and the state of
 * a serving instance that the demo services use.
 *
 * rpcd exports its symbols to the modules it loads (--module), so every
 * function or variable of rpcd that is not static is named rpcd_*: a
 * module's own names never collide with them (tests/rpcd checks it).
 */
#ifndef RPCD_H
#define RPCD_H

#include <dctx/rpc.h>

#define RPCD_VERSION DCTX_VERSION_STRING
#define RPCD_MAX_NEXT 16
#define RPCD_MAX_NEXT_URLS 16 /* in one --next */
#define RPCD_MAX_LISTEN 16
#define RPCD_MAX_MODULES 16

struct dctx_grpc_channel;

/* A serving instance. */
struct rpcd {
    const char *name;
    dctx_rpc_server *server;
    dctx_rpc_channel *next[RPCD_MAX_NEXT];
    const char *next_url[RPCD_MAX_NEXT];
    int n_next;
    /* Next hops that speak gRPC (--next grpc://HOST:PORT): Chain calls
     * them after the dctx ones. */
    struct dctx_grpc_channel *grpc_next[RPCD_MAX_NEXT];
    const char *grpc_next_url[RPCD_MAX_NEXT];
    int n_grpc_next;
    int64_t started_ns; /* dctx_now() at start */
};

/* Subcommands: each returns the process exit code. */
int rpcd_serve(int argc, char **argv);
int rpcd_call(int argc, char **argv);
int rpcd_bench(int argc, char **argv);
int rpcd_trace(int argc, char **argv);
int rpcd_keygen(int argc, char **argv);

/* demo_services.c: register the demo and admin methods on r->server;
 * demo_streams.c: the demo stream methods (Count, Sum, EchoStream). */
int rpcd_demo_services_register(struct rpcd *r);
int rpcd_demo_streams_register(struct rpcd *r);

/* call_stream.c: `rpcd call --stream` on ch with ctx (cancelable is the
 * context under it that --cancel-after cancels; -1: never; a cancel_sent
 * line goes to the log, if open, when it does). Prints the messages as
 * they come, then the status name and message; returns the status code,
 * its message in message. A stream that could not be opened prints
 * nothing and leaves *opened false (the caller says why). */
int rpcd_call_stream(dctx_rpc_channel *ch, dctx *ctx, dctx *cancelable, const char *method,
                     const char *data, int64_t cancel_after_ns, char *message, size_t message_len,
                     bool *opened);

/* The counters of a serving instance now: its server's, each next hop's,
 * and the cancels pushed to all of them (Stats and the metrics). */
struct rpcd_stats {
    dctx_rpc_server_stats server;
    dctx_rpc_channel_stats hops[RPCD_MAX_NEXT];
    uint64_t cancels_pushed;
};
void rpcd_stats_get(const struct rpcd *r, struct rpcd_stats *out);

/* rpcd_usage_error reports a usage error of `rpcd COMMAND` on stderr (the
 * message, then where to find the usage) and returns RPCD_EXIT_USAGE. */
int rpcd_usage_error(const char *command, const char *fmt, ...) DCTX_PRINTF(2, 3);

/* Exit codes for usage errors, apart from status codes (0..16). */
#define RPCD_EXIT_USAGE 64

#endif
