/*
 * The packed publish path's pieces (cluster/entry_pack.h, cluster/fwd_scan.h, cluster/pb_arena.h):
 *   - an Entry concatenated from packed requests is byte for byte what protobuf-c packs for the
 *     same Entry (spool_fsm_encode_entry), with and without timestamp, retention and proposal;
 *   - a ForwardPublishBatch concatenated the way router.c sends it is what protobuf-c packs, and
 *     the scanner finds each request's bytes in it; it refuses what protobuf-c would not write
 *     (other fields, wire types, truncations, too many requests);
 *   - the arena hands out aligned, distinct memory beyond its first block and decodes.
 */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/entry_pack.h"
#include "cluster/fsm.h"
#include "cluster/fwd_scan.h"
#include "cluster/pb_arena.h"
#include "proto/cluster.pb-c.h"

/* A PublishRequest with `n` records of `size`-byte payloads, packed by protobuf-c. */
static uint8_t *make_request(const char *channel, size_t n, size_t size, size_t *len)
{
    Spool__Record *recs = calloc(n, sizeof *recs);
    Spool__Record **ptrs = calloc(n, sizeof *ptrs);
    uint8_t *data = malloc(size ? size : 1);
    cr_assert(recs && ptrs && data);
    memset(data, 'x', size);
    for (size_t i = 0; i < n; i++) {
        spool__record__init(&recs[i]);
        recs[i].name = "ev";
        recs[i].id = i % 2 ? "id-1" : "";
        recs[i].data.data = data;
        recs[i].data.len = size;
        ptrs[i] = &recs[i];
    }
    Spool__PublishRequest p = SPOOL__PUBLISH_REQUEST__INIT;
    p.channel = (char *)channel;
    p.n_messages = n;
    p.messages = ptrs;
    *len = spool__publish_request__get_packed_size(&p);
    uint8_t *buf = malloc(*len ? *len : 1);
    cr_assert(buf);
    spool__publish_request__pack(&p, buf);
    free(recs);
    free(ptrs);
    free(data);
    return buf;
}

static void check_entry(int64_t ts, size_t n, bool retention, int64_t now, uint64_t proposal)
{
    struct spool_entry_part *parts = calloc(n ? n : 1, sizeof *parts);
    Spool__PublishRequest **reqs = calloc(n ? n : 1, sizeof *reqs);
    cr_assert(parts && reqs);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        uint8_t *b = make_request(i % 3 ? "chat" : "other-channel", 1 + i % 4, i * 37 % 300, &len);
        parts[i] = (struct spool_entry_part){b, len};
        reqs[i] = spool__publish_request__unpack(NULL, len, b);
        cr_assert(reqs[i]);
    }
    Spool__Entry e = SPOOL__ENTRY__INIT;
    e.timestamp_ms = ts;
    e.n_publishes = n;
    e.publishes = reqs;
    e.proposal = proposal;
    Spool__RetentionTick tick = SPOOL__RETENTION_TICK__INIT;
    tick.now_ms = now;
    if (retention)
        e.retention = &tick;
    void *want, *got;
    size_t want_len, got_len;
    cr_assert_eq(spool_fsm_encode_entry(&e, &want, &want_len), 0);
    cr_assert_eq(spool_entry_pack(ts, parts, n, retention, now, proposal, &got, &got_len), 0);
    cr_assert_eq(got_len, want_len, "n=%zu ts=%lld", n, (long long)ts);
    cr_assert_eq(got_len % 8, 0);
    cr_assert(memcmp(got, want, got_len) == 0, "n=%zu ts=%lld retention=%d", n, (long long)ts,
              retention);
    raft_free(want);
    raft_free(got);
    for (size_t i = 0; i < n; i++) {
        free((void *)parts[i].buf);
        spool__publish_request__free_unpacked(reqs[i], NULL);
    }
    free(parts);
    free(reqs);
}

Test(entry_pack, same_bytes_as_protobuf_c)
{
    check_entry(1764000000000LL, 1, false, 0, 0x9e3779b97f4a7c15ULL);
    check_entry(1764000000000LL, 17, true, 1764000000000LL, 3);
    check_entry(0, 0, false, 0, 0);           /* every field absent */
    check_entry(0, 0, true, 0, 1);            /* an empty RetentionTick */
    check_entry(-5, 3, true, -7, UINT64_MAX); /* negative int64: 10-byte varints */
    check_entry(1, 200, false, 0, 127);       /* many publishes, 1-byte varints */
    check_entry(INT64_MAX, 2, true, INT64_MIN, 128);
}

Test(entry_pack, large_request_length_varint)
{
    /* A request over 2^14 bytes: a 3-byte length varint. */
    size_t len;
    uint8_t *b = make_request("big", 3, 20000, &len);
    cr_assert_gt(len, 1u << 14);
    Spool__PublishRequest *r = spool__publish_request__unpack(NULL, len, b);
    Spool__Entry e = SPOOL__ENTRY__INIT;
    e.timestamp_ms = 42;
    e.n_publishes = 1;
    e.publishes = &r;
    e.proposal = 7;
    void *want, *got;
    size_t want_len, got_len;
    cr_assert_eq(spool_fsm_encode_entry(&e, &want, &want_len), 0);
    struct spool_entry_part part = {b, len};
    cr_assert_eq(spool_entry_pack(42, &part, 1, false, 0, 7, &got, &got_len), 0);
    cr_assert_eq(got_len, want_len);
    cr_assert(memcmp(got, want, got_len) == 0);
    raft_free(want);
    raft_free(got);
    spool__publish_request__free_unpacked(r, NULL);
    free(b);
}

/* The body router.c sends: each packed request behind the field-1 header. */
static uint8_t *concat_batch(struct spool_entry_part *parts, size_t n, size_t *len)
{
    *len = 0;
    for (size_t i = 0; i < n; i++)
        *len += spool_pb_len_field_size(parts[i].len);
    uint8_t *buf = malloc(*len ? *len : 1), *w = buf;
    for (size_t i = 0; i < n; i++) {
        w += spool_pb_put_len_header(w, 0x0a, parts[i].len);
        memcpy(w, parts[i].buf, parts[i].len);
        w += parts[i].len;
    }
    return buf;
}

Test(fwd_scan, concatenated_batch_is_protobuf_c_and_scans)
{
    enum { N = 40 };
    struct spool_entry_part parts[N];
    Spool__PublishRequest *reqs[N];
    for (size_t i = 0; i < N; i++) {
        size_t len;
        uint8_t *b = make_request("chat", 1 + i % 3, i == 7 ? 20000 : i * 11, &len);
        parts[i] = (struct spool_entry_part){b, len};
        reqs[i] = spool__publish_request__unpack(NULL, len, b);
    }
    Spool__ForwardPublishBatch f = SPOOL__FORWARD_PUBLISH_BATCH__INIT;
    f.n_requests = N;
    f.requests = reqs;
    size_t want_len = spool__forward_publish_batch__get_packed_size(&f), len;
    uint8_t *want = malloc(want_len);
    spool__forward_publish_batch__pack(&f, want);
    uint8_t *got = concat_batch(parts, N, &len);
    cr_assert_eq(len, want_len);
    cr_assert(memcmp(got, want, len) == 0);

    struct spool_fwd_slice s[N];
    cr_assert_eq(spool_fwd_scan(got, len, s, N), N);
    for (size_t i = 0; i < N; i++) {
        cr_assert_eq(s[i].len, parts[i].len);
        cr_assert(memcmp(s[i].buf, parts[i].buf, s[i].len) == 0);
    }
    cr_assert_eq(spool_fwd_scan(got, len, s, N - 1), -1, "more requests than room");
    cr_assert_eq(spool_fwd_scan(got, 0, s, N), 0);
    /* Every strict prefix that cuts a request is refused. */
    for (size_t cut = 1; cut < parts[0].len + 2; cut++)
        cr_assert_eq(spool_fwd_scan(got, cut, s, N), -1, "cut=%zu", cut);
    for (size_t i = 0; i < N; i++) {
        free((void *)parts[i].buf);
        spool__publish_request__free_unpacked(reqs[i], NULL);
    }
    free(want);
    free(got);
}

Test(fwd_scan, refuses_what_protobuf_c_does_not_write)
{
    struct spool_fwd_slice s[4];
    const uint8_t other_field[] = {0x12, 0x00};           /* field 2 */
    const uint8_t varint_type[] = {0x08, 0x01};           /* field 1 as a varint */
    const uint8_t long_tag[] = {0x8a, 0x00, 0x00};        /* field 1, 2-byte tag */
    const uint8_t long_len[] = {0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    const uint8_t too_long[] = {0x0a, 0x05, 0x01, 0x02};  /* length past the end */
    const uint8_t endless[] = {0x0a, 0x80, 0x80};         /* varint cut short */
    const uint8_t empty_req[] = {0x0a, 0x00, 0x0a, 0x01, 0x00};
    cr_assert_eq(spool_fwd_scan(other_field, sizeof other_field, s, 4), -1);
    cr_assert_eq(spool_fwd_scan(varint_type, sizeof varint_type, s, 4), -1);
    cr_assert_eq(spool_fwd_scan(long_tag, sizeof long_tag, s, 4), -1);
    cr_assert_eq(spool_fwd_scan(long_len, sizeof long_len, s, 4), -1);
    cr_assert_eq(spool_fwd_scan(too_long, sizeof too_long, s, 4), -1);
    cr_assert_eq(spool_fwd_scan(endless, sizeof endless, s, 4), -1);
    cr_assert_eq(spool_fwd_scan(empty_req, sizeof empty_req, s, 4), 2);
    cr_assert_eq(s[0].len, 0);
    cr_assert_eq(s[1].len, 1);
    cr_assert_eq(s[1].buf, empty_req + 4);
}

Test(pb_arena, aligned_distinct_and_decodes)
{
    _Alignas(16) char stack[256];
    struct spool_pb_arena a;
    spool_pb_arena_init(&a, stack, sizeof stack);
    char *prev = NULL;
    for (size_t i = 0; i < 200; i++) {
        size_t size = i * 13 % 700;
        char *p = spool_pb_arena_alloc(&a, size);
        cr_assert(p);
        cr_assert_eq((uintptr_t)p % 16, 0);
        cr_assert_neq(p, prev);
        memset(p, (int)i, size); /* ASan: every byte handed out is ours */
        prev = p;
    }
    cr_assert(a.blocks != NULL, "outgrew the first block");
    size_t len;
    uint8_t *b = make_request("chat", 5, 100, &len);
    Spool__PublishRequest *r = spool__publish_request__unpack(&a.pb, len, b);
    cr_assert(r);
    cr_assert_str_eq(r->channel, "chat");
    cr_assert_eq(r->n_messages, 5);
    cr_assert_eq(r->messages[4]->data.len, 100);
    spool__publish_request__free_unpacked(r, &a.pb); /* a no-op: the arena frees */
    spool_pb_arena_close(&a);
    free(b);

    struct spool_pb_arena h; /* no first block: everything malloc'd */
    spool_pb_arena_init(&h, NULL, 0);
    cr_assert(spool_pb_arena_alloc(&h, 0));
    cr_assert(spool_pb_arena_alloc(&h, 100000));
    cr_assert_null(spool_pb_arena_alloc(&h, SIZE_MAX - 3));
    spool_pb_arena_close(&h);
}
