/*
 * Logging: one line per event, logfmt, on stderr:
 *   ts=2026-11-25T10:51:35.123Z level=info event=shard.elected shard=3 term=2
 * `event` is a dotted name that says what happened; the rest are key=value pairs the caller
 * formats. Values that may hold spaces or quotes go through spool_log_quote().
 */
#ifndef SPOOL_COMMON_LOG_H
#define SPOOL_COMMON_LOG_H

#include <stddef.h>

enum spool_log_level { SPOOL_LOG_DEBUG, SPOOL_LOG_INFO, SPOOL_LOG_WARN, SPOOL_LOG_ERROR };

void spool_log_set_level(enum spool_log_level level);
/* Parses "debug", "info", "warn", "error"; returns -1 on anything else. */
int spool_log_parse_level(const char *s);
/* Prefix every line with node=<id> (0 = none); handy when several nodes share a terminal. */
void spool_log_set_node(unsigned long long node_id);
void spool_log(enum spool_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Quote `s` for a logfmt value into `buf` ("..." with \" and \\ escaped, control bytes as ?). */
const char *spool_log_quote(char *buf, size_t size, const char *s);

#define SPOOL_DEBUG(event, ...) spool_log(SPOOL_LOG_DEBUG, event, __VA_ARGS__)
#define SPOOL_INFO(event, ...) spool_log(SPOOL_LOG_INFO, event, __VA_ARGS__)
#define SPOOL_WARN(event, ...) spool_log(SPOOL_LOG_WARN, event, __VA_ARGS__)
#define SPOOL_ERROR(event, ...) spool_log(SPOOL_LOG_ERROR, event, __VA_ARGS__)

#endif
