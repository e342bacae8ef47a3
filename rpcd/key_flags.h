/*
 * key_flags.h - the identity flags rpcd's commands share: --key FILE (this
 * process's secret key file, from `rpcd keygen`), --server-key PUB (the
 * key a caller requires its server to prove), and on `serve` --allow FILE
 * (who may call what) and --next-key PUB (a next hop's key: it applies to
 * the --next given before it). Files and keys are read by rpcd_keys_load,
 * after the flags.
 */
#ifndef RPCD_KEY_FLAGS_H
#define RPCD_KEY_FLAGS_H

#include <stdbool.h>
#include <stdio.h>

#include <dctx/identity.h>
#include <dctx/rpc.h>

#include "rpcd.h"

struct rpcd_keys {
    const char *key_file, *allow_file, *server_key_text; /* NULL: not given */
    const char *next_key_text[RPCD_MAX_NEXT];            /* by --next index */
    /* What rpcd_keys_load made of them. */
    dctx_identity *id;
    dctx_allow *allow;
    unsigned char server_key[DCTX_PUBLIC_KEY_BYTES];
    unsigned char next_key[RPCD_MAX_NEXT][DCTX_PUBLIC_KEY_BYTES];
};

/* If flag is one of the identity flags of command ("serve": --key,
 * --allow, --next-key, the last for the n_next-th --next; otherwise
 * --key, --server-key), take val and return 1; another flag: 0; a usage
 * error (reported): RPCD_EXIT_USAGE. */
int rpcd_keys_flag(const char *command, const char *flag, const char *val, int n_next,
                   struct rpcd_keys *k);

/* rpcd_keys_load checks the flags go together (a caller needs both --key
 * and --server-key, --allow and --next-key need --key) and reads the key
 * file, the allow file and the public keys. Returns 0, RPCD_EXIT_USAGE, or
 * the status of a file that cannot be used (reported on stderr, naming
 * it: a key file others can read is DCTX_PERMISSION_DENIED). */
int rpcd_keys_load(const char *command, struct rpcd_keys *k, int n_next);

/* Channel options of a caller (--key, --server-key), or of next hop i. */
void rpcd_keys_channel(const struct rpcd_keys *k, dctx_rpc_channel_options *o);
void rpcd_keys_next_hop(const struct rpcd_keys *k, int i, dctx_rpc_channel_options *o);

/* This process's public key as text into out; false without --key. */
bool rpcd_keys_public_text(const struct rpcd_keys *k, char out[DCTX_PUBLIC_KEY_TEXT_BYTES]);

void rpcd_keys_free(struct rpcd_keys *k);

/* The flags' lines for a --help. */
void rpcd_keys_usage(FILE *out, bool server);

#endif
