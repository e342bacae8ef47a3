/*
 * fuzz_context.c - a call's context header (lib/rpc/wire.c) from bytes a
 * peer sends: unpacked, then rebuilt into a context under a server's root,
 * as the server does, then encoded again, as the server's own calls
 * onward do.
 *
 * Invariants: a header refused leaves no context and names its cause; one
 * accepted gives a context whose deadline is within the server's maximum
 * budget, which encodes again (or is refused only for a budget under the
 * minimum) within wire.h's limits, and packs into a header that unpacks;
 * nothing stays allocated (LeakSanitizer).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dctx/dctx.h>

#include "wire_impl.h"
#include "fuzz_check.h"

#define MAX_BUDGET_NS (60 * 1000000000LL)

/* A key the server knows (its values are filed under it) beside the
 * unknown ones, which pass through. */
static const dctx_key tenant = {.name = "tenant", .flags = DCTX_KEY_PROPAGATE};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static dctx *root;
    if (root == NULL) {
        CHECK(dctx_with_cancel(dctx_background(), &root) == 0);
        dctx_wire_register_key(&tenant);
    }
    Dctx__Wire__ContextHeader *hdr = dctx__wire__context_header__unpack(NULL, size, data);
    if (hdr == NULL)
        return 0;
    int64_t now = dctx_now();
    dctx *ctx = NULL;
    char err[DCTX__WIRE_ERR_BYTES] = "";
    bool dropped = false;
    int rc = dctx__wire_decode(root, hdr, now, MAX_BUDGET_NS, 42, &ctx, err, &dropped);
    if (rc != 0) {
        CHECK(ctx == NULL && err[0] != '\0');
    } else {
        CHECK(ctx != NULL);
        int64_t deadline;
        CHECK(dctx_deadline(ctx, &deadline) && deadline <= now + MAX_BUDGET_NS);
        struct dctx__wire_out out;
        char err2[DCTX__WIRE_ERR_BYTES] = "";
        int rc2 = dctx__wire_encode(ctx, NULL, now, &out, err2);
        CHECK(rc2 == 0 || rc2 == DCTX_DEADLINE_EXCEEDED);
        if (rc2 == 0) {
            CHECK(out.hdr.n_values <= DCTX_WIRE_VALUES_MAX);
            size_t packed = dctx__wire__context_header__get_packed_size(&out.hdr);
            uint8_t *buf = malloc(packed ? packed : 1);
            CHECK(buf != NULL);
            CHECK(dctx__wire__context_header__pack(&out.hdr, buf) == packed);
            Dctx__Wire__ContextHeader *again =
                dctx__wire__context_header__unpack(NULL, packed, buf);
            CHECK(again != NULL && again->n_values == out.hdr.n_values);
            dctx__wire__context_header__free_unpacked(again, NULL);
            free(buf);
        }
        dctx_release(ctx);
    }
    dctx__wire__context_header__free_unpacked(hdr, NULL);
    return 0;
}
