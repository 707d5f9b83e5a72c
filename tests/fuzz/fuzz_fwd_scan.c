/*
 * Fuzzes the ForwardPublishBatch splitter (cluster/fwd_scan.h) against protobuf-c, as the leader
 * uses them together (cluster/serve.c): the batch is decoded by protobuf-c, and the scanner's
 * slices go into the Raft entry in place of packing the decoded requests again. Checked:
 *   - the scanner never reads outside the input (an exactly-sized heap copy; ASan);
 *   - a count it returns is within `max`, and its slices tile the input in order;
 *   - whenever both accept the input, they agree: as many requests, and each slice decodes to a
 *     request that packs to the same bytes as protobuf-c's request i (so the entry built from
 *     the slices applies exactly as one packed from the decoded batch would);
 *   - what protobuf-c packs for a decoded batch without unknown fields (what Spool nodes send) is
 *     always accepted by the scanner, as that many requests.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/fwd_scan.h"
#include "proto/cluster.pb-c.h"

static uint8_t *pack_request(const Spool__PublishRequest *r, size_t *len)
{
    *len = spool__publish_request__get_packed_size(r);
    uint8_t *b = malloc(*len ? *len : 1);
    if (b == NULL) abort();
    spool__publish_request__pack(r, b);
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1 << 16) return 0;
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL) abort();
    memcpy(copy, data, size);
    size_t max = size / 2 + 1;
    struct spool_fwd_slice *s = malloc(max * sizeof *s);
    if (s == NULL) abort();
    long k = spool_fwd_scan(copy, size, s, max);
    if (k < -1 || k > (long)max) abort();
    const uint8_t *at = copy;
    for (long i = 0; i < k; i++) { /* tag, length, then the slice, back to back */
        if (s[i].buf <= at || s[i].buf + s[i].len > copy + size) abort();
        at = s[i].buf + s[i].len;
    }
    if (k >= 0 && at != copy + size) abort();

    Spool__ForwardPublishBatch *f = spool__forward_publish_batch__unpack(NULL, size, copy);
    if (f != NULL && k >= 0) {
        if (f->n_requests != (size_t)k) abort();
        for (long i = 0; i < k; i++) {
            Spool__PublishRequest *r = spool__publish_request__unpack(NULL, s[i].len, s[i].buf);
            if (r == NULL) abort(); /* it decoded inside the batch */
            size_t la, lb;
            uint8_t *a = pack_request(r, &la), *b = pack_request(f->requests[i], &lb);
            if (la != lb || memcmp(a, b, la) != 0) abort();
            free(a);
            free(b);
            spool__publish_request__free_unpacked(r, NULL);
        }
    }
    if (f != NULL) { /* protobuf-c's own encoding of it scans, to as many requests */
        size_t len = spool__forward_publish_batch__get_packed_size(f);
        uint8_t *again = malloc(len ? len : 1);
        if (again == NULL) abort();
        spool__forward_publish_batch__pack(f, again);
        struct spool_fwd_slice *t = malloc((f->n_requests + 1) * sizeof *t);
        if (t == NULL) abort();
        long n = spool_fwd_scan(again, len, t, f->n_requests + 1);
        if (f->base.n_unknown_fields == 0 && n != (long)f->n_requests) abort();
        free(t);
        free(again);
        spool__forward_publish_batch__free_unpacked(f, NULL);
    }
    free(s);
    free(copy);
    return 0;
}
