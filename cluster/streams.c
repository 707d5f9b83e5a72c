/*
 * Durable Streams commands applied by the shard state machine (see streams.h).
 *
 * A state is immutable once loaded: a command builds the next state as a shallow copy with some
 * fields replaced, packs it into the new "ds.state" record, and unpacks that record again as the
 * entry overlay's current state. Everything here depends only on the store's content, the
 * command and the entry timestamp, so every replica computes the same outcome.
 */
#include "cluster/streams.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct row {
    char *channel;
    Spool__StreamState *st; /* NULL: the channel has no stream state */
};

struct spool_streams_tx {
    struct spool_store *store;
    struct row *rows;
    size_t n_rows, cap_rows;
    uint8_t **bufs; /* packed state records stored by this entry */
    size_t n_bufs, cap_bufs;
};

struct spool_streams_tx *spool_streams_tx_new(struct spool_store *store)
{
    struct spool_streams_tx *tx = calloc(1, sizeof *tx);
    if (tx != NULL)
        tx->store = store;
    return tx;
}

void spool_streams_tx_free(struct spool_streams_tx *tx)
{
    if (tx == NULL)
        return;
    for (size_t i = 0; i < tx->n_rows; i++) {
        free(tx->rows[i].channel);
        if (tx->rows[i].st != NULL)
            spool__stream_state__free_unpacked(tx->rows[i].st, NULL);
    }
    for (size_t i = 0; i < tx->n_bufs; i++)
        free(tx->bufs[i]);
    free(tx->rows);
    free(tx->bufs);
    free(tx);
}

bool spool_streams_is_state(const Spool__Record *rec)
{
    return rec->action == SPOOL__ACTION__ACTION_CHANNEL_META && rec->name != NULL &&
           strcmp(rec->name, SPOOL_STREAMS_STATE) == 0;
}

bool spool_streams_is_command(const Spool__PublishRequest *p)
{
    if (p->n_messages < SPOOL_STREAMS_SLOTS)
        return false;
    const Spool__Record *m = p->messages[0];
    return m->action == SPOOL__ACTION__ACTION_CHANNEL_META && m->name != NULL &&
           strcmp(m->name, SPOOL_STREAMS_CMD) == 0;
}

struct load {
    Spool__StreamState *st;
    uint64_t newest_data; /* newest non-META record after the state record (native publish) */
};

static int load_visit_cb(void *arg, const Spool__Record *rec)
{
    struct load *l = arg;
    if (!spool_streams_is_state(rec)) {
        if (l->newest_data == 0 && rec->action != SPOOL__ACTION__ACTION_CHANNEL_META)
            l->newest_data = rec->seq;
        return 0;
    }
    l->st = spool__stream_state__unpack(NULL, rec->data.len, rec->data.data);
    spool_streams_native_tail(l->st, l->newest_data);
    return 1;
}

void spool_streams_native_tail(Spool__StreamState *st, uint64_t newest_data_seq)
{
    if (st == NULL || st->deleted || newest_data_seq <= st->base_seq)
        return;
    uint64_t l = spool_streams_l_of(st, newest_data_seq);
    if (l > st->tail)
        st->tail = l;
}

static struct row *row_of(struct spool_streams_tx *tx, const char *channel, struct spool_err *err)
{
    for (size_t i = 0; i < tx->n_rows; i++)
        if (strcmp(tx->rows[i].channel, channel) == 0)
            return &tx->rows[i];
    if (tx->n_rows == tx->cap_rows) {
        size_t cap = tx->cap_rows ? tx->cap_rows * 2 : 4;
        struct row *r = realloc(tx->rows, cap * sizeof *r);
        if (r == NULL)
            return NULL;
        tx->rows = r;
        tx->cap_rows = cap;
    }
    struct row *r = &tx->rows[tx->n_rows];
    r->st = NULL;
    r->channel = strdup(channel);
    if (r->channel == NULL)
        return NULL;
    struct load l = {0};
    if (spool_store_read_backward(tx->store, channel, 0, 0, load_visit_cb, &l, err) != 0)
        SPOOL_WARN("streams.load", "channel=%s msg=\"%s\"", channel, err->msg);
    r->st = l.st;
    tx->n_rows++;
    return r;
}

/* --- helpers ------------------------------------------------------------------------------ */

static void media_type(const char *s, const char **p, size_t *len)
{
    if (s == NULL || s[0] == '\0')
        s = "application/octet-stream";
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strcspn(s, ";");
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    *p = s;
    *len = n;
}

bool spool_streams_ct_equal(const char *a, const char *b)
{
    const char *pa, *pb;
    size_t la, lb;
    media_type(a, &pa, &la);
    media_type(b, &pb, &lb);
    return la == lb && strncasecmp(pa, pb, la) == 0;
}

uint64_t spool_streams_l_of(const Spool__StreamState *st, uint64_t seq)
{
    return seq - st->base_seq + st->origin;
}

uint64_t spool_streams_seq_of(const Spool__StreamState *st, uint64_t l)
{
    return l <= st->origin ? st->base_seq : l - st->origin + st->base_seq;
}

void spool_streams_result(const uint64_t *seqs, size_t n, struct spool_stream_result *out)
{
    memset(out, 0, sizeof *out);
    if (n < SPOOL_STREAMS_SLOTS) {
        out->status = 500;
        return;
    }
    out->status = (int)(seqs[0] & 0xffff);
    out->closed = (seqs[0] >> 16) & 1;
    out->tail = seqs[1];
    out->extra = seqs[2];
    out->seq = seqs[3];
}

static int bytes_cmp(const ProtobufCBinaryData *a, const ProtobufCBinaryData *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = n ? memcmp(a->data, b->data, n) : 0;
    if (c != 0)
        return c;
    return a->len < b->len ? -1 : a->len > b->len ? 1 : 0;
}

static bool expired(const Spool__StreamState *st, int64_t ts)
{
    return st->expires_at_ms != 0 && ts >= st->expires_at_ms;
}

static bool same_config(const Spool__StreamState *cur, const Spool__StreamState *req,
                        bool fork_offset_given)
{
    if (!spool_streams_ct_equal(cur->content_type, req->content_type) ||
        cur->has_ttl != req->has_ttl || (cur->has_ttl && cur->ttl_s != req->ttl_s) ||
        cur->expires_at_ms != req->expires_at_ms || cur->closed != req->closed)
        return false;
    const char *fa = cur->fork_source ? cur->fork_source : "";
    const char *fb = req->fork_source ? req->fork_source : "";
    if (strcmp(fa, fb) != 0)
        return false;
    if (fa[0] != '\0' && fork_offset_given && cur->origin != req->origin)
        return false;
    return cur->fork_sub_offset == req->fork_sub_offset;
}

static const Spool__StreamProducer *producer_find(const Spool__StreamState *st, const char *id)
{
    for (size_t i = 0; i < st->n_producers; i++)
        if (strcmp(st->producers[i]->id, id) == 0)
            return st->producers[i];
    return NULL;
}

static bool same_tuple(const Spool__StreamProducer *a, const Spool__StreamProducer *b)
{
    return a != NULL && b != NULL && a->id != NULL && b->id != NULL && strcmp(a->id, b->id) == 0 &&
           a->epoch == b->epoch && a->seq == b->seq;
}

/* Stores `nw` as the channel's new state record and makes it the overlay's current state. */
static int put_state(struct spool_streams_tx *tx, struct row *row, const char *channel,
                     const Spool__StreamState *nw, uint64_t *next_seq, int64_t ts,
                     Spool__Record *recs, const Spool__Record **ptrs, size_t *n,
                     struct spool_err *err)
{
    size_t len = spool__stream_state__get_packed_size(nw);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "stream state: out of memory");
    spool__stream_state__pack(nw, buf);
    Spool__StreamState *st = spool__stream_state__unpack(NULL, len, buf);
    if (st == NULL || tx->n_bufs == tx->cap_bufs) {
        size_t cap = tx->cap_bufs ? tx->cap_bufs * 2 : 4;
        uint8_t **b = st ? realloc(tx->bufs, cap * sizeof *b) : NULL;
        if (b == NULL) {
            if (st)
                spool__stream_state__free_unpacked(st, NULL);
            free(buf);
            return spool_err_set(err, SPOOL_ENOMEM, "stream state: out of memory");
        }
        tx->bufs = b;
        tx->cap_bufs = cap;
    }
    tx->bufs[tx->n_bufs++] = buf;
    if (row->st != NULL)
        spool__stream_state__free_unpacked(row->st, NULL);
    row->st = st;
    Spool__Record *r = &recs[*n];
    spool__record__init(r);
    r->channel = (char *)channel;
    r->seq = (*next_seq)++;
    r->timestamp_ms = ts;
    r->action = SPOOL__ACTION__ACTION_CHANNEL_META;
    r->name = SPOOL_STREAMS_STATE;
    r->content_type = "application/x-protobuf";
    r->data.data = buf;
    r->data.len = len;
    ptrs[*n] = r;
    (*n)++;
    return 0;
}

static void store_data(const Spool__PublishRequest *p, Spool__StreamState *nw, uint64_t *next_seq,
                       int64_t ts, Spool__Record *recs, const Spool__Record **ptrs, size_t *n)
{
    for (size_t j = SPOOL_STREAMS_SLOTS; j < p->n_messages; j++) {
        Spool__Record *r = &recs[*n];
        *r = *p->messages[j];
        r->channel = p->channel;
        r->seq = (*next_seq)++;
        r->timestamp_ms = ts;
        ptrs[*n] = r;
        (*n)++;
        nw->tail = spool_streams_l_of(nw, r->seq);
    }
}

#define RESULT(st_, closed_, tail_, extra_)                                                        \
    do {                                                                                           \
        out[0] = (uint64_t)(st_) | ((uint64_t)((closed_) ? 1 : 0) << 16);                         \
        out[1] = (tail_);                                                                          \
        out[2] = (extra_);                                                                         \
        out[3] = 0;                                                                                \
    } while (0)

/* --- apply -------------------------------------------------------------------------------- */

int spool_streams_apply(struct spool_streams_tx *tx, const Spool__PublishRequest *p,
                        uint64_t *next_seq, int64_t ts, uint64_t *out, Spool__Record *recs,
                        const Spool__Record **ptrs, size_t *n, struct spool_err *err)
{
    const Spool__Record *m = p->messages[0];
    Spool__StreamCommand *cmd = spool__stream_command__unpack(NULL, m->data.len, m->data.data);
    RESULT(500, false, 0, 0);
    if (cmd == NULL) {
        RESULT(400, false, 0, 0);
        return 0;
    }
    struct row *row = row_of(tx, p->channel, err);
    if (row == NULL) {
        spool__stream_command__free_unpacked(cmd, NULL);
        return spool_err_set(err, SPOOL_ENOMEM, "stream state: out of memory");
    }
    const Spool__StreamState *cur = row->st;
    size_t nd = p->n_messages - SPOOL_STREAMS_SLOTS;
    Spool__StreamState nw;
    bool write = false;
    Spool__StreamProducer **prods = NULL;
    char **refs = NULL;
    int rc = 0;
    bool live = cur != NULL && !cur->deleted;
    if (live) {
        nw = *cur;
        bool ttl_expired = cmd->ttl_expired &&
                           (cmd->incarnation == 0 || cmd->incarnation == cur->base_seq + 1);
        if (!cur->soft_deleted && (expired(cur, ts) || ttl_expired)) {
            /* gone: kept readable for its forks (410), else deleted */
            if (cur->n_fork_refs > 0)
                nw.soft_deleted = true;
            else
                nw.deleted = true;
            write = true;
            live = !nw.deleted;
        }
    }
    bool soft = live && nw.soft_deleted;
    switch (cmd->op) {
    case SPOOL__STREAM_OP__STREAM_OP_CREATE: {
        const Spool__StreamState *req = cmd->create;
        if (req == NULL) {
            RESULT(400, false, 0, 0);
        } else if (soft) {
            RESULT(409, false, 0, 0);
        } else if (live) {
            if (same_config(&nw, req, cmd->fork_offset_given))
                RESULT(200, nw.closed, nw.tail, 0);
            else
                RESULT(409, nw.closed, nw.tail, 0);
        } else {
            nw = *req;
            nw.n_producers = 0;
            nw.producers = NULL;
            nw.n_fork_refs = 0;
            nw.fork_refs = NULL;
            nw.soft_deleted = nw.deleted = false;
            nw.has_stream_seq = false;
            nw.last_stream_seq.len = 0;
            nw.closed_by = NULL;
            nw.base_seq = *next_seq - 1;
            if (nw.fork_source == NULL || nw.fork_source[0] == '\0')
                nw.origin = nw.base_seq;
            nw.tail = nw.origin;
            store_data(p, &nw, next_seq, ts, recs, ptrs, n);
            write = true;
            RESULT(201, nw.closed, nw.tail, nw.base_seq);
        }
        break;
    }
    case SPOOL__STREAM_OP__STREAM_OP_APPEND: {
        const Spool__StreamProducer *rp = cmd->has_producer ? cmd->producer : NULL;
        const Spool__StreamProducer *sp = live && rp ? producer_find(&nw, rp->id) : NULL;
        if (!live) {
            RESULT(404, false, 0, 0);
        } else if (soft) {
            RESULT(410, false, 0, 0);
        } else if (nw.closed) {
            if (rp != NULL && same_tuple(rp, nw.closed_by))
                RESULT(204, true, nw.tail, rp->seq);
            else if (rp == NULL && nd == 0 && cmd->close)
                RESULT(204, true, nw.tail, 0); /* closing a closed stream */
            else if (rp != NULL && sp != NULL && rp->epoch < sp->epoch)
                RESULT(403, true, nw.tail, sp->epoch);
            else
                RESULT(409, true, nw.tail, 0);
        } else if (nd > 0 && !spool_streams_ct_equal(nw.content_type, cmd->content_type)) {
            RESULT(409, false, nw.tail, 0);
        } else {
            int verdict = 0;
            if (rp != NULL) {
                if (sp == NULL) {
                    if (rp->seq != 0)
                        RESULT(verdict = 409, false, nw.tail, 0);
                } else if (rp->epoch < sp->epoch) {
                    RESULT(verdict = 403, false, nw.tail, sp->epoch);
                } else if (rp->epoch > sp->epoch) {
                    if (rp->seq != 0)
                        RESULT(verdict = 400, false, nw.tail, 0);
                } else if (rp->seq <= sp->seq) {
                    RESULT(verdict = 204, false, nw.tail, sp->seq);
                } else if (rp->seq != sp->seq + 1) {
                    RESULT(verdict = 409, false, nw.tail, sp->seq + 1);
                }
            }
            if (verdict == 0 && cmd->has_stream_seq && nw.has_stream_seq &&
                bytes_cmp(&cmd->stream_seq, &nw.last_stream_seq) <= 0)
                RESULT(verdict = 409, false, nw.tail, 0);
            if (verdict != 0)
                break;
            store_data(p, &nw, next_seq, ts, recs, ptrs, n);
            if (cmd->has_stream_seq) {
                nw.has_stream_seq = true;
                nw.last_stream_seq = cmd->stream_seq;
            }
            if (rp != NULL) {
                size_t k = nw.n_producers + (sp == NULL);
                prods = malloc(k * sizeof *prods);
                if (prods == NULL) {
                    rc = spool_err_set(err, SPOOL_ENOMEM, "stream state: out of memory");
                    break;
                }
                size_t w = 0;
                for (size_t i = 0; i < nw.n_producers; i++)
                    if (nw.producers[i] != sp)
                        prods[w++] = nw.producers[i];
                prods[w++] = (Spool__StreamProducer *)rp;
                nw.producers = prods;
                nw.n_producers = w;
            }
            if (cmd->close) {
                nw.closed = true;
                nw.closed_by = (Spool__StreamProducer *)rp;
            }
            write = true;
            RESULT(rp != NULL && nd > 0 ? 200 : 204, nw.closed, nw.tail, rp ? rp->seq : 0);
        }
        break;
    }
    case SPOOL__STREAM_OP__STREAM_OP_DELETE:
        if (cmd->expire_only && live && !soft) {
            RESULT(200, nw.closed, nw.tail, 0); /* not expired (or another incarnation) */
        } else if (!live) {
            RESULT(404, false, 0, 0);
        } else if (soft) {
            RESULT(410, false, 0, 0);
        } else {
            if (nw.n_fork_refs > 0)
                nw.soft_deleted = true;
            else
                nw.deleted = true;
            write = true;
            RESULT(204, false, nw.tail, nw.deleted && nw.fork_source && nw.fork_source[0]);
        }
        break;
    case SPOOL__STREAM_OP__STREAM_OP_FORK_ACQUIRE: {
        uint64_t l = cmd->has_fork_offset ? cmd->fork_offset : (live ? nw.tail : 0);
        if (!live) {
            RESULT(404, false, 0, 0);
        } else if (soft) {
            RESULT(409, false, 0, 0);
        } else if (cmd->content_type && cmd->content_type[0] &&
                   !spool_streams_ct_equal(nw.content_type, cmd->content_type)) {
            RESULT(409, false, nw.tail, 0);
        } else if (l > nw.tail) {
            RESULT(400, false, nw.tail, 0);
        } else {
            bool have = false;
            for (size_t i = 0; i < nw.n_fork_refs; i++)
                have |= strcmp(nw.fork_refs[i], cmd->fork_name) == 0;
            if (!have) {
                refs = malloc((nw.n_fork_refs + 1) * sizeof *refs);
                if (refs == NULL) {
                    rc = spool_err_set(err, SPOOL_ENOMEM, "stream state: out of memory");
                    break;
                }
                if (nw.n_fork_refs > 0)
                    memcpy(refs, nw.fork_refs, nw.n_fork_refs * sizeof *refs);
                refs[nw.n_fork_refs++] = cmd->fork_name;
                nw.fork_refs = refs;
                write = true;
            }
            RESULT(200, nw.closed, l, 0);
        }
        break;
    }
    case SPOOL__STREAM_OP__STREAM_OP_FORK_RELEASE:
        if (cur != NULL && !cur->deleted) {
            refs = malloc((nw.n_fork_refs + 1) * sizeof *refs);
            if (refs == NULL) {
                rc = spool_err_set(err, SPOOL_ENOMEM, "stream state: out of memory");
                break;
            }
            size_t w = 0;
            for (size_t i = 0; i < nw.n_fork_refs; i++)
                if (strcmp(nw.fork_refs[i], cmd->fork_name) != 0)
                    refs[w++] = nw.fork_refs[i];
            if (w != nw.n_fork_refs)
                write = true;
            nw.fork_refs = refs;
            nw.n_fork_refs = w;
            if (nw.soft_deleted && w == 0) {
                nw.deleted = true;
                write = true;
            }
            RESULT(200, false, nw.tail, nw.deleted && nw.fork_source && nw.fork_source[0]);
        } else {
            RESULT(200, false, 0, 0);
        }
        break;
    default:
        RESULT(400, false, 0, 0);
    }
    if (rc == 0 && write)
        rc = put_state(tx, row, p->channel, &nw, next_seq, ts, recs, ptrs, n, err);
    if (rc == 0 && write)
        out[3] = *next_seq - 1; /* the state record: what a read-your-writes read waits for */
    free(prods);
    free(refs);
    spool__stream_command__free_unpacked(cmd, NULL);
    return rc;
}
