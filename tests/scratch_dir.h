/* Removing a test's scratch directory and everything in it: one copy for every test program that
 * makes one (mkdtemp under /tmp). Header-only, like the other test helpers. */
#ifndef SPOOL_TESTS_SCRATCH_DIR_H
#define SPOOL_TESTS_SCRATCH_DIR_H

#include <ftw.h>
#include <stdio.h>

static int scratch_dir_remove_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

__attribute__((unused)) static void scratch_dir_remove(const char *path)
{
    nftw(path, scratch_dir_remove_cb, 16, FTW_DEPTH | FTW_PHYS);
}

#endif
