/*
 * JSON Web Tokens, the narrow subset Spool accepts: compact serialisation, HS256 only.
 *
 * A token is base64url(header) "." base64url(claims) "." base64url(HMAC-SHA256(secret, first two
 * parts)), base64url without '=' padding. Verification is split so the keyring stays out of this
 * file: spool_jwt_decode() parses the structure and checks what needs no secret (alg is HS256 —
 * "none" and every other alg are refused explicitly, since accepting the header's word for the
 * algorithm is the classic JWT hole; `kid` present; no "crit" extensions), the caller looks the
 * kid up, then spool_jwt_verify() checks the signature in constant time and then the time claims.
 * Claims are interpreted only after the signature verified, so an unauthenticated sender learns
 * nothing about them.
 *
 * Claims: exp (required, unix seconds), nbf and iat (optional; a token issued or valid only in
 * the future is refused), clientId or sub (client id), role (user|agent|operator),
 * capability ({pattern: ["publish", ...] or "*"}, or the same object as a JSON string).
 * Numeric dates may be fractional. Every check tolerates `skew_ms` of clock difference.
 *
 * The base64 helpers live here too because Basic auth needs the standard alphabet.
 */
#ifndef SPOOL_GATEWAY_JWT_H
#define SPOOL_GATEWAY_JWT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "gateway/auth.h"

#define SPOOL_JWT_MAX_BYTES 8192 /* longer tokens are malformed */

struct spool_jwt {
    json_t *header;
    json_t *claims;
    const char *kid;      /* points into header */
    const char *signed_part; /* the token's "header.claims" bytes (borrowed from the input) */
    size_t signed_len;
    unsigned char sig[32];
};

/* Parses `token` into `jwt` (which needs no init). Returns an auth code: SPOOL_AUTH_MALFORMED
 * (structure, base64, JSON, missing kid), SPOOL_AUTH_UNSUPPORTED_ALG, SPOOL_AUTH_INTERNAL.
 * On success the caller must spool_jwt_close(); on failure nothing is held. The token bytes
 * must outlive `jwt`. */
int spool_jwt_decode(struct spool_jwt *jwt, const char *token, size_t len, struct spool_err *err);
/* Signature (SPOOL_AUTH_BAD_SIGNATURE), then exp/nbf/iat (SPOOL_AUTH_EXPIRED,
 * SPOOL_AUTH_NOT_YET_VALID, SPOOL_AUTH_MALFORMED when exp is missing or a date not a number). */
int spool_jwt_verify(const struct spool_jwt *jwt, const void *secret, size_t secret_len,
                     int64_t now_ms, int64_t skew_ms, struct spool_err *err);
void spool_jwt_close(struct spool_jwt *jwt);
/* A numeric date claim ("exp", "nbf", "iat") in unix ms: 1 if present, 0 if absent, -1 if it is
 * not a number within +-2^43 s. */
int spool_jwt_date(const struct spool_jwt *jwt, const char *name, int64_t *ms);

/* Signs `claims` (a JSON object, not modified) with header {"alg":"HS256","typ":"JWT","kid":kid}.
 * Returns 0 with a malloc'd NUL-terminated token in *out, or SPOOL_EINVAL / SPOOL_ENOMEM. */
int spool_jwt_sign(const char *kid, const void *secret, size_t secret_len, const json_t *claims,
                   char **out, struct spool_err *err);

/* Base64. Encoders write NUL-terminated text and return its length, or 0 (with out[0]=0) if
 * `size` is too small; spool_base64*_encoded_size() gives the size needed including the NUL.
 * Decoders return the decoded length or -1 on a bad character, bad length or too small `size`.
 * The url variant neither writes nor accepts '='; the standard one writes and requires it. */
size_t spool_base64url_encoded_size(size_t n);
size_t spool_base64url_encode(const void *in, size_t n, char *out, size_t size);
long spool_base64url_decode(const char *in, size_t n, void *out, size_t size);
size_t spool_base64_encoded_size(size_t n);
size_t spool_base64_encode(const void *in, size_t n, char *out, size_t size);
long spool_base64_decode(const char *in, size_t n, void *out, size_t size);

#endif
