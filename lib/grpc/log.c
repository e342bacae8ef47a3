/*
 * log.c - where gRPC's C core writes its own log lines (grpc.h,
 * dctx_grpc_set_log). The core has one log function for the process;
 * dctx's stays installed once set, and reads the application's function
 * and argument as one pair.
 */
#include <dctx/grpc.h>
#include <grpc/support/log.h>
#include <pthread.h>
#include <stdio.h>

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static dctx_grpc_log_fn log_fn;
static void *log_arg;

static void on_core_log(gpr_log_func_args *a)
{
    const char *severity = gpr_log_severity_string(a->severity);
    const char *file = a->file != NULL ? a->file : "";
    const char *message = a->message != NULL ? a->message : "";
    /* Held while fn runs: once dctx_grpc_set_log returns, the function
     * it replaced is never called again. */
    pthread_mutex_lock(&log_mu);
    if (log_fn != NULL)
        log_fn(log_arg, severity, file, a->line, message);
    else
        fprintf(stderr, "%s %s:%d] %s\n", severity, file, a->line, message);
    pthread_mutex_unlock(&log_mu);
}

void dctx_grpc_set_log(dctx_grpc_log_fn fn, void *arg)
{
    pthread_mutex_lock(&log_mu);
    log_fn = fn;
    log_arg = arg;
    pthread_mutex_unlock(&log_mu);
    gpr_set_log_function(on_core_log);
}
