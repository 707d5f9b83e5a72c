/*
 * The history + live join of one attachment; see attach.h for the algorithm. States:
 *
 *   probing   (live / last N: one backward read to learn the last serial)
 *   catchup   (forward history reads, page by page; live records buffered)
 *   live      (records pass straight through)
 *
 * A read is in flight in probing/catchup unless paused (the consumer said it has no room).
 * `busy` counts event callbacks on the stack, so spool_attach_close() from inside one only marks
 * the attachment; the outermost frame frees it.
 */
#include "gateway/attach.h"

#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "gateway/ai_rollup.h"

#define ATTACH_DEFAULT_PAGE 256
#define ATTACH_DEFAULT_BUFFER (4u << 20)
#define ATTACH_MAX_STALLED_READS 20 /* reads in a row that make no progress over a gap */

struct buffered {
    struct buffered *next;
    uint64_t seq;
    size_t len;
    uint8_t bytes[]; /* the packed record */
};

enum attach_state { ATTACH_PROBING, ATTACH_CATCHUP, ATTACH_LIVE, ATTACH_FAILED };

struct spool_attach {
    struct spool_node *node;
    char *channel;
    struct spool_from from;
    size_t page;
    uint64_t max_buffer_bytes;
    const struct spool_attach_events *ev;
    void *arg;
    struct spool_sub *sub;
    enum attach_state state;
    uint64_t delivered;
    bool attached;  /* on_attached has fired */
    bool reading;   /* a read is in flight */
    bool paused;    /* waiting for spool_attach_continue */
    bool closed;
    unsigned busy;
    unsigned stalled;
    struct buffered *head, *tail;
    uint64_t buffered_bytes;
    struct spool_ai_rollup *rollup; /* catch-up rollup of token streams; NULL = off */
};

static void attach_free(struct spool_attach *a)
{
    struct buffered *b = a->head;
    while (b != NULL) {
        struct buffered *next = b->next;
        free(b);
        b = next;
    }
    spool_ai_rollup_free(a->rollup);
    free(a->channel);
    free(a);
}

/* Leaves an event frame; frees the attachment if it was closed meanwhile and nothing else holds
 * it. Returns true when the caller must not touch `a` any more. */
static bool attach_leave(struct spool_attach *a)
{
    a->busy--;
    if (a->closed && a->busy == 0 && !a->reading) {
        attach_free(a);
        return true;
    }
    return a->closed;
}

static void attach_fail(struct spool_attach *a, int code, const char *msg)
{
    if (a->state == ATTACH_FAILED || a->closed)
        return;
    a->state = ATTACH_FAILED;
    if (a->sub != NULL) {
        spool_node_unsubscribe(a->sub);
        a->sub = NULL;
    }
    struct spool_err err;
    spool_err_set(&err, code, "%s", msg);
    a->ev->on_error(a->arg, &err);
}

static void attach_emit(void *arg, const Spool__Record *rec)
{
    struct spool_attach *a = arg;
    if (!a->closed && a->state != ATTACH_FAILED)
        a->ev->on_record(a->arg, rec);
}

static void attach_deliver(struct spool_attach *a, const Spool__Record *rec)
{
    a->delivered = rec->seq;
    /* Catching up, or live to a consumer that is backed up (or already holding a run): roll
     * token streams up. A held run goes out at spool_attach_continue() (the consumer drained),
     * or when a record that does not continue it arrives; it is at most max_buffer_bytes. */
    if (a->rollup != NULL &&
        (a->state != ATTACH_LIVE || spool_ai_rollup_pending_from(a->rollup) != 0 ||
         (a->ev->can_send != NULL && !a->ev->can_send(a->arg)))) {
        if (spool_ai_rollup_push(a->rollup, rec, attach_emit, a) != 0)
            attach_fail(a, SPOOL_ENOMEM, "attach: out of memory");
        return;
    }
    a->ev->on_record(a->arg, rec);
}

/* May more be delivered now? When not, the attachment pauses until spool_attach_continue(). */
static bool attach_room(struct spool_attach *a)
{
    if (a->ev->can_send == NULL || a->ev->can_send(a->arg))
        return true;
    a->paused = true;
    return false;
}

static void buffer_pop(struct spool_attach *a)
{
    struct buffered *b = a->head;
    a->head = b->next;
    if (a->head == NULL)
        a->tail = NULL;
    a->buffered_bytes -= b->len;
    free(b);
}

/* Delivers the buffered records that continue `delivered`, dropping those already delivered.
 * Stops at a gap, or when the attachment was closed or failed by a callback. */
static void buffer_drain(struct spool_attach *a)
{
    while (a->head != NULL && !a->closed && a->state != ATTACH_FAILED) {
        struct buffered *b = a->head;
        if (b->seq <= a->delivered) {
            buffer_pop(a);
            continue;
        }
        if (b->seq != a->delivered + 1 || !attach_room(a))
            return;
        Spool__Record *rec = spool__record__unpack(NULL, b->len, b->bytes);
        buffer_pop(a);
        if (rec == NULL) {
            attach_fail(a, SPOOL_ENOMEM, "attach: out of memory");
            return;
        }
        attach_deliver(a, rec);
        spool__record__free_unpacked(rec, NULL);
    }
}

static void on_read(void *arg, int status, const struct spool_err *err,
                    const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                    uint64_t last_seq);

/* The read the current state asks for: the newest record (probing: it tells the last seq), else
 * the next page after `delivered`. */
static struct spool_read_req next_read(const struct spool_attach *a)
{
    struct spool_read_req req = {.channel = a->channel};
    if (a->state == ATTACH_PROBING) {
        req.backward = true;
        req.limit = 1;
    } else {
        req.after_seq = a->delivered;
        req.limit = a->page;
        /* Read-your-writes up to what the live stream has already shown us. */
        if (a->head != NULL && a->head->seq > 0)
            req.min_seq = a->head->seq - 1;
    }
    return req;
}

/* Issues the next read for the current state, unless the consumer has no room. */
static void attach_read(struct spool_attach *a)
{
    if (a->reading || a->closed || a->state == ATTACH_FAILED || a->state == ATTACH_LIVE)
        return;
    if (a->state == ATTACH_CATCHUP && a->attached && !attach_room(a))
        return;
    struct spool_read_req req = next_read(a);
    a->reading = true;
    int rv = spool_node_read(a->node, &req, on_read, a);
    if (rv != 0) {
        a->reading = false;
        attach_fail(a, rv, "attach: history read could not start");
    }
}

/* After a history page: read more, or go live. A read that delivers nothing while more is
 * expected counts as stalled; too many in a row fail the attachment (bounded, never a spin). */
static void attach_advance(struct spool_attach *a, bool full_page, uint64_t last_seq,
                           uint64_t before)
{
    buffer_drain(a);
    if (a->closed || a->state == ATTACH_FAILED || a->paused)
        return;
    bool more = full_page || a->delivered < last_seq || a->head != NULL;
    if (!more) {
        a->state = ATTACH_LIVE;
        if (a->rollup != NULL)
            spool_ai_rollup_flush(a->rollup, attach_emit, a);
        return;
    }
    a->stalled = a->delivered > before ? 0 : a->stalled + 1;
    if (a->stalled > ATTACH_MAX_STALLED_READS) {
        SPOOL_WARN("attach.stalled", "delivered=%llu last=%llu", (unsigned long long)a->delivered,
                   (unsigned long long)last_seq);
        attach_fail(a, SPOOL_ETIMEOUT, "attach: history does not reach the live stream");
        return;
    }
    attach_read(a);
}

static void on_read(void *arg, int status, const struct spool_err *err,
                    const Spool__Record *const *recs, size_t n, uint64_t first_seq,
                    uint64_t last_seq)
{
    struct spool_attach *a = arg;
    a->reading = false;
    a->busy++;
    if (a->closed || a->state == ATTACH_FAILED)
        goto out;
    if (status != 0) {
        attach_fail(a, status,
                    err != NULL && err->msg[0] ? err->msg : "attach: history read failed");
        goto out;
    }
    if (!a->attached) {
        bool probe = a->state == ATTACH_PROBING;
        if (probe) {
            if (a->from.kind == SPOOL_FROM_LAST)
                a->delivered = last_seq > a->from.n ? last_seq - a->from.n : 0;
            else
                a->delivered = last_seq;
            if (a->rollup != NULL && n == 1) /* inside a streaming response: from its create */
                a->delivered = spool_ai_attach_start(recs[0], a->delivered);
            a->state = ATTACH_CATCHUP;
        }
        a->attached = true;
        a->ev->on_attached(a->arg, last_seq > a->delivered ? last_seq : a->delivered);
        if (a->closed || a->state == ATTACH_FAILED)
            goto out;
        if (probe) {
            attach_read(a); /* history after the starting point (none for live) */
            goto out;
        }
    }
    uint64_t before = a->delivered;
    for (size_t i = 0; i < n && !a->closed && a->state != ATTACH_FAILED; i++) {
        const Spool__Record *rec = recs[i];
        if (rec->seq <= a->delivered)
            continue;
        /* A page can be larger than the consumer's buffer: stop when it is full and read the
         * rest again after spool_attach_continue() (at least one record per page goes). */
        if (a->delivered != before && !attach_room(a))
            break;
        if (rec->seq != a->delivered + 1) {
            if (a->delivered + 1 >= first_seq)
                break; /* a gap inside a page: read again from delivered */
            SPOOL_INFO("attach.trimmed", "channel_first=%llu wanted_after=%llu",
                       (unsigned long long)first_seq, (unsigned long long)a->delivered);
            a->delivered = rec->seq - 1; /* retention removed the records before */
        }
        attach_deliver(a, rec);
    }
    if (a->closed || a->state == ATTACH_FAILED || a->paused)
        goto out;
    if (n == 0 && a->delivered < last_seq) {
        SPOOL_INFO("attach.trimmed", "channel_last=%llu wanted_after=%llu",
                   (unsigned long long)last_seq, (unsigned long long)a->delivered);
        a->delivered = last_seq; /* nothing after `delivered` is retained */
    }
    attach_advance(a, n >= a->page, last_seq, before);
out:
    attach_leave(a);
}

static void on_live(void *arg, const Spool__Record *rec)
{
    struct spool_attach *a = arg;
    if (a->closed || a->state == ATTACH_FAILED)
        return;
    if (a->attached && rec->seq <= a->delivered)
        return; /* already delivered from history */
    a->busy++;
    if (a->state == ATTACH_LIVE && a->head == NULL && rec->seq == a->delivered + 1) {
        attach_deliver(a, rec);
        goto out;
    }
    size_t len = spool__record__get_packed_size(rec);
    if (a->buffered_bytes + len > a->max_buffer_bytes) {
        attach_fail(a, SPOOL_ELIMIT, "attach: too many live messages while reading history");
        goto out;
    }
    struct buffered *b = malloc(sizeof *b + len);
    if (b == NULL) {
        attach_fail(a, SPOOL_ENOMEM, "attach: out of memory");
        goto out;
    }
    b->next = NULL;
    b->seq = rec->seq;
    b->len = spool__record__pack(rec, b->bytes);
    if (a->tail != NULL)
        a->tail->next = b;
    else
        a->head = b;
    a->tail = b;
    a->buffered_bytes += b->len;
    if (a->state == ATTACH_LIVE) {
        /* A gap in the live stream: fetch the missing records from history. */
        SPOOL_WARN("attach.live_gap", "delivered=%llu got=%llu", (unsigned long long)a->delivered,
                   (unsigned long long)rec->seq);
        a->state = ATTACH_CATCHUP;
        attach_read(a);
    }
out:
    attach_leave(a);
}

int spool_attach_start(struct spool_attach **out, struct spool_node *node, const char *channel,
                       struct spool_from from, const struct spool_attach_config *cfg,
                       const struct spool_attach_events *ev, void *arg, struct spool_err *err)
{
    struct spool_attach *a = calloc(1, sizeof *a);
    if (a == NULL || (a->channel = strdup(channel)) == NULL) {
        free(a);
        return spool_err_set(err, SPOOL_ENOMEM, "attach: out of memory");
    }
    a->node = node;
    a->from = from;
    a->page = cfg != NULL && cfg->page != 0 ? cfg->page : ATTACH_DEFAULT_PAGE;
    a->max_buffer_bytes =
        cfg != NULL && cfg->max_buffer_bytes != 0 ? cfg->max_buffer_bytes : ATTACH_DEFAULT_BUFFER;
    a->ev = ev;
    a->arg = arg;
    if ((cfg == NULL || !cfg->no_rollup) &&
        (a->rollup = spool_ai_rollup_new(a->max_buffer_bytes)) == NULL) {
        attach_free(a);
        return spool_err_set(err, SPOOL_ENOMEM, "attach: out of memory");
    }
    switch (from.kind) {
    case SPOOL_FROM_START:
        a->delivered = 0;
        a->state = ATTACH_CATCHUP;
        break;
    case SPOOL_FROM_SERIAL:
        a->delivered = from.n;
        a->state = ATTACH_CATCHUP;
        break;
    default:
        a->state = ATTACH_PROBING;
        break;
    }
    int rv = spool_node_subscribe(node, a->channel, on_live, a, &a->sub);
    if (rv != 0) {
        attach_free(a);
        return spool_err_set(err, rv, "attach: subscribe to the channel failed");
    }
    struct spool_read_req req = next_read(a);
    a->reading = true;
    rv = spool_node_read(node, &req, on_read, a);
    if (rv != 0) {
        spool_node_unsubscribe(a->sub);
        attach_free(a);
        return spool_err_set(err, rv, "attach: history read failed to start");
    }
    *out = a;
    return 0;
}

void spool_attach_continue(struct spool_attach *a)
{
    if (a->state == ATTACH_LIVE && !a->closed && a->rollup != NULL &&
        spool_ai_rollup_pending_from(a->rollup) != 0) { /* the coalesced appends of a slow consumer */
        a->busy++;
        spool_ai_rollup_flush(a->rollup, attach_emit, a);
        attach_leave(a);
        return;
    }
    if (!a->paused || a->closed || a->reading || a->state == ATTACH_FAILED)
        return;
    a->paused = false;
    a->stalled = 0;
    a->busy++;
    /* Drain what is buffered, then read on from `delivered` (the read finds out whether there
     * is more history or the attachment can go live). */
    attach_advance(a, true, 0, a->delivered);
    attach_leave(a);
}

uint64_t spool_attach_serial(const struct spool_attach *a)
{
    uint64_t pending = a->rollup != NULL ? spool_ai_rollup_pending_from(a->rollup) : 0;
    if (pending != 0)
        return pending - 1; /* a rolled-up run not yet delivered: resume before it */
    return a->delivered;
}

const char *spool_attach_channel(const struct spool_attach *a)
{
    return a->channel;
}

bool spool_attach_is_live(const struct spool_attach *a)
{
    return a->state == ATTACH_LIVE;
}

void spool_attach_close(struct spool_attach *a)
{
    if (a->closed)
        return;
    a->closed = true;
    if (a->sub != NULL) {
        spool_node_unsubscribe(a->sub);
        a->sub = NULL;
    }
    if (a->busy == 0 && !a->reading)
        attach_free(a);
}
