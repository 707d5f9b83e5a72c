/*
 * The read buffer in front of libraft's receiver (design in cluster/raft_stream.h).
 *
 * One wake-up: libuv calls alloc_cb (we ask libraft for its next buffer `want`, and give libuv
 * either our chunk buffer or, for a big `want`, `want` itself), reads, and calls read_cb. In the
 * buffered case read_cb copies the chunk into libraft's buffers one after the other, calling
 * libraft's read callback after each copy and its alloc callback before the next, and stops
 * when the chunk is used up or libraft stopped reading (closing, or its read callback is no
 * longer ours because libraft called uv_read_stop). Errors and empty reads go to libraft as
 * they came, with its own buffer.
 */
#include "cluster/raft_stream.h"

#include <raft.h>
#include <string.h>

struct spool_raft_stream *spool_raft_stream_new(void)
{
    struct spool_raft_stream *s = raft_malloc(sizeof *s);
    if (s == NULL) return NULL;
    s->raft_alloc = NULL;
    s->raft_read = NULL;
    s->want = uv_buf_init(NULL, 0);
    s->direct = false;
    s->reads = 0;
    return s;
}

static void buffered_alloc_cb(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct spool_raft_stream *s = (struct spool_raft_stream *)handle;
    s->raft_alloc(handle, suggested, &s->want);
    s->direct = s->want.len == 0 || s->want.len >= sizeof s->buf;
    *buf = s->direct ? s->want : uv_buf_init(s->buf, sizeof s->buf);
}

static bool still_reading(uv_stream_t *stream, uv_read_cb ours)
{
    return !uv_is_closing((uv_handle_t *)stream) && stream->read_cb == ours;
}

static void buffered_read_cb(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct spool_raft_stream *s = (struct spool_raft_stream *)stream;
    (void)buf;
    if (nread > 0) s->reads++;
    if (s->direct || nread <= 0) {
        s->raft_read(stream, nread, &s->want);
        return;
    }
    size_t have = (size_t)nread, off = 0;
    for (;;) {
        size_t k = have - off < s->want.len ? have - off : s->want.len;
        memcpy(s->want.base, s->buf + off, k);
        off += k;
        uv_buf_t given = s->want;
        s->raft_read(stream, (ssize_t)k, &given);
        if (off == have || !still_reading(stream, buffered_read_cb)) return;
        s->raft_alloc((uv_handle_t *)stream, sizeof s->buf, &s->want);
        if (s->want.len == 0) { /* libraft is out of memory: it aborts the stream */
            s->raft_read(stream, UV_ENOBUFS, &s->want);
            return;
        }
    }
}

void spool_raft_stream_buffer(struct spool_raft_stream *s)
{
    uv_stream_t *stream = (uv_stream_t *)&s->tcp;
    if (uv_is_closing((uv_handle_t *)stream) || stream->read_cb == NULL ||
        stream->alloc_cb == NULL || stream->read_cb == buffered_read_cb)
        return;
    s->raft_alloc = stream->alloc_cb;
    s->raft_read = stream->read_cb;
    uv_read_stop(stream);
    if (uv_read_start(stream, buffered_alloc_cb, buffered_read_cb) != 0)
        uv_read_start(stream, s->raft_alloc, s->raft_read); /* cannot fail after a stop */
}
