/*
 * API keys, capability rules and request authentication (interface and rules in auth.h).
 *
 * The key spec parser is deliberately line- and entry-oriented rather than a tokenizer: an entry
 * is everything between separators (';' or a newline), so one malformed entry yields a message
 * naming that entry and never swallows its neighbours. Messages name the entry by position
 * (and the key by name once the name parsed) but never quote entry text past the name, since
 * that text holds the secret. A load either adds every key of the spec or none, so a typo in
 * the last line cannot leave a half-configured keyring behind.
 *
 * Secrets are compared as SHA-256 digests with CRYPTO_memcmp: equal-length inputs to a
 * constant-time compare regardless of what the client sent, so neither the content nor the length
 * of the secret leaks through timing. Key names are not secret and are looked up plainly.
 *
 * A principal owns copies of the rules it was granted. Connections outlive requests and may
 * outlive a keyring reload; copying a handful of short patterns once per connection is cheaper
 * than reasoning about lifetimes.
 */
#include "gateway/auth.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "gateway/jwt.h"

#define PATTERN_MAX 255      /* bytes in a channel pattern */
#define RULES_MAX 64         /* rules per key or per token */
#define FILE_MAX (1u << 20)  /* --api-keys-file size cap */
#define BASIC_MAX 512        /* decoded bytes of a Basic credential */

/* ---- capabilities and roles ---- */

static const struct {
    const char *name;
    unsigned bit;
} cap_names[] = {
    {"publish", SPOOL_CAP_PUBLISH},   {"subscribe", SPOOL_CAP_SUBSCRIBE},
    {"presence", SPOOL_CAP_PRESENCE}, {"history", SPOOL_CAP_HISTORY},
    {"admin", SPOOL_CAP_ADMIN},       {"edit-any", SPOOL_CAP_EDIT_ANY},
    {"delete-any", SPOOL_CAP_DELETE_ANY}, {"*", SPOOL_CAP_ALL},
};

unsigned spool_cap_parse(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof cap_names / sizeof cap_names[0]; i++)
        if (strlen(cap_names[i].name) == len && memcmp(cap_names[i].name, name, len) == 0)
            return cap_names[i].bit;
    return 0;
}

const char *spool_cap_name(unsigned cap)
{
    for (size_t i = 0; i < sizeof cap_names / sizeof cap_names[0]; i++)
        if (cap_names[i].bit == cap) return cap_names[i].name;
    return NULL;
}

static const char *role_names[] = {
    [SPOOL_ROLE_USER] = "user", [SPOOL_ROLE_AGENT] = "agent", [SPOOL_ROLE_OPERATOR] = "operator"};

const char *spool_role_name(enum spool_role role)
{
    if ((unsigned)role >= sizeof role_names / sizeof role_names[0]) return "user";
    return role_names[role];
}

int spool_role_parse(const char *s, size_t len, enum spool_role *out)
{
    for (size_t i = 0; i < sizeof role_names / sizeof role_names[0]; i++)
        if (strlen(role_names[i]) == len && memcmp(role_names[i], s, len) == 0) {
            *out = (enum spool_role)i;
            return 0;
        }
    return -1;
}

/* Greedy match remembering the last star: on a mismatch, let that star swallow one more byte.
 * Every retry advances `retry` through `name`, so this is O(|pattern| * |name|) at worst. */
bool spool_glob_match(const char *pattern, const char *name)
{
    const char *p = pattern, *s = name;
    const char *star = NULL, *retry = NULL;
    while (*s != '\0') {
        if (*p == '*') {
            star = p++;
            retry = s;
        } else if (*p == *s) {
            p++;
            s++;
        } else if (star != NULL) {
            p = star + 1;
            s = ++retry;
        } else {
            return false;
        }
    }
    while (*p == '*') p++;
    return *p == '\0';
}

/* ---- rule lists ---- */

void spool_caps_init(struct spool_caps *c)
{
    c->rules = NULL;
    c->n = 0;
}

void spool_caps_close(struct spool_caps *c)
{
    for (size_t i = 0; i < c->n; i++) free(c->rules[i].pattern);
    free(c->rules);
    spool_caps_init(c);
}

int spool_caps_add(struct spool_caps *c, const char *pattern, size_t len, unsigned caps,
                   struct spool_err *err)
{
    if (len == 0 || len > PATTERN_MAX || memchr(pattern, '\0', len) != NULL)
        return spool_err_set(err, SPOOL_EINVAL, "channel pattern is empty or longer than %d bytes",
                             PATTERN_MAX);
    if (c->n >= RULES_MAX)
        return spool_err_set(err, SPOOL_ELIMIT, "more than %d capability rules", RULES_MAX);
    struct spool_cap_rule *r = realloc(c->rules, (c->n + 1) * sizeof *r);
    if (r == NULL) return spool_err_set(err, SPOOL_ENOMEM, "out of memory");
    c->rules = r;
    char *p = strndup(pattern, len);
    if (p == NULL) return spool_err_set(err, SPOOL_ENOMEM, "out of memory");
    r[c->n].pattern = p;
    r[c->n].caps = caps & SPOOL_CAP_ALL;
    c->n++;
    return 0;
}

int spool_caps_copy(struct spool_caps *dst, const struct spool_caps *src, struct spool_err *err)
{
    spool_caps_init(dst);
    for (size_t i = 0; i < src->n; i++) {
        int rc = spool_caps_add(dst, src->rules[i].pattern, strlen(src->rules[i].pattern),
                                src->rules[i].caps, err);
        if (rc != 0) {
            spool_caps_close(dst);
            return rc;
        }
    }
    return 0;
}

unsigned spool_caps_for(const struct spool_caps *c, const char *channel)
{
    unsigned caps = 0;
    for (size_t i = 0; i < c->n; i++)
        if ((caps | c->rules[i].caps) != caps && spool_glob_match(c->rules[i].pattern, channel))
            caps |= c->rules[i].caps;
    return caps;
}

/* ---- keyring ---- */

void spool_keyring_init(struct spool_keyring *k)
{
    memset(k, 0, sizeof *k);
    k->clock_skew_ms = 30000;
}

static void key_close(struct spool_api_key *key)
{
    if (key->secret != NULL) OPENSSL_cleanse(key->secret, key->secret_len);
    free(key->secret);
    spool_caps_close(&key->caps);
}

void spool_keyring_close(struct spool_keyring *k)
{
    for (size_t i = 0; i < k->n; i++) key_close(&k->keys[i]);
    free(k->keys);
    spool_keyring_init(k);
}

const struct spool_api_key *spool_keyring_find(const struct spool_keyring *k, const char *name,
                                               size_t len)
{
    for (size_t i = 0; i < k->n; i++)
        if (strlen(k->keys[i].name) == len && memcmp(k->keys[i].name, name, len) == 0)
            return &k->keys[i];
    return NULL;
}

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && isspace((unsigned char)**s)) (*s)++, (*n)--;
    while (*n > 0 && isspace((unsigned char)(*s)[*n - 1])) (*n)--;
}

/* A capability word is echoed in messages only when it looks like a mistyped capability: the
 * rules part ends a secret that (wrongly) held '=' and must not be quoted wholesale. */
static bool echoable(const char *w, size_t n)
{
    if (n == 0 || n > 16) return false;
    for (size_t i = 0; i < n; i++)
        if (!((w[i] >= 'a' && w[i] <= 'z') || w[i] == '-')) return false;
    return true;
}

/* Rule number `index` ("pattern:cap,cap"), split at the last ':' as patterns may contain ':'. */
static int parse_rule(struct spool_caps *caps, const char *s, size_t n, int index,
                      const char *where, const char *name, struct spool_err *err)
{
    trim(&s, &n);
    const char *colon = NULL;
    for (size_t i = n; i > 0 && colon == NULL; i--)
        if (s[i - 1] == ':') colon = s + i - 1;
    if (colon == NULL)
        return spool_err_set(err, SPOOL_EINVAL,
                             "%s: key \"%s\": rule %d has no ':caps' part (secrets may not "
                             "contain '=')", where, name, index);
    const char *pat = s;
    size_t plen = (size_t)(colon - s);
    trim(&pat, &plen);
    unsigned bits = 0;
    const char *c = colon + 1;
    const char *end = s + n;
    while (c <= end) {
        const char *comma = memchr(c, ',', (size_t)(end - c));
        const char *stop = comma ? comma : end;
        const char *w = c;
        size_t wn = (size_t)(stop - c);
        trim(&w, &wn);
        unsigned bit = spool_cap_parse(w, wn);
        if (bit == 0)
            return spool_err_set(err, SPOOL_EINVAL,
                                 "%s: key \"%s\": rule %d: %s capability%s%.*s%s (known: "
                                 "publish, subscribe, presence, history, admin, edit-any, "
                                 "delete-any, *)",
                                 where, name, index, wn == 0 ? "empty" : "unknown",
                                 echoable(w, wn) ? " \"" : "", echoable(w, wn) ? (int)wn : 0, w,
                                 echoable(w, wn) ? "\"" : "");
        bits |= bit;
        c = stop + 1;
    }
    if (spool_caps_add(caps, pat, plen, bits, err) != 0)
        return spool_err_wrap(err, "%s: key \"%s\": rule %d", where, name, index);
    return 0;
}

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-';
}

/* One "name:secret[=rules]" entry into `key` (zeroed by the caller). */
static int parse_entry(struct spool_api_key *key, const char *s, size_t n, const char *where,
                       struct spool_err *err)
{
    const char *colon = memchr(s, ':', n);
    if (colon == NULL)
        return spool_err_set(err, SPOOL_EINVAL, "%s: expected name:secret[=pattern:caps|...]",
                             where);
    size_t nlen = (size_t)(colon - s);
    if (nlen == 0) return spool_err_set(err, SPOOL_EINVAL, "%s: key name is empty", where);
    if (nlen > SPOOL_KEY_NAME_MAX)
        return spool_err_set(err, SPOOL_EINVAL, "%s: key name longer than %d bytes", where,
                             SPOOL_KEY_NAME_MAX);
    for (size_t i = 0; i < nlen; i++)
        if (!name_char(s[i]))
            return spool_err_set(err, SPOOL_EINVAL,
                                 "%s: key name may only hold letters, digits, '.', '_', '-'",
                                 where);
    memcpy(key->name, s, nlen);
    key->name[nlen] = '\0';

    const char *sec = colon + 1;
    const char *end = s + n;
    const char *eq = memchr(sec, '=', (size_t)(end - sec));
    size_t slen = (size_t)((eq ? eq : end) - sec);
    if (slen == 0)
        return spool_err_set(err, SPOOL_EINVAL, "%s: key \"%s\": secret is empty", where, key->name);
    if (slen > SPOOL_KEY_SECRET_MAX)
        return spool_err_set(err, SPOOL_EINVAL, "%s: key \"%s\": secret longer than %d bytes",
                             where, key->name, SPOOL_KEY_SECRET_MAX);
    for (size_t i = 0; i < slen; i++)
        if (isspace((unsigned char)sec[i]) || iscntrl((unsigned char)sec[i]))
            return spool_err_set(err, SPOOL_EINVAL,
                                 "%s: key \"%s\": secret contains whitespace or control bytes",
                                 where, key->name);
    key->secret = strndup(sec, slen);
    if (key->secret == NULL) return spool_err_set(err, SPOOL_ENOMEM, "out of memory");
    key->secret_len = slen;

    if (eq == NULL) return spool_caps_add(&key->caps, "*", 1, SPOOL_CAP_ALL, err);
    const char *r = eq + 1;
    if (r == end)
        return spool_err_set(err, SPOOL_EINVAL,
                             "%s: key \"%s\": no rules after '=' (secrets may not contain '=')",
                             where, key->name);
    for (int index = 1; r <= end; index++) {
        const char *bar = memchr(r, '|', (size_t)(end - r));
        const char *stop = bar ? bar : end;
        int rc = parse_rule(&key->caps, r, (size_t)(stop - r), index, where, key->name, err);
        if (rc != 0) return rc;
        r = stop + 1;
    }
    return 0;
}

static int keyring_reserve(struct spool_keyring *k, size_t n, struct spool_err *err)
{
    if (n <= k->cap) return 0;
    size_t cap = k->cap ? k->cap : 8;
    while (cap < n) cap *= 2;
    struct spool_api_key *keys = realloc(k->keys, cap * sizeof *keys);
    if (keys == NULL) return spool_err_set(err, SPOOL_ENOMEM, "out of memory");
    k->keys = keys;
    k->cap = cap;
    return 0;
}

static int keyring_push(struct spool_keyring *k, struct spool_api_key *key, struct spool_err *err)
{
    int rc = keyring_reserve(k, k->n + 1, err);
    if (rc == 0) k->keys[k->n++] = *key;
    return rc;
}

/* Parses `text` into a scratch keyring and moves it into `k` only if every entry parsed.
 * `path` NULL means the text came from --api-keys (entries are named by index). */
static int load_text(struct spool_keyring *k, const char *text, size_t len, const char *path,
                     struct spool_err *err)
{
    struct spool_keyring tmp;
    spool_keyring_init(&tmp);
    int rc = 0;
    int line = 1, entry = 0;
    const char *p = text, *end = text + len;
    while (p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *lend = nl ? nl : end;
        const char *l = p;
        size_t ln = (size_t)(lend - p);
        trim(&l, &ln);
        /* A comment runs to the end of its line, ';' included. */
        const char *e = l;
        while (ln > 0 && l[0] != '#' && e <= l + ln && rc == 0) {
            const char *semi = memchr(e, ';', (size_t)(l + ln - e));
            const char *stop = semi ? semi : l + ln;
            const char *es = e;
            size_t en = (size_t)(stop - e);
            trim(&es, &en);
            if (en > 0) {
                char where[300];
                entry++;
                if (path) snprintf(where, sizeof where, "%s:%d", path, line);
                else snprintf(where, sizeof where, "--api-keys entry %d", entry);
                struct spool_api_key key;
                memset(&key, 0, sizeof key);
                rc = parse_entry(&key, es, en, where, err);
                if (rc == 0 && (spool_keyring_find(k, key.name, strlen(key.name)) ||
                                spool_keyring_find(&tmp, key.name, strlen(key.name))))
                    rc = spool_err_set(err, SPOOL_EINVAL, "%s: key \"%s\" is defined twice", where,
                                       key.name);
                if (rc == 0) rc = keyring_push(&tmp, &key, err);
                if (rc != 0) key_close(&key);
            }
            e = stop + 1;
        }
        p = lend + 1;
        line++;
    }
    if (rc == 0) rc = keyring_reserve(k, k->n + tmp.n, err);
    if (rc == 0) {
        memcpy(k->keys + k->n, tmp.keys, tmp.n * sizeof *tmp.keys);
        k->n += tmp.n;
        tmp.n = 0;
    }
    spool_keyring_close(&tmp);
    return rc;
}

int spool_keyring_load_spec(struct spool_keyring *k, const char *spec, struct spool_err *err)
{
    if (spec == NULL) return 0;
    return load_text(k, spec, strlen(spec), NULL, err);
}

int spool_keyring_load_file(struct spool_keyring *k, const char *path, struct spool_err *err)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return spool_err_set(err, SPOOL_EIO, "--api-keys-file %s: %s", path, strerror(errno));
    char *buf = malloc(FILE_MAX + 1);
    if (buf == NULL) {
        fclose(f);
        return spool_err_set(err, SPOOL_ENOMEM, "out of memory");
    }
    size_t n = fread(buf, 1, FILE_MAX + 1, f);
    int rc = 0;
    if (ferror(f)) rc = spool_err_set(err, SPOOL_EIO, "--api-keys-file %s: read failed", path);
    else if (n > FILE_MAX)
        rc = spool_err_set(err, SPOOL_ELIMIT, "--api-keys-file %s: larger than %u bytes", path,
                           FILE_MAX);
    fclose(f);
    if (rc == 0) rc = load_text(k, buf, n, path, err);
    OPENSSL_cleanse(buf, n);
    free(buf);
    return rc;
}

int spool_keyring_configure(struct spool_keyring *k, const char *spec, const char *path,
                            bool anonymous, struct spool_err *err)
{
    k->anonymous = anonymous;
    if (spec != NULL && spec[0] != '\0') {
        int rc = spool_keyring_load_spec(k, spec, err);
        if (rc != 0) return rc;
    }
    if (path != NULL && path[0] != '\0') return spool_keyring_load_file(k, path, err);
    return 0;
}

/* ---- outcome ---- */

int spool_auth_status(int code)
{
    if (code == SPOOL_AUTH_OK) return 200;
    if (code >= 40100 && code < 40200) return 401;
    if (code >= 40300 && code < 40400) return 403;
    return 500;
}

const char *spool_auth_message(int code)
{
    switch (code) {
    case SPOOL_AUTH_OK: return "ok";
    case SPOOL_AUTH_MISSING: return "missing credentials";
    case SPOOL_AUTH_UNKNOWN_KEY: return "unknown key";
    case SPOOL_AUTH_BAD_SIGNATURE: return "invalid secret or token signature";
    case SPOOL_AUTH_EXPIRED: return "token expired";
    case SPOOL_AUTH_MALFORMED: return "malformed credentials";
    case SPOOL_AUTH_UNSUPPORTED_ALG: return "unsupported token algorithm (HS256 only)";
    case SPOOL_AUTH_NOT_YET_VALID: return "token not yet valid";
    case SPOOL_AUTH_FORBIDDEN: return "capability missing";
    default: return "internal error";
    }
}

void spool_principal_init(struct spool_principal *p)
{
    memset(p, 0, sizeof *p);
    spool_caps_init(&p->key_caps);
    spool_caps_init(&p->token_caps);
}

void spool_principal_close(struct spool_principal *p)
{
    spool_caps_close(&p->key_caps);
    spool_caps_close(&p->token_caps);
    spool_principal_init(p);
}

/* Replaces *dst by *src (which is consumed). */
static void principal_move(struct spool_principal *dst, struct spool_principal *src)
{
    spool_principal_close(dst);
    *dst = *src;
    spool_principal_init(src);
}

int spool_principal_set_anonymous(struct spool_principal *p)
{
    spool_principal_close(p);
    p->anonymous = true;
    if (spool_caps_add(&p->key_caps, "*", 1, SPOOL_CAP_ALL, NULL) != 0) return SPOOL_AUTH_INTERNAL;
    return SPOOL_AUTH_OK;
}

unsigned spool_principal_caps(const struct spool_principal *p, const char *channel)
{
    unsigned caps = spool_caps_for(&p->key_caps, channel);
    if (p->has_token_caps && caps != 0) caps &= spool_caps_for(&p->token_caps, channel);
    return caps;
}

bool spool_principal_can(const struct spool_principal *p, const char *channel, unsigned caps)
{
    caps &= SPOOL_CAP_ALL;
    return caps != 0 && (spool_principal_caps(p, channel) & caps) == caps;
}

int spool_principal_check(const struct spool_principal *p, const char *channel, unsigned caps,
                          struct spool_err *err)
{
    if (spool_principal_can(p, channel, caps)) return SPOOL_AUTH_OK;
    unsigned missing = (caps & SPOOL_CAP_ALL) & ~spool_principal_caps(p, channel);
    const char *what = "(none)";
    for (unsigned b = 1; b < SPOOL_CAP_ALL && missing != 0; b <<= 1)
        if (missing & b) {
            what = spool_cap_name(b);
            break;
        }
    spool_err_set(err, SPOOL_EDENIED, "%s%s%s lacks capability %s on channel \"%.100s\"",
                  p->anonymous ? "anonymous" : "key \"", p->anonymous ? "" : p->key_name,
                  p->anonymous ? "" : "\"", what, channel);
    return SPOOL_AUTH_FORBIDDEN;
}

/* ---- authenticating ---- */

int64_t spool_auth_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int internal(struct spool_err *err)
{
    spool_err_set(err, SPOOL_ENOMEM, "out of memory");
    return SPOOL_AUTH_INTERNAL;
}

static int absent(const struct spool_keyring *k, struct spool_principal *out,
                  struct spool_err *err)
{
    if (!k->anonymous) {
        spool_err_set(err, SPOOL_EDENIED, "no credentials and anonymous access is off");
        return SPOOL_AUTH_MISSING;
    }
    struct spool_principal p;
    spool_principal_init(&p);
    if (spool_principal_set_anonymous(&p) != SPOOL_AUTH_OK) return internal(err);
    principal_move(out, &p);
    return SPOOL_AUTH_OK;
}

static bool secret_equal(const char *given, size_t n, const struct spool_api_key *key)
{
    unsigned char a[SHA256_DIGEST_LENGTH], b[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)given, n, a);
    SHA256((const unsigned char *)key->secret, key->secret_len, b);
    return CRYPTO_memcmp(a, b, sizeof a) == 0;
}

int spool_auth_key(const struct spool_keyring *k, const char *key, size_t len,
                   struct spool_principal *out, struct spool_err *err)
{
    const char *colon = key ? memchr(key, ':', len) : NULL;
    if (colon == NULL || colon == key) {
        spool_err_set(err, SPOOL_EDENIED, "key credential is not name:secret");
        return SPOOL_AUTH_MALFORMED;
    }
    size_t nlen = (size_t)(colon - key);
    const struct spool_api_key *found = spool_keyring_find(k, key, nlen);
    if (found == NULL) {
        spool_err_set(err, SPOOL_EDENIED, "unknown key \"%.*s\"",
                      nlen > SPOOL_KEY_NAME_MAX ? SPOOL_KEY_NAME_MAX : (int)nlen, key);
        return SPOOL_AUTH_UNKNOWN_KEY;
    }
    if (!secret_equal(colon + 1, len - nlen - 1, found)) {
        spool_err_set(err, SPOOL_EDENIED, "wrong secret for key \"%s\"", found->name);
        return SPOOL_AUTH_BAD_SIGNATURE;
    }
    struct spool_principal p;
    spool_principal_init(&p);
    snprintf(p.key_name, sizeof p.key_name, "%s", found->name);
    if (spool_caps_copy(&p.key_caps, &found->caps, err) != 0) return internal(err);
    principal_move(out, &p);
    return SPOOL_AUTH_OK;
}

/* The capability claim: {pattern: [cap, ...] | "*"}, or that object serialised as a string. */
static int token_caps(struct spool_caps *caps, json_t *claim, struct spool_err *err)
{
    json_t *parsed = NULL;
    if (json_is_string(claim)) {
        parsed = json_loadb(json_string_value(claim), json_string_length(claim), 0, NULL);
        claim = parsed;
    }
    int rc = SPOOL_AUTH_OK;
    if (!json_is_object(claim) || json_object_size(claim) > RULES_MAX) {
        rc = SPOOL_AUTH_MALFORMED;
        spool_err_set(err, SPOOL_EDENIED, "capability claim is not an object of <= %d rules",
                      RULES_MAX);
        goto out;
    }
    const char *pattern;
    json_t *v;
    json_object_foreach(claim, pattern, v)
    {
        unsigned bits = 0;
        bool ok = true;
        if (json_is_string(v)) {
            bits = spool_cap_parse(json_string_value(v), json_string_length(v));
            ok = bits != 0;
        } else if (json_is_array(v)) { /* an empty list is valid and grants nothing */
            size_t i;
            json_t *c;
            json_array_foreach(v, i, c)
            {
                unsigned bit = json_is_string(c)
                                   ? spool_cap_parse(json_string_value(c), json_string_length(c))
                                   : 0;
                ok = ok && bit != 0;
                bits |= bit;
            }
        } else {
            ok = false;
        }
        if (!ok) {
            rc = SPOOL_AUTH_MALFORMED;
            spool_err_set(err, SPOOL_EDENIED,
                          "capability claim for \"%.64s\" is not \"*\" or a list of known "
                          "capabilities", pattern);
            goto out;
        }
        int arc = spool_caps_add(caps, pattern, strlen(pattern), bits, err);
        if (arc == SPOOL_ENOMEM) {
            rc = internal(err);
            goto out;
        }
        if (arc != 0) {
            rc = SPOOL_AUTH_MALFORMED;
            spool_err_wrap(err, "capability claim");
            if (err) err->code = SPOOL_EDENIED;
            goto out;
        }
    }
out:
    json_decref(parsed);
    return rc;
}

/* clientId (or sub), role and capability from verified claims into `p`. */
static int token_claims(struct spool_principal *p, json_t *claims, struct spool_err *err)
{
    json_t *id = json_object_get(claims, "clientId");
    if (id == NULL) id = json_object_get(claims, "sub");
    if (id != NULL) {
        if (!json_is_string(id) || json_string_length(id) > SPOOL_CLIENT_ID_MAX ||
            strlen(json_string_value(id)) != json_string_length(id)) {
            spool_err_set(err, SPOOL_EDENIED, "clientId is not a string of <= %d bytes",
                          SPOOL_CLIENT_ID_MAX);
            return SPOOL_AUTH_MALFORMED;
        }
        memcpy(p->client_id, json_string_value(id), json_string_length(id) + 1);
    }
    json_t *role = json_object_get(claims, "role");
    if (role != NULL && (!json_is_string(role) ||
                         spool_role_parse(json_string_value(role), json_string_length(role),
                                          &p->role) != 0)) {
        spool_err_set(err, SPOOL_EDENIED, "role is not one of user, agent, operator");
        return SPOOL_AUTH_MALFORMED;
    }
    json_t *cap = json_object_get(claims, "capability");
    if (cap != NULL) {
        p->has_token_caps = true;
        return token_caps(&p->token_caps, cap, err);
    }
    return SPOOL_AUTH_OK;
}

int spool_auth_token(const struct spool_keyring *k, const char *token, size_t len, int64_t now_ms,
                     struct spool_principal *out, struct spool_err *err)
{
    struct spool_jwt jwt;
    int rc = spool_jwt_decode(&jwt, token, len, err);
    if (rc != SPOOL_AUTH_OK) return rc;
    const struct spool_api_key *key = spool_keyring_find(k, jwt.kid, strlen(jwt.kid));
    if (key == NULL) {
        spool_err_set(err, SPOOL_EDENIED, "token kid \"%s\" is not a known key", jwt.kid);
        spool_jwt_close(&jwt);
        return SPOOL_AUTH_UNKNOWN_KEY;
    }
    rc = spool_jwt_verify(&jwt, key->secret, key->secret_len, now_ms, k->clock_skew_ms, err);
    struct spool_principal p;
    spool_principal_init(&p);
    if (rc == SPOOL_AUTH_OK) {
        snprintf(p.key_name, sizeof p.key_name, "%s", key->name);
        spool_jwt_date(&jwt, "exp", &p.expires_at_ms);
        rc = token_claims(&p, jwt.claims, err);
    }
    if (rc == SPOOL_AUTH_OK && spool_caps_copy(&p.key_caps, &key->caps, err) != 0)
        rc = internal(err);
    spool_jwt_close(&jwt);
    if (rc == SPOOL_AUTH_OK) principal_move(out, &p);
    spool_principal_close(&p);
    return rc;
}

static bool scheme(const char **v, const char *name)
{
    size_t n = strlen(name);
    if (strncasecmp(*v, name, n) != 0 || (*v)[n] != ' ') return false;
    *v += n;
    while (**v == ' ') (*v)++;
    return true;
}

int spool_auth_header(const struct spool_keyring *k, const char *value, int64_t now_ms,
                      struct spool_principal *out, struct spool_err *err)
{
    if (value == NULL) return absent(k, out, err);
    const char *v = value;
    size_t n = strlen(v);
    trim(&v, &n);
    if (n == 0) return absent(k, out, err);
    char copy[SPOOL_JWT_MAX_BYTES + 16];
    if (n >= sizeof copy) {
        spool_err_set(err, SPOOL_EDENIED, "Authorization header too long");
        return SPOOL_AUTH_MALFORMED;
    }
    memcpy(copy, v, n);
    copy[n] = '\0';
    v = copy;
    if (scheme(&v, "Bearer")) return spool_auth_token(k, v, strlen(v), now_ms, out, err);
    if (scheme(&v, "Basic")) {
        char raw[BASIC_MAX];
        long m = spool_base64_decode(v, strlen(v), raw, sizeof raw);
        if (m < 0) {
            spool_err_set(err, SPOOL_EDENIED, "Basic credential is not base64");
            return SPOOL_AUTH_MALFORMED;
        }
        int rc = spool_auth_key(k, raw, (size_t)m, out, err);
        OPENSSL_cleanse(raw, sizeof raw);
        return rc;
    }
    spool_err_set(err, SPOOL_EDENIED, "Authorization scheme is not Basic or Bearer");
    return SPOOL_AUTH_MALFORMED;
}

int spool_auth_credential(const struct spool_keyring *k, const char *cred, int64_t now_ms,
                          struct spool_principal *out, struct spool_err *err)
{
    if (cred == NULL || cred[0] == '\0') return absent(k, out, err);
    size_t n = strlen(cred);
    const char *d1 = strchr(cred, '.');
    bool jwt = d1 != NULL && strchr(d1 + 1, '.') != NULL && strchr(cred, ':') == NULL;
    if (jwt) return spool_auth_token(k, cred, n, now_ms, out, err);
    return spool_auth_key(k, cred, n, out, err);
}
