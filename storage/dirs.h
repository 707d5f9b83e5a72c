/* Directories created on demand, like `mkdir -p`: the store's root (gen.c) and, re-exported by
 * cluster/dirs.h, the directories of a node's data dir. */
#ifndef SPOOL_STORAGE_DIRS_H
#define SPOOL_STORAGE_DIRS_H

#include "common/err.h"

/* Creates `path` and its missing parents (0755). SPOOL_EIO / SPOOL_EINVAL with a message. */
int spool_mkdir_p(const char *path, struct spool_err *err);

#endif
