/*
 * Which shard replicas this node holds: opened at start, then kept equal to the cluster map.
 *
 * At start (before the metadata group has told us anything) a node opens:
 *   - while the cluster never changed membership (no epoch mark on disk, see below) and the node
 *     is not joining: the replicas the configuration places on it, bootstrapping pristine ones
 *     with the configured voters (the behaviour of a cluster that never changed);
 *   - always: every shard directory already on disk (no bootstrap: libraft resumes it).
 * Then, for every applied map of epoch >= 2 (membership changes, cluster/membership.c, and
 * resharding, cluster/reshard.c) and not older than the mark, reconcile: open each shard newly
 * placed here -- a shard the resharding change in progress creates (>= its shards_before) with
 * a pristine directory bootstraps its group with the map's replica set; any other gets an empty,
 * not bootstrapped replica (its leader fills it with AppendEntries or InstallSnapshot once it adds this node
 * to the group), and close and delete each replica no longer placed here.
 *
 * The epoch mark (<data>/meta/epoch, written and fsynced before a reconcile acts) keeps a
 * restarting node from acting on old maps while its metadata replica replays the log: replaying
 * epoch 2 after epoch 5 was applied must not delete a replica epoch 5 placed here (that would
 * forget Raft log entries and votes the group counted on). Deletion is a rename to
 * shard-<n>.removed then a recursive delete; start-up finishes any interrupted one.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster/node_int.h"
#include "common/log.h"

static void mark_path(const struct spool_node *n, char *buf, size_t size)
{
    snprintf(buf, size, "%s/meta/epoch", n->data_dir);
}

uint64_t spool_replicas_load_mark(const char *data_dir)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/meta/epoch", data_dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    unsigned long long v = 0;
    if (fscanf(f, "%llu", &v) != 1)
        v = 0;
    fclose(f);
    return v;
}

static int store_mark(struct spool_node *n, uint64_t epoch)
{
    char path[1100], tmp[1110];
    mark_path(n, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    char buf[32];
    int len = snprintf(buf, sizeof buf, "%llu\n", (unsigned long long)epoch);
    bool ok = write(fd, buf, (size_t)len) == len && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path) != 0)
        return -1;
    n->epoch_mark = epoch;
    return 0;
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *path)
{
    nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* Deletes <data>/shard-<s> (rename first, so a crash never leaves half a replica). */
static void remove_shard_dir(struct spool_node *n, uint32_t s)
{
    char dir[1100], gone[1120];
    snprintf(dir, sizeof dir, "%s/shard-%u", n->data_dir, s);
    snprintf(gone, sizeof gone, "%s.removed", dir);
    remove_tree(gone);
    if (rename(dir, gone) != 0 && errno != ENOENT) {
        SPOOL_ERROR("replica.remove_failed", "shard=%u msg=\"%s\"", s, strerror(errno));
        return;
    }
    remove_tree(gone);
    SPOOL_INFO("replica.removed", "shard=%u", s);
}

static bool shard_dir_exists(const struct spool_node *n, uint32_t s)
{
    char dir[1100];
    struct stat st;
    snprintf(dir, sizeof dir, "%s/shard-%u/raft", n->data_dir, s);
    return stat(dir, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *spool_node_self_address(const struct spool_node *n)
{
    const char *a = spool_placement_address(&n->placement, n->cfg.id);
    return a != NULL ? a : spool_mux_address(n->mux);
}

static int open_replica(struct spool_node *n, uint32_t s, bool bootstrap, uint32_t local,
                        struct spool_err *err)
{
    const struct spool_placement *p = &n->placement;
    struct spool_peer voters[SPOOL_MAX_REPLICAS];
    size_t n_voters = 0;
    if (bootstrap)
        for (uint32_t i = 0; i < spool_placement_replica_count(p, s); i++)
            voters[n_voters++] = *spool_placement_replica(p, s, i);
    /* The tail cache budget is per node: each local store gets its share (never 0, which the
     * store would read as "default"). */
    struct spool_store_config store = n->cfg.store;
    if (local > 0)
        store.tail_cache_bytes =
            store.tail_cache_bytes / local > 0 ? store.tail_cache_bytes / local : 1;
    struct spool_shard_config sc = {
        .id = s,
        .node_id = n->cfg.id,
        .node_address = spool_node_self_address(n),
        .data_dir = n->data_dir,
        .voters = voters,
        .n_voters = n_voters,
        .snapshot_threshold = n->cfg.snapshot_threshold,
        .snapshot_trailing = n->cfg.snapshot_trailing,
        .election_timeout_ms = n->cfg.election_timeout_ms,
        .heartbeat_ms = n->cfg.heartbeat_ms,
        .dedup_window_ms = n->cfg.dedup_window_ms,
        .conv = {.max_entries = (size_t)n->cfg.conv_max_entries,
                 .scan_max = (size_t)n->cfg.conv_scan_max},
        .store = store,
        .on_records = spool_subs_records_cb,
        .on_restored = spool_subs_restored_cb,
        .cb_arg = n,
    };
    int rc = spool_shard_init(&n->shards[s], n->loop, n->mux, &sc, err);
    if (rc != 0)
        return rc;
    n->shards[s]->data = n;
    return 0;
}

int spool_replicas_start(struct spool_node *n, struct spool_err *err)
{
    if (n->cfg.gateway_only)
        return 0;
    const struct spool_placement *p = &n->placement;
    bool from_config = !n->cfg.join && n->epoch_mark <= 1;
    /* Shards beyond --shards may be on disk: resharding added them (the map says so later). */
    bool *open = calloc(SPOOL_MAX_SHARDS, sizeof *open);
    if (open == NULL)
        return spool_err_set(err, SPOOL_ENOMEM, "replicas");
    uint32_t local = 0;
    for (uint32_t s = 0; s < SPOOL_MAX_SHARDS; s++) {
        char gone[1120];
        snprintf(gone, sizeof gone, "%s/shard-%u.removed", n->data_dir, s);
        remove_tree(gone);
        open[s] = (from_config && s < p->shards && spool_placement_has_replica(p, s, n->cfg.id)) ||
                  shard_dir_exists(n, s);
        local += open[s];
    }
    int rc = 0;
    for (uint32_t s = 0; s < SPOOL_MAX_SHARDS && rc == 0; s++) {
        if (!open[s])
            continue;
        rc = open_replica(n, s,
                          from_config && s < p->shards && spool_placement_has_replica(p, s, n->cfg.id),
                          local, err);
    }
    free(open);
    return rc;
}

static void retired_cb(struct spool_shard *s)
{
    struct spool_node *n = s->data;
    uint32_t id = s->id;
    n->shards[id] = NULL;
    remove_shard_dir(n, id);
    if (n->closing) {
        spool_node_shard_closed(n);
        return;
    }
    spool_subs_replica_gone(n, id);
    spool_replicas_reconcile(n); /* it may be placed here again meanwhile */
}

void spool_replicas_reconcile(struct spool_node *n)
{
    if (n->closing || n->cfg.gateway_only || n->meta == NULL)
        return;
    const struct spool_slot_map *map = spool_meta_map(n->meta);
    if (map->epoch < 2 || map->epoch < n->epoch_mark)
        return;
    const struct spool_placement *p = &n->placement;
    uint32_t local = 0;
    bool change = false;
    for (uint32_t s = 0; s < p->shards; s++) {
        bool want = spool_placement_has_replica(p, s, n->cfg.id);
        local += want;
        change |= want != (n->shards[s] != NULL);
    }
    if (!change)
        return;
    if (map->epoch > n->epoch_mark && store_mark(n, map->epoch) != 0) {
        SPOOL_ERROR("replica.mark_failed", "epoch=%llu msg=\"%s\"",
                    (unsigned long long)map->epoch, strerror(errno));
        return;
    }
    for (uint32_t s = 0; s < p->shards; s++) {
        bool want = spool_placement_has_replica(p, s, n->cfg.id);
        struct spool_shard *sh = n->shards[s];
        if (want && sh == NULL) {
            struct spool_err err;
            /* A shard that resharding creates (cluster/reshard.c): its replicas bootstrap the
             * group with the map's replica set, like the initial bootstrap -- only while that
             * change runs and only a pristine directory (a replica placed here later by a
             * membership change is filled by the leader and must never bootstrap). */
            bool create = map->change == SPOOL_CHANGE_SHARDS && s >= map->shards_before &&
                          !shard_dir_exists(n, s);
            /* Otherwise empty and not bootstrapped: the shard's leader adds this node and fills
             * it. */
            if (!create)
                remove_shard_dir(n, s); /* leftovers of an earlier stint here are stale */
            if (open_replica(n, s, create, local, &err) != 0)
                SPOOL_ERROR("replica.open_failed", "shard=%u msg=\"%s\"", s, err.msg);
            else
                SPOOL_INFO("replica.opened", "shard=%u epoch=%llu bootstrap=%d", s,
                           (unsigned long long)map->epoch, create);
        } else if (!want && sh != NULL && !sh->closing) {
            SPOOL_INFO("replica.retiring", "shard=%u epoch=%llu", s,
                       (unsigned long long)map->epoch);
            spool_shard_close(sh, retired_cb);
            spool_subs_replica_gone(n, s); /* no longer a local replica from now on */
        }
    }
}
