/*
 * Authentication and capabilities.
 *
 * Who may do what is decided by API keys. A key is `name:secret` plus a list of capability rules,
 * each a channel pattern and a set of capabilities:
 *
 *     agent:s3cr3t=chat-*:publish,subscribe,presence|admin-*:admin
 *
 * A key with no "=..." part may do everything on every channel ("*:*"). Keys come from
 * --api-keys (entries separated by ';' or newlines) and/or --api-keys-file (same syntax, one entry
 * a line is the convention, lines starting with '#' are comments). Patterns are globs where '*'
 * matches any run of characters (several stars allowed); anything else matches itself. Rules are
 * split at the LAST ':' so channel patterns may themselves hold ':' ("room:*:publish").
 *
 * A request proves a key in one of three ways:
 *   - `Authorization: Basic base64(name:secret)`;
 *   - a raw "name:secret" credential (query string, WebSocket auth message);
 *   - `Authorization: Bearer <JWT>` signed HS256 with the secret of the key its header `kid`
 *     names (see gateway/jwt.h). Its optional `capability` claim can only narrow the key's rules:
 *     the principal keeps both rule sets and an action is allowed only when both allow it, which
 *     is the exact intersection without having to intersect glob patterns symbolically.
 * Secrets are compared in constant time (as SHA-256 digests, so the length does not leak either).
 *
 * The outcome is a `struct spool_principal` the connection keeps, or an auth code (40101...) that
 * the gateway puts into the error body with spool_auth_status()/spool_auth_message().
 * With --anonymous, a request carrying no credentials at all gets the anonymous principal (every
 * capability, role user); credentials that are present but wrong are still refused.
 */
#ifndef SPOOL_GATEWAY_AUTH_H
#define SPOOL_GATEWAY_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* ---- capabilities ---- */

enum spool_cap {
    SPOOL_CAP_PUBLISH = 1u << 0,
    SPOOL_CAP_SUBSCRIBE = 1u << 1,
    SPOOL_CAP_PRESENCE = 1u << 2,
    SPOOL_CAP_HISTORY = 1u << 3,
    SPOOL_CAP_ADMIN = 1u << 4,
    SPOOL_CAP_EDIT_ANY = 1u << 5,   /* edit messages other clients published */
    SPOOL_CAP_DELETE_ANY = 1u << 6, /* delete messages other clients published */
    SPOOL_CAP_ALL = (1u << 7) - 1,  /* "*" */
};

/* "publish", "edit-any", "*", ... -> bits; 0 for an unknown name. */
unsigned spool_cap_parse(const char *name, size_t len);
/* The name of a single capability bit ("publish"), "*" for SPOOL_CAP_ALL, NULL otherwise. */
const char *spool_cap_name(unsigned cap);

enum spool_role { SPOOL_ROLE_USER = 0, SPOOL_ROLE_AGENT, SPOOL_ROLE_OPERATOR };
const char *spool_role_name(enum spool_role role);
/* "user" | "agent" | "operator"; returns -1 on anything else. */
int spool_role_parse(const char *s, size_t len, enum spool_role *out);

/* Glob match: '*' matches any run of characters (including none). NUL-terminated strings. */
bool spool_glob_match(const char *pattern, const char *name);

struct spool_cap_rule {
    char *pattern;
    unsigned caps;
};

/* An ordered list of rules; the capabilities on a channel are the union of every matching rule. */
struct spool_caps {
    struct spool_cap_rule *rules;
    size_t n;
};

void spool_caps_init(struct spool_caps *c);
void spool_caps_close(struct spool_caps *c);
int spool_caps_add(struct spool_caps *c, const char *pattern, size_t len, unsigned caps,
                   struct spool_err *err);
int spool_caps_copy(struct spool_caps *dst, const struct spool_caps *src, struct spool_err *err);
unsigned spool_caps_for(const struct spool_caps *c, const char *channel);

/* ---- keys ---- */

#define SPOOL_KEY_NAME_MAX 64    /* bytes, excluding NUL; [A-Za-z0-9._-] */
#define SPOOL_KEY_SECRET_MAX 256 /* bytes */
#define SPOOL_CLIENT_ID_MAX 128  /* bytes, excluding NUL */

struct spool_api_key {
    char name[SPOOL_KEY_NAME_MAX + 1];
    char *secret; /* NUL-terminated */
    size_t secret_len;
    struct spool_caps caps;
};

struct spool_keyring {
    struct spool_api_key *keys;
    size_t n;
    size_t cap;
    bool anonymous;        /* grant the anonymous principal to requests without credentials */
    int64_t clock_skew_ms; /* tolerance for JWT exp/nbf/iat; default 30000 */
};

void spool_keyring_init(struct spool_keyring *k);
void spool_keyring_close(struct spool_keyring *k);
/* Adds the keys in `spec`. On error nothing is added and the message names the entry (by index)
 * and what is wrong, never the secret. A name that is already loaded is an error. */
int spool_keyring_load_spec(struct spool_keyring *k, const char *spec, struct spool_err *err);
/* Same syntax from a file (at most 1 MiB); messages name path:line. */
int spool_keyring_load_file(struct spool_keyring *k, const char *path, struct spool_err *err);
/* The --api-keys / --api-keys-file / --anonymous trio in one call (spec/path may be NULL or ""). */
int spool_keyring_configure(struct spool_keyring *k, const char *spec, const char *path,
                            bool anonymous, struct spool_err *err);
const struct spool_api_key *spool_keyring_find(const struct spool_keyring *k, const char *name,
                                               size_t len);

/* ---- outcome ---- */

enum spool_auth_code {
    SPOOL_AUTH_OK = 0,
    SPOOL_AUTH_MISSING = 40101,         /* no credentials and anonymous access is off */
    SPOOL_AUTH_UNKNOWN_KEY = 40102,     /* key name / JWT kid not in the keyring */
    SPOOL_AUTH_BAD_SIGNATURE = 40103,   /* wrong secret, or JWT signature does not verify */
    SPOOL_AUTH_EXPIRED = 40104,         /* JWT exp is past (beyond the clock skew) */
    SPOOL_AUTH_MALFORMED = 40105,       /* unparseable credentials, token, header or claims */
    SPOOL_AUTH_UNSUPPORTED_ALG = 40106, /* JWT alg other than HS256 (including "none") */
    SPOOL_AUTH_NOT_YET_VALID = 40107,   /* JWT nbf (or iat) is in the future */
    SPOOL_AUTH_FORBIDDEN = 40301,       /* authenticated, but lacks the capability */
    SPOOL_AUTH_INTERNAL = 50001,        /* out of memory while authenticating */
};

/* 401, 403, 500, or 200 for SPOOL_AUTH_OK. */
int spool_auth_status(int code);
/* A short fixed message for the error body ("token expired"); never includes request data. */
const char *spool_auth_message(int code);

struct spool_principal {
    char key_name[SPOOL_KEY_NAME_MAX + 1]; /* "" when anonymous */
    char client_id[SPOOL_CLIENT_ID_MAX + 1]; /* from the JWT clientId/sub; "" = not set */
    enum spool_role role;
    int64_t expires_at_ms;  /* JWT exp in unix ms; 0 for API keys and anonymous */
    bool anonymous;
    struct spool_caps key_caps;   /* copy of the key's rules (anonymous: "*" -> all) */
    struct spool_caps token_caps; /* the JWT capability claim, when has_token_caps */
    bool has_token_caps;
};

void spool_principal_init(struct spool_principal *p);
void spool_principal_close(struct spool_principal *p);
/* Closes whatever `p` held and makes it the anonymous principal. Returns an auth code. */
int spool_principal_set_anonymous(struct spool_principal *p);
/* The capabilities `p` has on `channel` (key rules AND token rules). */
unsigned spool_principal_caps(const struct spool_principal *p, const char *channel);
/* True when every bit of `caps` is allowed on `channel`. */
bool spool_principal_can(const struct spool_principal *p, const char *channel, unsigned caps);
/* SPOOL_AUTH_OK or SPOOL_AUTH_FORBIDDEN with a message naming the channel and capability. */
int spool_principal_check(const struct spool_principal *p, const char *channel, unsigned caps,
                          struct spool_err *err);

/* ---- authenticating a request ----
 * Each returns an auth code (SPOOL_AUTH_OK on success) and, on failure, fills `err` with
 * SPOOL_EDENIED (or SPOOL_ENOMEM) and a message fit for logs. `out` must be initialised; it is
 * replaced only on success. `now_ms` is unix time in ms (spool_auth_now_ms()). */

int64_t spool_auth_now_ms(void);
/* An Authorization header value (NULL or "" = absent): "Basic ...", "Bearer ...". */
int spool_auth_header(const struct spool_keyring *k, const char *value, int64_t now_ms,
                      struct spool_principal *out, struct spool_err *err);
/* A raw "name:secret". */
int spool_auth_key(const struct spool_keyring *k, const char *key, size_t len,
                   struct spool_principal *out, struct spool_err *err);
/* A raw JWT (compact serialisation). */
int spool_auth_token(const struct spool_keyring *k, const char *token, size_t len, int64_t now_ms,
                     struct spool_principal *out, struct spool_err *err);
/* A credential of either raw form (query ?key= / ?token=, WebSocket auth message): a JWT when it
 * has two '.' and no ':', a key otherwise. NULL or "" is absent (anonymous or 40101). */
int spool_auth_credential(const struct spool_keyring *k, const char *cred, int64_t now_ms,
                          struct spool_principal *out, struct spool_err *err);

#endif
