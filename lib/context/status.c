/*
 * status.c - names and texts of the status codes (gRPC's code space).
 */
#include <string.h>

#include <dctx/dctx.h>

struct code_info {
    const char *name; /* gRPC's spelling */
    const char *text; /* for people; Go's wording for the two context errors */
};

static const struct code_info codes[DCTX_CODE_MAX + 1] = {
    [DCTX_OK] = {"OK", "ok"},
    [DCTX_CANCELED] = {"CANCELLED", "context canceled"},
    [DCTX_UNKNOWN] = {"UNKNOWN", "unknown error"},
    [DCTX_INVALID_ARGUMENT] = {"INVALID_ARGUMENT", "invalid argument"},
    [DCTX_DEADLINE_EXCEEDED] = {"DEADLINE_EXCEEDED", "context deadline exceeded"},
    [DCTX_NOT_FOUND] = {"NOT_FOUND", "not found"},
    [DCTX_ALREADY_EXISTS] = {"ALREADY_EXISTS", "already exists"},
    [DCTX_PERMISSION_DENIED] = {"PERMISSION_DENIED", "permission denied"},
    [DCTX_RESOURCE_EXHAUSTED] = {"RESOURCE_EXHAUSTED", "resource exhausted"},
    [DCTX_FAILED_PRECONDITION] = {"FAILED_PRECONDITION", "failed precondition"},
    [DCTX_ABORTED] = {"ABORTED", "aborted"},
    [DCTX_OUT_OF_RANGE] = {"OUT_OF_RANGE", "out of range"},
    [DCTX_UNIMPLEMENTED] = {"UNIMPLEMENTED", "unimplemented"},
    [DCTX_INTERNAL] = {"INTERNAL", "internal error"},
    [DCTX_UNAVAILABLE] = {"UNAVAILABLE", "unavailable"},
    [DCTX_DATA_LOSS] = {"DATA_LOSS", "data loss"},
    [DCTX_UNAUTHENTICATED] = {"UNAUTHENTICATED", "unauthenticated"},
};

static bool known(int code)
{
    return code >= 0 && code <= DCTX_CODE_MAX;
}

const char *dctx_strerror(int code)
{
    return known(code) ? codes[code].text : "unknown status code";
}

const char *dctx_code_name(int code)
{
    return known(code) ? codes[code].name : "UNKNOWN";
}

int dctx_code_from_name(const char *name)
{
    if (name == NULL)
        return -1;
    for (int code = 0; code <= DCTX_CODE_MAX; code++)
        if (strcmp(codes[code].name, name) == 0)
            return code;
    return -1;
}
