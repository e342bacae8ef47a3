/*
 * edge.c - the deadline and metadata rules both directions of the gRPC
 * edge follow (edge.h).
 */
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>

#include "edge.h"

int64_t dctx__grpc_budget_ns(gpr_timespec deadline)
{
    /* The infinite future is tested before any arithmetic: it is INT64_MAX
     * seconds and overflows a conversion. */
    if (gpr_time_cmp(deadline, gpr_inf_future(deadline.clock_type)) == 0)
        return -1;
    gpr_timespec left = gpr_time_sub(gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC),
                                     gpr_now(GPR_CLOCK_MONOTONIC));
    if (left.tv_sec < 0 || (left.tv_sec == 0 && left.tv_nsec <= 0))
        return 0;
    if (left.tv_sec > INT64_MAX / 1000000000 - 1)
        return -1;
    return (int64_t)left.tv_sec * 1000000000 + left.tv_nsec;
}

int64_t dctx__grpc_timeout_unit_ns(int64_t budget_ns)
{
    int64_t unit = 1000000; /* 1 ms */
    for (int64_t top = 1000LL * 1000000; budget_ns >= top && top < INT64_MAX / 10; top *= 10)
        unit *= 10;
    return unit;
}

gpr_timespec dctx__grpc_deadline(int64_t budget_ns)
{
    if (budget_ns < 0)
        return gpr_inf_future(GPR_CLOCK_MONOTONIC);
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_nanos(budget_ns, GPR_TIMESPAN));
}

bool dctx__grpc_key_is_bin(const char *name, size_t len)
{
    return len >= 4 && memcmp(name + len - 4, "-bin", 4) == 0;
}

bool dctx__grpc_key_sendable(const char *name, const void *value, size_t len)
{
    size_t n = strlen(name);
    if (n == 0 || name[0] == ':' || strncmp(name, "grpc-", 5) == 0)
        return false;
    if (!grpc_header_key_is_legal(grpc_slice_from_static_buffer(name, n)))
        return false;
    if (dctx__grpc_key_is_bin(name, n))
        return true;
    return len == 0 || grpc_header_nonbin_value_is_legal(grpc_slice_from_static_buffer(value, len));
}

bool dctx__grpc_read_slice(grpc_byte_buffer *bb, grpc_slice *out)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return false;
    *out = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    return true;
}

bool dctx__grpc_read_bytes(grpc_byte_buffer *bb, unsigned char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    grpc_slice s;
    if (!dctx__grpc_read_slice(bb, &s))
        return false;
    size_t n = GRPC_SLICE_LENGTH(s);
    bool fine = true;
    if (n > 0) {
        *out = malloc(n);
        if (*out != NULL) {
            memcpy(*out, GRPC_SLICE_START_PTR(s), n);
            *len = n;
        } else {
            fine = false;
        }
    }
    grpc_slice_unref(s);
    return fine;
}

void dctx__grpc_queue_destroy(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
}
