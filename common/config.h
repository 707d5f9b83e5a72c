/*
 * Flags with environment fallbacks. Every option is one row of a table the program owns: a long
 * flag (--data), its SPOOL_* variable (SPOOL_DATA, derived from the flag name), a help line and a
 * typed destination that already holds the default. Precedence: flag > environment > default.
 * `--help` prints the table; nothing else needs to list the options again.
 */
#ifndef SPOOL_COMMON_CONFIG_H
#define SPOOL_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "common/err.h"

enum spool_opt_type {
    SPOOL_OPT_STRING, /* dest: const char ** (points into argv/environ, or the default) */
    SPOOL_OPT_UINT,   /* dest: uint64_t *; accepts suffixes k, m, g (x1024) */
    SPOOL_OPT_MS,     /* dest: uint64_t * milliseconds; accepts 250ms, 5s, 2m, 1h (bare = ms) */
    SPOOL_OPT_BOOL,   /* dest: bool *; "--flag" alone sets true; true/false/1/0/yes/no */
};

struct spool_opt {
    const char *name; /* without the leading "--", e.g. "cluster-listen" */
    enum spool_opt_type type;
    void *dest;
    const char *help;
};

/* Parses argv and the environment into the table's destinations. Returns SPOOL_EINVAL with a
 * message naming the flag on an unknown flag or bad value. Sets *help / *version when those
 * flags are given (they are not in the table). */
int spool_config_parse(const struct spool_opt *opts, size_t n, int argc, char **argv, bool *help,
                       bool *version, struct spool_err *err);
/* Writes "--name (SPOOL_NAME) help [default: value]" for each option. */
void spool_config_usage(FILE *out, const char *program, const struct spool_opt *opts, size_t n);
/* The SPOOL_* variable name for a flag name ("cluster-listen" -> "SPOOL_CLUSTER_LISTEN"). */
void spool_config_env_name(const char *flag, char *buf, size_t size);
/* Parsers shared with other inputs (query strings, headers). Return 0 or -1. */
int spool_parse_uint(const char *s, uint64_t *out);
int spool_parse_ms(const char *s, uint64_t *out);
int spool_parse_bool(const char *s, bool *out);

#endif
