/*
 * The differential check of the REST publish body reader (gateway/http_publish_body.h): the same
 * body read with the scanner on and with jansson only must give the same answer. Shared by
 * tests/fuzz/fuzz_http_publish_body.c and tests/gateway/test_http_publish_body.c.
 *
 * publish_body_diff(body, len, client_id, lim) reads a private copy of the body (exactly len
 * bytes, so ASan sees any overrun) both ways, as a principal with that client id, and requires:
 *   - both succeed or both fail; failures with the same status, code and message text;
 *   - successes with the same number of records, the same data byte count, and records equal
 *     field by field (action, version, id, name, clientId, content type, data, extras, refSerial,
 *     turnEpoch, flags);
 *   - the caller's bytes unchanged (the scanner works on its own copy).
 * Returns 1 when the scanner read the body, -1 when it was left to jansson; aborts on any
 * difference (a fuzzer finding), naming it on stderr.
 */
#ifndef SPOOL_TESTS_HTTP_PUBLISH_BODY_DIFF_H
#define SPOOL_TESTS_HTTP_PUBLISH_BODY_DIFF_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/http_publish_body.h"

#define BODY_DIFF_REQUIRE(cond)                                                                   \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "publish_body_diff: %s (line %d)\n", #cond, __LINE__);                \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

static int body_diff_same_cstr(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static int body_diff_same_bytes(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

static int publish_body_diff(const char *body, size_t len, const char *client_id,
                             const struct spool_publish_limits *lim)
{
    char *buf = malloc(len > 0 ? len : 1);
    struct spool_publish_body *a = malloc(sizeof *a), *b = malloc(sizeof *b);
    BODY_DIFF_REQUIRE(buf != NULL && a != NULL && b != NULL);
    memcpy(buf, body, len);
    struct spool_principal p;
    spool_principal_init(&p);
    snprintf(p.client_id, sizeof p.client_id, "%s", client_id);
    bool oka = spool_publish_body_parse(a, buf, len, lim, &p, "chan", true);
    bool okb = spool_publish_body_parse(b, buf, len, lim, &p, "chan", false);
    BODY_DIFF_REQUIRE(len == 0 || memcmp(buf, body, len) == 0);
    BODY_DIFF_REQUIRE(!b->scanned);
    BODY_DIFF_REQUIRE(oka == okb);
    if (!oka) {
        BODY_DIFF_REQUIRE(a->status == b->status && a->code == b->code);
        BODY_DIFF_REQUIRE(strcmp(a->message, b->message) == 0);
    } else {
        BODY_DIFF_REQUIRE(a->n == b->n && a->n >= 1 && a->bytes == b->bytes);
        for (size_t i = 0; i < a->n; i++) {
            const Spool__Record *x = a->records[i], *y = b->records[i];
            BODY_DIFF_REQUIRE(x->action == y->action && x->version == y->version);
            BODY_DIFF_REQUIRE(body_diff_same_cstr(x->id, y->id));
            BODY_DIFF_REQUIRE(body_diff_same_cstr(x->name, y->name));
            BODY_DIFF_REQUIRE(body_diff_same_cstr(x->client_id, y->client_id));
            BODY_DIFF_REQUIRE(body_diff_same_cstr(x->content_type, y->content_type));
            BODY_DIFF_REQUIRE(body_diff_same_bytes(x->data, y->data));
            BODY_DIFF_REQUIRE(body_diff_same_bytes(x->extras, y->extras));
            BODY_DIFF_REQUIRE(x->ref_seq == y->ref_seq && x->turn_epoch == y->turn_epoch);
            BODY_DIFF_REQUIRE(x->flags == y->flags);
        }
    }
    int scanned = a->scanned ? 1 : -1;
    spool_publish_body_close(a);
    spool_publish_body_close(b);
    spool_principal_close(&p);
    free(a);
    free(b);
    free(buf);
    return scanned;
}

#endif
