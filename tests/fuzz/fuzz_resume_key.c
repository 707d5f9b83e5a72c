/*
 * Fuzzes resume key verification and parsing (gateway/resume.h). The first input byte picks the
 * mode: even = the rest is a key as a client would send it (must be refused or parsed, never
 * crash); odd = the rest is a payload that this harness signs with the secret first, so the
 * fuzzer reaches the JSON parsing behind the signature check. A key that parses must encode
 * back into a key that decodes to the same state.
 */
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/jwt.h"
#include "gateway/resume.h"

static const uint8_t secret[SPOOL_RESUME_SECRET_BYTES] = "fuzz-secret-fuzz-secret-fuzz-se";

static char *sign(const uint8_t *payload, size_t n, size_t *len)
{
    uint8_t mac[32];
    unsigned int mlen = sizeof mac;
    HMAC(EVP_sha256(), secret, sizeof secret, payload, n, mac, &mlen);
    size_t a = spool_base64url_encoded_size(n), b = spool_base64url_encoded_size(sizeof mac);
    char *key = malloc(a + b + 1);
    if (key == NULL)
        return NULL;
    size_t k = spool_base64url_encode(payload, n, key, a);
    key[k++] = '.';
    k += spool_base64url_encode(mac, sizeof mac, key + k, b);
    *len = k;
    return key;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 8192)
        return 0;
    size_t len = 0;
    char *key;
    if (data[0] & 1) {
        key = sign(data + 1, size - 1, &len);
    } else {
        len = size - 1;
        key = malloc(len + 1);
        if (key != NULL) {
            memcpy(key, data + 1, len);
            key[len] = '\0';
        }
    }
    if (key == NULL)
        return 0;
    struct spool_resume_state s, t;
    spool_resume_state_init(&s);
    spool_resume_state_init(&t);
    struct spool_err err;
    int rv = spool_resume_decode(secret, key, len, 0, &s, &err);
    if (rv == 0 || rv == SPOOL_ETIMEOUT) {
        size_t elen;
        char *again = spool_resume_encode(secret, &s, &elen);
        if (again != NULL) {
            int rv2 = spool_resume_decode(secret, again, elen, 0, &t, &err);
            if ((rv2 != 0 && rv2 != SPOOL_ETIMEOUT) || t.n != s.n ||
                strcmp(t.connection_id, s.connection_id) != 0 || t.expires_ms != s.expires_ms)
                abort();
            for (size_t i = 0; i < s.n; i++)
                if (strcmp(t.atts[i].channel, s.atts[i].channel) != 0 ||
                    t.atts[i].serial != s.atts[i].serial)
                    abort();
            free(again);
        }
    }
    spool_resume_state_close(&s);
    spool_resume_state_close(&t);
    free(key);
    return 0;
}
