/* The publish frame scanner; see rt_frame.h for what it accepts and why. */
#include "gateway/rt_frame.h"

#include <string.h>

#include "gateway/auth.h"
#include "gateway/msg_scan.h"

#define IS(k, lit) SPOOL_MSG_SCAN_IS(k, lit)

/* 0 or [1-9][0-9]{0,17}: what fits json_int_t for sure; anything else is left to jansson. */
static bool take_serial(struct spool_msg_scan *s, int64_t *out)
{
    spool_msg_scan_ws(s);
    char *start = s->p;
    int64_t v = 0;
    size_t digits = 0;
    for (; s->p < s->end && *s->p >= '0' && *s->p <= '9'; s->p++)
        if (++digits <= 18)
            v = v * 10 + (*s->p - '0');
    if (digits == 0 || digits > 18 || (digits > 1 && start[0] == '0'))
        return false;
    if (s->p < s->end && (*s->p == '.' || *s->p == 'e' || *s->p == 'E'))
        return false;
    *out = v;
    return true;
}

static bool take_messages(struct spool_msg_scan *s, struct spool_rt_frame *f)
{
    if (!spool_msg_scan_take(s, '['))
        return false;
    do {
        if (f->n == SPOOL_RT_FRAME_MAX_MESSAGES || !spool_msg_scan_message(s, &f->msgs[f->n]))
            return false;
        f->n++;
    } while (spool_msg_scan_take(s, ','));
    return spool_msg_scan_take(s, ']');
}

bool spool_rt_frame_parse(char *buf, size_t len, struct spool_rt_frame *f)
{
    enum { TYPE = 1, SERIAL = 2, CHANNEL = 4, MESSAGES = 8 };
    struct spool_msg_scan s = {buf, buf + len};
    unsigned seen = 0;
    f->n = 0;
    f->channel = (struct spool_rt_str){NULL, 0};
    if (!spool_msg_scan_take(&s, '{'))
        return false;
    do {
        struct spool_rt_str k, v;
        unsigned bit;
        if (!spool_msg_scan_key(&s, &k))
            return false;
        bool ok;
        if (IS(&k, "type")) {
            bit = TYPE;
            ok = spool_msg_scan_string(&s, &v) && IS(&v, "publish");
        } else if (IS(&k, "msgSerial")) {
            bit = SERIAL;
            ok = take_serial(&s, &f->msg_serial);
        } else if (IS(&k, "channel")) {
            bit = CHANNEL;
            ok = spool_msg_scan_string(&s, &f->channel);
        } else if (IS(&k, "messages")) {
            bit = MESSAGES;
            ok = (seen & MESSAGES) == 0 && take_messages(&s, f);
        } else {
            return false;
        }
        if (!ok || (seen & bit) != 0)
            return false;
        seen |= bit;
    } while (spool_msg_scan_take(&s, ','));
    if (!spool_msg_scan_take(&s, '}'))
        return false;
    spool_msg_scan_ws(&s);
    return s.p == s.end && seen == (TYPE | SERIAL | CHANNEL | MESSAGES);
}

enum spool_message_verdict spool_rt_frame_record(const struct spool_rt_frame_msg *m,
                                                 const char *client_id,
                                                 const struct spool_message_limits *lim,
                                                 Spool__Record *rec, const char **why)
{
    spool__record__init(rec);
    rec->action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
    rec->version = 1;
    if (m->id.s != NULL) {
        if (m->id.len > lim->max_field_bytes) {
            *why = "id is longer than --max-field-bytes";
            return SPOOL_MESSAGE_BAD;
        }
        rec->id = (char *)m->id.s;
    }
    if (m->name.s != NULL) {
        if (m->name.len > lim->max_field_bytes) {
            *why = "name is longer than --max-field-bytes";
            return SPOOL_MESSAGE_BAD;
        }
        rec->name = (char *)m->name.s;
    }
    if (m->client_id.s != NULL) {
        if (m->client_id.len > SPOOL_CLIENT_ID_MAX) {
            *why = "clientId is too long";
            return SPOOL_MESSAGE_BAD;
        }
        if (client_id[0] != '\0' && strcmp(client_id, m->client_id.s) != 0) {
            *why = "clientId does not match the credentials' client id";
            return SPOOL_MESSAGE_FORBIDDEN;
        }
        rec->client_id = (char *)m->client_id.s;
    } else if (client_id[0] != '\0') {
        rec->client_id = (char *)client_id;
    }
    if (m->data.s != NULL) {
        rec->data.data = (uint8_t *)m->data.s;
        rec->data.len = m->data.len;
        rec->content_type = "text/plain";
    }
    if (rec->data.len > lim->max_message_bytes) {
        *why = "message data and extras exceed --max-message-bytes";
        return SPOOL_MESSAGE_TOO_LARGE;
    }
    return SPOOL_MESSAGE_OK;
}
