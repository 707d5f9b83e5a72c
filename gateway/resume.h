/*
 * Connection resume keys: self-contained, HMAC-signed descriptions of a realtime connection, so
 * that a client whose connection dropped can resume it on ANY gateway node within the resume
 * window, without the nodes sharing any session state.
 *
 * A key is  base64url(payload) "." base64url(HMAC-SHA256(secret, payload))  where payload is
 * compact JSON:
 *
 *     {"v":1,"c":"<connectionId>","u":"<clientId>","k":"<api key name>",
 *      "i":<issued unix ms>,"e":<expires unix ms>,"a":[["<channel>",<serial>],...]}
 *
 * "a" lists the connection's attachments with the last serial the server had written on each
 * when the key was issued. The server re-issues the key (a {"type":"resumeKey"} message) when
 * the attachment set changes and on a cadence (see realtime.c), and "e" is issued + the resume
 * window, so a key is accepted for at least (window - cadence) after the connection dropped and
 * never longer than the window after the server last spoke to the client.
 *
 * Why the client, not the key, is the authority on serials: what the server has *written* is
 * not what the client *received* when a TCP connection is cut (the tail sits in kernel buffers
 * and is lost). So on resume the client sends the last serial it actually processed per channel
 * and those win; the key's serials are used only for channels the client does not mention
 * (at-least-once from there: the client may see a few messages again, which it can drop by
 * serial). The key's channel list is what makes the attachment set itself recoverable anywhere.
 *
 * The secret is 32 bytes: SHA-256 of the configured --resume-secret when one is set (every node
 * of a cluster must be given the same), else a random secret kept in <data>/resume.secret
 * (created on first use; resume then only works on the node that issued the key).
 * A key authorizes nothing by itself: the resuming connection authenticates as usual, must carry
 * the same client id and key name, and each channel's subscribe capability is checked again.
 */
#ifndef SPOOL_GATEWAY_RESUME_H
#define SPOOL_GATEWAY_RESUME_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define SPOOL_RESUME_SECRET_BYTES 32
#define SPOOL_CONNECTION_ID_MAX 64

struct spool_resume_att {
    char *channel;
    uint64_t serial;
};

struct spool_resume_state {
    char connection_id[SPOOL_CONNECTION_ID_MAX + 1];
    char *client_id; /* "" when none */
    char *key_name;  /* "" when anonymous */
    int64_t issued_ms;
    int64_t expires_ms;
    struct spool_resume_att *atts;
    size_t n;
};

void spool_resume_state_init(struct spool_resume_state *s);
void spool_resume_state_close(struct spool_resume_state *s);
/* Copies the strings. Returns 0 or SPOOL_ENOMEM. */
int spool_resume_state_set(struct spool_resume_state *s, const char *connection_id,
                           const char *client_id, const char *key_name, int64_t issued_ms,
                           int64_t expires_ms);
int spool_resume_state_add(struct spool_resume_state *s, const char *channel, uint64_t serial);

/* The signed key, malloc'd and NUL-terminated (base64url and '.', safe in a query string);
 * NULL when out of memory. */
char *spool_resume_encode(const uint8_t secret[SPOOL_RESUME_SECRET_BYTES],
                          const struct spool_resume_state *s, size_t *len);
/* Verifies and parses a key into `out` (initialised by the caller). Returns 0; SPOOL_EDENIED
 * for a key that does not verify or parse; SPOOL_ETIMEOUT when it verified but expired (`out`
 * is filled anyway, so the caller can tell the client which channels to re-attach). */
int spool_resume_decode(const uint8_t secret[SPOOL_RESUME_SECRET_BYTES], const char *key,
                        size_t len, int64_t now_ms, struct spool_resume_state *out,
                        struct spool_err *err);

/* The node's secret as described above. `configured` may be NULL or "". */
int spool_resume_secret(const char *configured, const char *data_dir,
                        uint8_t out[SPOOL_RESUME_SECRET_BYTES], struct spool_err *err);

#endif
