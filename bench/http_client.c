/*
 * http_client: see http_client.h. Shared by the publish and durable_streams load generators, so
 * both parse responses and open connections the same way.
 */
#include "http_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

int bench_parse_hostport(const char *s, struct sockaddr_in *a)
{
    char host[64];
    if (strncmp(s, "http://", 7) == 0)
        s += 7;
    const char *colon = strrchr(s, ':');
    if (!colon || (size_t)(colon - s) >= sizeof host)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    memset(a, 0, sizeof *a);
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

int bench_parse_urls(const char *list, struct sockaddr_in *out, unsigned max)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", list);
    unsigned n = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save)) {
        if (bench_parse_hostport(t, &out[n]) != 0) {
            fprintf(stderr, "bad url %s (want 127.0.0.1:PORT)\n", t);
            return -1;
        }
        n++;
    }
    return (int)n;
}

int bench_tcp_connect(const struct sockaddr_in *a)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (const struct sockaddr *)a, sizeof *a) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

int http_in_read(struct http_in *h)
{
    for (;;) {
        if (h->in_cap - h->in_len < 16384) {
            size_t cap = h->in_cap ? h->in_cap * 2 : 65536;
            char *in = realloc(h->in, cap);
            if (!in)
                return -1;
            h->in = in;
            h->in_cap = cap;
        }
        ssize_t n = read(h->fd, h->in + h->in_len, h->in_cap - h->in_len);
        if (n > 0) {
            h->in_len += (size_t)n;
            continue;
        }
        if (n == 0)
            return -1;
        if (errno == EINTR)
            continue;
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
}

void http_in_consume(struct http_in *h, size_t n)
{
    memmove(h->in, h->in + n, h->in_len - n);
    h->in_len -= n;
}

void http_in_free(struct http_in *h)
{
    free(h->in);
    h->in = NULL;
    h->in_len = h->in_cap = 0;
}

static void hdr_copy(char *dst, size_t cap, const char *v, const char *eol)
{
    while (v < eol && (*v == ' ' || *v == '\t'))
        v++;
    size_t n = (size_t)(eol - v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = 0;
}

long http_resp_parse(const char *b, size_t n, struct http_resp *r)
{
    const char *end = b + n;
    const char *hend = memmem(b, n, "\r\n\r\n", 4);
    if (!hend)
        return n > 65536 ? -1 : 0;
    memset(r, 0, sizeof *r);
    if (n < 12 || strncmp(b, "HTTP/1.", 7) != 0)
        return -1;
    r->status = atoi(b + 9);
    long clen = -1;
    const char *p = memchr(b, '\n', (size_t)(hend - b)) + 1;
    while (p < hend) {
        const char *eol = memchr(p, '\r', (size_t)(hend + 2 - p));
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (colon) {
            size_t kl = (size_t)(colon - p);
            const char *v = colon + 1;
            if (kl == 14 && strncasecmp(p, "content-length", kl) == 0)
                clen = strtol(v, NULL, 10);
            else if (kl == 17 && strncasecmp(p, "transfer-encoding", kl) == 0)
                r->chunked = memmem(v, (size_t)(eol - v), "chunked", 7) != NULL;
            else if (kl == 10 && strncasecmp(p, "connection", kl) == 0)
                r->close = memmem(v, (size_t)(eol - v), "close", 5) != NULL;
            else if (kl == 18 && strncasecmp(p, "stream-next-offset", kl) == 0)
                hdr_copy(r->next_offset, sizeof r->next_offset, v, eol);
            else if (kl == 13 && strncasecmp(p, "stream-cursor", kl) == 0)
                hdr_copy(r->cursor, sizeof r->cursor, v, eol);
        }
        p = eol + 2;
    }
    const char *body = hend + 4;
    r->body = body;
    if (r->status == 204 || r->status == 304 || (r->status >= 100 && r->status < 200))
        return body - b;
    if (r->chunked) {
        const char *q = body;
        for (;;) {
            const char *eol = memmem(q, (size_t)(end - q), "\r\n", 2);
            if (!eol)
                return 0;
            unsigned long k = strtoul(q, NULL, 16);
            q = eol + 2;
            if (k == 0) {
                /* trailers (none expected) end with an empty line */
                const char *t = memmem(q - 2, (size_t)(end - q + 2), "\r\n\r\n", 4);
                if (!t)
                    return 0;
                r->body_raw = (size_t)(t - body);
                return t + 4 - b;
            }
            if ((size_t)(end - q) < k + 2)
                return 0;
            r->body_len += k;
            q += k + 2;
        }
    }
    if (clen < 0)
        return -1; /* close-delimited bodies are not used by either server */
    if ((size_t)(end - body) < (size_t)clen)
        return 0;
    r->body_len = r->body_raw = (size_t)clen;
    return body + clen - b;
}
