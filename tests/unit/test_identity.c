/*
 * test_identity.c - key files and allow files (identity.h): a generated
 * key file is its owner's alone and loads back to the key it printed; one
 * that others can read, or that is not a key file, is refused saying why;
 * public keys round-trip as text; an allow file grants what its lines say
 * and a malformed line is refused by its number.
 */
#include <dctx/identity.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static char dir[] = "/tmp/dctx-identity-XXXXXX";

static void path_in_dir(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static void write_text(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static void generated_key_file_is_private_and_loads_back(void **state)
{
    (void)state;
    char path[256], pub[DCTX_PUBLIC_KEY_TEXT_BYTES], err[256] = "";
    path_in_dir(path, sizeof path, "id.key");
    assert_int_equal(dctx_identity_generate(path, pub, err, sizeof err), 0);
    assert_int_equal(strncmp(pub, "dctx-ed25519:", 13), 0);
    assert_int_equal(strlen(pub), DCTX_PUBLIC_KEY_TEXT_BYTES - 1);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    dctx_identity *id = NULL;
    assert_int_equal(dctx_identity_load(path, &id, err, sizeof err), 0);
    unsigned char key[DCTX_PUBLIC_KEY_BYTES], parsed[DCTX_PUBLIC_KEY_BYTES];
    dctx_identity_public_key(id, key);
    assert_true(dctx_public_key_parse(pub, strlen(pub), parsed));
    assert_memory_equal(key, parsed, sizeof key); /* the key printed is the key loaded */
    char again[DCTX_PUBLIC_KEY_TEXT_BYTES];
    dctx_public_key_text(key, again);
    assert_string_equal(again, pub);
    dctx_identity_free(id);

    /* never over an existing file */
    assert_int_equal(dctx_identity_generate(path, pub, err, sizeof err), DCTX_ALREADY_EXISTS);
    assert_non_null(strstr(err, "id.key"));

    /* readable by others: refused, saying how to fix it */
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(dctx_identity_load(path, &id, err, sizeof err), DCTX_PERMISSION_DENIED);
    assert_null(id);
    assert_non_null(strstr(err, "chmod 600"));
    unlink(path);
}

static void what_is_not_a_key_file_is_refused(void **state)
{
    (void)state;
    char path[256], err[256] = "";
    dctx_identity *id = NULL;
    path_in_dir(path, sizeof path, "none.key");
    assert_int_equal(dctx_identity_load(path, &id, err, sizeof err), DCTX_NOT_FOUND);
    static const char *bad[] = {
        "",
        "# only a comment\n",
        "dctx-ed25519-secret:tooshort\n",
        "dctx-ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n", /* a public key */
        "dctx-ed25519-secret:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!\n",
    };
    path_in_dir(path, sizeof path, "bad.key");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_text(path, bad[i], 0600);
        assert_int_equal(dctx_identity_load(path, &id, err, sizeof err), DCTX_INVALID_ARGUMENT);
        assert_null(id);
        assert_non_null(strstr(err, "not a dctx secret key file"));
    }
    unlink(path);
    unsigned char key[DCTX_PUBLIC_KEY_BYTES];
    assert_false(dctx_public_key_parse("dctx-ed25519:", 13, key));
    /* one text per key: a byte over 0x7f in place of a base64 character
     * is refused (libsodium 1.0.18 decodes some; fuzz_allow found it) */
    char text[DCTX_PUBLIC_KEY_TEXT_BYTES];
    memset(key, 2, sizeof key);
    dctx_public_key_text(key, text);
    assert_true(dctx_public_key_parse(text, strlen(text), key));
    for (size_t i = 13; i < strlen(text); i++) {
        char odd[DCTX_PUBLIC_KEY_TEXT_BYTES];
        memcpy(odd, text, sizeof odd);
        odd[i] = (char)0xce;
        assert_false(dctx_public_key_parse(odd, strlen(odd), key));
    }
    assert_false(
        dctx_public_key_parse("ssh-ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 55, key));
}

static void allow_file_grants_what_its_lines_say(void **state)
{
    (void)state;
    unsigned char a[DCTX_PUBLIC_KEY_BYTES], b[DCTX_PUBLIC_KEY_BYTES], c[DCTX_PUBLIC_KEY_BYTES];
    memset(a, 1, sizeof a);
    memset(b, 2, sizeof b);
    memset(c, 3, sizeof c);
    char ta[DCTX_PUBLIC_KEY_TEXT_BYTES], tb[DCTX_PUBLIC_KEY_TEXT_BYTES];
    dctx_public_key_text(a, ta);
    dctx_public_key_text(b, tb);
    char text[1024];
    snprintf(text, sizeof text,
             "# who may call\n"
             "\n"
             "%s   # a: every method\n"
             "%s /dctx.demo.Demo/Echo\t/dctx.Admin/*\n"
             "  %s /x.Y/Z\r\n",
             ta, tb, tb);
    dctx_allow *al = NULL;
    char err[256] = "";
    assert_int_equal(dctx_allow_parse(text, strlen(text), &al, err, sizeof err), 0);
    assert_int_equal(dctx_allow_count(al), 2);
    assert_true(dctx_allow_knows(al, a));
    assert_true(dctx_allow_permits(al, a, "/any.Thing/At_all"));
    assert_true(dctx_allow_permits(al, b, "/dctx.demo.Demo/Echo"));
    assert_true(dctx_allow_permits(al, b, "/dctx.Admin/Stats"));
    assert_true(dctx_allow_permits(al, b, "/x.Y/Z")); /* its second line adds to its first */
    assert_false(dctx_allow_permits(al, b, "/dctx.demo.Demo/Sleep"));
    assert_false(dctx_allow_permits(al, b, "/dctx.AdminX/Stats"));
    assert_false(dctx_allow_knows(al, c));
    assert_false(dctx_allow_permits(al, c, "/dctx.demo.Demo/Echo"));
    dctx_allow_free(al);

    /* an empty file lets nobody in */
    assert_int_equal(dctx_allow_parse("", 0, &al, err, sizeof err), 0);
    assert_int_equal(dctx_allow_count(al), 0);
    assert_false(dctx_allow_knows(al, a));
    dctx_allow_free(al);
}

static void malformed_allow_line_is_refused_by_its_number(void **state)
{
    (void)state;
    unsigned char a[DCTX_PUBLIC_KEY_BYTES];
    memset(a, 1, sizeof a);
    char ta[DCTX_PUBLIC_KEY_TEXT_BYTES];
    dctx_public_key_text(a, ta);
    static const struct {
        const char *line3, *says;
    } cases[] = {
        {"not-a-key /a.B/C", "line 3: \"not-a-key\" is not a public key"},
        {"%s Echo", "line 3: \"Echo\" is not a method"},
        {"%s /a.B/*/C", "is not a method"},
        {"%s /a.B/C*", "is not a method"},
        {"%s /*", "is not a method"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char line[256], text[512], err[256] = "";
        snprintf(line, sizeof line, cases[i].line3, ta);
        snprintf(text, sizeof text, "# ok\n%s\n%s\n", ta, line);
        dctx_allow *al = NULL;
        assert_int_equal(dctx_allow_parse(text, strlen(text), &al, err, sizeof err),
                         DCTX_INVALID_ARGUMENT);
        assert_null(al);
        if (strstr(err, cases[i].says) == NULL || strstr(err, "line 3") == NULL)
            fail_msg("case %zu: error \"%s\", wanted \"%s\" on line 3", i, err, cases[i].says);
    }
    char *long_line = malloc(5000);
    assert_non_null(long_line);
    memset(long_line, 'x', 4999);
    long_line[4999] = '\0';
    dctx_allow *al = NULL;
    char err[256] = "";
    assert_int_equal(dctx_allow_parse(long_line, 4999, &al, err, sizeof err),
                     DCTX_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(err, "line 1"));
    free(long_line);

    /* one key's lines together may name at most 256 methods: 2 x 200 */
    char *many = malloc(2 * (DCTX_PUBLIC_KEY_TEXT_BYTES + 200 * 12) + 8);
    assert_non_null(many);
    size_t at = 0;
    for (int line = 0; line < 2; line++) {
        at += (size_t)sprintf(many + at, "%s", ta);
        for (int i = 0; i < 200; i++)
            at += (size_t)sprintf(many + at, " /a.B/M%03d", i);
        many[at++] = '\n';
    }
    assert_int_equal(dctx_allow_parse(many, at, &al, err, sizeof err), DCTX_RESOURCE_EXHAUSTED);
    assert_null(al);
    assert_non_null(strstr(err, "line 2: more than 256 methods for the key of line 1"));
    free(many);

    char path[256];
    path_in_dir(path, sizeof path, "allow");
    assert_int_equal(dctx_allow_load(path, &al, err, sizeof err), DCTX_NOT_FOUND);
    write_text(path, "oops\n", 0644);
    assert_int_equal(dctx_allow_load(path, &al, err, sizeof err), DCTX_INVALID_ARGUMENT);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "line 1"));
    unlink(path);
}

static int make_dir(void **state)
{
    (void)state;
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int remove_dir(void **state)
{
    (void)state;
    return rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generated_key_file_is_private_and_loads_back),
        cmocka_unit_test(what_is_not_a_key_file_is_refused),
        cmocka_unit_test(allow_file_grants_what_its_lines_say),
        cmocka_unit_test(malformed_allow_line_is_refused_by_its_number),
    };
    return cmocka_run_group_tests_name("identity", tests, make_dir, remove_dir);
}
