/*
 * The gateway's JSON error body and the SPOOL_E* -> HTTP status mapping (see json_body.h).
 */
#include "gateway/json_body.h"

#include <string.h>

#include "common/err.h"

char *spool_json_error(int status, int code, const char *message, size_t *len)
{
    json_t *body = json_pack("{s:{s:i,s:s?,s:i}}", "error", "code", code, "message", message,
                             "status", status);
    if (body == NULL) { /* message was not UTF-8: say so rather than fail */
        body = json_pack("{s:{s:i,s:s,s:i}}", "error", "code", code, "message",
                         "(message not valid UTF-8)", "status", status);
        if (body == NULL) return NULL;
    }
    char *s = spool_json_dump(body, len);
    json_decref(body);
    return s;
}

void spool_json_status_of(int spool_code, int *status, int *code)
{
    switch (spool_code) {
    case SPOOL_EINVAL: *status = 400, *code = SPOOL_HTTP_EBAD_REQUEST; break;
    case SPOOL_ENOENT: *status = 404, *code = SPOOL_HTTP_ENOT_FOUND; break;
    case SPOOL_ELIMIT: *status = 413, *code = SPOOL_HTTP_ETOO_LARGE; break;
    case SPOOL_ECONFLICT: *status = 409, *code = SPOOL_HTTP_ECONFLICT; break;
    case SPOOL_EDENIED: *status = 403, *code = 40300; break;
    case SPOOL_ENOTLEADER:
    case SPOOL_EMOVED:
    case SPOOL_EBUSY:
    case SPOOL_ECLOSED: *status = 503, *code = SPOOL_HTTP_EUNAVAILABLE; break;
    case SPOOL_ETIMEOUT: *status = 504, *code = SPOOL_HTTP_EUPSTREAM_TIMEOUT; break;
    default: *status = 500, *code = SPOOL_HTTP_EINTERNAL; break;
    }
}

char *spool_json_dump(const json_t *v, size_t *len)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    if (s != NULL && len != NULL) *len = strlen(s);
    return s;
}

void spool_http_respond_json(struct spool_http_req *req, int status, json_t *v)
{
    static const struct spool_http_header h[] = {{"Content-Type", "application/json"}};
    size_t len = 0;
    char *body = v != NULL ? spool_json_dump(v, &len) : NULL;
    json_decref(v);
    if (body == NULL) {
        spool_http_respond_error(req, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
        return;
    }
    spool_http_respond_owned(req, status, h, 1, body, len);
}
