/*
 * The differential check of the publish frame scanner (gateway/rt_frame.h) against jansson, shared
 * by tests/fuzz/fuzz_rt_frame.c and tests/gateway/test_rt_frame.c.
 *
 * rt_frame_diff(frame, len, client_id, lim) scans a private copy of the frame (exactly len bytes,
 * so ASan sees any overrun) and, when the scanner accepts it, requires that jansson reads the
 * same frame to the same thing:
 *   - an object of exactly the four keys, "type" "publish", "msgSerial" the same integer,
 *     "channel" the same bytes, "messages" an array of as many objects;
 *   - each message object holding exactly the keys the scanner saw, as strings of the same bytes;
 *   - spool_message_from_json() on jansson's message and spool_rt_frame_record() on the scanned
 *     one giving the same verdict, the same reason, and records with the same fields.
 * Returns -1 when the scanner refused (the server then uses jansson: nothing to compare), 1 when
 * it accepted and everything matched; aborts on any difference (a fuzzer finding), naming it on
 * stderr.
 */
#ifndef SPOOL_TESTS_RT_FRAME_DIFF_H
#define SPOOL_TESTS_RT_FRAME_DIFF_H

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/message_json.h"
#include "gateway/rt_frame.h"

#define RT_DIFF_REQUIRE(cond)                                                                     \
    do {                                                                                          \
        if (!(cond)) {                                                                            \
            fprintf(stderr, "rt_frame_diff: %s (line %d)\n", #cond, __LINE__);                    \
            abort();                                                                              \
        }                                                                                         \
    } while (0)

static int rt_diff_same_string(const json_t *v, const struct spool_rt_str *s)
{
    if (s->s == NULL)
        return v == NULL;
    return json_is_string(v) && json_string_length(v) == s->len && strlen(s->s) == s->len &&
           memcmp(json_string_value(v), s->s, s->len) == 0;
}

static int rt_diff_same_cstr(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void rt_diff_message(json_t *jm, const struct spool_rt_frame_msg *m, const char *client_id,
                            const struct spool_message_limits *lim)
{
    size_t keys = (m->id.s != NULL) + (m->name.s != NULL) + (m->client_id.s != NULL) +
                  (m->data.s != NULL);
    RT_DIFF_REQUIRE(json_is_object(jm) && json_object_size(jm) == keys);
    RT_DIFF_REQUIRE(rt_diff_same_string(json_object_get(jm, "id"), &m->id));
    RT_DIFF_REQUIRE(rt_diff_same_string(json_object_get(jm, "name"), &m->name));
    RT_DIFF_REQUIRE(rt_diff_same_string(json_object_get(jm, "clientId"), &m->client_id));
    RT_DIFF_REQUIRE(rt_diff_same_string(json_object_get(jm, "data"), &m->data));

    Spool__Record a, b;
    char *owned[2] = {NULL, NULL};
    const char *why_a = NULL, *why_b = NULL;
    enum spool_message_verdict va = spool_message_from_json(jm, client_id, lim, &a, owned, &why_a);
    enum spool_message_verdict vb = spool_rt_frame_record(m, client_id, lim, &b, &why_b);
    RT_DIFF_REQUIRE(va == vb);
    if (va != SPOOL_MESSAGE_OK) {
        RT_DIFF_REQUIRE(why_a != NULL && why_b != NULL && strcmp(why_a, why_b) == 0);
    } else {
        RT_DIFF_REQUIRE(a.action == b.action && a.version == b.version);
        RT_DIFF_REQUIRE(rt_diff_same_cstr(a.id, b.id));
        RT_DIFF_REQUIRE(rt_diff_same_cstr(a.name, b.name));
        RT_DIFF_REQUIRE(rt_diff_same_cstr(a.client_id, b.client_id));
        RT_DIFF_REQUIRE(rt_diff_same_cstr(a.content_type, b.content_type));
        RT_DIFF_REQUIRE(a.data.len == b.data.len &&
                        (a.data.len == 0 || memcmp(a.data.data, b.data.data, a.data.len) == 0));
        RT_DIFF_REQUIRE(a.extras.len == 0 && b.extras.len == 0);
        RT_DIFF_REQUIRE(a.ref_seq == b.ref_seq && a.turn_epoch == b.turn_epoch);
    }
    free(owned[0]);
    free(owned[1]);
}

static int rt_frame_diff(const char *frame, size_t len, const char *client_id,
                         const struct spool_message_limits *lim)
{
    char *buf = malloc(len > 0 ? len : 1);
    RT_DIFF_REQUIRE(buf != NULL);
    memcpy(buf, frame, len);
    struct spool_rt_frame f;
    if (!spool_rt_frame_parse(buf, len, &f)) {
        free(buf);
        return -1;
    }
    json_t *j = json_loadb(frame, len, 0, NULL);
    RT_DIFF_REQUIRE(json_is_object(j) && json_object_size(j) == 4);
    const char *type = json_string_value(json_object_get(j, "type"));
    RT_DIFF_REQUIRE(type != NULL && strcmp(type, "publish") == 0);
    json_t *serial = json_object_get(j, "msgSerial");
    RT_DIFF_REQUIRE(json_is_integer(serial) && json_integer_value(serial) == f.msg_serial &&
                    f.msg_serial >= 0);
    RT_DIFF_REQUIRE(f.channel.s != NULL &&
                    rt_diff_same_string(json_object_get(j, "channel"), &f.channel));
    json_t *msgs = json_object_get(j, "messages");
    RT_DIFF_REQUIRE(json_is_array(msgs) && json_array_size(msgs) == f.n && f.n >= 1 &&
                    f.n <= SPOOL_RT_FRAME_MAX_MESSAGES);
    for (size_t i = 0; i < f.n; i++)
        rt_diff_message(json_array_get(msgs, i), &f.msgs[i], client_id, lim);
    json_decref(j);
    free(buf);
    return 1;
}

#endif
