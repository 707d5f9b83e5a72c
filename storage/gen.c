/*
 * Generation directories. The store's files live in <root>/gen-<n>; <root>/CURRENT holds the
 * name of the live one. Replacing the whole content (restore from a snapshot) means building
 * gen-<n+1> completely, fsyncing it, then switching CURRENT by writing CURRENT.tmp and renaming
 * it over CURRENT: one atomic rename decides which generation a crash leaves behind, and the
 * loser is removed at the next open.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "storage/dirs.h"
#include "storage/store_int.h"

static char *gen_dir(const char *root, uint64_t gen)
{
    size_t n = strlen(root) + 32;
    char *d = malloc(n);
    if (d != NULL) snprintf(d, n, "%s/gen-%" PRIu64, root, gen);
    return d;
}

void spool_gen_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) return;
    struct dirent *de;
    char path[4096];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

int spool_gen_switch(const char *root, uint64_t gen, struct spool_iostats *io, struct spool_err *err)
{
    char tmp[4096], cur[4096], line[64];
    snprintf(tmp, sizeof tmp, "%s/CURRENT.tmp", root);
    snprintf(cur, sizeof cur, "%s/CURRENT", root);
    int n = snprintf(line, sizeof line, "gen-%" PRIu64 "\n", gen);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return spool_err_set(err, SPOOL_EIO, "create %s: %s", tmp, strerror(errno));
    if (write(fd, line, (size_t)n) != n || spool_fsync_fd(fd, io) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        return spool_err_set(err, SPOOL_EIO, "write %s: %s", tmp, strerror(e));
    }
    close(fd);
    if (rename(tmp, cur) != 0) return spool_err_set(err, SPOOL_EIO, "rename %s: %s", tmp, strerror(errno));
    return spool_fsync_dir(root, io, err);
}

int spool_gen_prepare(const char *root, uint64_t gen, char **dir, struct spool_err *err)
{
    char *d = gen_dir(root, gen);
    if (d == NULL) return spool_err_set(err, SPOOL_ENOMEM, "path");
    spool_gen_remove(d);
    if (mkdir(d, 0755) != 0) {
        int rv = spool_err_set(err, SPOOL_EIO, "mkdir %s: %s", d, strerror(errno));
        free(d);
        return rv;
    }
    *dir = d;
    return 0;
}

int spool_gen_lock(const char *root, int *fd, struct spool_err *err)
{
    int rv = spool_mkdir_p(root, err);
    if (rv != 0) return rv;
    char path[4096];
    snprintf(path, sizeof path, "%s/LOCK", root);
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0) return spool_err_set(err, SPOOL_EIO, "open %s: %s", path, strerror(errno));
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(f);
        return spool_err_set(err, e == EWOULDBLOCK ? SPOOL_EBUSY : SPOOL_EIO, "lock %s: %s", path,
                             e == EWOULDBLOCK ? "the store is open elsewhere" : strerror(e));
    }
    *fd = f;
    return 0;
}

int spool_gen_open(const char *root, uint64_t *gen, char **dir, struct spool_err *err)
{
    int rv = spool_mkdir_p(root, err);
    if (rv != 0) return rv;
    char cur[4096];
    snprintf(cur, sizeof cur, "%s/CURRENT", root);
    FILE *f = fopen(cur, "r");
    uint64_t g = 0;
    struct spool_iostats io = {0};
    if (f != NULL) {
        char line[64] = {0};
        if (fgets(line, sizeof line, f) == NULL || sscanf(line, "gen-%" SCNu64, &g) != 1 || g == 0) {
            fclose(f);
            return spool_err_set(err, SPOOL_ECORRUPT, "%s does not name a generation", cur);
        }
        fclose(f);
    } else if (errno == ENOENT) {
        g = 1;
        char *d = NULL;
        if ((rv = spool_gen_prepare(root, g, &d, err)) != 0) return rv;
        free(d);
        if ((rv = spool_gen_switch(root, g, &io, err)) != 0) return rv;
    } else {
        return spool_err_set(err, SPOOL_EIO, "open %s: %s", cur, strerror(errno));
    }
    /* Leftovers of an interrupted restore: any other generation and a CURRENT.tmp. */
    DIR *d = opendir(root);
    if (d == NULL) return spool_err_set(err, SPOOL_EIO, "opendir %s: %s", root, strerror(errno));
    struct dirent *de;
    char path[4096];
    while ((de = readdir(d)) != NULL) {
        uint64_t other;
        if (sscanf(de->d_name, "gen-%" SCNu64, &other) == 1 && other != g) {
            snprintf(path, sizeof path, "%s/%s", root, de->d_name);
            SPOOL_INFO("store.gen_removed", "dir=%s", path);
            spool_gen_remove(path);
        }
    }
    closedir(d);
    snprintf(path, sizeof path, "%s/CURRENT.tmp", root);
    unlink(path);
    *dir = gen_dir(root, g);
    if (*dir == NULL) return spool_err_set(err, SPOOL_ENOMEM, "path");
    struct stat st;
    if (stat(*dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        rv = spool_err_set(err, SPOOL_ECORRUPT, "%s names missing %s", cur, *dir);
        free(*dir);
        *dir = NULL;
        return rv;
    }
    *gen = g;
    return 0;
}
