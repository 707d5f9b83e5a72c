#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int spool_err_set(struct spool_err *err, int code, const char *fmt, ...)
{
    if (err == NULL) return code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    err->code = code;
    return code;
}

int spool_err_wrap(struct spool_err *err, const char *fmt, ...)
{
    if (err == NULL) return SPOOL_EINVAL;
    char prefix[sizeof err->msg];
    char old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strnlen(prefix, sizeof err->msg - 3);
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t rest = sizeof err->msg - n - 3;
    size_t m = strnlen(old, rest);
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = '\0';
    return err->code;
}

void spool_err_clear(struct spool_err *err)
{
    if (err == NULL) return;
    err->code = SPOOL_OK;
    err->msg[0] = '\0';
}

const char *spool_err_name(int code)
{
    static const char *names[] = {
        [SPOOL_OK] = "ok",           [SPOOL_EINVAL] = "invalid",      [SPOOL_ENOENT] = "not_found",
        [SPOOL_EIO] = "io",          [SPOOL_ECORRUPT] = "corrupt",    [SPOOL_ENOMEM] = "no_memory",
        [SPOOL_ELIMIT] = "limit",    [SPOOL_ENOTLEADER] = "not_leader", [SPOOL_EBUSY] = "busy",
        [SPOOL_ECLOSED] = "closed",  [SPOOL_ECONFLICT] = "conflict",  [SPOOL_EDENIED] = "denied",
        [SPOOL_ETIMEOUT] = "timeout", [SPOOL_EMOVED] = "moved",
    };
    if (code < 0 || (size_t)code >= sizeof names / sizeof names[0] || names[code] == NULL)
        return "unknown";
    return names[code];
}
