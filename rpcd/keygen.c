/*
 * keygen.c - `rpcd keygen FILE`: a new identity, its secret key into FILE
 * (mode 0600, never over an existing file), its public key printed as the
 * one line an operator pastes into allow files and --server-key flags.
 */
#include <stdio.h>
#include <string.h>

#include <dctx/identity.h>

#include "rpcd.h"

static const char keygen_usage[] =
    "usage: rpcd keygen FILE\n"
    "\n"
    "Make a new identity (an Ed25519 key pair): write its secret key into FILE, created\n"
    "with mode 0600 (an existing file is never overwritten), and print its public key as\n"
    "one line (dctx-ed25519:...) for the allow files of the servers it calls.\n";

int rpcd_keygen(int argc, char **argv)
{
    if (argc == 1 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
        fputs(keygen_usage, stdout);
        return 0;
    }
    if (argc != 1 || strncmp(argv[0], "--", 2) == 0)
        return rpcd_usage_error("keygen", "%s", "give one FILE for the secret key");
    char pub[DCTX_PUBLIC_KEY_TEXT_BYTES], err[256];
    int rc = dctx_identity_generate(argv[0], pub, err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "rpcd keygen: %s\n", err);
        return rc;
    }
    printf("%s\n", pub);
    return 0;
}
