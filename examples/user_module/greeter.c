/*
 * greeter - a service of your own, hosted by rpcd: a shared object that
 * defines dctx_rpcd_module_init, loaded with `rpcd serve --module greeter.so`.
 *
 * /acme.Greeter/Hello answers "hello, <data>", and names the tenant when
 * the call carries one (--value tenant=acme). It honours its context:
 * finding the greeting takes 100 ms (a stand-in for a slow backend), and a
 * call whose deadline or cancel comes first gets the context's cause
 * instead of a greeting.
 */
#include <stdio.h>
#include <stdlib.h>

#include <dctx/rpcd_module.h>

#define LOOKUP_NS (100 * 1000000LL)

/* Values received under "tenant" are filed under this key once it is
 * registered (see dctx_rpcd_module_init). */
static const dctx_key tenant_key = {"tenant", DCTX_KEY_PROPAGATE};

static int hello(void *arg, dctx *ctx, const void *req, size_t len, dctx_rpc_reply *reply)
{
    (void)arg;
    /* The lookup: dctx_wait returns true if the context ends first. */
    if (dctx_wait(ctx, LOOKUP_NS)) {
        const char *why = NULL;
        int cause = dctx_cause(ctx, &why); /* DEADLINE_EXCEEDED, or the caller's cancel cause */
        dctx_rpc_reply_set_message(reply, "no greeting: %s%s%s", dctx_code_name(cause),
                                   why ? ": " : "", why ? why : "");
        return cause;
    }
    size_t tenant_len = 0;
    const char *tenant = dctx_value(ctx, &tenant_key, &tenant_len);
    size_t cap = len + tenant_len + 32;
    char *text = malloc(cap);
    if (text == NULL)
        return DCTX_RESOURCE_EXHAUSTED;
    int n = tenant != NULL ? snprintf(text, cap, "hello, %.*s (tenant %.*s)", (int)len,
                                      (const char *)req, (int)tenant_len, tenant)
                           : snprintf(text, cap, "hello, %.*s", (int)len, (const char *)req);
    int rc = n < 0 ? DCTX_INTERNAL : dctx_rpc_reply_set_payload(reply, text, (size_t)n);
    free(text);
    return rc;
}

int dctx_rpcd_module_init(const dctx_rpcd_module *m)
{
    if (m->abi != DCTX_RPCD_MODULE_ABI) /* built against another rpcd */
        return DCTX_FAILED_PRECONDITION;
    int rc = dctx_wire_register_key(&tenant_key);
    if (rc == 0)
        rc = dctx_rpc_server_register(m->server, "/acme.Greeter/Hello", hello, NULL);
    return rc;
}
