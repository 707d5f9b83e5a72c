/* Snapshot streams: not implemented yet. */
#include "storage/store_int.h"

int spool_store_snapshot(struct spool_store *s, spool_store_write_cb write, void *arg,
                         struct spool_err *err)
{
    return spool_err_set(err, SPOOL_EINVAL, "snapshot not implemented yet");
}

int spool_store_restore(struct spool_store *s, const void *buf, size_t len, struct spool_err *err)
{
    return spool_err_set(err, SPOOL_EINVAL, "restore not implemented yet");
}

uint64_t spool_store_snapshot_applied_index(const void *buf, size_t len, struct spool_err *err)
{
    spool_err_set(err, SPOOL_EINVAL, "not implemented yet");
    return 0;
}
