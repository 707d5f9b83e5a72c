/* Directories of a node's data dir: created on demand, like `mkdir -p`. The one implementation
 * is the store's (storage/dirs.h, which the store uses for its own root); this header is where
 * the cluster and gateway layers get it. */
#ifndef SPOOL_CLUSTER_DIRS_H
#define SPOOL_CLUSTER_DIRS_H

#include "storage/dirs.h"

#endif
