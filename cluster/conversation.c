/*
 * AI conversation rules at apply time (see conversation.h).
 *
 * One transition function, step(), moves a state (a message's or a channel turn's) by one
 * record, or refuses it with a reason. check() runs it on scratch copies (nothing changes until
 * the whole publish is known to pass); stored() runs it on the cached states and rewrites the
 * record; rebuilding a state from the store replays the stored records through the same
 * function (stored records always passed it). The cache is a hash table of entries keyed by
 * (channel, seq), seq 0 being the channel's turn, with an LRU list bounding it.
 */
#include "cluster/conversation.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

#define CONV_DEFAULT_ENTRIES 65536
#define CONV_DEFAULT_SCAN 100000

struct conv_ent {
    struct conv_ent *hnext;        /* bucket chain */
    struct conv_ent *lprev, *lnext; /* LRU, most recent first */
    char *channel;
    uint64_t seq; /* the message's serial; 0 = the channel's turn */
    bool exists;  /* message: a create was found; turn: always */
    char *who;    /* message: author; turn: holder ("" = none) */
    uint32_t version;
    bool final, deleted;
    uint64_t epoch;  /* turn: the serial of the claim that started the lease */
    int64_t expires; /* turn lease end; 0 = not held */
    uint64_t anchor; /* turn: serial of the newest "ai.turn" record (0 = none) */
    bool expired;    /* turn: ended by an "expire" record (not a release) */
    struct conv_ent *tprev, *tnext; /* turns only: spool_conv->turns (spool_conv_due) */
    int64_t proposed_at; /* turn, leader side only: when its expiry was last proposed */
};

struct spool_conv {
    struct spool_store *store;
    size_t max_entries, scan_max;
    struct conv_ent **buckets;
    size_t n_buckets, n;
    struct conv_ent *lru_head, *lru_tail;
    struct conv_ent *turns; /* every cached turn entry (seq 0) */
    char **bufs; /* rewritten turn data of the current entry */
    size_t n_bufs, cap_bufs;
};

/* --- small helpers --------------------------------------------------------------------- */

static const char *str_or_empty(const char *s)
{
    return s != NULL ? s : "";
}

bool spool_conv_is_final(const Spool__Record *m)
{
    const char *p = (const char *)m->extras.data, *end = p + m->extras.len;
    if (p == NULL)
        return false;
    for (const char *q = p; q + 7 <= end; q++) {
        if (memcmp(q, "\"final\"", 7) != 0)
            continue;
        const char *r = q + 7;
        while (r < end && (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r'))
            r++;
        if (r >= end || *r != ':')
            continue;
        r++;
        while (r < end && (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r'))
            r++;
        if (end - r >= 4 && memcmp(r, "true", 4) == 0)
            return true;
    }
    return false;
}

static bool is_turn(const Spool__Record *m)
{
    return m->action == SPOOL__ACTION__ACTION_CHANNEL_META && m->name != NULL &&
           strcmp(m->name, SPOOL_CONV_TURN) == 0;
}

static bool is_ref_action(const Spool__Record *m)
{
    return m->action == SPOOL__ACTION__ACTION_MESSAGE_APPEND ||
           m->action == SPOOL__ACTION__ACTION_MESSAGE_UPDATE ||
           m->action == SPOOL__ACTION__ACTION_MESSAGE_DELETE;
}

bool spool_conv_applies(const Spool__Record *m)
{
    return is_ref_action(m) || is_turn(m) || m->turn_epoch != 0;
}

static bool data_is(const Spool__Record *m, const char *s)
{
    size_t n = strlen(s);
    return m->data.len == n && memcmp(m->data.data, s, n) == 0;
}

/* --- the transition ---------------------------------------------------------------------- */

/* Message state `e` moved by record m (an append/update/delete referring to it). */
static int step_message(struct conv_ent *e, const Spool__Record *m, char *reason)
{
    const char *client = str_or_empty(m->client_id);
    unsigned long long ref = (unsigned long long)m->ref_seq;
    if (!e->exists) {
        snprintf(reason, SPOOL_CONV_REASON_MAX,
                 "message %llu does not exist on this channel (or is no longer retained)", ref);
        return SPOOL_ENOENT;
    }
    if (e->deleted) {
        snprintf(reason, SPOOL_CONV_REASON_MAX, "message %llu was deleted", ref);
        return SPOOL_ENOENT;
    }
    switch (m->action) {
    case SPOOL__ACTION__ACTION_MESSAGE_APPEND:
        if (e->final) {
            snprintf(reason, SPOOL_CONV_REASON_MAX,
                     "message %llu is final: no more appends (update it instead)", ref);
            return SPOOL_ECONFLICT;
        }
        if (strcmp(e->who, client) != 0 && !(m->flags & SPOOL_CONV_FLAG_EDIT_ANY)) {
            snprintf(reason, SPOOL_CONV_REASON_MAX,
                     "only the author of message %llu (or a holder of edit-any) may append", ref);
            return SPOOL_EDENIED;
        }
        e->final = spool_conv_is_final(m);
        return 0;
    case SPOOL__ACTION__ACTION_MESSAGE_UPDATE:
        if (strcmp(e->who, client) != 0 && !(m->flags & SPOOL_CONV_FLAG_EDIT_ANY)) {
            snprintf(reason, SPOOL_CONV_REASON_MAX,
                     "only the author of message %llu (or a holder of edit-any) may update it",
                     ref);
            return SPOOL_EDENIED;
        }
        e->version++;
        e->final = e->final || spool_conv_is_final(m);
        return 0;
    default: /* delete */
        if (strcmp(e->who, client) != 0 && !(m->flags & SPOOL_CONV_FLAG_DELETE_ANY)) {
            snprintf(reason, SPOOL_CONV_REASON_MAX,
                     "only the author of message %llu (or a holder of delete-any) may delete it",
                     ref);
            return SPOOL_EDENIED;
        }
        e->version++;
        e->deleted = true;
        return 0;
    }
}

/* A publish carrying turn_epoch must come from the live holder of that epoch. */
static int check_epoch(const struct conv_ent *t, const Spool__Record *m, int64_t ts, char *reason)
{
    unsigned long long want = (unsigned long long)m->turn_epoch;
    if (t->expires == 0 || t->expires <= ts) {
        snprintf(reason, SPOOL_CONV_REASON_MAX,
                 "stale turn epoch %llu: the turn is not held (epoch %llu %s)", want,
                 (unsigned long long)t->epoch,
                 t->expires == 0 && !t->expired ? "released" : "expired");
        return SPOOL_ECONFLICT;
    }
    if (t->epoch != m->turn_epoch || strcmp(t->who, str_or_empty(m->client_id)) != 0) {
        snprintf(reason, SPOOL_CONV_REASON_MAX,
                 "stale turn epoch %llu: the turn is at epoch %llu, held by \"%.64s\"", want,
                 (unsigned long long)t->epoch, t->who);
        return SPOOL_ECONFLICT;
    }
    return 0;
}

/* Turn state `t` moved by an "ai.turn" request m at time ts. *prev_who / *prev_expired describe
 * the holder replaced (for the stored record). who is borrowed from m on success. */
static int step_turn(struct conv_ent *t, const Spool__Record *m, int64_t ts, char *reason,
                     const char **op)
{
    const char *client = str_or_empty(m->client_id);
    bool live = t->expires != 0 && t->expires > ts;
    if (data_is(m, "claim")) {
        if (m->expires_ms <= 0) {
            snprintf(reason, SPOOL_CONV_REASON_MAX, "a turn claim needs a lease (ttl) > 0");
            return SPOOL_EINVAL;
        }
        if (live && strcmp(t->who, client) == 0) {
            *op = "renew";
        } else if (live && !(m->flags & SPOOL_CONV_FLAG_TAKEOVER)) {
            snprintf(reason, SPOOL_CONV_REASON_MAX,
                     "the turn is held by \"%.64s\" (epoch %llu) for %lld more ms", t->who,
                     (unsigned long long)t->epoch, (long long)(t->expires - ts));
            return SPOOL_ECONFLICT;
        } else {
            *op = live ? "takeover" : "claim";
            t->epoch = m->seq; /* grows with the log (0 while only being checked) */
        }
        t->expires = ts + m->expires_ms;
        t->expired = false;
        return 0;
    }
    if (data_is(m, "expire")) {
        /* Proposed by the shard leader when it sees the lease end (conversation_turn.c);
         * decided here by the entry's time, so every replica agrees, and only the lease that
         * ended is expired, once: a renewal, release, take-over or an earlier expire in between
         * makes it a no-op refusal. */
        if (t->expires == 0 || live || m->turn_epoch != t->epoch) {
            snprintf(reason, SPOOL_CONV_REASON_MAX,
                     "nothing to expire: the turn (epoch %llu) is %s", (unsigned long long)t->epoch,
                     live ? "live" : t->expires == 0 ? "not held" : "at another epoch");
            return SPOOL_ECONFLICT;
        }
        *op = "expire";
        t->expires = 0;
        t->expired = true;
        return 0;
    }
    if (data_is(m, "release")) {
        if (!live || strcmp(t->who, client) != 0 ||
            (m->turn_epoch != 0 && m->turn_epoch != t->epoch)) {
            snprintf(reason, SPOOL_CONV_REASON_MAX,
                     "release refused: the turn (epoch %llu) is not held by this client", 
                     (unsigned long long)t->epoch);
            return SPOOL_ECONFLICT;
        }
        *op = "release";
        t->expires = 0;
        t->expired = false;
        return 0;
    }
    snprintf(reason, SPOOL_CONV_REASON_MAX, "an ai.turn request is \"claim\" or \"release\"");
    return SPOOL_EINVAL;
}

/* --- the cache -------------------------------------------------------------------------- */

static size_t hash_of(const char *channel, uint64_t seq)
{
    uint64_t h = 1469598103934665603ull ^ seq;
    for (const unsigned char *p = (const unsigned char *)channel; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return (size_t)(h ^ (h >> 29));
}

static void lru_unlink(struct spool_conv *c, struct conv_ent *e)
{
    if (e->lprev) e->lprev->lnext = e->lnext;
    else c->lru_head = e->lnext;
    if (e->lnext) e->lnext->lprev = e->lprev;
    else c->lru_tail = e->lprev;
    e->lprev = e->lnext = NULL;
}

static void lru_front(struct spool_conv *c, struct conv_ent *e)
{
    e->lnext = c->lru_head;
    e->lprev = NULL;
    if (c->lru_head) c->lru_head->lprev = e;
    c->lru_head = e;
    if (c->lru_tail == NULL) c->lru_tail = e;
}

static void ent_free(struct conv_ent *e)
{
    free(e->channel);
    free(e->who);
    free(e);
}

static void ent_remove(struct spool_conv *c, struct conv_ent *e)
{
    struct conv_ent **pp = &c->buckets[hash_of(e->channel, e->seq) & (c->n_buckets - 1)];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(c, e);
    if (e->seq == 0) {
        if (e->tprev) e->tprev->tnext = e->tnext;
        else c->turns = e->tnext;
        if (e->tnext) e->tnext->tprev = e->tprev;
    }
    c->n--;
    ent_free(e);
}

static struct conv_ent *find(struct spool_conv *c, const char *channel, uint64_t seq)
{
    struct conv_ent *e = c->buckets[hash_of(channel, seq) & (c->n_buckets - 1)];
    for (; e != NULL; e = e->hnext)
        if (e->seq == seq && strcmp(e->channel, channel) == 0)
            return e;
    return NULL;
}

static int set_who(struct conv_ent *e, const char *who)
{
    char *s = strdup(str_or_empty(who));
    if (s == NULL)
        return SPOOL_ENOMEM;
    free(e->who);
    e->who = s;
    return 0;
}

static struct conv_ent *insert(struct spool_conv *c, const char *channel, uint64_t seq)
{
    struct conv_ent *e = calloc(1, sizeof *e); /* evictions wait for spool_conv_entry_done() */
    if (e == NULL || (e->channel = strdup(channel)) == NULL || (e->who = strdup("")) == NULL) {
        if (e != NULL)
            free(e->channel);
        free(e);
        return NULL;
    }
    e->seq = seq;
    size_t b = hash_of(channel, seq) & (c->n_buckets - 1);
    e->hnext = c->buckets[b];
    c->buckets[b] = e;
    lru_front(c, e);
    if (seq == 0) {
        e->tnext = c->turns;
        if (c->turns) c->turns->tprev = e;
        c->turns = e;
    }
    c->n++;
    return e;
}

/* Rebuilding from the store. */
struct load {
    struct conv_ent *e;
    size_t visited, max;
    bool first;
    int rc;
};

static int load_message_cb(void *arg, const Spool__Record *rec)
{
    struct load *l = arg;
    if (++l->visited > l->max)
        return 1;
    if (l->first) {
        l->first = false;
        if (rec->seq != l->e->seq || rec->action != SPOOL__ACTION__ACTION_MESSAGE_CREATE)
            return 1; /* not a message */
        l->e->exists = true;
        l->e->version = rec->version ? rec->version : 1;
        l->e->final = spool_conv_is_final(rec);
        l->rc = set_who(l->e, rec->client_id);
        return l->rc != 0;
    }
    if (rec->ref_seq == l->e->seq && is_ref_action(rec)) {
        char reason[SPOOL_CONV_REASON_MAX];
        Spool__Record r = *rec;
        r.flags |= SPOOL_CONV_FLAG_EDIT_ANY | SPOOL_CONV_FLAG_DELETE_ANY; /* it was accepted */
        step_message(l->e, &r, reason);
    }
    return 0;
}

static int load_turn_cb(void *arg, const Spool__Record *rec)
{
    struct load *l = arg;
    if (++l->visited > l->max)
        return 1;
    if (!is_turn(rec))
        return 0;
    l->e->epoch = rec->turn_epoch;
    l->e->expires = rec->expires_ms;
    l->e->anchor = rec->seq;
    static const char expire_op[] = "{\"op\":\"expire\"";
    l->e->expired = rec->data.len >= sizeof expire_op - 1 &&
                    memcmp(rec->data.data, expire_op, sizeof expire_op - 1) == 0;
    l->rc = set_who(l->e, rec->client_id);
    return 1;
}

/* A turn whose newest record is out of reach of a rebuild (not retained, or scan_max or more
 * records back) is forgotten on the cached path too, so both paths agree on every replica. */
static void turn_reach(struct spool_conv *c, struct conv_ent *t)
{
    uint64_t last = spool_store_last_seq(c->store, t->channel);
    if (t->anchor == 0 || t->anchor > last) /* none, or stored by the entry being applied */
        return;
    if (t->anchor < spool_store_first_seq(c->store, t->channel) || last - t->anchor >= c->scan_max) {
        /* exactly what a rebuild finds: no turn record, so no holder, epoch or expiry either
         * (the next claim's previousHolder / previousExpired are stored: they must agree) */
        t->anchor = 0;
        t->expires = 0;
        t->epoch = 0;
        t->expired = false;
        set_who(t, ""); /* out of memory: the old name stays (only in previousHolder) */
    }
}

/* The cached state of (channel, seq), rebuilt from the store on a miss; NULL = out of memory. */
static struct conv_ent *get(struct spool_conv *c, const char *channel, uint64_t seq)
{
    struct conv_ent *e = find(c, channel, seq);
    if (e != NULL) {
        lru_unlink(c, e);
        lru_front(c, e);
        if (seq == 0)
            turn_reach(c, e);
        return e;
    }
    if ((e = insert(c, channel, seq)) == NULL)
        return NULL;
    e->exists = seq == 0;
    e->version = 1;
    struct load l = {.e = e, .max = c->scan_max, .first = true};
    struct spool_err err;
    int rv = 0;
    if (seq == 0)
        rv = spool_store_read_backward(c->store, channel, 0, 0, load_turn_cb, &l, &err);
    else if (seq >= spool_store_first_seq(c->store, channel) &&
             seq <= spool_store_last_seq(c->store, channel))
        rv = spool_store_read(c->store, channel, seq - 1, 0, load_message_cb, &l, &err);
    if (rv != 0 || l.rc != 0) {
        if (rv != 0)
            SPOOL_WARN("conv.load_failed", "channel=%s seq=%" PRIu64 " msg=\"%s\"", channel, seq,
                       err.msg);
        ent_remove(c, e);
        return NULL;
    }
    if (l.visited > l.max)
        SPOOL_WARN("conv.scan_limit", "channel=%s seq=%" PRIu64 " scanned=%zu", channel, seq,
                   l.max);
    return e;
}

/* --- public ---------------------------------------------------------------------------- */

struct spool_conv *spool_conv_new(struct spool_store *store, const struct spool_conv_config *cfg)
{
    struct spool_conv *c = calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->store = store;
    c->max_entries = cfg && cfg->max_entries ? cfg->max_entries : CONV_DEFAULT_ENTRIES;
    c->scan_max = cfg && cfg->scan_max ? cfg->scan_max : CONV_DEFAULT_SCAN;
    c->n_buckets = 64;
    while (c->n_buckets < c->max_entries / 2)
        c->n_buckets *= 2;
    c->buckets = calloc(c->n_buckets, sizeof *c->buckets);
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

void spool_conv_reset(struct spool_conv *c)
{
    while (c->lru_tail != NULL)
        ent_remove(c, c->lru_tail);
}

void spool_conv_entry_done(struct spool_conv *c)
{
    /* Evict only between entries: every cached state is then in the store, so a state rebuilt
     * later equals the one evicted, on every replica whatever its cache held. A turn with a
     * lease is kept (moved to the front) so the leader still sees it end (spool_conv_due). */
    size_t spared = 0;
    while (c->n > c->max_entries && c->lru_tail != NULL && spared < c->n) {
        struct conv_ent *e = c->lru_tail;
        if (e->seq == 0 && e->expires != 0) {
            lru_unlink(c, e);
            lru_front(c, e);
            spared++;
            continue;
        }
        ent_remove(c, e);
    }
    for (size_t i = 0; i < c->n_bufs; i++)
        free(c->bufs[i]);
    c->n_bufs = 0;
}

void spool_conv_free(struct spool_conv *c)
{
    if (c == NULL)
        return;
    spool_conv_reset(c);
    spool_conv_entry_done(c);
    free(c->bufs);
    free(c->buckets);
    free(c);
}

/* Scratch copies for one check: who is borrowed (from the cache or the messages). */
struct scratch {
    struct conv_ent v[16];
    size_t n;
};

static struct conv_ent *scratch_get(struct spool_conv *c, struct scratch *s, const char *channel,
                                    uint64_t seq, int *rc)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].seq == seq)
            return &s->v[i];
    struct conv_ent *e = get(c, channel, seq);
    if (e == NULL) {
        *rc = SPOOL_ENOMEM;
        return NULL;
    }
    if (s->n == sizeof s->v / sizeof s->v[0]) {
        *rc = SPOOL_ELIMIT;
        return NULL;
    }
    s->v[s->n] = *e;
    if (seq != 0 && !e->exists)
        ent_remove(c, e); /* never cache "no such message": it may be created later */
    return &s->v[s->n++];
}

int spool_conv_check(struct spool_conv *c, const char *channel, const Spool__Record *const *msgs,
                     const bool *skip, size_t n, int64_t ts, char *reason)
{
    struct scratch s = {.n = 0};
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const Spool__Record *m = msgs[i];
        if ((skip != NULL && skip[i]) || !spool_conv_applies(m))
            continue;
        struct conv_ent *e = NULL;
        if (m->turn_epoch != 0 && !is_turn(m)) {
            if ((e = scratch_get(c, &s, channel, 0, &rc)) == NULL)
                break;
            if ((rc = check_epoch(e, m, ts, reason)) != 0)
                break;
        }
        if (is_turn(m)) {
            const char *op;
            if ((e = scratch_get(c, &s, channel, 0, &rc)) == NULL)
                break;
            if ((rc = step_turn(e, m, ts, reason, &op)) == 0 && strcmp(op, "expire") != 0)
                e->who = (char *)str_or_empty(m->client_id);
        } else if (is_ref_action(m)) {
            if (m->ref_seq == 0) {
                snprintf(reason, SPOOL_CONV_REASON_MAX, "an append, update or delete needs refSerial");
                rc = SPOOL_EINVAL;
                break;
            }
            uint64_t last = spool_store_last_seq(c->store, channel);
            if (m->ref_seq <= last && last - m->ref_seq >= c->scan_max) {
                snprintf(reason, SPOOL_CONV_REASON_MAX,
                         "message %llu is too old to change (more than %zu records ago)",
                         (unsigned long long)m->ref_seq, c->scan_max);
                rc = SPOOL_ECONFLICT;
                break;
            }
            if (m->ref_seq < spool_store_first_seq(c->store, channel)) { /* as a rebuild sees it */
                snprintf(reason, SPOOL_CONV_REASON_MAX,
                         "message %llu does not exist on this channel (or is no longer retained)",
                         (unsigned long long)m->ref_seq);
                rc = SPOOL_ENOENT;
                break;
            }
            if ((e = scratch_get(c, &s, channel, m->ref_seq, &rc)) == NULL)
                break;
            rc = step_message(e, m, reason);
        }
    }
    if (rc == SPOOL_ENOMEM)
        snprintf(reason, SPOOL_CONV_REASON_MAX, "out of memory checking the message");
    else if (rc == SPOOL_ELIMIT)
        snprintf(reason, SPOOL_CONV_REASON_MAX, "one publish may refer to at most 16 messages");
    return rc;
}

static size_t json_escape(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20) {
            o += (size_t)snprintf(out + o, cap - o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
    return o;
}

int spool_conv_stored(struct spool_conv *c, Spool__Record *rec)
{
    if (!spool_conv_applies(rec))
        return 0;
    char reason[SPOOL_CONV_REASON_MAX];
    if (is_turn(rec)) {
        struct conv_ent *t = get(c, rec->channel, 0);
        if (t == NULL)
            return SPOOL_ENOMEM;
        char prev[300];
        json_escape(prev, sizeof prev, t->who);
        bool prev_expired = t->expired || (t->expires != 0 && t->expires <= rec->timestamp_ms);
        int64_t lease_end = t->expires;
        const char *op = "claim";
        if (step_turn(t, rec, rec->timestamp_ms, reason, &op) != 0)
            return 0; /* cannot happen after a check */
        bool expire = strcmp(op, "expire") == 0;
        if (!expire && set_who(t, rec->client_id) != 0)
            return SPOOL_ENOMEM;
        if (c->n_bufs + 2 > c->cap_bufs) {
            size_t cap = c->cap_bufs ? 2 * c->cap_bufs : 8;
            char **b = realloc(c->bufs, cap * sizeof *b);
            if (b == NULL)
                return SPOOL_ENOMEM;
            c->bufs = b;
            c->cap_bufs = cap;
        }
        char holder[300];
        json_escape(holder, sizeof holder, expire ? "" : t->who);
        char *buf = malloc(800);
        if (buf == NULL)
            return SPOOL_ENOMEM;
        int len;
        if (expire) /* the holder's lease ended: nobody holds the turn; the record keeps the
                     * expired holder as its client id (a rebuild reads previousHolder there) */
            len = snprintf(buf, 800,
                           "{\"op\":\"expire\",\"holder\":\"\",\"epoch\":%" PRIu64
                           ",\"expiresAt\":0,\"previousHolder\":\"%s\",\"previousExpired\":true,"
                           "\"expiredAt\":%" PRId64 "}",
                           t->epoch, prev, lease_end);
        else
            len = snprintf(buf, 800,
                           "{\"op\":\"%s\",\"holder\":\"%s\",\"epoch\":%" PRIu64
                           ",\"expiresAt\":%" PRId64 ",\"previousHolder\":\"%s\","
                           "\"previousExpired\":%s}",
                           op, holder, t->epoch, t->expires, prev, prev_expired ? "true" : "false");
        c->bufs[c->n_bufs++] = buf;
        rec->data.data = (uint8_t *)buf;
        rec->data.len = (size_t)len;
        rec->content_type = "application/json";
        if (expire) {
            char *who = strdup(t->who);
            if (who == NULL)
                return SPOOL_ENOMEM;
            c->bufs[c->n_bufs++] = who;
            rec->client_id = who;
        }
        t->anchor = rec->seq;
        rec->turn_epoch = t->epoch;
        rec->expires_ms = t->expires;
        return 0;
    }
    if (is_ref_action(rec)) {
        struct conv_ent *e = get(c, rec->channel, rec->ref_seq);
        if (e == NULL)
            return SPOOL_ENOMEM;
        step_message(e, rec, reason);
        rec->version = e->version;
    }
    return 0;
}

size_t spool_conv_due(struct spool_conv *c, int64_t now, int64_t retry_ms, spool_conv_due_cb cb,
                      void *arg)
{
    size_t n = 0;
    for (struct conv_ent *t = c->turns; t != NULL; t = t->tnext) {
        if (t->expires == 0 || t->expires > now || t->epoch == 0)
            continue;
        if (t->proposed_at != 0 && now - t->proposed_at < retry_ms)
            continue;
        t->proposed_at = now;
        cb(arg, t->channel, t->epoch, t->who);
        n++;
    }
    return n;
}

int spool_conv_turn(struct spool_conv *c, const char *channel, int64_t now, const char **holder,
                    uint64_t *epoch, int64_t *expires)
{
    struct conv_ent *t = get(c, channel, 0);
    if (t == NULL)
        return SPOOL_ENOMEM;
    bool live = t->expires != 0 && t->expires > now;
    *holder = live ? t->who : "";
    *epoch = t->epoch;
    *expires = live ? t->expires : 0;
    return 0;
}
