/* mkdir -p (see dirs.h): the store's root, and through cluster/dirs.h a node's Raft dirs. */
#include "storage/dirs.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

int spool_mkdir_p(const char *path, struct spool_err *err)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return spool_err_set(err, SPOOL_EINVAL, "bad directory path: %s", path);
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return spool_err_set(err, SPOOL_EIO, "mkdir %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    return 0;
}
