/* JWT decode/verify/sign and the base64 codecs (gateway/jwt.h). Tokens with hostile headers are
 * built by hand here (make_token) so the verifier is tested on inputs the signer never makes. */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/jwt.h"

#define NOW_MS 1800000000000LL /* 2027-01-15 */
#define SKEW 30000

/* base64url(header) "." base64url(claims) "." base64url(HMAC-SHA256 or -SHA512). */
static char *make_token(const char *header, const char *claims, const char *secret, bool sha512)
{
    size_t size = strlen(header) * 2 + strlen(claims) * 2 + 200;
    char *t = malloc(size);
    size_t o = spool_base64url_encode(header, strlen(header), t, size);
    t[o++] = '.';
    o += spool_base64url_encode(claims, strlen(claims), t + o, size - o);
    unsigned char mac[64];
    unsigned int mlen = 0;
    HMAC(sha512 ? EVP_sha512() : EVP_sha256(), secret, (int)strlen(secret),
         (unsigned char *)t, o, mac, &mlen);
    t[o++] = '.';
    spool_base64url_encode(mac, mlen, t + o, size - o);
    return t;
}

static int check(const char *token, const char *secret, int64_t now_ms, struct spool_err *err)
{
    struct spool_jwt jwt;
    int rc = spool_jwt_decode(&jwt, token, strlen(token), err);
    if (rc != SPOOL_AUTH_OK) return rc;
    rc = spool_jwt_verify(&jwt, secret, strlen(secret), now_ms, SKEW, err);
    spool_jwt_close(&jwt);
    return rc;
}

#define HDR "{\"alg\":\"HS256\",\"kid\":\"k\"}"

Test(base64, rfc4648_vectors_both_alphabets)
{
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *std[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    const char *url[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char buf[32], back[32];
        cr_expect_eq(spool_base64_encode(in[i], strlen(in[i]), buf, sizeof buf), strlen(std[i]));
        cr_expect_str_eq(buf, std[i]);
        cr_expect_eq(spool_base64url_encode(in[i], strlen(in[i]), buf, sizeof buf), strlen(url[i]));
        cr_expect_str_eq(buf, url[i]);
        cr_expect_eq(spool_base64_decode(std[i], strlen(std[i]), back, sizeof back),
                     (long)strlen(in[i]));
        cr_expect_eq(memcmp(back, in[i], strlen(in[i])), 0);
        cr_expect_eq(spool_base64url_decode(url[i], strlen(url[i]), back, sizeof back),
                     (long)strlen(in[i]));
        cr_expect_eq(memcmp(back, in[i], strlen(in[i])), 0);
    }
    unsigned char bin[] = {0xfb, 0xff, 0xfe};
    char buf[8];
    spool_base64url_encode(bin, 3, buf, sizeof buf);
    cr_expect_str_eq(buf, "-__-");
    spool_base64_encode(bin, 3, buf, sizeof buf);
    cr_expect_str_eq(buf, "+//+");
}

Test(base64, rejects_bad_input_and_small_buffers)
{
    char out[16];
    cr_expect_eq(spool_base64url_decode("Zg==", 4, out, sizeof out), -1, "url takes no padding");
    cr_expect_eq(spool_base64url_decode("Z", 1, out, sizeof out), -1, "1 mod 4 is impossible");
    cr_expect_eq(spool_base64url_decode("Zh", 2, out, sizeof out), -1, "non-zero trailing bits");
    cr_expect_eq(spool_base64url_decode("Zm+v", 4, out, sizeof out), -1, "std char in url");
    cr_expect_eq(spool_base64_decode("Zm9", 3, out, sizeof out), -1, "std needs padding");
    cr_expect_eq(spool_base64_decode("Zm9vYmFy", 8, out, 5), -1, "output too small");
    cr_expect_eq(spool_base64_encode("foobar", 6, out, 8), 0, "encode needs room for NUL");
    cr_expect_eq(out[0], '\0');
}

Test(jwt, verifies_a_token_made_by_another_implementation)
{
    /* Produced with Python's hmac/base64 modules, secret "s3cr3t". */
    const char *tok =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImFnZW50In0."
        "eyJleHAiOjIwMDAwMDAwMDAsImNsaWVudElkIjoiYm9iIiwicm9sZSI6ImFnZW50IiwiY2FwYWJpbGl0eSI6eyJj"
        "aGF0LTEiOlsicHVibGlzaCJdfX0.FMDP63z9E6LM0yl-W24fRZ0p_5OV9TopXH44af2V6sM";
    struct spool_jwt jwt;
    struct spool_err err;
    cr_assert_eq(spool_jwt_decode(&jwt, tok, strlen(tok), &err), SPOOL_AUTH_OK, "%s", err.msg);
    cr_expect_str_eq(jwt.kid, "agent");
    cr_expect_eq(spool_jwt_verify(&jwt, "s3cr3t", 6, NOW_MS, SKEW, &err), SPOOL_AUTH_OK, "%s",
                 err.msg);
    cr_expect_eq(spool_jwt_verify(&jwt, "s3cr3T", 6, NOW_MS, SKEW, &err),
                 SPOOL_AUTH_BAD_SIGNATURE);
    int64_t exp;
    cr_expect_eq(spool_jwt_date(&jwt, "exp", &exp), 1);
    cr_expect_eq(exp, 2000000000000LL);
    cr_expect_eq(spool_jwt_date(&jwt, "nbf", &exp), 0);
    spool_jwt_close(&jwt);
}

Test(jwt, sign_then_verify_round_trip)
{
    json_t *claims = json_pack("{s:I, s:s}", "exp", (json_int_t)(NOW_MS / 1000 + 60), "sub", "x");
    char *tok = NULL;
    struct spool_err err;
    cr_assert_eq(spool_jwt_sign("k", "secret", 6, claims, &tok, &err), 0, "%s", err.msg);
    cr_expect_eq(check(tok, "secret", NOW_MS, &err), SPOOL_AUTH_OK, "%s", err.msg);
    cr_expect_eq(check(tok, "other", NOW_MS, &err), SPOOL_AUTH_BAD_SIGNATURE);
    cr_expect_null(strchr(tok, '='));
    free(tok);
    cr_expect_eq(spool_jwt_sign("", "secret", 6, claims, &tok, &err), SPOOL_EINVAL);
    cr_expect_null(tok);
    json_decref(claims);
}

Test(jwt, tampered_signature_and_claims_fail)
{
    char *tok = make_token(HDR, "{\"exp\":1900000000,\"role\":\"user\"}", "k1", false);
    struct spool_err err;
    cr_assert_eq(check(tok, "k1", NOW_MS, &err), SPOOL_AUTH_OK, "%s", err.msg);
    char *last = tok + strlen(tok) - 2; /* not the final char: its low bits may be padding */
    *last = *last == 'A' ? 'B' : 'A';
    cr_expect_eq(check(tok, "k1", NOW_MS, &err), SPOOL_AUTH_BAD_SIGNATURE);
    free(tok);
    /* Same signature, claims swapped for operator: signature no longer covers them. */
    char *a = make_token(HDR, "{\"exp\":1900000000,\"role\":\"user\"}", "k1", false);
    char *b = make_token(HDR, "{\"exp\":1900000000,\"role\":\"operator\"}", "k1", false);
    char *sig_a = strrchr(a, '.');
    char *sig_b = strrchr(b, '.');
    cr_assert_eq(strlen(sig_a), strlen(sig_b));
    memcpy(sig_b, sig_a, strlen(sig_a));
    cr_expect_eq(check(b, "k1", NOW_MS, &err), SPOOL_AUTH_BAD_SIGNATURE);
    free(a);
    free(b);
}

Test(jwt, time_claims_with_skew)
{
    struct spool_err err;
    char *tok = make_token(HDR, "{\"exp\":1800000000}", "s", false); /* exp == NOW */
    cr_expect_eq(check(tok, "s", NOW_MS - 1, &err), SPOOL_AUTH_OK);
    cr_expect_eq(check(tok, "s", NOW_MS + SKEW - 1, &err), SPOOL_AUTH_OK, "within skew");
    cr_expect_eq(check(tok, "s", NOW_MS + SKEW, &err), SPOOL_AUTH_EXPIRED);
    cr_expect(strstr(err.msg, "expired") != NULL, "%s", err.msg);
    free(tok);
    tok = make_token(HDR, "{\"exp\":1900000000,\"nbf\":1800000100}", "s", false);
    cr_expect_eq(check(tok, "s", NOW_MS, &err), SPOOL_AUTH_NOT_YET_VALID);
    cr_expect_eq(check(tok, "s", NOW_MS + 100000 - SKEW, &err), SPOOL_AUTH_OK);
    free(tok);
    tok = make_token(HDR, "{\"exp\":1900000000,\"iat\":1800000100}", "s", false);
    cr_expect_eq(check(tok, "s", NOW_MS, &err), SPOOL_AUTH_NOT_YET_VALID);
    free(tok);
    tok = make_token(HDR, "{\"exp\":1800000000.5}", "s", false);
    cr_expect_eq(check(tok, "s", NOW_MS + SKEW + 499, &err), SPOOL_AUTH_OK, "fractional exp");
    free(tok);
}

Test(jwt, exp_is_required_and_dates_must_be_numbers)
{
    struct spool_err err;
    const char *bad[] = {"{}", "{\"exp\":\"1900000000\"}", "{\"exp\":1e300}",
                         "{\"exp\":1900000000,\"nbf\":null}", "{\"exp\":1900000000,\"iat\":[]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *tok = make_token(HDR, bad[i], "s", false);
        cr_expect_eq(check(tok, "s", NOW_MS, &err), SPOOL_AUTH_MALFORMED, "%s", bad[i]);
        free(tok);
    }
}

Test(jwt, only_hs256_is_accepted)
{
    struct spool_err err;
    const char *claims = "{\"exp\":1900000000}";
    char *tok = make_token("{\"alg\":\"HS512\",\"kid\":\"k\"}", claims, "s", true);
    cr_expect_eq(check(tok, "s", NOW_MS, &err), SPOOL_AUTH_UNSUPPORTED_ALG);
    free(tok);
    tok = make_token("{\"alg\":\"hs256\",\"kid\":\"k\"}", claims, "s", false);
    cr_expect_eq(check(tok, "s", NOW_MS, &err), SPOOL_AUTH_UNSUPPORTED_ALG);
    free(tok);
    tok = make_token("{\"alg\":\"RS256\",\"kid\":\"k\"}", claims, "s", false);
    cr_expect_eq(check(tok, "s", NOW_MS, &err), SPOOL_AUTH_UNSUPPORTED_ALG);
    free(tok);
    /* alg none: unsigned token, with the signature part empty or present. */
    char none[512];
    char h[128], c[128];
    const char *hnone = "{\"alg\":\"none\",\"kid\":\"k\"}";
    spool_base64url_encode(hnone, strlen(hnone), h, sizeof h);
    spool_base64url_encode(claims, strlen(claims), c, sizeof c);
    snprintf(none, sizeof none, "%s.%s.", h, c);
    cr_expect_eq(check(none, "s", NOW_MS, &err), SPOOL_AUTH_MALFORMED, "empty signature part");
    snprintf(none, sizeof none, "%s.%s.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", h, c);
    cr_expect_eq(check(none, "s", NOW_MS, &err), SPOOL_AUTH_UNSUPPORTED_ALG);
    tok = make_token("{\"kid\":\"k\"}", claims, "s", false);
    cr_expect_eq(check(tok, "s", NOW_MS, &err), SPOOL_AUTH_MALFORMED, "no alg");
    free(tok);
}

Test(jwt, kid_is_required)
{
    struct spool_err err;
    const char *hdrs[] = {"{\"alg\":\"HS256\"}", "{\"alg\":\"HS256\",\"kid\":\"\"}",
                          "{\"alg\":\"HS256\",\"kid\":7}"};
    for (size_t i = 0; i < 3; i++) {
        char *tok = make_token(hdrs[i], "{\"exp\":1900000000}", "s", false);
        cr_expect_eq(check(tok, "s", NOW_MS, &err), SPOOL_AUTH_MALFORMED, "%s", hdrs[i]);
        cr_expect(strstr(err.msg, "kid") != NULL, "%s", err.msg);
        free(tok);
    }
}

Test(jwt, garbage_is_malformed_not_a_crash)
{
    struct spool_err err;
    const char *bad[] = {"",          ".",        "..",     "a.b",       "a.b.c.d",
                         "!!!.e30.AA", "e30.e30.", "e30..AA", "W10.e30.AAAA", "e30.W10.AAAA",
                         "bm90IGpzb24.e30.AAAA", "eyJhbGciOiJIUzI1NiIsImtpZCI6ImsifQ.e30.AAAA"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect_eq(check(bad[i], "s", NOW_MS, &err), SPOOL_AUTH_MALFORMED, "%s", bad[i]);
    const char *hdrs[] = {"{\"alg\":\"HS256\",\"kid\":\"k\",\"crit\":[\"exp\"]}",
                          "{\"alg\":\"HS256\",\"kid\":\"k\",\"kid\":\"k\"}"};
    for (size_t i = 0; i < 2; i++) {
        char *tok = make_token(hdrs[i], "{\"exp\":1900000000}", "s", false);
        cr_expect_eq(check(tok, "s", NOW_MS, &err), SPOOL_AUTH_MALFORMED, "%s", hdrs[i]);
        free(tok);
    }
    char *dup = make_token(HDR, "{\"exp\":1,\"exp\":1900000000}", "s", false);
    cr_expect_eq(check(dup, "s", NOW_MS, &err), SPOOL_AUTH_MALFORMED, "duplicate claim");
    free(dup);
    char *huge = malloc(SPOOL_JWT_MAX_BYTES + 2);
    memset(huge, 'A', SPOOL_JWT_MAX_BYTES + 1);
    huge[SPOOL_JWT_MAX_BYTES + 1] = '\0';
    huge[10] = '.';
    huge[20] = '.';
    cr_expect_eq(check(huge, "s", NOW_MS, &err), SPOOL_AUTH_MALFORMED);
    free(huge);
}
