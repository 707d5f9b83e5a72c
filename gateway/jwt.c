/*
 * HS256 JWTs and the base64 codecs they (and Basic auth) need.
 *
 * Parsing is strict on purpose: a token is exactly three non-empty base64url segments with no
 * padding and no stray bytes, the header must be a JSON object whose "alg" is exactly "HS256"
 * and whose "kid" is a non-empty string. Being strict costs legitimate issuers nothing (every
 * library emits this form) and leaves fewer shapes for a forged token to hide in. Sizes are capped
 * (SPOOL_JWT_MAX_BYTES) before anything is decoded, so the work per token is bounded.
 *
 * The signature is compared with CRYPTO_memcmp so the time taken does not depend on how many
 * leading bytes of a forged signature are right. Time claims are checked only after the
 * signature: until then the claims are attacker-controlled text and are not acted upon.
 *
 * Dates are JSON numbers of unix seconds; we work in milliseconds (the rest of Spool does) and
 * refuse values outside +-2^43 s (beyond year 280000) so the conversion cannot overflow.
 */
#include "gateway/jwt.h"

#include <limits.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

/* ---- base64 ---- */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t encoded_size(size_t n, bool pad)
{
    size_t full = n / 3 * 4;
    size_t rem = n % 3;
    return full + (rem == 0 ? 0 : pad ? 4 : rem + 1) + 1;
}

static size_t encode(const char *alphabet, bool pad, const void *in, size_t n, char *out,
                     size_t size)
{
    if (size < encoded_size(n, pad)) {
        if (size > 0) out[0] = '\0';
        return 0;
    }
    const unsigned char *p = in;
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
        out[o++] = alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        if (pad) out[o++] = '=', out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = alphabet[v >> 18 & 63];
        out[o++] = alphabet[v >> 12 & 63];
        out[o++] = alphabet[v >> 6 & 63];
        if (pad) out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int b64_value(char c, bool url)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == (url ? '-' : '+')) return 62;
    if (c == (url ? '_' : '/')) return 63;
    return -1;
}

/* `in` has no padding here; a length of 1 mod 4 cannot come from any input. Trailing bits that
 * do not fit a byte must be zero, so every byte string has exactly one accepted encoding. */
static long decode(bool url, const char *in, size_t n, void *out, size_t size)
{
    if (n % 4 == 1) return -1;
    size_t need = n / 4 * 3 + (n % 4 == 0 ? 0 : n % 4 - 1);
    if (need > size || need > (size_t)LONG_MAX) return -1;
    unsigned char *p = out;
    size_t o = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(in[i], url);
        if (v < 0) return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            p[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0) return -1;
    return (long)o;
}

size_t spool_base64url_encoded_size(size_t n) { return encoded_size(n, false); }
size_t spool_base64_encoded_size(size_t n) { return encoded_size(n, true); }

size_t spool_base64url_encode(const void *in, size_t n, char *out, size_t size)
{
    return encode(b64_url, false, in, n, out, size);
}

size_t spool_base64_encode(const void *in, size_t n, char *out, size_t size)
{
    return encode(b64_std, true, in, n, out, size);
}

long spool_base64url_decode(const char *in, size_t n, void *out, size_t size)
{
    return decode(true, in, n, out, size);
}

long spool_base64_decode(const char *in, size_t n, void *out, size_t size)
{
    if (n % 4 != 0) return -1;
    size_t pad = 0;
    if (n >= 1 && in[n - 1] == '=') pad++;
    if (n >= 2 && in[n - 2] == '=') pad++;
    return decode(false, in, n - pad, out, size);
}

/* ---- tokens ---- */

static int hs256(const void *secret, size_t secret_len, const char *data, size_t len,
                 unsigned char mac[32])
{
    unsigned int mac_len = 0;
    if (secret_len > (size_t)INT32_MAX) return -1;
    if (HMAC(EVP_sha256(), secret, (int)secret_len, (const unsigned char *)data, len, mac,
             &mac_len) == NULL ||
        mac_len != 32)
        return -1;
    return 0;
}

/* Decodes one base64url segment holding a JSON object. */
static int segment_json(const char *s, size_t n, const char *what, json_t **out,
                        struct spool_err *err)
{
    unsigned char buf[SPOOL_JWT_MAX_BYTES];
    long m = spool_base64url_decode(s, n, buf, sizeof buf);
    if (m < 0) {
        spool_err_set(err, SPOOL_EDENIED, "token %s is not base64url", what);
        return SPOOL_AUTH_MALFORMED;
    }
    json_error_t jerr;
    json_t *j = json_loadb((const char *)buf, (size_t)m, JSON_REJECT_DUPLICATES, &jerr);
    if (j == NULL || !json_is_object(j)) {
        json_decref(j);
        spool_err_set(err, SPOOL_EDENIED, "token %s is not a JSON object", what);
        return SPOOL_AUTH_MALFORMED;
    }
    *out = j;
    return SPOOL_AUTH_OK;
}

int spool_jwt_decode(struct spool_jwt *jwt, const char *token, size_t len, struct spool_err *err)
{
    memset(jwt, 0, sizeof *jwt);
    if (token == NULL || len == 0 || len > SPOOL_JWT_MAX_BYTES) {
        spool_err_set(err, SPOOL_EDENIED, "token is empty or longer than %d bytes",
                      SPOOL_JWT_MAX_BYTES);
        return SPOOL_AUTH_MALFORMED;
    }
    const char *dot1 = memchr(token, '.', len);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token)) : NULL;
    if (dot2 == NULL || memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token)) != NULL) {
        spool_err_set(err, SPOOL_EDENIED, "token does not have three parts");
        return SPOOL_AUTH_MALFORMED;
    }
    size_t hlen = (size_t)(dot1 - token);
    size_t clen = (size_t)(dot2 - dot1 - 1);
    size_t slen = len - (size_t)(dot2 + 1 - token);
    if (hlen == 0 || clen == 0 || slen == 0) {
        spool_err_set(err, SPOOL_EDENIED, "token has an empty part");
        return SPOOL_AUTH_MALFORMED;
    }

    int rc = segment_json(token, hlen, "header", &jwt->header, err);
    if (rc != SPOOL_AUTH_OK) goto fail;
    json_t *alg = json_object_get(jwt->header, "alg");
    if (!json_is_string(alg)) {
        spool_err_set(err, SPOOL_EDENIED, "token header has no alg");
        rc = SPOOL_AUTH_MALFORMED;
        goto fail;
    }
    if (strcmp(json_string_value(alg), "HS256") != 0 || json_string_length(alg) != 5) {
        spool_err_set(err, SPOOL_EDENIED, "token alg is not HS256");
        rc = SPOOL_AUTH_UNSUPPORTED_ALG;
        goto fail;
    }
    /* RFC 7515 4.1.11: a "crit" extension we do not implement must not be ignored. */
    if (json_object_get(jwt->header, "crit") != NULL) {
        spool_err_set(err, SPOOL_EDENIED, "token header has crit extensions (unsupported)");
        rc = SPOOL_AUTH_MALFORMED;
        goto fail;
    }
    json_t *kid = json_object_get(jwt->header, "kid");
    if (!json_is_string(kid) || json_string_length(kid) == 0 ||
        json_string_length(kid) > SPOOL_KEY_NAME_MAX ||
        strlen(json_string_value(kid)) != json_string_length(kid)) {
        spool_err_set(err, SPOOL_EDENIED, "token header has no usable kid");
        rc = SPOOL_AUTH_MALFORMED;
        goto fail;
    }
    jwt->kid = json_string_value(kid);

    rc = segment_json(dot1 + 1, clen, "claims", &jwt->claims, err);
    if (rc != SPOOL_AUTH_OK) goto fail;

    if (spool_base64url_decode(dot2 + 1, slen, jwt->sig, sizeof jwt->sig) != 32) {
        spool_err_set(err, SPOOL_EDENIED, "token signature is not 32 base64url bytes");
        rc = SPOOL_AUTH_MALFORMED;
        goto fail;
    }
    jwt->signed_part = token;
    jwt->signed_len = (size_t)(dot2 - token);
    return SPOOL_AUTH_OK;

fail:
    spool_jwt_close(jwt);
    return rc;
}

void spool_jwt_close(struct spool_jwt *jwt)
{
    json_decref(jwt->header);
    json_decref(jwt->claims);
    memset(jwt, 0, sizeof *jwt);
}

#define DATE_LIMIT_S 8796093022208.0 /* 2^43 */

int spool_jwt_date(const struct spool_jwt *jwt, const char *name, int64_t *ms)
{
    json_t *v = json_object_get(jwt->claims, name);
    if (v == NULL) return 0;
    if (!json_is_number(v)) return -1;
    double s = json_number_value(v);
    if (!isfinite(s) || s < -DATE_LIMIT_S || s > DATE_LIMIT_S) return -1;
    /* floor() without libm, which the gateway library does not link */
    double x = s * 1000.0;
    int64_t whole = (int64_t)x;
    *ms = (double)whole > x ? whole - 1 : whole;
    return 1;
}

int spool_jwt_verify(const struct spool_jwt *jwt, const void *secret, size_t secret_len,
                     int64_t now_ms, int64_t skew_ms, struct spool_err *err)
{
    unsigned char mac[32];
    if (hs256(secret, secret_len, jwt->signed_part, jwt->signed_len, mac) != 0) {
        spool_err_set(err, SPOOL_EDENIED, "HMAC failed");
        return SPOOL_AUTH_INTERNAL;
    }
    if (CRYPTO_memcmp(mac, jwt->sig, sizeof mac) != 0) {
        spool_err_set(err, SPOOL_EDENIED, "token signature does not verify with key \"%s\"",
                      jwt->kid);
        return SPOOL_AUTH_BAD_SIGNATURE;
    }
    if (skew_ms < 0) skew_ms = 0;
    int64_t exp = 0, nbf = 0, iat = 0;
    int has_exp = spool_jwt_date(jwt, "exp", &exp);
    int has_nbf = spool_jwt_date(jwt, "nbf", &nbf);
    int has_iat = spool_jwt_date(jwt, "iat", &iat);
    if (has_exp <= 0 || has_nbf < 0 || has_iat < 0) {
        spool_err_set(err, SPOOL_EDENIED, has_exp == 0 ? "token has no exp claim"
                                                       : "token exp/nbf/iat is not a number");
        return SPOOL_AUTH_MALFORMED;
    }
    if (now_ms - skew_ms >= exp) {
        spool_err_set(err, SPOOL_EDENIED, "token expired %lld ms ago",
                      (long long)(now_ms - exp));
        return SPOOL_AUTH_EXPIRED;
    }
    if ((has_nbf && now_ms + skew_ms < nbf) || (has_iat && now_ms + skew_ms < iat)) {
        spool_err_set(err, SPOOL_EDENIED, "token is not valid yet (nbf or iat in the future)");
        return SPOOL_AUTH_NOT_YET_VALID;
    }
    return SPOOL_AUTH_OK;
}

int spool_jwt_sign(const char *kid, const void *secret, size_t secret_len, const json_t *claims,
                   char **out, struct spool_err *err)
{
    *out = NULL;
    if (kid == NULL || kid[0] == '\0' || !json_is_object(claims))
        return spool_err_set(err, SPOOL_EINVAL, "jwt sign: needs a kid and a claims object");
    json_t *header = json_pack("{s:s, s:s, s:s}", "alg", "HS256", "typ", "JWT", "kid", kid);
    char *htext = header ? json_dumps(header, JSON_COMPACT) : NULL;
    char *ctext = json_dumps(claims, JSON_COMPACT);
    json_decref(header);
    size_t hn = htext ? strlen(htext) : 0, cn = ctext ? strlen(ctext) : 0;
    size_t size = spool_base64url_encoded_size(hn) + spool_base64url_encoded_size(cn) +
                  spool_base64url_encoded_size(32);
    char *tok = htext && ctext ? malloc(size) : NULL;
    size_t o = 0;
    unsigned char mac[32];
    int rc = 0;
    if (tok == NULL) {
        rc = spool_err_set(err, SPOOL_ENOMEM, "jwt sign: out of memory");
        goto out;
    }
    /* Each encoded_size counts a NUL; the first two NULs become the dots. */
    o = spool_base64url_encode(htext, hn, tok, size);
    tok[o++] = '.';
    o += spool_base64url_encode(ctext, cn, tok + o, size - o);
    if (hs256(secret, secret_len, tok, o, mac) != 0) {
        rc = spool_err_set(err, SPOOL_EINVAL, "jwt sign: HMAC failed");
        free(tok);
        goto out;
    }
    tok[o++] = '.';
    spool_base64url_encode(mac, sizeof mac, tok + o, size - o);
    *out = tok;
out:
    free(htext);
    free(ctext);
    return rc;
}
