#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void spool_config_env_name(const char *flag, char *buf, size_t size)
{
    size_t o = (size_t)snprintf(buf, size, "SPOOL_");
    for (; *flag != '\0' && o + 1 < size; flag++)
        buf[o++] = *flag == '-' ? '_' : (char)toupper((unsigned char)*flag);
    buf[o < size ? o : size - 1] = '\0';
}

int spool_parse_uint(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)s[0])) return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0) return -1;
    uint64_t mul = 1;
    if (*end != '\0') {
        switch (tolower((unsigned char)*end)) {
        case 'k': mul = 1024ULL; break;
        case 'm': mul = 1024ULL * 1024; break;
        case 'g': mul = 1024ULL * 1024 * 1024; break;
        default: return -1;
        }
        end++;
        if (*end == 'i' || *end == 'I') end++;
        if (*end == 'b' || *end == 'B') end++;
        if (*end != '\0') return -1;
    }
    if (v > UINT64_MAX / mul) return -1;
    *out = (uint64_t)v * mul;
    return 0;
}

int spool_parse_ms(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)s[0])) return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0) return -1;
    uint64_t mul;
    if (*end == '\0' || strcmp(end, "ms") == 0) mul = 1;
    else if (strcmp(end, "s") == 0) mul = 1000;
    else if (strcmp(end, "m") == 0) mul = 60 * 1000;
    else if (strcmp(end, "h") == 0) mul = 3600 * 1000;
    else return -1;
    if (v > UINT64_MAX / mul) return -1;
    *out = (uint64_t)v * mul;
    return 0;
}

int spool_parse_bool(const char *s, bool *out)
{
    if (s == NULL) return -1;
    if (!strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on")) {
        *out = true;
        return 0;
    }
    if (!strcmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off")) {
        *out = false;
        return 0;
    }
    return -1;
}

static int set_value(const struct spool_opt *o, const char *value, const char *source,
                     struct spool_err *err)
{
    int rc = 0;
    switch (o->type) {
    case SPOOL_OPT_STRING: *(const char **)o->dest = value; break;
    case SPOOL_OPT_UINT: rc = spool_parse_uint(value, (uint64_t *)o->dest); break;
    case SPOOL_OPT_MS: rc = spool_parse_ms(value, (uint64_t *)o->dest); break;
    case SPOOL_OPT_BOOL: rc = spool_parse_bool(value, (bool *)o->dest); break;
    }
    if (rc != 0)
        return spool_err_set(err, SPOOL_EINVAL, "%s for --%s: bad value '%s'", source, o->name,
                             value ? value : "");
    return 0;
}

int spool_config_parse(const struct spool_opt *opts, size_t n, int argc, char **argv, bool *help,
                       bool *version, struct spool_err *err)
{
    *help = false;
    *version = false;
    /* Environment first, so flags override it. */
    for (size_t i = 0; i < n; i++) {
        char env[128];
        spool_config_env_name(opts[i].name, env, sizeof env);
        const char *v = getenv(env);
        if (v != NULL) {
            int rc = set_value(&opts[i], v, env, err);
            if (rc != 0) return rc;
        }
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            *help = true;
            continue;
        }
        if (!strcmp(arg, "--version")) {
            *version = true;
            continue;
        }
        if (strncmp(arg, "--", 2) != 0)
            return spool_err_set(err, SPOOL_EINVAL, "unexpected argument '%s' (see --help)", arg);
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct spool_opt *o = NULL;
        for (size_t i = 0; i < n; i++)
            if (strlen(opts[i].name) == len && !strncmp(opts[i].name, name, len)) o = &opts[i];
        if (o == NULL)
            return spool_err_set(err, SPOOL_EINVAL, "unknown flag '--%.*s' (see --help)", (int)len,
                                 name);
        const char *value;
        if (eq != NULL) {
            value = eq + 1;
        } else if (o->type == SPOOL_OPT_BOOL &&
                   (a + 1 >= argc || !strncmp(argv[a + 1], "--", 2) ||
                    spool_parse_bool(argv[a + 1], &(bool){0}) != 0)) {
            value = "true";
        } else if (a + 1 < argc) {
            value = argv[++a];
        } else {
            return spool_err_set(err, SPOOL_EINVAL, "flag --%s needs a value", o->name);
        }
        int rc = set_value(o, value, "flag", err);
        if (rc != 0) return rc;
    }
    return 0;
}

void spool_config_usage(FILE *out, const char *program, const struct spool_opt *opts, size_t n)
{
    fprintf(out, "usage: %s [flags]\n\nEvery flag can also be set by the environment variable "
                 "shown beside it;\na flag given on the command line wins.\n\n", program);
    for (size_t i = 0; i < n; i++) {
        char env[128];
        char def[64] = "";
        spool_config_env_name(opts[i].name, env, sizeof env);
        switch (opts[i].type) {
        case SPOOL_OPT_STRING: {
            const char *s = *(const char **)opts[i].dest;
            snprintf(def, sizeof def, "%s", s ? s : "");
            break;
        }
        case SPOOL_OPT_UINT: snprintf(def, sizeof def, "%" PRIu64, *(uint64_t *)opts[i].dest); break;
        case SPOOL_OPT_MS: snprintf(def, sizeof def, "%" PRIu64 "ms", *(uint64_t *)opts[i].dest); break;
        case SPOOL_OPT_BOOL: snprintf(def, sizeof def, "%s", *(bool *)opts[i].dest ? "true" : "false"); break;
        }
        fprintf(out, "  --%-22s %-28s %s", opts[i].name, env, opts[i].help);
        if (def[0] != '\0') fprintf(out, " [default: %s]", def);
        fputc('\n', out);
    }
    fprintf(out, "  --%-22s %-28s %s\n", "help", "", "print this list and exit");
    fprintf(out, "  --%-22s %-28s %s\n", "version", "", "print versions and exit");
}
