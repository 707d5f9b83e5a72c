/*
 * The realtime publish frame scanner (gateway/rt_frame.h): what it accepts and what it leaves to
 * jansson. Every accepted frame also goes through the differential check against jansson and
 * spool_message_from_json (tests/fuzz/rt_frame_diff.h, which aborts on a difference): the edge
 * cases here (whitespace, key order, UTF-8, escapes, duplicate keys, numbers, nesting, truncation
 * at every byte, every single-byte change of a good frame) and the fuzz target's random ones.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "fuzz/rt_frame_diff.h"

static const struct spool_message_limits lim = {65536, 65536};

static int diff(const char *frame)
{
    return rt_frame_diff(frame, strlen(frame), "", &lim);
}

#define BENCH                                                                                     \
    "{\"type\":\"publish\",\"msgSerial\":42,\"channel\":\"bench-7\",\"messages\":[{\"id\":"      \
    "\"6a-w001-000000000042\",\"data\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}]}"

Test(rt_frame, the_bench_frame_is_scanned)
{
    char buf[] = BENCH;
    struct spool_rt_frame f;
    cr_assert(spool_rt_frame_parse(buf, strlen(buf), &f));
    cr_assert_eq(f.msg_serial, 42);
    cr_assert_str_eq(f.channel.s, "bench-7");
    cr_assert_eq(f.channel.len, 7);
    cr_assert_eq(f.n, 1);
    cr_assert_str_eq(f.msgs[0].id.s, "6a-w001-000000000042");
    cr_assert_eq(f.msgs[0].data.len, 40);
    cr_assert_null(f.msgs[0].name.s);
    cr_assert_null(f.msgs[0].client_id.s);
    cr_assert_eq(diff(BENCH), 1);
}

Test(rt_frame, shapes_it_accepts)
{
    const char *ok[] = {
        " \t\r\n{ \"messages\" : [ { } ] , \"channel\" :\"c\",\"msgSerial\": 0 ,\"type\":\"publish\" }\n ",
        "{\"type\":\"publish\",\"msgSerial\":999999999999999999,\"channel\":\"a:b\",\"messages\":"
        "[{\"data\":\"\"},{\"name\":\"n\",\"clientId\":\"me\",\"id\":\"1\",\"data\":\"d\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":7,\"channel\":\"c\",\"messages\":[{\"data\":"
        "\"h\xc3\xa9llo \xf0\x9f\x98\x80 \xe2\x82\xac\"}]}", /* raw UTF-8 */
        "{\"type\":\"publish\",\"msgSerial\":7,\"channel\":\"bad channel name\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":7,\"channel\":\"\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":7,\"channel\":\"c\",\"messages\":[{\"data\":\"{}\"}]}",
        /* escapes, decoded as jansson decodes them */
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":"
        "\"a\\nb\\t\\\"q\\\" \\\\ \\/ \\b\\f\\r\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":"
        "\"\\u00e9\\u20AC\\ud83d\\ude00\\u0041\\u007f\\u0080\\u07ff\\u0800\\uffff\\udbff\\udfff\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\\/d\",\"messages\":[{}]}",
        "{\"typ\\u0065\":\"publ\\u0069sh\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"\\u0069d\":\"x\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":"
        "\"{\\\"text\\\":\\\"line one\\\\nline two \\u2014 \xc3\xa9\\\"}\"}]}",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        cr_assert_eq(diff(ok[i]), 1, "frame %zu: %s", i, ok[i]);
}

Test(rt_frame, everything_else_goes_to_jansson)
{
    const char *no[] = {
        "", "{}", "[]", "null", "\"publish\"",
        /* escapes jansson refuses */
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\\u0000\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\\ud800\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\\udc00\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\\ud800\\u0041\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\\ude00\\ud83d\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\\x41\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\\u12\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\\u12g4\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\\'\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"d\\u0000ata\":\"x\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\xc3\\u00a9\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\\",
        /* other keys and types */
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{}],\"x\":1}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"extras\":{}}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"action\":\"append\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":1}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":null}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":{\"a\":1}}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"id\":5}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":7,\"messages\":[{}]}",
        "{\"type\":\"attach\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":{}}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[[{}]]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{},]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"id\":\"a\",}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\"}",
        /* duplicate keys: jansson keeps the last, the scanner keeps out of it */
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"channel\":\"d\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"msgSerial\":2,\"channel\":\"c\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{}],\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"id\":\"a\",\"id\":\"b\"}]}",
        /* numbers it does not read */
        "{\"type\":\"publish\",\"msgSerial\":-1,\"channel\":\"c\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":-0,\"channel\":\"c\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":1.0,\"channel\":\"c\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":1e3,\"channel\":\"c\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":01,\"channel\":\"c\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":1000000000000000000,\"channel\":\"c\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":99999999999999999999999,\"channel\":\"c\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":\"1\",\"channel\":\"c\",\"messages\":[{}]}",
        "{\"type\":\"publish\",\"msgSerial\":true,\"channel\":\"c\",\"messages\":[{}]}",
        /* bytes that are not JSON */
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{}]} x",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{}]}{}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\xff\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\xed\xa0\x80\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"\xc0\xaf\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"a\nb\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"data\":\"a\tb\"}]}",
        "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{}]}\v",
        "\xef\xbb\xbf{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{}]}",
    };
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        cr_assert_eq(diff(no[i]), -1, "frame %zu: %s", i, no[i]);
    /* A NUL byte, inside a string and between tokens */
    const char nul1[] = "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\0\",\"messages\":[{}]}";
    const char nul2[] = "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{}]}\0";
    cr_assert_eq(rt_frame_diff(nul1, sizeof nul1 - 1, "", &lim), -1);
    cr_assert_eq(rt_frame_diff(nul2, sizeof nul2 - 1, "", &lim), -1);
}

Test(rt_frame, more_messages_than_it_holds_go_to_jansson)
{
    char frame[2048];
    int n = snprintf(frame, sizeof frame,
                     "{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[");
    for (int i = 0; i < SPOOL_RT_FRAME_MAX_MESSAGES; i++)
        n += snprintf(frame + n, sizeof frame - (size_t)n, "%s{\"id\":\"%d\"}", i ? "," : "", i);
    strcpy(frame + n, "]}");
    cr_assert_eq(diff(frame), 1);
    strcpy(frame + n, ",{}]}");
    cr_assert_eq(diff(frame), -1);
}

Test(rt_frame, escapes_are_decoded_in_place)
{
    char buf[] = "{\"type\":\"publish\",\"msgSerial\":5,\"channel\":\"c\",\"messages\":[{\"data\":"
                 "\"a\\\"b\\n\\u00e9\\ud83d\\ude00\"}]}";
    struct spool_rt_frame f;
    cr_assert(spool_rt_frame_parse(buf, strlen(buf), &f));
    cr_assert_eq(f.msgs[0].data.len, 10);
    cr_assert_str_eq(f.msgs[0].data.s, "a\"b\n\xc3\xa9\xf0\x9f\x98\x80");
    /* a duplicate key spelled differently is still a duplicate */
    cr_assert_eq(diff("{\"type\":\"publish\",\"msgSerial\":1,\"channel\":\"c\",\"messages\":[{\"id\":\"a\","
                      "\"\\u0069d\":\"b\"}]}"),
                 -1);
}

Test(rt_frame, every_truncation_goes_to_jansson)
{
    const char *f = BENCH;
    size_t len = strlen(f);
    for (size_t i = 0; i < len; i++)
        cr_assert_eq(rt_frame_diff(f, i, "", &lim), -1, "prefix of %zu bytes", i);
}

/* Every byte of good frames replaced by bytes that matter to a JSON reader: whatever the scanner
 * accepts must read as jansson reads it (rt_frame_diff aborts otherwise). */
Test(rt_frame, single_byte_changes_agree_with_jansson)
{
    const char *frames[] = {
        BENCH,
        "{ \"type\" : \"publish\", \"msgSerial\" : 10, \"channel\" : \"c\", \"messages\" : "
        "[ { \"name\" : \"n\", \"clientId\" : \"alice\" }, { } ] }",
    };
    const char subst[] = {'"', '\\', ',', ':', '{', '}', '[', ']', ' ', '\n', '0', '9', '-', '.',
                          'e', 'x', '\0', '\x01', '\x7f', '\x80', '\xc3', '\xff'};
    const char *ids[] = {"", "alice"};
    const struct spool_message_limits tight = {3, 10};
    int accepted = 0;
    for (size_t k = 0; k < sizeof frames / sizeof frames[0]; k++) {
        size_t len = strlen(frames[k]);
        char *buf = malloc(len + 1);
        for (size_t i = 0; i < len; i++) {
            for (size_t s = 0; s < sizeof subst; s++) {
                memcpy(buf, frames[k], len);
                buf[i] = subst[s];
                for (size_t c = 0; c < 2; c++) {
                    accepted += rt_frame_diff(buf, len, ids[c], &lim) == 1;
                    rt_frame_diff(buf, len, ids[c], &tight);
                }
                /* dropped byte */
                memcpy(buf, frames[k], i);
                memcpy(buf + i, frames[k] + i + 1, len - i - 1);
                rt_frame_diff(buf, len - 1, ids[s & 1], &lim);
            }
        }
        free(buf);
    }
    cr_assert_gt(accepted, 100); /* the changes inside strings and whitespace stay on the scanner */
}

Test(rt_frame, record_verdicts_match_message_json)
{
    const char *f = "{\"type\":\"publish\",\"msgSerial\":3,\"channel\":\"c\",\"messages\":["
                    "{\"id\":\"abcd\"},{\"name\":\"abcd\"},{\"clientId\":\"bob\"},"
                    "{\"data\":\"0123456789a\"},{\"clientId\":\"alice\",\"data\":\"x\"},{}]}";
    const struct spool_message_limits tight = {3, 10};
    cr_assert_eq(rt_frame_diff(f, strlen(f), "alice", &tight), 1);
    cr_assert_eq(rt_frame_diff(f, strlen(f), "", &tight), 1);
    char long_id[300] = "{\"type\":\"publish\",\"msgSerial\":3,\"channel\":\"c\",\"messages\":["
                        "{\"clientId\":\"";
    size_t n = strlen(long_id);
    memset(long_id + n, 'a', 129); /* over SPOOL_CLIENT_ID_MAX */
    strcpy(long_id + n + 129, "\"}]}");
    cr_assert_eq(rt_frame_diff(long_id, strlen(long_id), "", &lim), 1);

    char buf[256];
    strcpy(buf, f);
    struct spool_rt_frame fr;
    cr_assert(spool_rt_frame_parse(buf, strlen(buf), &fr));
    Spool__Record rec;
    const char *why = NULL;
    cr_assert_eq(spool_rt_frame_record(&fr.msgs[0], "", &tight, &rec, &why), SPOOL_MESSAGE_BAD);
    cr_assert_str_eq(why, "id is longer than --max-field-bytes");
    cr_assert_eq(spool_rt_frame_record(&fr.msgs[2], "alice", &tight, &rec, &why),
                 SPOOL_MESSAGE_FORBIDDEN);
    cr_assert_eq(spool_rt_frame_record(&fr.msgs[3], "", &tight, &rec, &why),
                 SPOOL_MESSAGE_TOO_LARGE);
    cr_assert_eq(spool_rt_frame_record(&fr.msgs[5], "alice", &tight, &rec, &why), SPOOL_MESSAGE_OK);
    cr_assert_str_eq(rec.client_id, "alice");
    cr_assert_eq(rec.data.len, 0);
}
