/* Placement: slots are stable and spread, replicas are derived identically from configuration. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "cluster/placement.h"

Test(placement, slot_is_stable)
{
    /* Values pinned: changing the hash would move every stored channel to another slot. */
    cr_assert_eq(spool_slot_of("", 0), (uint32_t)(0xcbf29ce484222325ULL % SPOOL_SLOTS));
    uint32_t a = spool_slot_of("chat:42", 7);
    cr_assert_eq(a, spool_slot_of("chat:42", 7));
    cr_assert_lt(a, SPOOL_SLOTS);
    cr_assert_neq(spool_slot_of("chat:42", 7), spool_slot_of("chat:43", 7));
}

Test(placement, slots_spread)
{
    static unsigned count[SPOOL_SLOTS];
    memset(count, 0, sizeof count);
    char name[64];
    const unsigned n = 40960;
    for (unsigned i = 0; i < n; i++) {
        int len = snprintf(name, sizeof name, "conversation-%u", i);
        count[spool_slot_of(name, (size_t)len)]++;
    }
    unsigned empty = 0, max = 0;
    for (unsigned s = 0; s < SPOOL_SLOTS; s++) {
        empty += count[s] == 0;
        if (count[s] > max)
            max = count[s];
    }
    /* 10 per slot on average: a decent hash leaves almost none empty and none crowded. */
    cr_assert_lt(empty, 20, "empty slots: %u", empty);
    cr_assert_lt(max, 40, "max per slot: %u", max);
}

Test(placement, peers_parse_sorted)
{
    struct spool_peer peers[8];
    size_t n;
    struct spool_err err;
    const char *list = "3@127.0.0.1:9003,1@127.0.0.1:9001,2@h:9002";
    cr_assert_eq(spool_peers_parse(list, peers, 8, &n, &err), 0);
    cr_assert_eq(n, 3);
    cr_assert_eq(peers[0].id, 1);
    cr_assert_str_eq(peers[0].address, "127.0.0.1:9001");
    cr_assert_eq(peers[2].id, 3);
    cr_assert_eq(spool_peers_parse("", peers, 8, &n, &err), 0);
    cr_assert_eq(n, 0);
    cr_assert_eq(spool_peers_parse("1@a:1,1@b:2", peers, 8, &n, &err), SPOOL_EINVAL);
    cr_assert_eq(spool_peers_parse("0@a:1", peers, 8, &n, &err), SPOOL_EINVAL);
    cr_assert_eq(spool_peers_parse("x@a:1", peers, 8, &n, &err), SPOOL_EINVAL);
    cr_assert_eq(spool_peers_parse("1@nohostport", peers, 8, &n, &err), SPOOL_EINVAL);
    cr_assert_eq(spool_peers_parse("1a:1", peers, 8, &n, &err), SPOOL_EINVAL);
    cr_assert_eq(spool_peers_parse("1@a:1,2@b:2,3@c:3", peers, 2, &n, &err), SPOOL_EINVAL);
}

Test(placement, replicas_consecutive)
{
    struct spool_peer peers[4];
    size_t n;
    struct spool_err err;
    cr_assert_eq(spool_peers_parse("10@a:1,20@b:2,30@c:3,40@d:4", peers, 4, &n, &err), 0);
    struct spool_placement p;
    cr_assert_eq(spool_placement_init(&p, peers, n, 6, 3, &err), 0);
    cr_assert_eq(p.replicas, 3);
    /* shard 3 starts at node index 3 (id 40) and wraps. */
    cr_assert_eq(spool_placement_replica(&p, 3, 0)->id, 40);
    cr_assert_eq(spool_placement_replica(&p, 3, 1)->id, 10);
    cr_assert_eq(spool_placement_replica(&p, 3, 2)->id, 20);
    cr_assert(spool_placement_has_replica(&p, 3, 10));
    cr_assert_not(spool_placement_has_replica(&p, 3, 30));
    cr_assert_str_eq(spool_placement_address(&p, 30), "c:3");
    cr_assert_null(spool_placement_address(&p, 31));
    /* Replicas are capped at the node count; shard of a channel follows slot % shards. */
    cr_assert_eq(spool_placement_init(&p, peers, 2, 4, 3, &err), 0);
    cr_assert_eq(p.replicas, 2);
    uint32_t slot = spool_slot_of("abc", 3);
    cr_assert_eq(spool_placement_shard_of(&p, "abc"), slot % 4);
    cr_assert_eq(spool_placement_init(&p, peers, 0, 4, 3, &err), SPOOL_EINVAL);
    cr_assert_eq(spool_placement_init(&p, peers, 2, 0, 3, &err), SPOOL_EINVAL);
}
