/* Keyring spec parsing, glob patterns, capability checks and request authentication
 * (gateway/auth.h). Tokens are signed with spool_jwt_sign; test_jwt.c covers hostile tokens. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/auth.h"
#include "gateway/jwt.h"

#define NOW_MS 1800000000000LL

static struct spool_keyring ring;
static struct spool_principal who;

static void setup(void)
{
    spool_keyring_init(&ring);
    spool_principal_init(&who);
}

static void teardown(void)
{
    spool_principal_close(&who);
    spool_keyring_close(&ring);
}

TestSuite(auth, .init = setup, .fini = teardown);

static int load(const char *spec)
{
    struct spool_err err;
    int rc = spool_keyring_load_spec(&ring, spec, &err);
    cr_assert_eq(rc, 0, "%s: %s", spec, err.msg);
    return rc;
}

/* A token signed by key `kid` with `secret`, expiring at NOW + 60 s, plus extra claims. */
static char *token(const char *kid, const char *secret, const char *extra_json)
{
    json_t *claims = json_loads(extra_json ? extra_json : "{}", 0, NULL);
    cr_assert_not_null(claims);
    json_object_set_new(claims, "exp", json_integer(NOW_MS / 1000 + 60));
    char *t = NULL;
    struct spool_err err;
    cr_assert_eq(spool_jwt_sign(kid, secret, strlen(secret), claims, &t, &err), 0, "%s", err.msg);
    json_decref(claims);
    return t;
}

Test(auth, capability_names)
{
    cr_expect_eq(spool_cap_parse("publish", 7), SPOOL_CAP_PUBLISH);
    cr_expect_eq(spool_cap_parse("delete-any", 10), SPOOL_CAP_DELETE_ANY);
    cr_expect_eq(spool_cap_parse("*", 1), SPOOL_CAP_ALL);
    cr_expect_eq(spool_cap_parse("publis", 6), 0);
    cr_expect_eq(spool_cap_parse("publishx", 8), 0);
    cr_expect_str_eq(spool_cap_name(SPOOL_CAP_EDIT_ANY), "edit-any");
    cr_expect_null(spool_cap_name(SPOOL_CAP_PUBLISH | SPOOL_CAP_HISTORY));
    enum spool_role r;
    cr_expect_eq(spool_role_parse("agent", 5, &r), 0);
    cr_expect_eq(r, SPOOL_ROLE_AGENT);
    cr_expect_eq(spool_role_parse("admin", 5, &r), -1);
    cr_expect_str_eq(spool_role_name(SPOOL_ROLE_OPERATOR), "operator");
}

Test(auth, glob_patterns)
{
    cr_expect(spool_glob_match("chat-*", "chat-1"));
    cr_expect(spool_glob_match("chat-*", "chat-"));
    cr_expect_not(spool_glob_match("chat-*", "chat"));
    cr_expect_not(spool_glob_match("chat-*", "xchat-1"));
    cr_expect(spool_glob_match("*", ""));
    cr_expect(spool_glob_match("*", "anything:at/all"));
    cr_expect(spool_glob_match("exact", "exact"));
    cr_expect_not(spool_glob_match("exact", "exact2"));
    cr_expect_not(spool_glob_match("exact", "exac"));
    cr_expect(spool_glob_match("a*b*c", "aXXbYYc"));
    cr_expect(spool_glob_match("a*b*c", "abc"));
    cr_expect(spool_glob_match("a*b*c", "abbbcbc"), "needs backtracking");
    cr_expect_not(spool_glob_match("a*b*c", "aXXbYYcd"));
    cr_expect(spool_glob_match("*:private", "room:7:private"));
    cr_expect(spool_glob_match("**x", "abx"));
    /* Pathological input still finishes (bounded by |pattern| * |name|). */
    char name[2001];
    memset(name, 'a', 2000);
    name[2000] = '\0';
    cr_expect_not(spool_glob_match("*a*a*a*a*a*a*a*a*b", name));
}

Test(auth, parses_the_documented_spec)
{
    load("agent:s3cr3t=chat-*:publish,subscribe,presence|admin-*:admin; root:toor");
    cr_assert_eq(ring.n, 2);
    const struct spool_api_key *a = spool_keyring_find(&ring, "agent", 5);
    cr_assert_not_null(a);
    cr_expect_str_eq(a->secret, "s3cr3t");
    cr_assert_eq(a->caps.n, 2);
    cr_expect_str_eq(a->caps.rules[0].pattern, "chat-*");
    cr_expect_eq(a->caps.rules[0].caps, SPOOL_CAP_PUBLISH | SPOOL_CAP_SUBSCRIBE | SPOOL_CAP_PRESENCE);
    cr_expect_str_eq(a->caps.rules[1].pattern, "admin-*");
    cr_expect_eq(a->caps.rules[1].caps, SPOOL_CAP_ADMIN);
    const struct spool_api_key *r = spool_keyring_find(&ring, "root", 4);
    cr_assert_not_null(r);
    cr_assert_eq(r->caps.n, 1);
    cr_expect_str_eq(r->caps.rules[0].pattern, "*");
    cr_expect_eq(r->caps.rules[0].caps, SPOOL_CAP_ALL);
    cr_expect_null(spool_keyring_find(&ring, "agen", 4));
    cr_expect_eq(ring.clock_skew_ms, 30000);
}

Test(auth, spec_with_newlines_comments_and_colons_in_patterns)
{
    load("# keys for the demo; not real\n"
         "  web:pw1=room:*:subscribe,history  \n"
         "\n"
         "bot:pw:2=*:* ;  ops:pw3=*:admin,edit-any,delete-any\n");
    cr_assert_eq(ring.n, 3);
    const struct spool_api_key *w = spool_keyring_find(&ring, "web", 3);
    cr_assert_not_null(w);
    cr_expect_str_eq(w->caps.rules[0].pattern, "room:*", "split at the last ':'");
    cr_expect_str_eq(spool_keyring_find(&ring, "bot", 3)->secret, "pw:2");
    cr_expect_eq(spool_keyring_find(&ring, "ops", 3)->caps.rules[0].caps,
                 SPOOL_CAP_ADMIN | SPOOL_CAP_EDIT_ANY | SPOOL_CAP_DELETE_ANY);
}

Test(auth, bad_specs_name_the_entry_and_hide_the_secret)
{
    struct {
        const char *spec;
        const char *expect; /* substring of the message */
    } bad[] = {
        {"ok:pw; nocolon", "entry 2"},
        {":pw", "name is empty"},
        {"a b:pw", "letters, digits"},
        {"k:", "secret is empty"},
        {"k:TOPSECRET=", "no rules"},
        {"k:TOPSECRET=chat-*", "no ':caps' part"},
        {"k:TOPSECRET=chat-*:pubish", "unknown capability \"pubish\""},
        {"k:TOPSECRET=chat-*:publish,", "empty capability"},
        {"k:TOPSECRET=:publish", "pattern is empty"},
        {"k:TOPSECRET=a:publish||b:publish", "no ':caps' part"},
        {"k:TOP SECRET", "whitespace"},
        {"k:TOP=SECRET:X9", "rule 1: unknown capability (known"},
        {"k:TOPSECRET=a:publish|b:adimn", "rule 2: unknown capability \"adimn\""},
        {"k:TOPSECRET==", "secrets may not contain '='"},
        {"k:TOPSECRET; k:other", "defined twice"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct spool_err err;
        cr_expect_eq(spool_keyring_load_spec(&ring, bad[i].spec, &err), SPOOL_EINVAL, "%s",
                     bad[i].spec);
        cr_expect(strstr(err.msg, bad[i].expect) != NULL, "%s -> %s", bad[i].spec, err.msg);
        cr_expect(strstr(err.msg, "TOPSECRET") == NULL && strstr(err.msg, "SECRET") == NULL,
                  "secret leaked: %s", err.msg);
        cr_expect_eq(ring.n, 0, "a failed load adds nothing (%s)", bad[i].spec);
    }
    char name[100];
    memset(name, 'n', sizeof name);
    name[99] = '\0';
    char spec[200];
    snprintf(spec, sizeof spec, "%s:pw", name);
    struct spool_err err;
    cr_expect_eq(spool_keyring_load_spec(&ring, spec, &err), SPOOL_EINVAL);
    load("dup:pw");
    cr_expect_eq(spool_keyring_load_spec(&ring, "dup:pw2", &err), SPOOL_EINVAL,
                 "a name from an earlier load counts");
}

Test(auth, loads_a_file_and_reports_its_line)
{
    char path[] = "/tmp/spool-keys-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    const char *text = "# ops keys\nops:pw=*:admin\n\nweb:pw=chat-*:publish,nonsense\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    struct spool_err err;
    cr_expect_eq(spool_keyring_load_file(&ring, path, &err), SPOOL_EINVAL);
    char want[64];
    snprintf(want, sizeof want, "%s:4", path);
    cr_expect(strstr(err.msg, want) != NULL, "%s", err.msg);
    cr_expect_eq(ring.n, 0);
    FILE *f = fopen(path, "w");
    fputs("ops:pw=*:admin\nweb:pw=chat-*:publish\n", f);
    fclose(f);
    cr_expect_eq(spool_keyring_configure(&ring, "cli:pw", path, true, &err), 0, "%s", err.msg);
    cr_expect_eq(ring.n, 3);
    cr_expect(ring.anonymous);
    unlink(path);
    cr_expect_eq(spool_keyring_load_file(&ring, path, &err), SPOOL_EIO);
}

Test(auth, raw_key_and_basic_auth)
{
    load("agent:s3cr3t=chat-*:publish,subscribe|admin-*:admin");
    struct spool_err err;
    cr_expect_eq(spool_auth_key(&ring, "agent:s3cr3t", 12, &who, &err), SPOOL_AUTH_OK, "%s",
                 err.msg);
    cr_expect_str_eq(who.key_name, "agent");
    cr_expect_eq(who.role, SPOOL_ROLE_USER);
    cr_expect_eq(who.expires_at_ms, 0);
    cr_expect(spool_principal_can(&who, "chat-1", SPOOL_CAP_PUBLISH));
    cr_expect(spool_principal_can(&who, "chat-1", SPOOL_CAP_PUBLISH | SPOOL_CAP_SUBSCRIBE));
    cr_expect_not(spool_principal_can(&who, "chat-1", SPOOL_CAP_HISTORY));
    cr_expect_not(spool_principal_can(&who, "other", SPOOL_CAP_SUBSCRIBE));
    cr_expect(spool_principal_can(&who, "admin-x", SPOOL_CAP_ADMIN));
    cr_expect_eq(spool_principal_check(&who, "chat-1", SPOOL_CAP_PRESENCE, &err),
                 SPOOL_AUTH_FORBIDDEN);
    cr_expect(strstr(err.msg, "presence") && strstr(err.msg, "chat-1"), "%s", err.msg);

    cr_expect_eq(spool_auth_key(&ring, "agent:s3cr3T", 12, &who, &err), SPOOL_AUTH_BAD_SIGNATURE);
    cr_expect(strstr(err.msg, "s3cr3") == NULL, "%s", err.msg);
    cr_expect_eq(spool_auth_key(&ring, "agent:s3cr3", 11, &who, &err), SPOOL_AUTH_BAD_SIGNATURE);
    cr_expect_eq(spool_auth_key(&ring, "nobody:x", 8, &who, &err), SPOOL_AUTH_UNKNOWN_KEY);
    cr_expect_eq(spool_auth_key(&ring, "agent", 5, &who, &err), SPOOL_AUTH_MALFORMED);
    cr_expect_str_eq(who.key_name, "agent", "a failure leaves the old principal");

    spool_principal_close(&who);
    /* base64("agent:s3cr3t") */
    cr_expect_eq(spool_auth_header(&ring, "Basic YWdlbnQ6czNjcjN0", NOW_MS, &who, &err),
                 SPOOL_AUTH_OK, "%s", err.msg);
    cr_expect_str_eq(who.key_name, "agent");
    cr_expect_eq(spool_auth_header(&ring, "basic   YWdlbnQ6czNjcjN0 ", NOW_MS, &who, &err),
                 SPOOL_AUTH_OK, "scheme is case-insensitive");
    cr_expect_eq(spool_auth_header(&ring, "Basic YWdlbnQ6czNjcjNU", NOW_MS, &who, &err),
                 SPOOL_AUTH_BAD_SIGNATURE);
    cr_expect_eq(spool_auth_header(&ring, "Basic !!!!", NOW_MS, &who, &err), SPOOL_AUTH_MALFORMED);
    cr_expect_eq(spool_auth_header(&ring, "Digest abc", NOW_MS, &who, &err), SPOOL_AUTH_MALFORMED);
    cr_expect_eq(spool_auth_credential(&ring, "agent:s3cr3t", NOW_MS, &who, &err), SPOOL_AUTH_OK);
}

Test(auth, missing_credentials_and_anonymous_mode)
{
    load("k:pw");
    struct spool_err err;
    cr_expect_eq(spool_auth_header(&ring, NULL, NOW_MS, &who, &err), SPOOL_AUTH_MISSING);
    cr_expect_eq(spool_auth_header(&ring, "  ", NOW_MS, &who, &err), SPOOL_AUTH_MISSING);
    cr_expect_eq(spool_auth_credential(&ring, "", NOW_MS, &who, &err), SPOOL_AUTH_MISSING);
    ring.anonymous = true;
    cr_expect_eq(spool_auth_header(&ring, NULL, NOW_MS, &who, &err), SPOOL_AUTH_OK);
    cr_expect(who.anonymous);
    cr_expect_eq(who.role, SPOOL_ROLE_USER);
    cr_expect(spool_principal_can(&who, "anything", SPOOL_CAP_ALL));
    cr_expect_eq(spool_auth_header(&ring, "Basic azp3cm9uZw==", NOW_MS, &who, &err),
                 SPOOL_AUTH_BAD_SIGNATURE, "wrong credentials are refused even when anonymous");
}

Test(auth, jwt_bearer_gives_claims)
{
    load("agent:s3cr3t=chat-*:publish,subscribe,presence|admin-*:admin");
    char *t = token("agent", "s3cr3t", "{\"clientId\":\"bob\",\"role\":\"agent\"}");
    char hdr[2048];
    snprintf(hdr, sizeof hdr, "Bearer %s", t);
    struct spool_err err;
    cr_assert_eq(spool_auth_header(&ring, hdr, NOW_MS, &who, &err), SPOOL_AUTH_OK, "%s", err.msg);
    cr_expect_str_eq(who.key_name, "agent");
    cr_expect_str_eq(who.client_id, "bob");
    cr_expect_eq(who.role, SPOOL_ROLE_AGENT);
    cr_expect_eq(who.expires_at_ms, NOW_MS + 60000);
    cr_expect_not(who.has_token_caps);
    cr_expect(spool_principal_can(&who, "chat-9", SPOOL_CAP_PRESENCE), "no claim: key's rules");
    cr_expect(spool_principal_can(&who, "admin-1", SPOOL_CAP_ADMIN));
    cr_expect_eq(spool_auth_credential(&ring, t, NOW_MS, &who, &err), SPOOL_AUTH_OK, "%s",
                 err.msg);
    free(t);

    t = token("agent", "s3cr3t", "{\"sub\":\"alice\"}");
    cr_expect_eq(spool_auth_token(&ring, t, strlen(t), NOW_MS, &who, &err), SPOOL_AUTH_OK);
    cr_expect_str_eq(who.client_id, "alice", "sub when there is no clientId");
    cr_expect_eq(who.role, SPOOL_ROLE_USER);
    cr_expect_eq(spool_auth_token(&ring, t, strlen(t), NOW_MS + 120000, &who, &err),
                 SPOOL_AUTH_EXPIRED);
    free(t);
}

Test(auth, jwt_failures_map_to_codes)
{
    load("agent:s3cr3t");
    struct spool_err err;
    char *t = token("agent", "wrong", NULL);
    cr_expect_eq(spool_auth_token(&ring, t, strlen(t), NOW_MS, &who, &err),
                 SPOOL_AUTH_BAD_SIGNATURE);
    free(t);
    t = token("ghost", "s3cr3t", NULL);
    cr_expect_eq(spool_auth_token(&ring, t, strlen(t), NOW_MS, &who, &err), SPOOL_AUTH_UNKNOWN_KEY);
    cr_expect(strstr(err.msg, "ghost") != NULL, "%s", err.msg);
    free(t);
    const char *bad_claims[] = {"{\"role\":\"root\"}", "{\"clientId\":5}",
                                "{\"capability\":{\"a\":[\"fly\"]}}", "{\"capability\":[1]}",
                                "{\"capability\":{\"a\":5}}", "{\"capability\":{\"\":\"*\"}}"};
    for (size_t i = 0; i < sizeof bad_claims / sizeof bad_claims[0]; i++) {
        t = token("agent", "s3cr3t", bad_claims[i]);
        cr_expect_eq(spool_auth_token(&ring, t, strlen(t), NOW_MS, &who, &err),
                     SPOOL_AUTH_MALFORMED, "%s", bad_claims[i]);
        free(t);
    }
    cr_expect_eq(spool_auth_header(&ring, "Bearer not.a.jwt", NOW_MS, &who, &err),
                 SPOOL_AUTH_MALFORMED);
    cr_expect_eq(spool_auth_header(&ring, "Bearer ", NOW_MS, &who, &err), SPOOL_AUTH_MALFORMED);
    cr_expect_eq(who.key_name[0], '\0', "nothing was granted");
}

Test(auth, token_capability_intersects_with_the_key)
{
    load("agent:s3cr3t=chat-*:publish,subscribe,presence|admin-*:admin");
    char *t = token("agent", "s3cr3t",
                    "{\"capability\":{\"chat-1\":[\"subscribe\",\"history\"],"
                    "\"*\":[\"presence\"],\"admin-*\":\"*\",\"empty\":[]}}");
    struct spool_err err;
    cr_assert_eq(spool_auth_token(&ring, t, strlen(t), NOW_MS, &who, &err), SPOOL_AUTH_OK, "%s",
                 err.msg);
    free(t);
    cr_expect(who.has_token_caps);
    cr_expect_eq(spool_principal_caps(&who, "chat-1"), SPOOL_CAP_SUBSCRIBE | SPOOL_CAP_PRESENCE,
                 "history is not the key's; publish is not the token's");
    cr_expect_eq(spool_principal_caps(&who, "chat-2"), SPOOL_CAP_PRESENCE);
    cr_expect_eq(spool_principal_caps(&who, "admin-a"), SPOOL_CAP_ADMIN, "token '*' is capped");
    cr_expect_eq(spool_principal_caps(&who, "other"), 0);
    cr_expect_not(spool_principal_can(&who, "chat-1", SPOOL_CAP_PUBLISH));
    cr_expect_not(spool_principal_can(&who, "chat-1", 0), "asking for nothing is not a grant");

    /* The same claim as a JSON string. */
    t = token("agent", "s3cr3t", "{\"capability\":\"{\\\"chat-*\\\":[\\\"publish\\\"]}\"}");
    cr_assert_eq(spool_auth_token(&ring, t, strlen(t), NOW_MS, &who, &err), SPOOL_AUTH_OK, "%s",
                 err.msg);
    free(t);
    cr_expect_eq(spool_principal_caps(&who, "chat-3"), SPOOL_CAP_PUBLISH);
}

Test(auth, codes_map_to_http)
{
    cr_expect_eq(spool_auth_status(SPOOL_AUTH_OK), 200);
    int u[] = {SPOOL_AUTH_MISSING,  SPOOL_AUTH_UNKNOWN_KEY,     SPOOL_AUTH_BAD_SIGNATURE,
               SPOOL_AUTH_EXPIRED,  SPOOL_AUTH_MALFORMED,       SPOOL_AUTH_UNSUPPORTED_ALG,
               SPOOL_AUTH_NOT_YET_VALID};
    for (size_t i = 0; i < sizeof u / sizeof u[0]; i++) {
        cr_expect_eq(spool_auth_status(u[i]), 401, "%d", u[i]);
        cr_expect_str_neq(spool_auth_message(u[i]), "internal error");
    }
    cr_expect_eq(spool_auth_status(SPOOL_AUTH_FORBIDDEN), 403);
    cr_expect_eq(spool_auth_status(SPOOL_AUTH_INTERNAL), 500);
    cr_expect_str_eq(spool_auth_message(SPOOL_AUTH_EXPIRED), "token expired");
}
