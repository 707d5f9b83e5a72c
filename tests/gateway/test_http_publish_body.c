/*
 * The REST publish body reader (gateway/http_publish_body.h): which bodies the scanner reads and
 * which it leaves to jansson, and that both give the same answer. Every case goes through the
 * differential check (tests/fuzz/http_publish_body_diff.h, which aborts on a difference): the
 * bench's body, arrays, whitespace, escapes and UTF-8, the shapes only jansson reads, limits and
 * credentials verdicts, truncation at every byte and every single-byte change of good bodies.
 * Also the 201 answer written without jansson against jansson's dump of the same object.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "fuzz/http_publish_body_diff.h"
#include "gateway/json_body.h"

static const struct spool_publish_limits lim = {1000, 65536, 65536};

static int diff(const char *body)
{
    return publish_body_diff(body, strlen(body), "", &lim);
}

#define BENCH "{\"id\":\"6a-w001-000000000042\",\"data\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}"

Test(http_publish_body, the_bench_body_is_scanned)
{
    struct spool_principal p;
    spool_principal_init(&p);
    static struct spool_publish_body b;
    cr_assert(spool_publish_body_parse(&b, BENCH, strlen(BENCH), &lim, &p, "c", true));
    cr_assert(b.scanned);
    cr_assert_eq(b.n, 1);
    cr_assert_eq(b.bytes, 40);
    cr_assert_str_eq(b.records[0]->id, "6a-w001-000000000042");
    cr_assert_str_eq(b.records[0]->content_type, "text/plain");
    cr_assert_eq(b.records[0]->data.len, 40);
    cr_assert(b.records[0]->name == NULL || b.records[0]->name[0] == '\0');
    cr_assert_eq(b.records[0]->action, SPOOL__ACTION__ACTION_MESSAGE_CREATE);
    spool_publish_body_close(&b);
    spool_principal_close(&p);
    cr_assert_eq(diff(BENCH), 1);
}

Test(http_publish_body, shapes_it_scans)
{
    const char *ok[] = {
        " \t\r\n{ \"data\" : \"d\" , \"id\":\"x\" }\n ",
        "{}",
        "[{}]",
        "[{\"id\":\"a\",\"data\":\"x\"},{\"name\":\"n\",\"clientId\":\"me\",\"id\":\"b\",\"data\":\"\"}]",
        "{\"data\":\"h\xc3\xa9llo \xf0\x9f\x98\x80 \xe2\x82\xac\"}",
        "{\"data\":\"a\\nb\\t\\\"q\\\" \\\\ \\/ \\b\\f\\r\"}",
        "{\"data\":\"\\u00e9\\u20AC\\ud83d\\ude00\\u0041\\u007f\\u0080\\u07ff\\u0800\\uffff\"}",
        "{\"\\u0069d\":\"x\",\"data\":\"{\\\"text\\\":\\\"a\\\"}\"}",
        " [ { } , { \"id\" : \"2\" } ] ",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        cr_assert_eq(diff(ok[i]), 1, "%s", ok[i]);
    /* 16 messages are scanned, the 17th sends the body to jansson */
    char body[1024] = "[";
    for (int i = 0; i < 17; i++) {
        strcat(body, i ? ",{\"data\":\"d\"}" : "{\"data\":\"d\"}");
        char closed[1100];
        snprintf(closed, sizeof closed, "%s]", body);
        cr_assert_eq(diff(closed), i < 16 ? 1 : -1, "%d messages", i + 1);
    }
}

Test(http_publish_body, everything_else_goes_to_jansson_with_the_same_answer)
{
    const char *other[] = {
        "", " ", "null", "1", "\"s\"", "[]", "[1]", "[[]]", "{\"id\":1}", "{\"data\":null}",
        "{\"data\":{\"a\":1}}", "{\"data\":[1,\"x\"]}", "{\"data\":12.5}", "{\"data\":true}",
        "{\"extras\":{\"h\":1},\"data\":\"d\"}", "{\"extras\":1}",
        "{\"action\":\"append\",\"refSerial\":3,\"data\":\"t\"}", "{\"action\":\"bogus\"}",
        "{\"refSerial\":3}", "{\"turnEpoch\":2,\"data\":\"x\"}", "{\"turnEpoch\":-1}",
        "{\"id\":\"a\",\"id\":\"b\"}", "{\"data\":\"a\",\"data\":\"a\"}", "{\"other\":\"x\"}",
        "{\"id\":\"a\"} x", "{\"id\":\"a\"}{}", "{\"id\":\"a\",}", "[{},]", "{,}", "{\"id\" \"a\"}",
        "{\"data\":\"\\u0000\"}", "{\"data\":\"\\ud800\"}", "{\"data\":\"\\udc00\\ud800\"}",
        "{\"data\":\"\\x\"}", "{\"data\":\"\x01\"}", "{\"data\":\"\xff\"}", "{\"data\":\"\xc3\"}",
        "{\"data\":\"\xed\xa0\x80\"}", "[{\"id\":\"a\"},{\"id\":2}]",
        "{\"id\":\"a\"", "[{\"id\":\"a\"}", "\xef\xbb\xbf{}",
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        cr_assert_eq(diff(other[i]), -1, "%s", other[i]);
    static const char nul[] = "{\"data\":\"a\x00 b\"}";
    cr_assert_eq(publish_body_diff(nul, sizeof nul - 1, "", &lim), -1);
}

Test(http_publish_body, verdicts_match_for_scanned_bodies)
{
    const struct spool_publish_limits tight = {2, 4, 8};
    const char *bodies[] = {
        "{\"id\":\"12345\"}",                                 /* id too long */
        "{\"name\":\"12345\"}",                               /* name too long */
        "{\"data\":\"123456789\"}",                           /* data too large */
        "{\"clientId\":\"bob\"}",                             /* forbidden as alice */
        "{\"clientId\":\"alice\",\"data\":\"1234\"}",         /* fine */
        "[{\"id\":\"1\"},{\"id\":\"2\"},{\"id\":\"3\"}]",     /* over the batch limit */
        "[{\"id\":\"1\"},{\"id\":\"12345\"}]",                /* "message 1: ..." */
        "{\"clientId\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        cr_assert_eq(publish_body_diff(bodies[i], strlen(bodies[i]), "alice", &tight), 1, "%s",
                     bodies[i]);
        cr_assert_eq(publish_body_diff(bodies[i], strlen(bodies[i]), "", &tight), 1, "%s", bodies[i]);
    }
    /* and the answer itself, through the scanner */
    struct spool_principal p;
    spool_principal_init(&p);
    snprintf(p.client_id, sizeof p.client_id, "alice");
    static struct spool_publish_body b;
    const char *forbidden = "{\"clientId\":\"bob\"}";
    cr_assert_not(spool_publish_body_parse(&b, forbidden, strlen(forbidden), &tight, &p, "c", true));
    cr_assert(b.scanned);
    cr_assert_eq(b.status, 403);
    cr_assert_str_eq(b.message, "clientId does not match the credentials' client id");
    spool_publish_body_close(&b);
    const char *many = "[{},{},{}]";
    cr_assert_not(spool_publish_body_parse(&b, many, strlen(many), &tight, &p, "c", true));
    cr_assert_eq(b.status, 413);
    cr_assert_eq(b.code, SPOOL_HTTP_ETOO_LARGE + 2);
    cr_assert_str_eq(b.message, "3 messages exceed --max-publish-batch (2)");
    spool_publish_body_close(&b);
    spool_principal_close(&p);
}

Test(http_publish_body, a_body_larger_than_the_stack_copy)
{
    size_t n = SPOOL_PUBLISH_BODY_COPY + 100;
    char *body = malloc(n + 64);
    int k = sprintf(body, "{\"id\":\"big\",\"data\":\"");
    memset(body + k, 'x', n);
    strcpy(body + k + n, "\"}");
    cr_assert_eq(diff(body), 1);
    body[k + 10] = '\x01'; /* a control character: jansson's answer */
    cr_assert_eq(diff(body), -1);
    free(body);
}

static const char *const good[] = {
    BENCH,
    "[{\"id\":\"a\",\"name\":\"n\",\"data\":\"x\\u00e9\\n\"},{\"clientId\":\"al\",\"data\":\"\xc3\xa9\"}]",
};

Test(http_publish_body, every_truncation_agrees)
{
    for (size_t g = 0; g < sizeof good / sizeof good[0]; g++) {
        size_t len = strlen(good[g]);
        for (size_t i = 0; i < len; i++)
            cr_assert_eq(publish_body_diff(good[g], i, "", &lim), -1, "prefix of %zu bytes", i);
        cr_assert_eq(publish_body_diff(good[g], len, "", &lim), 1);
    }
}

/* Every byte of good bodies replaced by a set of interesting bytes: whatever the scanner accepts
 * must read as jansson reads it, and the answers must agree (publish_body_diff aborts otherwise). */
Test(http_publish_body, single_byte_changes_agree)
{
    static const char subst[] = {'"', '\\', '{', '}', '[', ']', ',', ':', ' ', 'a', 'u', '0',
                                 '\x00', '\x1f', '\x7f', '\x80', '\xc3', '\xff'};
    const struct spool_publish_limits tight = {1, 4, 8};
    size_t accepted = 0;
    for (size_t g = 0; g < sizeof good / sizeof good[0]; g++) {
        size_t len = strlen(good[g]);
        char *buf = malloc(len);
        for (size_t i = 0; i < len; i++) {
            for (size_t s = 0; s < sizeof subst; s++) {
                memcpy(buf, good[g], len);
                buf[i] = subst[s];
                accepted += publish_body_diff(buf, len, "", &lim) == 1;
                publish_body_diff(buf, len, "al", &tight);
            }
        }
        free(buf);
    }
    cr_assert_gt(accepted, 50);
}

/* spool_publish_answer against jansson's compact dump of the same object. */
static void answer_matches(const char *channel, const uint64_t *seqs, const bool *dup, size_t n)
{
    json_t *serials = json_array(), *dups = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(serials, json_integer((json_int_t)seqs[i]));
        if (dup[i])
            json_array_append_new(dups, json_integer((json_int_t)seqs[i]));
    }
    json_t *o = json_pack("{s:s,s:o,s:o}", "channel", channel, "serials", serials, "duplicates", dups);
    size_t jlen = 0, len = 0;
    char *j = spool_json_dump(o, &jlen);
    char *t = spool_publish_answer(channel, seqs, dup, n, &len);
    cr_assert_not_null(t);
    cr_assert_eq(len, jlen);
    cr_assert_str_eq(t, j);
    free(t);
    free(j);
    json_decref(o);
}

Test(http_publish_body, the_answer_is_jansson_s_bytes)
{
    const uint64_t seqs[] = {1, 9, 10, 99, 100, 12345678901234ULL, 9223372036854775807ULL, 0,
                             18446744073709551615ULL};
    const bool dup[] = {false, true, false, true, true, false, true, false, true};
    answer_matches("c1", seqs, dup, 0);
    answer_matches("c1", seqs, dup, 1);
    answer_matches("bench-7", seqs + 1, dup + 1, 1);
    answer_matches("a:b/c.d-e_f~!$&'()+;=@", seqs, dup, sizeof seqs / sizeof seqs[0]);
    const bool none[3] = {false, false, false};
    answer_matches("x", seqs, none, 3);
    /* what jansson would escape is left to jansson */
    size_t len;
    cr_assert_null(spool_publish_answer("a\"b", seqs, dup, 1, &len));
    cr_assert_null(spool_publish_answer("a\\b", seqs, dup, 1, &len));
    cr_assert_null(spool_publish_answer("a\nb", seqs, dup, 1, &len));
    cr_assert_null(spool_publish_answer("\xc3\xa9", seqs, dup, 1, &len));
}
