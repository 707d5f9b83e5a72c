/*
 * Group commit (see batch.h). An in-flight entry is a `struct spool_batch_proposal`: the
 * raft_apply request plus the items it carries, freed by its apply callback, the one completion
 * path of a proposal.
 */
#include "cluster/batch.h"

#include <stdlib.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "cluster/entry_pack.h"
#include "common/log.h"

struct spool_batch_proposal {
    struct raft_apply req;
    struct spool_batch_proposal *prev, *next; /* batch->in_flight */
    struct spool_batch *batch;
    struct spool_fsm_result *result; /* set when the entry was applied here (take_result) */
    uint64_t nonce;                  /* Entry.proposal: tells our entry from another at its index */
    bool control;                    /* items[0] is a control item, alone */
    size_t n;
    struct spool_batch_item *items[];
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Proposal nonces: random per process, then counting, so two proposers never share one. */
static uint64_t next_nonce(void)
{
    static uint64_t next;
    if (next == 0) {
        if (getrandom(&next, sizeof next, 0) != sizeof next)
            next = (uint64_t)wall_ms() << 20 ^ (uint64_t)getpid();
        next |= 1;
    }
    return next++;
}

static void flush_timer_cb(uv_timer_t *t);

static void fail_items(struct spool_batch_item **items, size_t n, int code, const char *msg)
{
    struct spool_err err;
    spool_err_set(&err, code, "%s", msg);
    for (size_t i = 0; i < n; i++)
        items[i]->done(items[i], code, &err, NULL);
}

static void proposal_applied_cb(struct raft_apply *req, int status, void *result)
{
    (void)result; /* always NULL: results come through spool_batch_take_result */
    struct spool_batch_proposal *p = req->data;
    struct spool_fsm_result *res = p->result;
    struct spool_batch *b = p->batch;
    /* An entry applied here was committed, whatever libraft reports about the request (it may
     * fail it with "leadership lost" after the new leader committed it). */
    if (res != NULL)
        status = 0;
    if (p->prev)
        p->prev->next = p->next;
    else
        b->in_flight = p->next;
    if (p->next)
        p->next->prev = p->prev;
    b->n_in_flight--;
    /* Room for the next entry: what queued meanwhile goes on the next loop turn (not from
     * inside libraft's apply callback). The items below may queue more before then. */
    if ((b->head != NULL || b->retention_due) && !b->closing &&
        !uv_is_active((uv_handle_t *)&b->flush_timer))
        uv_timer_start(&b->flush_timer, flush_timer_cb, 0, 0);
    if (p->control && status == 0 && res != NULL) {
        struct spool_err err;
        spool_err_clear(&err);
        p->items[0]->done(p->items[0], 0, &err, NULL);
    } else if (p->control && status == 0) {
        fail_items(p->items, p->n, SPOOL_EIO, "entry applied without a result");
    } else if (status == 0 && res != NULL && res->n == p->n) {
        for (size_t i = 0; i < p->n; i++) {
            const struct spool_fsm_publish_result *r = &res->publishes[i];
            struct spool_err err;
            spool_err_clear(&err);
            if (r->status != 0)
                spool_err_set(&err, r->status, "%s",
                              r->reason[0] ? r->reason : "publish refused by the state machine");
            p->items[i]->done(p->items[i], r->status, &err, r);
        }
    } else if (status == 0) {
        fail_items(p->items, p->n, SPOOL_EIO, "entry applied without a result");
    } else if (status == RAFT_CANCELED || status == RAFT_SHUTDOWN) {
        fail_items(p->items, p->n, SPOOL_ECLOSED, "shard closing");
    } else {
        fail_items(p->items, p->n, SPOOL_ENOTLEADER, raft_strerror(status));
    }
    spool_fsm_result_free(res);
    free(p);
}

/* Proposes up to SPOOL_BATCH_MAX_ENTRY_BYTES worth of queued items as one entry. */
static void propose_some(struct spool_batch *b)
{
    size_t n = 0, bytes = 32;
    bool control = b->head != NULL && b->head->control;
    for (struct spool_batch_item *it = b->head; it; it = it->next) {
        size_t sz = spool_pb_len_field_size(it->req_len);
        if (n > 0 && (control || it->control || bytes + sz > SPOOL_BATCH_MAX_ENTRY_BYTES))
            break; /* a control item goes alone */
        bytes += sz;
        n++;
    }
    struct spool_batch_proposal *p = malloc(sizeof *p + n * sizeof p->items[0]);
    struct spool_entry_part *parts = malloc((n ? n : 1) * sizeof *parts);
    struct spool_batch_item **items = p ? p->items : NULL;
    struct spool_batch_item *it = b->head;
    for (size_t i = 0; i < n; i++, it = it->next) {
        if (items)
            items[i] = it;
        if (parts)
            parts[i] = (struct spool_entry_part){it->req, it->req_len};
    }
    /* Detach the n items from the queue whatever happens next: they complete below or later. */
    struct spool_batch_item *first = b->head;
    b->head = it;
    if (b->head == NULL)
        b->tail = NULL;
    if (p == NULL || parts == NULL) {
        struct spool_err err;
        spool_err_set(&err, SPOOL_ENOMEM, "out of memory proposing an entry");
        for (size_t i = 0; i < n; i++) {
            struct spool_batch_item *next = first->next;
            first->done(first, SPOOL_ENOMEM, &err, NULL);
            first = next;
        }
        free(p);
        free(parts);
        return;
    }
    p->n = n;
    p->batch = b;
    p->result = NULL;
    p->nonce = next_nonce();
    p->control = control;
    /* The Entry protobuf-c would pack (spool_fsm_encode_entry), built from the packed requests. */
    int64_t now = wall_ms();
    struct raft_buffer buf;
    int rc;
    if (control && first->req_len > SPOOL_BATCH_MAX_CONTROL_BYTES) {
        free(parts);
        fail_items(p->items, n, SPOOL_ELIMIT, "control entry over the entry size limit");
        free(p);
        return;
    }
    if (control) { /* the retention tick waits for the next entry */
        rc = spool_entry_pack_fields(now, first->req, first->req_len, p->nonce, &buf.base,
                                     &buf.len);
    } else {
        bool tick = b->retention_due;
        b->retention_due = false;
        rc = spool_entry_pack(now, parts, n, tick, now, p->nonce, &buf.base, &buf.len);
    }
    free(parts);
    if (rc != 0) {
        fail_items(p->items, n, SPOOL_ENOMEM, "out of memory encoding an entry");
        free(p);
        return;
    }
    p->req.data = p;
    int rv = raft_apply(b->raft, &p->req, &buf, 1, proposal_applied_cb);
    if (rv != 0) {
        /* libraft 0.22 may already have freed the buffer before failing (it copies the entry
         * and frees the original early); it has not on RAFT_NOTLEADER (checked first). */
        if (rv == RAFT_NOTLEADER)
            raft_free(buf.base);
        SPOOL_WARN("batch.apply_refused", "rv=%d msg=\"%s\"", rv, raft_errmsg(b->raft));
        fail_items(p->items, n, rv == RAFT_NOTLEADER ? SPOOL_ENOTLEADER : SPOOL_EBUSY,
                   raft_strerror(rv));
        free(p);
        return;
    }
    p->prev = NULL;
    p->next = b->in_flight;
    if (b->in_flight)
        b->in_flight->prev = p;
    b->in_flight = p;
    b->n_in_flight++;
    b->entries++;
    b->items += n;
}

bool spool_batch_take_result(void *arg, uint64_t index, struct spool_fsm_result *r)
{
    struct spool_batch *b = arg;
    for (struct spool_batch_proposal *p = b->in_flight; p; p = p->next) {
        /* The nonce too: after a lost leadership another leader's entry may hold our index
         * while our proposal's failure callback is still pending. */
        if (p->req.index == index && p->nonce == r->proposal && p->result == NULL) {
            p->result = r;
            return true;
        }
    }
    return false;
}

static void flush_timer_cb(uv_timer_t *t)
{
    struct spool_batch *b = t->data;
    /* Bounded: each round detaches at least one item or the retention tick, or fills the last
     * in-flight slot (proposal_applied_cb arms this timer again when one frees). */
    while ((b->head != NULL || b->retention_due) && !b->closing &&
           b->n_in_flight < SPOOL_BATCH_MAX_IN_FLIGHT)
        propose_some(b);
}

int spool_batch_init(struct spool_batch *b, uv_loop_t *loop, struct raft *raft)
{
    *b = (struct spool_batch){.raft = raft};
    int rv = uv_timer_init(loop, &b->flush_timer);
    if (rv != 0)
        return SPOOL_EIO;
    b->flush_timer.data = b;
    return 0;
}

void spool_batch_submit(struct spool_batch *b, struct spool_batch_item *item)
{
    item->next = NULL;
    if (b->tail)
        b->tail->next = item;
    else
        b->head = item;
    b->tail = item;
    if (!uv_is_active((uv_handle_t *)&b->flush_timer) && !b->closing &&
        b->n_in_flight < SPOOL_BATCH_MAX_IN_FLIGHT)
        uv_timer_start(&b->flush_timer, flush_timer_cb, 0, 0);
}

void spool_batch_retention(struct spool_batch *b)
{
    if (b->closing)
        return;
    b->retention_due = true;
    if (!uv_is_active((uv_handle_t *)&b->flush_timer) && b->n_in_flight < SPOOL_BATCH_MAX_IN_FLIGHT)
        uv_timer_start(&b->flush_timer, flush_timer_cb, 0, 0);
}

static void timer_closed_cb(uv_handle_t *h)
{
    struct spool_batch *b = h->data;
    /* Items submitted while closing fail here, on the loop, never inside submit. */
    struct spool_err err;
    spool_err_set(&err, SPOOL_ECLOSED, "shard closing");
    while (b->head != NULL) {
        struct spool_batch_item *it = b->head;
        b->head = it->next;
        it->done(it, SPOOL_ECLOSED, &err, NULL);
    }
    b->tail = NULL;
    if (b->close_cb)
        b->close_cb(b);
}

void spool_batch_close(struct spool_batch *b, void (*cb)(struct spool_batch *b))
{
    b->closing = true;
    b->close_cb = cb;
    uv_close((uv_handle_t *)&b->flush_timer, timer_closed_cb);
}
