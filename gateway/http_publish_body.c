/* The REST publish body into records, scanned or through jansson; see http_publish_body.h. */
#include "gateway/http_publish_body.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/ai_message.h"
#include "gateway/json_body.h"
#include "gateway/message_json.h"
#include "gateway/rt_frame.h"

static bool fail(struct spool_publish_body *b, int status, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static bool fail(struct spool_publish_body *b, int status, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->message, sizeof b->message, fmt, ap);
    va_end(ap);
    b->status = status, b->code = code;
    return false;
}

/* One message object, or an array of 1..SPOOL_PUBLISH_BODY_STACK, of msg_scan.h's shape, and
 * nothing after it but whitespace. */
static bool scan_body(struct spool_publish_body *b, char *buf, size_t len)
{
    struct spool_msg_scan s = {buf, buf + len};
    b->n = 0;
    if (spool_msg_scan_take(&s, '[')) {
        do {
            if (b->n == SPOOL_PUBLISH_BODY_STACK || !spool_msg_scan_message(&s, &b->msgs[b->n]))
                return false;
            b->n++;
        } while (spool_msg_scan_take(&s, ','));
        if (!spool_msg_scan_take(&s, ']'))
            return false;
    } else {
        if (!spool_msg_scan_message(&s, &b->msgs[0]))
            return false;
        b->n = 1;
    }
    spool_msg_scan_ws(&s);
    return s.p == s.end;
}

static bool try_scan(struct spool_publish_body *b, const char *body, size_t len)
{
    char *copy = len <= sizeof b->copy_stack ? b->copy_stack : malloc(len);
    if (copy == NULL)
        return false;
    memcpy(copy, body, len);
    if (scan_body(b, copy, len)) {
        b->copy = copy;
        return true;
    }
    if (copy != b->copy_stack)
        free(copy);
    return false;
}

/* Message i into recs[i]: NULL, or the error answer's text with *status and *code. */
static const char *record_of(struct spool_publish_body *b, size_t i,
                             const struct spool_publish_limits *lim,
                             const struct spool_principal *p, const char *channel, int *status,
                             int *code)
{
    const struct spool_message_limits mlim = {lim->max_field_bytes, lim->max_message_bytes};
    const char *why = NULL;
    json_t *m = NULL;
    enum spool_message_verdict v;
    if (b->scanned) {
        v = spool_rt_frame_record(&b->msgs[i], p->client_id, &mlim, &b->recs[i], &why);
    } else {
        m = json_is_array(b->json) ? json_array_get(b->json, i) : b->json;
        v = spool_message_from_json(m, p->client_id, &mlim, &b->recs[i], &b->owned[2 * i], &why);
    }
    switch (v) {
    case SPOOL_MESSAGE_OK:
        *status = 400, *code = SPOOL_HTTP_EBAD_JSON;
        /* a scanned message has no AI field: this only sets the principal's edit/delete flags */
        return spool_ai_message_fields(m, &b->recs[i], p, channel);
    case SPOOL_MESSAGE_FORBIDDEN: *status = 403, *code = SPOOL_AUTH_FORBIDDEN; break;
    case SPOOL_MESSAGE_TOO_LARGE: *status = 413, *code = SPOOL_HTTP_ETOO_LARGE + 1; break;
    case SPOOL_MESSAGE_NOMEM: *status = 500, *code = SPOOL_HTTP_EINTERNAL; break;
    default: *status = 400, *code = SPOOL_HTTP_EBAD_JSON; break;
    }
    return why;
}

bool spool_publish_body_parse(struct spool_publish_body *b, const char *body, size_t len,
                              const struct spool_publish_limits *lim,
                              const struct spool_principal *p, const char *channel, bool scan)
{
    b->n = b->bytes = 0;
    b->records = NULL;
    b->scanned = false;
    b->status = b->code = 0;
    b->message[0] = '\0';
    b->json = NULL;
    b->copy = NULL;
    b->recs = NULL, b->ptrs = NULL, b->owned = NULL;
    if (scan && try_scan(b, body, len)) {
        b->scanned = true;
    } else {
        json_error_t jerr;
        if ((b->json = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr)) == NULL)
            return fail(b, 400, SPOOL_HTTP_EBAD_JSON, "body is not valid JSON: %s", jerr.text);
        b->n = json_is_array(b->json) ? json_array_size(b->json) : 1;
    }
    size_t n = b->n;
    if (n == 0)
        return fail(b, 400, SPOOL_HTTP_EBAD_JSON, "no messages to publish");
    if (n > lim->max_batch)
        return fail(b, 413, SPOOL_HTTP_ETOO_LARGE + 2,
                    "%zu messages exceed --max-publish-batch (%" PRIu64 ")", n, lim->max_batch);
    if (n <= SPOOL_PUBLISH_BODY_STACK) {
        b->recs = b->rec_stack, b->ptrs = b->ptr_stack, b->owned = b->owned_stack;
        memset(b->owned, 0, 2 * n * sizeof *b->owned);
    } else {
        b->recs = calloc(n, sizeof *b->recs);
        b->ptrs = calloc(n, sizeof *b->ptrs);
        b->owned = calloc(2 * n, sizeof *b->owned);
        if (b->recs == NULL || b->ptrs == NULL || b->owned == NULL)
            return fail(b, 500, SPOOL_HTTP_EINTERNAL, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        int status, code;
        const char *bad = record_of(b, i, lim, p, channel, &status, &code);
        if (bad != NULL) {
            b->n = i + 1; /* owned buffers to free */
            if (n > 1)
                return fail(b, status, code, "message %zu: %s", i, bad);
            return fail(b, status, code, "%s", bad);
        }
        b->ptrs[i] = &b->recs[i];
        b->bytes += b->recs[i].data.len;
    }
    b->records = b->ptrs;
    return true;
}

void spool_publish_body_close(struct spool_publish_body *b)
{
    if (b->owned != NULL)
        for (size_t i = 0; i < 2 * b->n; i++)
            free(b->owned[i]);
    if (b->recs != b->rec_stack) {
        free(b->owned);
        free(b->ptrs);
        free(b->recs);
    }
    if (b->copy != b->copy_stack)
        free(b->copy);
    json_decref(b->json);
    b->json = NULL, b->copy = NULL, b->recs = NULL, b->ptrs = NULL, b->owned = NULL;
    b->records = NULL;
}

/* json_int_t in decimal, as jansson prints it ("%" JSON_INTEGER_FORMAT). */
static char *put_int(char *w, json_int_t v)
{
    char tmp[24];
    size_t k = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[k++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        *w++ = '-';
    while (k > 0)
        *w++ = tmp[--k];
    return w;
}

char *spool_publish_answer(const char *channel, const uint64_t *seqs, const bool *duplicate,
                           size_t n, size_t *len)
{
    size_t clen = strlen(channel);
    for (size_t i = 0; i < clen; i++) { /* what jansson writes as is (no escape, ASCII) */
        unsigned char c = (unsigned char)channel[i];
        if (c < 0x20 || c >= 0x7F || c == '"' || c == '\\')
            return NULL;
    }
    static const char a[] = "{\"channel\":\"", b[] = "\",\"serials\":[", c[] = "],\"duplicates\":[",
                      d[] = "]}";
    char *out = malloc(sizeof a + clen + sizeof b + sizeof c + sizeof d + 2 * n * 21);
    if (out == NULL)
        return NULL;
    char *w = out;
    memcpy(w, a, sizeof a - 1), w += sizeof a - 1;
    memcpy(w, channel, clen), w += clen;
    memcpy(w, b, sizeof b - 1), w += sizeof b - 1;
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            *w++ = ',';
        w = put_int(w, (json_int_t)seqs[i]);
    }
    memcpy(w, c, sizeof c - 1), w += sizeof c - 1;
    bool first = true;
    for (size_t i = 0; i < n; i++) {
        if (!duplicate[i])
            continue;
        if (!first)
            *w++ = ',';
        first = false;
        w = put_int(w, (json_int_t)seqs[i]);
    }
    memcpy(w, d, sizeof d - 1), w += sizeof d - 1;
    *w = '\0';
    *len = (size_t)(w - out);
    return out;
}
