/*
 * tls_flags.c - the TLS flags of rpcd's commands (tls_flags.h).
 */
#include "tls_flags.h"

#include <string.h>

int rpcd_tls_flag(const char *flag, const char *val, bool server, struct rpcd_tls *t)
{
    if (strcmp(flag, "--tls-cert") == 0)
        t->cert = val;
    else if (strcmp(flag, "--tls-ca") == 0)
        t->ca = val;
    else if (strcmp(flag, "--tls-server-name") == 0)
        t->server_name = val;
    else if (server && strcmp(flag, "--tls-client-ca") == 0)
        t->client_ca = val;
    else
        return 0;
    return 1;
}

void rpcd_tls_channel(const struct rpcd_tls *t, dctx_rpc_channel_options *o)
{
    o->tls_ca_file = t->ca;
    o->tls_server_name = t->server_name;
    o->tls_cert_key_file = t->cert;
}

void rpcd_tls_usage(FILE *out, bool server)
{
    if (server)
        fputs("  tls+tcp:// (the next hops' flags are those of rpcd call):\n"
              "  --tls-cert FILE        this server's certificate and key (PEM, one file); also\n"
              "                         presented to next hops that ask for one\n"
              "  --tls-client-ca FILE   mutual TLS: callers must present a certificate of this CA\n"
              "  --tls-ca FILE          the CA that next hops' certificates must be signed by\n"
              "  --tls-server-name NAME the name next hops' certificates must bear\n",
              out);
    else
        fputs("  tls+tcp://:\n"
              "  --tls-ca FILE          the CA the server's certificate must be signed by\n"
              "                         (default: the system's)\n"
              "  --tls-server-name NAME the name the server's certificate must bear\n"
              "  --tls-cert FILE        a certificate and key (PEM, one file) to present to a\n"
              "                         server that asks for one (mutual TLS)\n",
              out);
}
