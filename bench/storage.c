/*
 * storage: the storage engine on its own, no cluster, no network.
 *
 *   storage [--dir DIR] [--runs N] [--quick]
 *
 * Measures, each scenario repeated --runs times (5) on a fresh store, printing the median of
 * the runs (and the median of each run's p99 where a latency is meaningful):
 *
 *   disk      raw sequential write speed of the same disk, measured in the same run with
 *             `dd if=/dev/zero of=DIR/dd.tmp bs=1M count=256 oflag=direct` (its output parsed)
 *   append    records/s and MB/s of payload, 100 B and 1 KiB payloads, batches of 64 records
 *             (one append_batch = one Raft entry), in two modes:
 *               durable: spool_store_sync (fdatasync) after every batch
 *               applied: no sync until the end, which is how the state machine runs (the Raft
 *                        log is what makes an acknowledged write durable)
 *             batch latency p50/p99 = append_batch (+ sync) per batch
 *   read      a store of 32 channels x 4096 records of 200 B, mostly in sealed (lz4) segments:
 *               cold scan:   reopen, read every channel from seq 1 (from segment files; the OS
 *                            page cache is not dropped, so this is decode + decompress cost)
 *               cold point:  reopen, 20000 reads of one record at a random seq
 *               tail cache:  "latest 1024" of every channel, 10 times (disk_reads must not move)
 *   ratio     compression of LLM-like token traffic: JSON records such as
 *             {"type":"token","text":" the","index":123}, deterministic, 32 channels
 *
 * Every loop is bounded by a record count; the whole program takes about a minute.
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "storage/store.h"

#define MAX_RUNS 9
#define BATCH 64
#define CHANNELS 32

static const char *base_dir = "/tmp";
static int runs = 5;
static int quick;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double percentile(double *v, size_t n, double p)
{
    if (n == 0) return 0;
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(p * (double)(n - 1));
    return v[i];
}

static void rm_rf(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL) {
        unlink(path);
        return;
    }
    struct dirent *de;
    char sub[4096];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
        snprintf(sub, sizeof sub, "%s/%s", path, de->d_name);
        rm_rf(sub);
    }
    closedir(d);
    rmdir(path);
}

static char *fresh_dir(void)
{
    char *d = malloc(4096);
    snprintf(d, 4096, "%s/spool-bench-storage-XXXXXX", base_dir);
    if (mkdtemp(d) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    return d;
}

static struct spool_store *open_or_die(const char *dir, uint64_t segment_bytes)
{
    struct spool_store_config cfg = {.dir = dir, .segment_bytes = segment_bytes};
    struct spool_store *s;
    struct spool_err err = {0};
    if (spool_store_open(&s, &cfg, &err) != 0) {
        fprintf(stderr, "open %s: %s\n", dir, err.msg);
        exit(1);
    }
    return s;
}

static void die(const char *what, const struct spool_err *err)
{
    fprintf(stderr, "%s: %s\n", what, err->msg);
    exit(1);
}

/* ---- disk ---- */

static double dd_mb_s(void)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "dd if=/dev/zero of=%s/spool-bench-dd.tmp bs=1M count=256 oflag=direct 2>&1",
             base_dir);
    FILE *p = popen(cmd, "r");
    if (p == NULL) return 0;
    char line[512];
    double mb_s = 0;
    while (fgets(line, sizeof line, p) != NULL) {
        unsigned long long bytes;
        const char *c = strstr(line, "copied, ");
        double secs;
        if (sscanf(line, "%llu bytes", &bytes) == 1 && c != NULL && sscanf(c, "copied, %lf s", &secs) == 1 &&
            secs > 0)
            mb_s = (double)bytes / secs / 1e6;
    }
    pclose(p);
    snprintf(cmd, sizeof cmd, "%s/spool-bench-dd.tmp", base_dir);
    unlink(cmd);
    return mb_s;
}

/* ---- append ---- */

struct payloads {
    Spool__Record recs[BATCH];
    const Spool__Record *ptrs[BATCH];
    char names[CHANNELS][16];
    uint8_t *data;
};

static void append_run(size_t size, bool durable, uint64_t nbatches, double *rec_s, double *mb_s,
                       double *p50_ms, double *p99_ms, double *max_ms)
{
    char *dir = fresh_dir();
    struct spool_store *s = open_or_die(dir, 16u << 20);
    struct payloads pl;
    pl.data = malloc(size);
    for (size_t i = 0; i < size; i++) pl.data[i] = (uint8_t)("abcdefghijklmnopqrstuvwxyz {}\":,"[i % 32]);
    for (int c = 0; c < CHANNELS; c++) snprintf(pl.names[c], sizeof pl.names[c], "bench-%d", c);
    uint64_t last[CHANNELS] = {0};
    double *lat = malloc(nbatches * sizeof *lat);
    struct spool_err err = {0};
    double t0 = now_s();
    for (uint64_t b = 0; b < nbatches; b++) {
        int c = (int)(b % CHANNELS);
        for (int i = 0; i < BATCH; i++) {
            spool__record__init(&pl.recs[i]);
            pl.recs[i].channel = pl.names[c];
            pl.recs[i].seq = ++last[c];
            pl.recs[i].timestamp_ms = (int64_t)b;
            pl.recs[i].action = SPOOL__ACTION__ACTION_MESSAGE_CREATE;
            pl.recs[i].data.data = pl.data;
            pl.recs[i].data.len = size;
            pl.ptrs[i] = &pl.recs[i];
        }
        double t = now_s();
        if (spool_store_append_batch(s, b + 1, pl.ptrs, BATCH, &err) != 0) die("append", &err);
        if (durable && spool_store_sync(s, &err) != 0) die("sync", &err);
        lat[b] = (now_s() - t) * 1e3;
    }
    if (spool_store_sync(s, &err) != 0) die("sync", &err);
    double secs = now_s() - t0;
    double n = (double)(nbatches * BATCH);
    *rec_s = n / secs;
    *mb_s = n * (double)size / secs / 1e6;
    *p50_ms = percentile(lat, nbatches, 0.50);
    *p99_ms = percentile(lat, nbatches, 0.99);
    *max_ms = percentile(lat, nbatches, 1.0);
    free(lat);
    free(pl.data);
    spool_store_close(s);
    rm_rf(dir);
    free(dir);
}

static void bench_append(void)
{
    printf("\n## append (batches of %d records, %d channels, 16 MiB segments)\n", BATCH, CHANNELS);
    printf("%-8s %-9s %12s %10s %14s %14s %14s\n", "payload", "mode", "records/s", "MB/s", "batch p50 ms",
           "batch p99 ms", "batch max ms");
    size_t sizes[2] = {100, 1024};
    for (int si = 0; si < 2; si++) {
        for (int mode = 0; mode < 2; mode++) {
            bool durable = mode == 0;
            uint64_t nb = durable ? 400 : (sizes[si] == 100 ? 3000 : 1000);
            if (quick) nb /= 4;
            double r[MAX_RUNS], m[MAX_RUNS], p50[MAX_RUNS], p99[MAX_RUNS], mx[MAX_RUNS];
            for (int i = 0; i < runs; i++)
                append_run(sizes[si], durable, nb, &r[i], &m[i], &p50[i], &p99[i], &mx[i]);
            printf("%-8zu %-9s %12.0f %10.1f %14.3f %14.3f %14.3f\n", sizes[si], durable ? "durable" : "applied",
                   median(r, runs), median(m, runs), median(p50, runs), median(p99, runs), median(mx, runs));
        }
    }
    printf("durable = fdatasync after every %d-record batch; applied = one sync at the end "
           "(the state machine's mode: Raft's log holds durability)\n", BATCH);
}

/* ---- reads ---- */

struct counter {
    uint64_t n, bytes;
};

static int count_cb(void *arg, const Spool__Record *r)
{
    struct counter *c = arg;
    c->n++;
    c->bytes += r->data.len;
    return 0;
}

static void fill_read_store(const char *dir, uint64_t per_chan)
{
    struct spool_store *s = open_or_die(dir, 4u << 20);
    struct payloads pl;
    pl.data = malloc(200);
    for (size_t i = 0; i < 200; i++) pl.data[i] = (uint8_t)("the quick brown fox jumps over a lazy dog "[i % 42]);
    for (int c = 0; c < CHANNELS; c++) snprintf(pl.names[c], sizeof pl.names[c], "read-%d", c);
    struct spool_err err = {0};
    uint64_t idx = 0;
    for (uint64_t seq = 1; seq <= per_chan; seq += BATCH)
        for (int c = 0; c < CHANNELS; c++) {
            for (int i = 0; i < BATCH; i++) {
                spool__record__init(&pl.recs[i]);
                pl.recs[i].channel = pl.names[c];
                pl.recs[i].seq = seq + (uint64_t)i;
                pl.recs[i].data.data = pl.data;
                pl.recs[i].data.len = 200;
                pl.ptrs[i] = &pl.recs[i];
            }
            if (spool_store_append_batch(s, ++idx, pl.ptrs, BATCH, &err) != 0) die("append", &err);
        }
    if (spool_store_sync(s, &err) != 0) die("sync", &err);
    free(pl.data);
    spool_store_close(s);
}

static void bench_read(void)
{
    uint64_t per_chan = quick ? 1024 : 4096;
    char *dir = fresh_dir();
    fill_read_store(dir, per_chan);
    double scan_r[MAX_RUNS], scan_m[MAX_RUNS], pt_r[MAX_RUNS], pt_p99[MAX_RUNS], tail_r[MAX_RUNS];
    double open_ms[MAX_RUNS];
    uint64_t tail_disk = 0, sealed = 0, segs = 0;
    char name[32];
    struct spool_err err = {0};
    int points = quick ? 5000 : 20000;
    double *lat = malloc((size_t)points * sizeof *lat);
    for (int run = 0; run < runs; run++) {
        /* reopen (index rebuilt by scanning every segment), then a cold scan */
        double t_open = now_s();
        struct spool_store *s = open_or_die(dir, 4u << 20);
        open_ms[run] = (now_s() - t_open) * 1e3;
        struct counter cnt = {0};
        double t = now_s();
        for (int c = 0; c < CHANNELS; c++) {
            snprintf(name, sizeof name, "read-%d", c);
            if (spool_store_read(s, name, 0, 0, count_cb, &cnt, &err) != 0) die("read", &err);
        }
        double secs = now_s() - t;
        scan_r[run] = (double)cnt.n / secs;
        scan_m[run] = (double)cnt.bytes / secs / 1e6;
        struct spool_store_stats st;
        spool_store_stats(s, &st);
        sealed = st.sealed_segments;
        segs = st.segments;
        spool_store_close(s);
        /* cold point reads */
        s = open_or_die(dir, 4u << 20);
        uint64_t rng = 12345 + (uint64_t)run;
        t = now_s();
        for (int i = 0; i < points; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            snprintf(name, sizeof name, "read-%d", (int)((rng >> 33) % CHANNELS));
            uint64_t after = (rng >> 13) % per_chan;
            struct counter one = {0};
            double t1 = now_s();
            if (spool_store_read(s, name, after, 1, count_cb, &one, &err) != 0) die("read", &err);
            lat[i] = (now_s() - t1) * 1e6;
        }
        pt_r[run] = points / (now_s() - t);
        pt_p99[run] = percentile(lat, (size_t)points, 0.99);
        /* tail cache: fill it by appending the newest 1024 again on a fresh channel set */
        spool_store_close(s);
        s = open_or_die(dir, 4u << 20);
        struct payloads pl;
        uint8_t data[200];
        memset(data, 'x', sizeof data);
        uint64_t idx = spool_store_applied_index(s);
        for (int c = 0; c < CHANNELS; c++) {
            snprintf(pl.names[c], sizeof pl.names[c], "read-%d", c);
            uint64_t last = spool_store_last_seq(s, pl.names[c]);
            for (int k = 0; k < 1024 / BATCH; k++) {
                for (int i = 0; i < BATCH; i++) {
                    spool__record__init(&pl.recs[i]);
                    pl.recs[i].channel = pl.names[c];
                    pl.recs[i].seq = ++last;
                    pl.recs[i].data.data = data;
                    pl.recs[i].data.len = sizeof data;
                    pl.ptrs[i] = &pl.recs[i];
                }
                if (spool_store_append_batch(s, ++idx, pl.ptrs, BATCH, &err) != 0) die("append", &err);
            }
        }
        spool_store_stats(s, &st);
        uint64_t disk0 = st.disk_reads;
        struct counter tc = {0};
        t = now_s();
        for (int rep = 0; rep < 10; rep++)
            for (int c = 0; c < CHANNELS; c++)
                if (spool_store_read_backward(s, pl.names[c], 0, 1024, count_cb, &tc, &err) != 0) die("read", &err);
        tail_r[run] = (double)tc.n / (now_s() - t);
        spool_store_stats(s, &st);
        tail_disk = st.disk_reads - disk0;
        spool_store_close(s);
    }
    free(lat);
    printf("\n## read (%d channels x %" PRIu64 " records of 200 B, 4 MiB segments: %" PRIu64
           " of %" PRIu64 " segments sealed)\n", CHANNELS, per_chan, sealed, segs);
    printf("reopen (index rebuild): %.1f ms for %" PRIu64 " records\n", median(open_ms, runs),
           (uint64_t)CHANNELS * per_chan);
    printf("cold scan by seq:    %10.0f records/s %8.1f MB/s\n", median(scan_r, runs), median(scan_m, runs));
    printf("cold point read:     %10.0f records/s   p99 %.1f us\n", median(pt_r, runs), median(pt_p99, runs));
    printf("tail cache (latest 1024): %5.0f records/s   disk reads during it: %" PRIu64 "\n",
           median(tail_r, runs), tail_disk);
    rm_rf(dir);
    free(dir);
}

/* ---- compression ---- */

static uint64_t lz4_file_bytes(const char *dir)
{
    uint64_t total = 0;
    char gen[4200], path[4500];
    snprintf(gen, sizeof gen, "%s/gen-1", dir);
    DIR *d = opendir(gen);
    if (d == NULL) return 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        if (n < 4 || strcmp(de->d_name + n - 4, ".lz4") != 0) continue;
        snprintf(path, sizeof path, "%s/%s", gen, de->d_name);
        struct stat st;
        if (stat(path, &st) == 0) total += (uint64_t)st.st_size;
    }
    closedir(d);
    return total;
}

static void bench_ratio(void)
{
    static const char *words[] = {" the", " of", " and", " to", " a", " in", " is", " that", " for", " it",
                                  " as", " was", " with", " be", " by", " on", " not", " he", " this",
                                  " are", " or", " his", " from", " at", " which", " but", " have", " an",
                                  " had", " they", " you", " were", " model", " token", " stream", " data",
                                  ".", ",", "\\n", " said", " there", " can", " all", " would", " will",
                                  " one", " been", " their", " we", " more", " if", " no", " when", " so",
                                  " what", " about", " up", " out", " into", " than", " them", " only",
                                  " other", " new"};
    size_t nwords = sizeof words / sizeof *words;
    char *dir = fresh_dir();
    struct spool_store *s = open_or_die(dir, 4u << 20);
    struct payloads pl;
    char bufs[BATCH][128];
    for (int c = 0; c < CHANNELS; c++) snprintf(pl.names[c], sizeof pl.names[c], "chat-%d", c);
    uint64_t last[CHANNELS] = {0}, rng = 42, payload = 0, idx = 0;
    uint64_t total = quick ? 64000 : 256000;
    struct spool_err err = {0};
    for (uint64_t done = 0; done < total; done += BATCH) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        int c = (int)((rng >> 33) % CHANNELS);
        for (int i = 0; i < BATCH; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            int n = snprintf(bufs[i], sizeof bufs[i], "{\"type\":\"token\",\"text\":\"%s\",\"index\":%" PRIu64 "}",
                             words[(rng >> 33) % nwords], last[c]);
            spool__record__init(&pl.recs[i]);
            pl.recs[i].channel = pl.names[c];
            pl.recs[i].seq = ++last[c];
            pl.recs[i].timestamp_ms = 1764000000000 + (int64_t)(done / 10);
            pl.recs[i].action = SPOOL__ACTION__ACTION_MESSAGE_APPEND;
            pl.recs[i].ref_seq = 1;
            pl.recs[i].client_id = "assistant";
            pl.recs[i].content_type = "application/json";
            pl.recs[i].data.data = (uint8_t *)bufs[i];
            pl.recs[i].data.len = (size_t)n;
            pl.ptrs[i] = &pl.recs[i];
            payload += (uint64_t)n;
        }
        if (spool_store_append_batch(s, ++idx, pl.ptrs, BATCH, &err) != 0) die("append", &err);
    }
    struct spool_store_stats st;
    spool_store_stats(s, &st);
    uint64_t lz4 = lz4_file_bytes(dir);
    printf("\n## compression of LLM-like token records (%" PRIu64 " records, 64 KiB lz4 blocks)\n", total);
    /* The active segment (raw) holds the rest: records sealed ~ total * sealed share of raw. */
    double raw_total = (double)st.raw_bytes_sealed + (double)(st.bytes_on_disk - lz4);
    double sealed_recs = (double)total * (double)st.raw_bytes_sealed / raw_total;
    printf("payload %.1f B/record, stored frame %.1f B/record, in .lz4 files %.1f B/record\n",
           (double)payload / (double)total, raw_total / (double)total, lz4 ? (double)lz4 / sealed_recs : 0.0);
    printf("ratio raw frames -> lz4: %.2fx (%" PRIu64 " -> %" PRIu64 " bytes); payload -> lz4: %.2fx\n",
           lz4 ? (double)st.raw_bytes_sealed / (double)lz4 : 0.0, st.raw_bytes_sealed, lz4,
           lz4 ? (double)payload / (double)total / ((double)lz4 / sealed_recs) : 0.0);
    spool_store_close(s);
    rm_rf(dir);
    free(dir);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) base_dir = argv[++i];
        else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
        else if (strcmp(argv[i], "--quick") == 0) quick = 1;
        else {
            fprintf(stderr, "usage: %s [--dir DIR] [--runs N (1-%d)] [--quick]\n", argv[0], MAX_RUNS);
            return 2;
        }
    }
    if (runs < 1 || runs > MAX_RUNS) runs = 5;
    spool_log_set_level(SPOOL_LOG_WARN);
    printf("# spool storage bench: medians of %d runs, data under %s\n", runs, base_dir);
    double dd = dd_mb_s();
    printf("\n## disk\nraw sequential write (dd bs=1M count=256 oflag=direct): %.0f MB/s\n", dd);
    bench_append();
    bench_read();
    bench_ratio();
    return 0;
}
