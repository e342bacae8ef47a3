/*
 * rpcd_module.h - services written by users, loaded into rpcd with
 * `rpcd serve --module PATH.so`.
 *
 * A module is a shared object that defines dctx_rpcd_module_init. rpcd
 * calls it once, after its own methods are registered and before it
 * listens, with the server to register methods on (dctx_rpc_server_register
 * or dctx_rpc_server_register_service) and the instance's name and next
 * hops. A module links against libdctx; rpcd already has it loaded.
 *
 *     #include <dctx/rpcd_module.h>
 *
 *     int dctx_rpcd_module_init(const dctx_rpcd_module *m)
 *     {
 *         return dctx_rpc_server_register(m->server, "/acme.Greeter/Hello", hello, NULL);
 *     }
 *
 * Build it with: cc -shared -fPIC greeter.c -o greeter.so $(pkg-config --cflags --libs dctx)
 */
#ifndef DCTX_RPCD_MODULE_H
#define DCTX_RPCD_MODULE_H

#include <dctx/rpc.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DCTX_RPCD_MODULE_ABI 1

typedef struct dctx_rpcd_module {
    int abi;                       /* DCTX_RPCD_MODULE_ABI of the rpcd loading it */
    dctx_rpc_server *server;       /* register methods here; not started yet */
    const char *name;              /* the instance's --name */
    dctx_rpc_channel *const *next; /* channels to the --next hops, for calls onward */
    const char *const *next_urls;
    int n_next;
} dctx_rpcd_module;

/* Defined by the module. Return 0, or a status code: rpcd then reports it
 * and exits. The struct is valid during the call; server and the channels
 * live as long as rpcd serves. */
int dctx_rpcd_module_init(const dctx_rpcd_module *m);

#ifdef __cplusplus
}
#endif

#endif /* DCTX_RPCD_MODULE_H */
