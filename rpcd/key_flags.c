/*
 * key_flags.c - the identity flags of rpcd's commands (key_flags.h).
 */
#include "key_flags.h"

#include <string.h>

int rpcd_keys_flag(const char *command, const char *flag, const char *val, int n_next,
                   struct rpcd_keys *k)
{
    bool serve = strcmp(command, "serve") == 0;
    if (strcmp(flag, "--key") == 0) {
        k->key_file = val;
    } else if (serve && strcmp(flag, "--allow") == 0) {
        k->allow_file = val;
    } else if (serve && strcmp(flag, "--next-key") == 0) {
        if (n_next == 0)
            return rpcd_usage_error(command, "--next-key %s belongs after the --next it is for",
                                    val);
        if (k->next_key_text[n_next - 1] != NULL)
            return rpcd_usage_error(command, "a second --next-key for --next number %d", n_next);
        k->next_key_text[n_next - 1] = val;
    } else if (!serve && strcmp(flag, "--server-key") == 0) {
        k->server_key_text = val;
    } else {
        return 0;
    }
    return 1;
}

static bool parse_key(const char *command, const char *flag, const char *text, unsigned char *key)
{
    if (dctx_public_key_parse(text, strlen(text), key))
        return true;
    rpcd_usage_error(command,
                     "%s takes a public key (dctx-ed25519:..., as rpcd keygen prints), not "
                     "\"%s\"",
                     flag, text);
    return false;
}

int rpcd_keys_load(const char *command, struct rpcd_keys *k, int n_next)
{
    bool serve = strcmp(command, "serve") == 0;
    if (!serve && (k->key_file == NULL) != (k->server_key_text == NULL))
        return rpcd_usage_error(command, "%s",
                                k->key_file == NULL
                                    ? "--server-key needs --key FILE (this caller's identity)"
                                    : "--key needs --server-key PUB (the key the server must "
                                      "prove)");
    if (serve && k->allow_file != NULL && k->key_file == NULL)
        return rpcd_usage_error(command, "%s", "--allow needs --key FILE (the server's identity)");
    for (int i = 0; serve && i < n_next; i++)
        if (k->next_key_text[i] != NULL && k->key_file == NULL)
            return rpcd_usage_error(command, "%s",
                                    "--next-key needs --key FILE (the identity this server calls "
                                    "onward with)");
    if (k->server_key_text != NULL &&
        !parse_key(command, "--server-key", k->server_key_text, k->server_key))
        return RPCD_EXIT_USAGE;
    for (int i = 0; i < n_next; i++)
        if (k->next_key_text[i] != NULL &&
            !parse_key(command, "--next-key", k->next_key_text[i], k->next_key[i]))
            return RPCD_EXIT_USAGE;
    char err[512];
    if (k->key_file != NULL) {
        int rc = dctx_identity_load(k->key_file, &k->id, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "rpcd %s: --key: %s\n", command, err);
            return rc;
        }
    }
    if (k->allow_file != NULL) {
        int rc = dctx_allow_load(k->allow_file, &k->allow, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "rpcd %s: --allow: %s\n", command, err);
            return rc;
        }
    }
    return 0;
}

void rpcd_keys_channel(const struct rpcd_keys *k, dctx_rpc_channel_options *o)
{
    if (k->id != NULL) { /* with its --server-key: rpcd_keys_load saw to it */
        o->identity = k->id;
        o->server_key = k->server_key;
    }
}

void rpcd_keys_next_hop(const struct rpcd_keys *k, int i, dctx_rpc_channel_options *o)
{
    o->identity = NULL;
    o->server_key = NULL;
    if (k->id != NULL && k->next_key_text[i] != NULL) {
        o->identity = k->id;
        o->server_key = k->next_key[i];
    }
}

bool rpcd_keys_public_text(const struct rpcd_keys *k, char out[DCTX_PUBLIC_KEY_TEXT_BYTES])
{
    if (k->id == NULL)
        return false;
    unsigned char key[DCTX_PUBLIC_KEY_BYTES];
    dctx_identity_public_key(k->id, key);
    dctx_public_key_text(key, out);
    return true;
}

void rpcd_keys_free(struct rpcd_keys *k)
{
    dctx_identity_free(k->id);
    dctx_allow_free(k->allow);
    k->id = NULL;
    k->allow = NULL;
}

void rpcd_keys_usage(FILE *out, bool server)
{
    if (server)
        fputs(
            "  identities (SECURITY.md; keys from rpcd keygen):\n"
            "  --key FILE             this server's secret key file: it proves this key to\n"
            "                         callers, admits only callers with keys, seals every frame,\n"
            "                         and calls next hops given --next-key with it\n"
            "  --allow FILE           the callers let in and the methods each may call (one key\n"
            "                         per line, then methods, exact or /pkg.Service/*); others\n"
            "                         get PERMISSION_DENIED\n"
            "  --next-key PUB         the key the --next before it must prove\n",
            out);
    else
        fputs("  identities (SECURITY.md; keys from rpcd keygen):\n"
              "  --key FILE             this caller's secret key file\n"
              "  --server-key PUB       the key the server must prove (dctx-ed25519:...)\n",
              out);
}
