/*
 * Resume keys: encoding, HMAC signing and verification, and the node secret. See resume.h for
 * the format and the reasoning; base64url comes from gateway/jwt.h.
 */
#include "gateway/resume.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster/dirs.h"
#include "gateway/json_body.h"
#include "gateway/jwt.h"

#define RESUME_VERSION 1
#define RESUME_MAX_KEY (64 << 10)

void spool_resume_state_init(struct spool_resume_state *s)
{
    memset(s, 0, sizeof *s);
}

void spool_resume_state_close(struct spool_resume_state *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->atts[i].channel);
    free(s->atts);
    free(s->client_id);
    free(s->key_name);
    spool_resume_state_init(s);
}

int spool_resume_state_set(struct spool_resume_state *s, const char *connection_id,
                           const char *client_id, const char *key_name, int64_t issued_ms,
                           int64_t expires_ms)
{
    snprintf(s->connection_id, sizeof s->connection_id, "%s", connection_id);
    free(s->client_id);
    free(s->key_name);
    s->client_id = strdup(client_id != NULL ? client_id : "");
    s->key_name = strdup(key_name != NULL ? key_name : "");
    s->issued_ms = issued_ms;
    s->expires_ms = expires_ms;
    return s->client_id != NULL && s->key_name != NULL ? 0 : SPOOL_ENOMEM;
}

int spool_resume_state_add(struct spool_resume_state *s, const char *channel, uint64_t serial)
{
    struct spool_resume_att *atts = realloc(s->atts, (s->n + 1) * sizeof *atts);
    if (atts == NULL)
        return SPOOL_ENOMEM;
    s->atts = atts;
    char *c = strdup(channel);
    if (c == NULL)
        return SPOOL_ENOMEM;
    atts[s->n++] = (struct spool_resume_att){c, serial};
    return 0;
}

static void resume_mac(const uint8_t secret[SPOOL_RESUME_SECRET_BYTES], const char *data,
                       size_t len, uint8_t mac[SHA256_DIGEST_LENGTH])
{
    unsigned int mlen = SHA256_DIGEST_LENGTH;
    HMAC(EVP_sha256(), secret, SPOOL_RESUME_SECRET_BYTES, (const unsigned char *)data, len, mac,
         &mlen);
}

char *spool_resume_encode(const uint8_t secret[SPOOL_RESUME_SECRET_BYTES],
                          const struct spool_resume_state *s, size_t *len)
{
    json_t *atts = json_array();
    json_t *o = json_pack("{s:i,s:s,s:s,s:s,s:I,s:I,s:o}", "v", RESUME_VERSION, "c",
                          s->connection_id, "u", s->client_id ? s->client_id : "", "k",
                          s->key_name ? s->key_name : "", "i", (json_int_t)s->issued_ms, "e",
                          (json_int_t)s->expires_ms, "a", atts);
    if (o == NULL)
        return NULL;
    for (size_t i = 0; i < s->n; i++)
        json_array_append_new(atts, json_pack("[s,I]", s->atts[i].channel,
                                              (json_int_t)s->atts[i].serial));
    size_t plen;
    char *payload = spool_json_dump(o, &plen);
    json_decref(o);
    if (payload == NULL)
        return NULL;
    uint8_t mac[SHA256_DIGEST_LENGTH];
    resume_mac(secret, payload, plen, mac);
    size_t a = spool_base64url_encoded_size(plen), b = spool_base64url_encoded_size(sizeof mac);
    char *key = malloc(a + b + 1);
    if (key != NULL) {
        size_t n = spool_base64url_encode(payload, plen, key, a);
        key[n++] = '.';
        n += spool_base64url_encode(mac, sizeof mac, key + n, b);
        *len = n;
    }
    free(payload);
    return key;
}

int spool_resume_decode(const uint8_t secret[SPOOL_RESUME_SECRET_BYTES], const char *key,
                        size_t len, int64_t now_ms, struct spool_resume_state *out,
                        struct spool_err *err)
{
    const char *dot = len > 0 ? memchr(key, '.', len) : NULL;
    if (dot == NULL || len > RESUME_MAX_KEY)
        return spool_err_set(err, SPOOL_EDENIED, "resume key: malformed");
    size_t plen64 = (size_t)(dot - key), mlen64 = len - plen64 - 1;
    char *payload = malloc(plen64 + 1);
    if (payload == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "resume key: out of memory");
    uint8_t mac[SHA256_DIGEST_LENGTH + 4], want[SHA256_DIGEST_LENGTH];
    long plen = spool_base64url_decode(key, plen64, payload, plen64 + 1);
    long mlen = spool_base64url_decode(dot + 1, mlen64, mac, sizeof mac);
    if (plen < 0 || mlen != SHA256_DIGEST_LENGTH) {
        free(payload);
        return spool_err_set(err, SPOOL_EDENIED, "resume key: malformed");
    }
    resume_mac(secret, payload, (size_t)plen, want);
    if (CRYPTO_memcmp(mac, want, sizeof want) != 0) {
        free(payload);
        return spool_err_set(err, SPOOL_EDENIED, "resume key: signature does not verify");
    }
    json_error_t jerr;
    json_t *o = json_loadb(payload, (size_t)plen, 0, &jerr);
    free(payload);
    json_int_t v = 0, issued = 0, expires = 0;
    const char *c = NULL, *u = NULL, *k = NULL;
    json_t *atts = NULL;
    if (o == NULL || json_unpack(o, "{s:I,s:s,s:s,s:s,s:I,s:I,s:o}", "v", &v, "c", &c, "u", &u,
                                 "k", &k, "i", &issued, "e", &expires, "a", &atts) != 0 ||
        v != RESUME_VERSION || !json_is_array(atts)) {
        json_decref(o);
        return spool_err_set(err, SPOOL_EDENIED, "resume key: unexpected contents");
    }
    spool_resume_state_close(out);
    int rv = spool_resume_state_set(out, c, u, k, issued, expires);
    size_t i;
    json_t *pair;
    json_array_foreach(atts, i, pair)
    {
        const char *ch;
        json_int_t serial;
        if (rv != 0)
            break;
        if (json_unpack(pair, "[s,I]", &ch, &serial) != 0 || serial < 0) {
            rv = SPOOL_EDENIED;
            break;
        }
        rv = spool_resume_state_add(out, ch, (uint64_t)serial);
    }
    json_decref(o);
    if (rv != 0)
        return spool_err_set(err, rv, "resume key: unexpected contents");
    if (now_ms > expires)
        return spool_err_set(err, SPOOL_ETIMEOUT, "resume key expired %lld ms ago",
                             (long long)(now_ms - expires));
    return 0;
}

int spool_resume_secret(const char *configured, const char *data_dir,
                        uint8_t out[SPOOL_RESUME_SECRET_BYTES], struct spool_err *err)
{
    if (configured != NULL && configured[0] != '\0') {
        SHA256((const unsigned char *)configured, strlen(configured), out);
        return 0;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/resume.secret", data_dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, out, SPOOL_RESUME_SECRET_BYTES);
        close(fd);
        if (n == SPOOL_RESUME_SECRET_BYTES)
            return 0;
        return spool_err_set(err, SPOOL_ECORRUPT, "%s: expected %d bytes", path,
                             SPOOL_RESUME_SECRET_BYTES);
    }
    if (errno != ENOENT)
        return spool_err_set(err, SPOOL_EIO, "%s: %s", path, strerror(errno));
    int rv = spool_mkdir_p(data_dir, err); /* a gateway-only node may have no data yet */
    if (rv != 0)
        return rv;
    if (RAND_bytes(out, SPOOL_RESUME_SECRET_BYTES) != 1)
        return spool_err_set(err, SPOOL_EIO, "resume secret: no randomness");
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return spool_err_set(err, SPOOL_EIO, "%s: %s", tmp, strerror(errno));
    bool ok = write(fd, out, SPOOL_RESUME_SECRET_BYTES) == SPOOL_RESUME_SECRET_BYTES &&
              fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return spool_err_set(err, SPOOL_EIO, "%s: could not be written", path);
    }
    return 0;
}
