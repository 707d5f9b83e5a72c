/*
 * JSON bodies shared by every HTTP answer: the error body, the error codes, the mapping from
 * SPOOL_E* codes to HTTP statuses, and a helper that serialises a jansson value.
 *
 * Every error the gateway returns over HTTP has this shape:
 *
 *     {"error":{"code":40400,"message":"no route for GET /v2/x","status":404}}
 *
 * `code` is the HTTP status times 100 plus a detail (the auth module's 40101... follow the same
 * scheme), so clients can switch on it without parsing messages.
 */
#ifndef SPOOL_GATEWAY_JSON_BODY_H
#define SPOOL_GATEWAY_JSON_BODY_H

#include <jansson.h>
#include <stddef.h>

#include "gateway/http_server.h"

enum spool_http_error_code {
    SPOOL_HTTP_EBAD_REQUEST = 40000,   /* malformed HTTP or unusable request */
    SPOOL_HTTP_EBAD_JSON = 40001,      /* the body is not valid JSON / not the expected shape */
    SPOOL_HTTP_EBAD_CHANNEL = 40002,   /* invalid channel name */
    SPOOL_HTTP_EBAD_PARAM = 40003,     /* invalid query parameter */
    SPOOL_HTTP_EBAD_PATH = 40004,      /* path does not percent-decode */
    SPOOL_HTTP_ENOT_FOUND = 40400,     /* no such route */
    SPOOL_HTTP_EMETHOD = 40500,        /* route exists, method does not */
    SPOOL_HTTP_ETIMEOUT = 40800,       /* the client was too slow sending the request */
    SPOOL_HTTP_ECONFLICT = 40900,
    SPOOL_HTTP_ETOO_LARGE = 41300,     /* body (or a message in it) over the limit */
    SPOOL_HTTP_EUNSUPPORTED = 41500,   /* unsupported Content-Type */
    SPOOL_HTTP_EHEADERS = 43100,       /* request head over the limit */
    SPOOL_HTTP_EINTERNAL = 50000,
    SPOOL_HTTP_EUNAVAILABLE = 50300,   /* overloaded, not ready, shutting down, no leader */
    SPOOL_HTTP_EUPSTREAM_TIMEOUT = 50400, /* the cluster did not answer in time */
};

/* The error body as a malloc'd NUL-terminated string (free()); *len gets its length. Returns
 * NULL only when out of memory. `message` may be any bytes; it is escaped. */
char *spool_json_error(int status, int code, const char *message, size_t *len);

/* Maps a SPOOL_E* code to the HTTP status and error code to answer with. */
void spool_json_status_of(int spool_code, int *status, int *code);

/* json_dumps with the gateway's settings (compact, keys in insertion order); malloc'd, or NULL
 * when out of memory. Does not steal `v`. */
char *spool_json_dump(const json_t *v, size_t *len);

/* Completion call: answers `req` with `v` (reference stolen) as application/json; 500 with an
 * error body when `v` is NULL or cannot be serialised. */
void spool_http_respond_json(struct spool_http_req *req, int status, json_t *v);

#endif
