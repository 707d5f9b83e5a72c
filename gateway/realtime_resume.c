/*
 * Resume over the realtime protocol (gateway/resume.h has the key format and the reasoning):
 * issuing keys to connections, and resuming a connection from a key plus the client's serials.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/channel_name.h"
#include "gateway/json_body.h"
#include "gateway/metrics.h"
#include "gateway/realtime_int.h"

/* A fresh resume key for the connection's current attachments. */
void spool_rt_send_resume_key(struct rt_conn *c)
{
    struct spool_resume_state s;
    spool_resume_state_init(&s);
    int64_t now = spool_auth_now_ms();
    int rv = spool_resume_state_set(&s, c->id, c->principal.client_id, c->principal.key_name, now,
                                    now + (int64_t)c->rt->cfg.resume_window_ms);
    for (struct rt_att *t = c->atts; t != NULL && rv == 0; t = t->next)
        rv = spool_resume_state_add(&s, t->channel, spool_attach_serial(t->a));
    size_t len;
    char *key = rv == 0 ? spool_resume_encode(c->rt->secret, &s, &len) : NULL;
    spool_resume_state_close(&s);
    if (key == NULL)
        return;
    spool_rt_send_json(c, json_pack("{s:s,s:s,s:I}", "type", "resumeKey", "resumeKey", key,
                                    "expiresAt",
                                    (json_int_t)(now + (int64_t)c->rt->cfg.resume_window_ms)));
    free(key);
}

/* Resumes from `key`; `serials` (may be NULL) maps channel -> last serial the client processed. */
void spool_rt_resume(struct rt_conn *c, const char *key, json_t *serials)
{
    struct spool_realtime *rt = c->rt;
    struct spool_resume_state s;
    spool_resume_state_init(&s);
    struct spool_err err;
    int rv = spool_resume_decode(rt->secret, key, strlen(key), spool_auth_now_ms(), &s, &err);
    if (rv == SPOOL_ETIMEOUT) {
        json_t *chs = json_object();
        for (size_t i = 0; i < s.n; i++)
            json_object_set_new(chs, s.atts[i].channel, json_integer((json_int_t)s.atts[i].serial));
        spool_rt_send_error(c, SPOOL_RT_ERESUME_EXPIRED,
                            "resume window passed: attach again from your last serials",
                            json_pack("{s:o}", "channels", chs));
        if (rt->counters.resume_expired != NULL)
            spool_counter_inc(rt->counters.resume_expired);
        goto out;
    }
    if (rv != 0) {
        spool_rt_send_error(c, SPOOL_RT_EBAD_RESUME, err.msg, NULL);
        if (rt->counters.resume_refused != NULL)
            spool_counter_inc(rt->counters.resume_refused);
        goto out;
    }
    if (strcmp(s.key_name, c->principal.key_name) != 0 ||
        strcmp(s.client_id, c->principal.client_id) != 0) {
        spool_rt_send_error(c, SPOOL_RT_ERESUME_IDENTITY, "resume key belongs to another identity",
                            NULL);
        if (rt->counters.resume_refused != NULL)
            spool_counter_inc(rt->counters.resume_refused);
        goto out;
    }
    /* The old connection may still be open here (a half-open TCP): it is replaced, and its
     * presence members carry over; or it already dropped and its members wait for us. */
    memcpy(c->id, s.connection_id, sizeof c->id);
    for (struct rt_conn *o = rt->conns; o != NULL; o = o->next) {
        if (o != c && o->open && strcmp(o->id, s.connection_id) == 0) {
            spool_rt_claim_end(o); /* what o's own claim collected is o's to hand over */
            spool_rt_entered_free(c->entered);
            c->entered = o->entered;
            o->entered = NULL;
            spool_ws_close(&o->ws, 4000, "resumed by another connection");
            break;
        }
    }
    /* Members parked by any loop of this process, or left later by the old connection if it is
     * still open on another loop (its end not noticed yet): gateway/realtime_presence.c. */
    spool_rt_adopt_leave(c);
    json_t *from = json_object();
    for (size_t i = 0; i < s.n; i++) {
        json_t *js = serials != NULL ? json_object_get(serials, s.atts[i].channel) : NULL;
        uint64_t serial = json_is_integer(js) && json_integer_value(js) >= 0
                              ? (uint64_t)json_integer_value(js)
                              : s.atts[i].serial;
        json_object_set_new(from, s.atts[i].channel, json_integer((json_int_t)serial));
    }
    spool_rt_send_json(c, json_pack("{s:s,s:s,s:O}", "type", "resumed", "connectionId", c->id,
                              "channels", from));
    if (rt->counters.resumed != NULL)
        spool_counter_inc(rt->counters.resumed);
    const char *ch;
    json_t *v;
    json_object_foreach(from, ch, v)
    {
        struct spool_from f = {SPOOL_FROM_SERIAL, (uint64_t)json_integer_value(v)};
        spool_rt_attach(c, ch, f);
    }
    json_decref(from);
    spool_rt_send_resume_key(c);
out:
    spool_resume_state_close(&s);
}
