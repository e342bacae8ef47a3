/*
 * grpc_edge_off.c - grpc_edge.h in an rpcd built without gRPC
 * (-DDCTX_GRPC=OFF): serve refuses the gRPC flags before it calls these.
 */
#include "grpc_edge.h"

const bool rpcd_grpc_built = false;

bool rpcd_grpc_forward_key_valid(const char *key)
{
    (void)key;
    return false;
}

int rpcd_grpc_gateway_start(struct rpcd *r, const struct rpcd_grpc_args *a, bool log_calls)
{
    (void)r, (void)a, (void)log_calls;
    return DCTX_UNIMPLEMENTED;
}

void rpcd_grpc_gateway_drain(void)
{
}

void rpcd_grpc_gateway_stop(void)
{
}

void rpcd_grpc_write_stats(struct rpcd_json *j)
{
    (void)j;
}

int rpcd_grpc_next_open(struct rpcd *r, const char *url, const struct rpcd_tls *tls)
{
    (void)r, (void)url, (void)tls;
    return DCTX_UNIMPLEMENTED;
}

void rpcd_grpc_next_close(struct rpcd *r)
{
    (void)r;
}

int rpcd_grpc_count_relay(struct rpcd *r, dctx *ctx, dctx_rpc_stream *st, const void *req,
                          size_t len, dctx_rpc_reply *reply)
{
    (void)r, (void)ctx, (void)st, (void)req, (void)len;
    dctx_rpc_reply_set_message(reply, "rpcd was built without gRPC");
    return DCTX_UNIMPLEMENTED;
}

void rpcd_grpc_chain_start(struct rpcd *r, int i, dctx *ctx, const void *req, size_t len,
                           struct rpcd_grpc_hop *h)
{
    (void)r, (void)i, (void)ctx, (void)req, (void)len;
    dctx_rpc_result_set(&h->res, DCTX_UNIMPLEMENTED, "rpcd was built without gRPC", NULL, 0);
}

int rpcd_grpc_chain_wait(struct rpcd_grpc_hop *h, dctx_rpc_result *res)
{
    *res = h->res;
    return res->code;
}
