/*
 * Fuzzes the realtime protocol's hand-written JSON handling: the first byte picks the target.
 *   even: the rest is a packed Spool__Record (arbitrary data bytes, content types, actions);
 *         spool_rt_record_json must encode it into JSON that parses back, with the serial and
 *         channel intact and a data field present (the encoder falls back to strings or base64
 *         for data that is not JSON).
 *   odd:  the rest is JSON given as an attach "from"; spool_rt_parse_from must accept exactly
 *         "live", "start", a serial >= 0, {"last": N >= 0} (and null), and refuse anything else.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/json_body.h"
#include "gateway/realtime.h"
#include "gateway/websocket.h"

static void check_record(const uint8_t *d, size_t n)
{
    Spool__Record *rec = spool__record__unpack(NULL, n, d);
    if (rec == NULL)
        return;
    json_t *o = spool_rt_record_json(rec);
    if (o != NULL) {
        size_t len;
        char *s = spool_json_dump(o, &len);
        if (s != NULL) {
            /* Strings that are not UTF-8 cannot be JSON strings and are left out (channel names
             * are ASCII at every entry point, so real records always have theirs). */
            json_t *back = json_loadb(s, len, 0, NULL);
            const char *ch = back ? json_string_value(json_object_get(back, "channel")) : NULL;
            bool utf8 = spool_utf8_valid((const uint8_t *)rec->channel, strlen(rec->channel));
            if (back == NULL ||
                (json_int_t)rec->seq != json_integer_value(json_object_get(back, "serial")) ||
                json_object_get(back, "data") == NULL || (utf8 && (ch == NULL || strcmp(ch, rec->channel) != 0)))
                abort();
            json_decref(back);
            free(s);
        }
        json_decref(o);
    }
    spool__record__free_unpacked(rec, NULL);
}

static void check_from(const uint8_t *d, size_t n)
{
    json_t *v = json_loadb((const char *)d, n, JSON_DECODE_ANY, NULL);
    if (v == NULL)
        return;
    struct spool_from f;
    int rv = spool_rt_parse_from(v, &f);
    json_t *last = json_is_object(v) ? json_object_get(v, "last") : NULL;
    int valid = json_is_null(v) ||
                (json_is_string(v) && (strcmp(json_string_value(v), "live") == 0 ||
                                       strcmp(json_string_value(v), "start") == 0)) ||
                (json_is_integer(v) && json_integer_value(v) >= 0) ||
                (json_object_size(v) == 1 && json_is_integer(last) && json_integer_value(last) >= 0);
    if ((rv == 0) != valid)
        abort();
    json_decref(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 65536)
        return 0;
    if (data[0] & 1)
        check_from(data + 1, size - 1);
    else
        check_record(data + 1, size - 1);
    return 0;
}
