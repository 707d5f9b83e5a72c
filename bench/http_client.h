/*
 * http_client: the small HTTP/1.1 client pieces the load generators share (bench/publish.c,
 * bench/durable_streams.c): host:port lists, a TCP connection made non-blocking after a blocking
 * connect (127.0.0.1 is quick), an input buffer read until EAGAIN, and a parser for one complete
 * response at the start of a buffer (Content-Length or chunked bodies).
 *
 * It is deliberately not a general client: no redirects, no close-delimited bodies (neither Spool
 * nor the Durable Streams reference server sends them), no TLS. A chunked body is not decoded:
 * `body` points at the raw chunked bytes (good enough to search for a marker) and `body_len`
 * counts the decoded bytes.
 */
#ifndef SPOOL_BENCH_HTTP_CLIENT_H
#define SPOOL_BENCH_HTTP_CLIENT_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>

/* "host:port" (IPv4 literal or localhost, optional http:// prefix) into *a; -1 when malformed. */
int bench_parse_hostport(const char *s, struct sockaddr_in *a);

/* A comma-separated list into out[0..max); returns the count, or -1 (after a message on stderr)
 * when an entry is malformed. */
int bench_parse_urls(const char *list, struct sockaddr_in *out, unsigned max);

/* Connect (blocking, TCP_NODELAY), then make the socket non-blocking; -1 with errno on failure. */
int bench_tcp_connect(const struct sockaddr_in *a);

/* An input buffer on a non-blocking socket. */
struct http_in {
    int fd;
    char *in;
    size_t in_len, in_cap;
};

/* Read what is available (until EAGAIN); 0, or -1 on EOF or error. */
int http_in_read(struct http_in *h);
/* Drop the first n bytes. */
void http_in_consume(struct http_in *h, size_t n);
void http_in_free(struct http_in *h);

struct http_resp {
    int status;
    bool chunked;
    bool close;          /* "Connection: close" */
    const char *body;    /* into the buffer: the body (raw chunked bytes when chunked) */
    size_t body_raw;     /* bytes at body */
    size_t body_len;     /* decoded body bytes */
    char next_offset[128]; /* Stream-Next-Offset (Durable Streams), "" when absent */
    char cursor[64];       /* Stream-Cursor (Durable Streams), "" when absent */
};

/* One complete response at the start of b[0..n): returns the bytes it spans (> 0), 0 when
 * incomplete, -1 when malformed. */
long http_resp_parse(const char *b, size_t n, struct http_resp *r);

#endif
