/*
 * Fuzzes request authentication. The first byte picks what the rest is:
 *   0: a raw token given to the verifier (spool_auth_token: structure, base64, JSON, alg, kid);
 *   1: an Authorization header value (Basic and Bearer parsing);
 *   2: a claims document that is signed with the known key first, so the fuzzer reaches claim
 *      interpretation (dates, clientId, role, capability) which a forged signature never does.
 * Every path must return an auth code without crashing, leaking or reading out of bounds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/auth.h"
#include "gateway/jwt.h"

#define NOW_MS 1800000000000LL

static struct spool_keyring ring;
static int ready;

static void setup(void)
{
    if (ready) return;
    spool_keyring_init(&ring);
    if (spool_keyring_load_spec(&ring, "k:secret=chat-*:publish,subscribe|*:presence", NULL) != 0)
        abort(); /* the fixture itself is wrong: not a finding */
    ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 16384) return 0;
    setup();
    int mode = data[0] % 3;
    char *text = malloc(size); /* the rest, NUL-terminated */
    if (text == NULL) return 0;
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    struct spool_principal p;
    spool_principal_init(&p);
    struct spool_err err;
    if (mode == 0) {
        spool_auth_token(&ring, text, size - 1, NOW_MS, &p, &err);
    } else if (mode == 1) {
        spool_auth_header(&ring, text, NOW_MS, &p, &err);
    } else {
        json_t *claims = json_loadb(text, size - 1, 0, NULL);
        char *tok = NULL;
        if (claims != NULL && json_is_object(claims) &&
            spool_jwt_sign("k", "secret", 6, claims, &tok, &err) == 0) {
            int rc = spool_auth_token(&ring, tok, strlen(tok), NOW_MS, &p, &err);
            /* A principal that came out of a token can never exceed its key. */
            if (rc == SPOOL_AUTH_OK && spool_principal_can(&p, "other", SPOOL_CAP_PUBLISH)) abort();
            free(tok);
        }
        json_decref(claims);
    }
    (void)spool_principal_can(&p, "chat-1", SPOOL_CAP_PUBLISH);
    spool_principal_close(&p);
    free(text);
    return 0;
}
