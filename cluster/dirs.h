/* Directories of a node's data dir: created on demand, like `mkdir -p`. */
#ifndef SPOOL_CLUSTER_DIRS_H
#define SPOOL_CLUSTER_DIRS_H

#include "common/err.h"

/* Creates `path` and its missing parents (0755). SPOOL_EIO / SPOOL_EINVAL with a message. */
int spool_mkdir_p(const char *path, struct spool_err *err);

#endif
