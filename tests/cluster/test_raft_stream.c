/*
 * The read buffer in front of libraft's receiver (cluster/raft_stream.h), driven by a reader
 * that reads the way libraft's uv_recv.c does: a 16-byte preamble, then a header whose length
 * the preamble gives, then a payload whose length the header gives, each part asked for with
 * exactly its size. A client writes many messages in one go; the reader must get every byte in
 * order, through far fewer kernel reads than messages, a payload larger than the buffer must be
 * read straight into the reader's buffer, and a reader that closes the stream in the middle of
 * a buffered chunk must get no callback after that (ASan checks the rest).
 */
#include <criterion/criterion.h>
#include <raft.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/raft_stream.h"
#include "loop_helpers.h"

#define MSGS 200
#define BIG (3 * SPOOL_RAFT_STREAM_BUF + 123)

/* --- a reader shaped like libraft's -------------------------------------------------------- */

struct reader {
    uint64_t preamble[2]; /* [0]: message number, [1]: header length */
    uint8_t *header;      /* [0..8): payload length, then filler */
    uint8_t *payload;
    size_t header_len, payload_len;
    uv_buf_t buf;         /* what is still to be filled of the current part */
    int part;             /* 0 preamble, 1 header, 2 payload */
    unsigned got;         /* messages complete */
    unsigned close_after; /* close the stream once this many are complete (0: never) */
    bool bad, eof, closed;
    unsigned calls_after_close;
    size_t max_payload_read; /* biggest single read into a payload buffer */
};

static void reader_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct reader *r = h->data;
    (void)suggested;
    if (r->closed) r->calls_after_close++;
    if (r->buf.len == 0) {
        if (r->part == 0) {
            r->buf = uv_buf_init((char *)r->preamble, sizeof r->preamble);
        } else if (r->part == 1) {
            r->header = malloc(r->header_len);
            r->buf = uv_buf_init((char *)r->header, (unsigned)r->header_len);
        } else {
            r->payload = malloc(r->payload_len);
            r->buf = uv_buf_init((char *)r->payload, (unsigned)r->payload_len);
        }
    }
    *buf = r->buf;
}

static void reader_closed_cb(uv_handle_t *h) { raft_free(h); }

static void reader_check_message(struct reader *r)
{
    /* Every byte of header and payload is derived from the message number. */
    uint8_t seed = (uint8_t)r->preamble[0];
    for (size_t i = 8; i < r->header_len; i++)
        if (r->header[i] != (uint8_t)(seed + i)) r->bad = true;
    for (size_t i = 0; i < r->payload_len; i++)
        if (r->payload[i] != (uint8_t)(seed * 3 + i)) r->bad = true;
    if (r->preamble[0] != r->got) r->bad = true;
    free(r->header);
    free(r->payload);
    r->header = r->payload = NULL;
    r->got++;
    r->part = 0;
}

static void reader_read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct reader *r = st->data;
    (void)buf;
    if (r->closed) r->calls_after_close++;
    if (nread < 0) {
        r->eof = true;
        if (!uv_is_closing((uv_handle_t *)st)) {
            r->closed = true;
            uv_close((uv_handle_t *)st, reader_closed_cb);
        }
        return;
    }
    if (nread == 0) return;
    if ((size_t)nread > r->buf.len) r->bad = true;
    if (r->part == 2 && (size_t)nread > r->max_payload_read) r->max_payload_read = (size_t)nread;
    r->buf.base += nread;
    r->buf.len -= (size_t)nread;
    if (r->buf.len > 0) return;
    if (r->part == 0) {
        r->header_len = r->preamble[1];
        r->part = 1;
    } else if (r->part == 1) {
        memcpy(&r->payload_len, r->header, 8);
        r->part = 2;
        if (r->payload_len == 0) reader_check_message(r);
    } else {
        reader_check_message(r);
    }
    if (r->close_after != 0 && r->got == r->close_after && !r->closed) {
        r->closed = true;
        uv_close((uv_handle_t *)st, reader_closed_cb);
    }
}

/* --- the test bench: listener, one accepted buffered stream, one writing client ------------ */

struct bench {
    uv_loop_t loop;
    uv_tcp_t listener;
    struct spool_raft_stream *server; /* accepted */
    struct reader reader;
    uv_tcp_t client;
    uv_connect_t connect;
    uv_write_t write;
    uint8_t *data;
    size_t len;
    bool written, client_closed;
    unsigned msgs;
};

static void on_connection(uv_stream_t *listener, int status)
{
    struct bench *b = listener->data;
    cr_assert_eq(status, 0);
    b->server = spool_raft_stream_new();
    cr_assert_not_null(b->server);
    uv_tcp_init(&b->loop, &b->server->tcp);
    cr_assert_eq(uv_accept(listener, (uv_stream_t *)&b->server->tcp), 0);
    b->server->tcp.data = &b->reader;
    /* What libraft's accept callback does, then what the mux does right after it. */
    cr_assert_eq(uv_read_start((uv_stream_t *)&b->server->tcp, reader_alloc_cb, reader_read_cb), 0);
    spool_raft_stream_buffer(b->server);
}

static void on_written(uv_write_t *req, int status)
{
    struct bench *b = req->data;
    (void)status; /* fails when the reader closed early */
    b->written = true;
}

static void on_connected(uv_connect_t *req, int status)
{
    struct bench *b = req->data;
    cr_assert_eq(status, 0);
    b->write.data = b;
    uv_buf_t buf = uv_buf_init((char *)b->data, (unsigned)b->len);
    cr_assert_eq(uv_write(&b->write, (uv_stream_t *)&b->client, &buf, 1, on_written), 0);
}

/* MSGS messages, message i with a header of 8 + i % 40 bytes and a payload of (i * 37) % 300
 * bytes (some empty), and message `big` (if < MSGS) with a BIG payload. */
static void bench_data(struct bench *b, unsigned big)
{
    b->msgs = MSGS;
    b->data = malloc((size_t)MSGS * (16 + 48 + 300) + BIG);
    cr_assert_not_null(b->data);
    size_t off = 0;
    for (unsigned i = 0; i < MSGS; i++) {
        uint64_t header_len = 8 + i % 40, payload_len = i == big ? BIG : (i * 37) % 300;
        uint64_t pre[2] = {i, header_len};
        memcpy(b->data + off, pre, sizeof pre);
        off += sizeof pre;
        memcpy(b->data + off, &payload_len, 8);
        for (size_t k = 8; k < header_len; k++) b->data[off + k] = (uint8_t)((uint8_t)i + k);
        off += header_len;
        for (size_t k = 0; k < payload_len; k++) b->data[off + k] = (uint8_t)((uint8_t)i * 3 + k);
        off += payload_len;
    }
    b->len = off;
}

static void bench_start(struct bench *b)
{
    cr_assert_eq(uv_loop_init(&b->loop), 0);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&b->loop, &b->listener);
    b->listener.data = b;
    cr_assert_eq(uv_tcp_bind(&b->listener, (struct sockaddr *)&sa, 0), 0);
    cr_assert_eq(uv_listen((uv_stream_t *)&b->listener, 8, on_connection), 0);
    int salen = sizeof sa;
    cr_assert_eq(uv_tcp_getsockname(&b->listener, (struct sockaddr *)&sa, &salen), 0);
    uv_tcp_init(&b->loop, &b->client);
    b->connect.data = b;
    cr_assert_eq(uv_tcp_connect(&b->connect, &b->client, (struct sockaddr *)&sa, on_connected), 0);
}

static void client_closed_cb(uv_handle_t *h) { *(bool *)h->data = true; }

static void bench_finish(struct bench *b)
{
    b->client.data = &b->client_closed;
    uv_close((uv_handle_t *)&b->client, client_closed_cb);
    uv_close((uv_handle_t *)&b->listener, NULL);
    if (b->server != NULL && !b->reader.closed) {
        b->reader.closed = true;
        uv_close((uv_handle_t *)&b->server->tcp, reader_closed_cb);
    }
    loop_finish(&b->loop);
    free(b->reader.header);
    free(b->reader.payload);
    free(b->data);
}

static bool all_read(void *arg)
{
    struct bench *b = arg;
    return b->written && (b->reader.got == b->msgs || b->reader.bad);
}

static bool reader_closed(void *arg) { return ((struct bench *)arg)->reader.closed; }

Test(raft_stream, delivers_every_byte_in_order_with_few_reads, .timeout = 30)
{
    struct bench b = {0};
    bench_data(&b, MSGS / 2);
    bench_start(&b);
    cr_assert(run_until(&b.loop, all_read, &b, 10000), "got %u of %u messages", b.reader.got,
              b.msgs);
    cr_assert(!b.reader.bad, "a message arrived damaged or out of order");
    uint64_t reads = b.server->reads;
    /* Unbuffered, libraft's reads would be ~2.6 per message (preamble, header, most payloads).
     * Buffered: one per 16 KiB chunk, plus the direct reads of the big payload. */
    cr_assert_gt(reads, 0, "the buffer never read: not in front of the reader");
    cr_assert_lt(reads, b.msgs / 4, "%llu kernel reads for %u messages",
                 (unsigned long long)reads, b.msgs);
    /* The big payload went (mostly) straight into the reader's buffer: some single read into
     * it was larger than the chunk buffer could ever hand over. */
    cr_assert_gt(b.reader.max_payload_read, SPOOL_RAFT_STREAM_BUF);
    bench_finish(&b);
}

Test(raft_stream, reader_closing_mid_chunk_gets_no_more_callbacks, .timeout = 30)
{
    struct bench b = {0};
    bench_data(&b, MSGS); /* no big payload: all small messages, several per chunk */
    b.reader.close_after = 7;
    bench_start(&b);
    cr_assert(run_until(&b.loop, reader_closed, &b, 10000));
    run_until(&b.loop, flag_set, &b.written, 2000); /* the client may or may not finish */
    cr_assert_eq(b.reader.got, 7, "delivered %u messages after the close", b.reader.got);
    cr_assert_eq(b.reader.calls_after_close, 0);
    cr_assert(!b.reader.bad);
    bench_finish(&b);
}
