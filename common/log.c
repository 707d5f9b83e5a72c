#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static enum spool_log_level current_level = SPOOL_LOG_INFO;
static unsigned long long current_node;

void spool_log_set_level(enum spool_log_level level) { current_level = level; }
void spool_log_set_node(unsigned long long node_id) { current_node = node_id; }

int spool_log_parse_level(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

void spool_log(enum spool_log_level level, const char *event, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < current_level) return;
    char line[2048];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     (int)(tv.tv_usec / 1000), names[level]);
    if (current_node != 0 && n < (int)sizeof line)
        n += snprintf(line + n, sizeof line - n, " node=%llu", current_node);
    if (n < (int)sizeof line) n += snprintf(line + n, sizeof line - n, " event=%s", event);
    if (fmt != NULL && fmt[0] != '\0' && n < (int)sizeof line - 1) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        n += vsnprintf(line + n, sizeof line - n, fmt, ap);
        va_end(ap);
    }
    if (n >= (int)sizeof line - 1) n = sizeof line - 2;
    for (int i = 0; i < n; i++)
        if (line[i] == '\n' || line[i] == '\r') line[i] = ' ';
    line[n++] = '\n';
    fwrite(line, 1, n, stderr);
}

const char *spool_log_quote(char *buf, size_t size, const char *s)
{
    size_t o = 0;
    if (size < 3) return "";
    buf[o++] = '"';
    for (; s != NULL && *s != '\0' && o + 3 < size; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else {
            buf[o++] = c < 0x20 ? '?' : (char)c;
        }
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}
