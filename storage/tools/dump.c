/*
 * spool-dump: prints a stopped node's store as JSON lines, one record per line, so tests and
 * operators can compare replicas directly on disk rather than through a server:
 *   {"channel":"c","seq":1,"id":"p1-7","clientId":"x","action":1,"timestamp":..,"bytes":5}
 * Usage: spool-dump STORE_DIR [CHANNEL]. Exit 1 with a message on a store that does not open.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "storage/store.h"

static void print_json_string(const char *s)
{
    putchar('"');
    for (; s != NULL && *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c < 0x20) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

static int print_record(void *arg, const Spool__Record *r)
{
    (void)arg;
    printf("{\"channel\":");
    print_json_string(r->channel);
    printf(",\"seq\":%" PRIu64 ",\"id\":", r->seq);
    print_json_string(r->id);
    printf(",\"clientId\":");
    print_json_string(r->client_id);
    printf(",\"action\":%d,\"refSeq\":%" PRIu64 ",\"timestamp\":%" PRId64 ",\"bytes\":%zu}\n",
           (int)r->action, r->ref_seq, r->timestamp_ms, r->data.len);
    return 0;
}

struct dump_ctx {
    struct spool_store *store;
    int rc;
    struct spool_err err;
};

static int dump_channel(void *arg, const char *channel)
{
    struct dump_ctx *ctx = arg;
    ctx->rc = spool_store_read(ctx->store, channel, 0, 0, print_record, NULL, &ctx->err);
    return ctx->rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: spool-dump STORE_DIR [CHANNEL]\n");
        return 2;
    }
    struct spool_store_config cfg = {.dir = argv[1]};
    spool_store_config_defaults(&cfg);
    struct dump_ctx ctx = {0};
    if (spool_store_open(&ctx.store, &cfg, &ctx.err) != 0) {
        fprintf(stderr, "spool-dump: %s\n", ctx.err.msg);
        return 1;
    }
    if (argc == 3) dump_channel(&ctx, argv[2]);
    else spool_store_channels(ctx.store, dump_channel, &ctx);
    fprintf(stderr, "applied_index=%" PRIu64 "\n", spool_store_applied_index(ctx.store));
    spool_store_close(ctx.store);
    if (ctx.rc != 0) {
        fprintf(stderr, "spool-dump: %s\n", ctx.err.msg);
        return 1;
    }
    return 0;
}
