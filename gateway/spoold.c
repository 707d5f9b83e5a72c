/*
 * spoold: the Spool server. Parses flags (each with a SPOOL_* variable), then runs the node:
 * storage + Raft shards (cluster/) and the client-facing gateway (gateway/) on one libuv loop.
 */
#include <lz4.h>
#include <raft.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "common/config.h"
#include "common/log.h"
#include "gateway/options.h"

int main(int argc, char **argv)
{
    struct spool_options o;
    spool_options_defaults(&o);
    struct spool_opt table[SPOOL_OPTIONS_MAX];
    size_t n = spool_options_table(&o, table);
    bool help, version;
    struct spool_err err;
    if (spool_config_parse(table, n, argc, argv, &help, &version, &err) != 0) {
        fprintf(stderr, "spoold: %s\n", err.msg);
        return 2;
    }
    if (help) {
        spool_config_usage(stdout, "spoold", table, n);
        return 0;
    }
    if (version) {
        printf("spoold %s (libraft %d.%d.%d, libuv %s, lz4 %s)\n", SPOOL_VERSION, RAFT_VERSION_MAJOR,
               RAFT_VERSION_MINOR, RAFT_VERSION_RELEASE, uv_version_string(), LZ4_versionString());
        return 0;
    }
    int level = spool_log_parse_level(o.log_level);
    if (level < 0) {
        fprintf(stderr, "spoold: bad --log-level '%s'\n", o.log_level);
        return 2;
    }
    spool_log_set_level(level);
    return spool_run(&o);
}
