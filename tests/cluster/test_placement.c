/* Placement: slots are stable and spread, replicas are derived identically from configuration. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/meta.h"
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

/* ---- membership changes: where replicas go (spool_placement_balance) ---- */

static uint32_t target_load(const struct spool_placement *p, uint64_t t[][SPOOL_MAX_REPLICAS],
                            const uint8_t *nt, uint64_t id)
{
    uint32_t c = 0;
    for (uint32_t s = 0; s < p->shards; s++)
        for (uint8_t i = 0; i < nt[s]; i++)
            c += t[s][i] == id;
    return c;
}

/* Replicas of shard s that differ between the placement and the target (added + removed). */
static unsigned moved(const struct spool_placement *p, uint64_t t[][SPOOL_MAX_REPLICAS],
                      const uint8_t *nt, uint32_t s)
{
    unsigned d = 0;
    for (uint8_t i = 0; i < nt[s]; i++)
        d += !spool_placement_has_replica(p, s, t[s][i]);
    for (uint8_t i = 0; i < p->n_replicas[s]; i++) {
        bool kept = false;
        for (uint8_t j = 0; j < nt[s]; j++)
            kept |= t[s][j] == p->replica[s][i];
        d += !kept;
    }
    return d;
}

static struct spool_placement *three_nodes(uint32_t shards, uint32_t replicas)
{
    static struct spool_placement p;
    struct spool_peer peers[3];
    size_t n;
    struct spool_err err;
    cr_assert_eq(spool_peers_parse("1@a:1,2@b:2,3@c:3", peers, 3, &n, &err), 0);
    cr_assert_eq(spool_placement_init(&p, peers, n, shards, replicas, &err), 0);
    return &p;
}

Test(placement, balance_nothing_to_do)
{
    struct spool_placement *p = three_nodes(6, 2);
    static uint64_t t[SPOOL_MAX_SHARDS][SPOOL_MAX_REPLICAS];
    static uint8_t nt[SPOOL_MAX_SHARDS];
    cr_assert_eq(spool_placement_balance(p, t, nt), 0);
    for (uint32_t s = 0; s < 6; s++)
        cr_assert_eq(moved(p, t, nt, s), 0);
}

Test(placement, balance_add_node_spreads_evenly)
{
    struct spool_placement *p = three_nodes(6, 2); /* 12 replicas, 4 per node */
    static uint64_t t[SPOOL_MAX_SHARDS][SPOOL_MAX_REPLICAS];
    static uint8_t nt[SPOOL_MAX_SHARDS];
    struct spool_err err;
    cr_assert_eq(spool_placement_add_node(p, 4, "d:4", &err), 0);
    cr_assert_eq(spool_placement_add_node(p, 4, "d:4", &err), SPOOL_EINVAL);
    cr_assert_eq(spool_placement_add_node(p, 5, "nocolon", &err), SPOOL_EINVAL);
    spool_placement_set_replicas(p);
    uint32_t changed = spool_placement_balance(p, t, nt);
    /* 12 replicas over 4 nodes: 3 each; node 4 takes 3, one from each old node. */
    cr_assert_eq(changed, 3);
    for (uint64_t id = 1; id <= 4; id++)
        cr_assert_eq(target_load(p, t, nt, id), 3, "node %llu", (unsigned long long)id);
    for (uint32_t s = 0; s < 6; s++) {
        cr_assert_eq(nt[s], 2);
        cr_assert(moved(p, t, nt, s) == 0 || moved(p, t, nt, s) == 2); /* one in, one out */
        cr_assert_neq(t[s][0], t[s][1]);
    }
    /* Deterministic: the same input gives the same plan. */
    static uint64_t t2[SPOOL_MAX_SHARDS][SPOOL_MAX_REPLICAS];
    static uint8_t nt2[SPOOL_MAX_SHARDS];
    spool_placement_balance(p, t2, nt2);
    cr_assert_eq(memcmp(t, t2, sizeof t), 0);
}

Test(placement, balance_add_node_raises_replicas_up_to_wanted)
{
    struct spool_peer peers[2];
    size_t n;
    struct spool_err err;
    cr_assert_eq(spool_peers_parse("1@a:1,2@b:2", peers, 2, &n, &err), 0);
    static struct spool_placement p;
    cr_assert_eq(spool_placement_init(&p, peers, n, 3, 3, &err), 0);
    cr_assert_eq(p.replicas, 2);
    cr_assert_eq(spool_placement_add_node(&p, 3, "c:3", &err), 0);
    spool_placement_set_replicas(&p);
    cr_assert_eq(p.replicas, 3);
    static uint64_t t[SPOOL_MAX_SHARDS][SPOOL_MAX_REPLICAS];
    static uint8_t nt[SPOOL_MAX_SHARDS];
    cr_assert_eq(spool_placement_balance(&p, t, nt), 3);
    for (uint32_t s = 0; s < 3; s++) {
        cr_assert_eq(nt[s], 3);
        cr_assert_eq(moved(&p, t, nt, s), 1); /* only an add */
    }
}

Test(placement, balance_remove_node_replaces_its_replicas)
{
    struct spool_placement *p = three_nodes(6, 2);
    struct spool_err err;
    cr_assert_eq(spool_placement_add_node(p, 4, "d:4", &err), 0);
    spool_placement_set_replicas(p);
    static uint64_t t[SPOOL_MAX_SHARDS][SPOOL_MAX_REPLICAS];
    static uint8_t nt[SPOOL_MAX_SHARDS];
    spool_placement_balance(p, t, nt);
    for (uint32_t s = 0; s < 6; s++) { /* adopt the plan */
        p->n_replicas[s] = nt[s];
        memcpy(p->replica[s], t[s], sizeof t[s]);
    }
    /* Now remove node 2: its 3 replicas go to the others, 4 each, nothing else moves. */
    spool_placement_remove_node(p, 2);
    spool_placement_set_replicas(p);
    cr_assert_null(spool_placement_address(p, 2));
    uint32_t changed = spool_placement_balance(p, t, nt);
    cr_assert_eq(changed, 3);
    cr_assert_eq(target_load(p, t, nt, 2), 0);
    for (uint64_t id = 1; id <= 4; id++)
        if (id != 2)
            cr_assert_eq(target_load(p, t, nt, id), 4, "node %llu", (unsigned long long)id);
    for (uint32_t s = 0; s < 6; s++) {
        cr_assert_eq(nt[s], 2);
        cr_assert_leq(moved(p, t, nt, s), 2);
    }
}

Test(placement, balance_remove_below_wanted_shrinks)
{
    struct spool_placement *p = three_nodes(4, 3); /* every node holds every shard */
    spool_placement_remove_node(p, 3);
    spool_placement_set_replicas(p);
    cr_assert_eq(p->replicas, 2);
    static uint64_t t[SPOOL_MAX_SHARDS][SPOOL_MAX_REPLICAS];
    static uint8_t nt[SPOOL_MAX_SHARDS];
    cr_assert_eq(spool_placement_balance(p, t, nt), 4);
    for (uint32_t s = 0; s < 4; s++) {
        cr_assert_eq(nt[s], 2);
        cr_assert_eq(moved(p, t, nt, s), 1); /* only node 3 leaves */
    }
}

/* ---- the cluster map's encoding (cluster/meta.h): what every node adopts ---- */

Test(placement, cluster_map_roundtrip_and_validation)
{
    static struct spool_slot_map m, back;
    struct spool_peer peers[3];
    size_t n;
    struct spool_err err;
    cr_assert_eq(spool_peers_parse("1@a:1,2@b:2,3@c:3", peers, 3, &n, &err), 0);
    cr_assert_eq(spool_placement_init(&m.p, peers, n, 4, 2, &err), 0);
    m.epoch = 7;
    cr_assert_eq(spool_placement_add_node(&m.p, 4, "d:4", &err), 0);
    m.change = SPOOL_CHANGE_ADD;
    m.change_node = 4;
    spool_placement_balance(&m.p, m.target, m.n_target);
    m.n_target[1] = 0; /* a shard that reached its target */

    Spool__SlotMap *pm = spool_slot_map_proto_new(&m);
    cr_assert_not_null(pm);
    size_t len = spool__slot_map__get_packed_size(pm);
    uint8_t *buf = malloc(len);
    spool__slot_map__pack(pm, buf);
    spool_slot_map_proto_free(pm);
    Spool__SlotMap *up = spool__slot_map__unpack(NULL, len, buf);
    cr_assert_not_null(up);
    cr_assert_eq(spool_slot_map_from_proto(up, &back), 0);
    cr_assert_eq(back.epoch, 7);
    cr_assert_eq(back.change, SPOOL_CHANGE_ADD);
    cr_assert_eq(back.change_node, 4);
    cr_assert_eq(back.p.n_nodes, 4);
    cr_assert_str_eq(spool_placement_address(&back.p, 4), "d:4");
    cr_assert_eq(back.p.wanted, 2);
    cr_assert_eq(back.n_target[1], 0);
    for (uint32_t s = 0; s < 4; s++) {
        cr_assert_eq(back.p.n_replicas[s], m.p.n_replicas[s]);
        cr_assert_eq(memcmp(back.p.replica[s], m.p.replica[s], m.p.n_replicas[s] * 8), 0);
        cr_assert_eq(back.n_target[s], m.n_target[s]);
        cr_assert_eq(memcmp(back.target[s], m.target[s], m.n_target[s] * 8), 0);
    }
    cr_assert_eq(memcmp(back.p.slot_shard, m.p.slot_shard, sizeof m.p.slot_shard), 0);

    /* A replica on a node that is not listed, or listed twice, is refused. */
    up->replicas[2]->ids[0] = 99;
    cr_assert_eq(spool_slot_map_from_proto(up, &back), -1);
    up->replicas[2]->ids[0] = up->replicas[2]->ids[1];
    cr_assert_eq(spool_slot_map_from_proto(up, &back), -1);
    spool__slot_map__free_unpacked(up, NULL);
    free(buf);

    /* A map written before membership changes (no nodes) decodes with n_nodes 0: the node then
     * keeps the configuration's membership. */
    Spool__SlotMap old = SPOOL__SLOT_MAP__INIT;
    uint8_t bytes[2 * SPOOL_SLOTS] = {0};
    old.epoch = 1;
    old.shards = 4;
    old.slot_shard.data = bytes;
    old.slot_shard.len = sizeof bytes;
    cr_assert_eq(spool_slot_map_from_proto(&old, &back), 0);
    cr_assert_eq(back.p.n_nodes, 0);
    cr_assert_eq(back.p.shards, 4);
}

/* --- adding shards (spool_placement_plan_shards, docs/resharding.md) ---------------------- */

static void plan_check(uint32_t nodes, uint32_t shards, uint32_t replicas, uint32_t grow_to)
{
    struct spool_peer peers[8];
    for (uint32_t i = 0; i < nodes; i++) {
        peers[i].id = i + 1;
        snprintf(peers[i].address, sizeof peers[i].address, "127.0.0.1:%u", 7001 + i);
    }
    struct spool_placement p, again;
    struct spool_err err;
    cr_assert_eq(spool_placement_init(&p, peers, nodes, shards, replicas, &err), 0);
    again = p;
    static uint16_t target[SPOOL_SLOTS], target2[SPOOL_SLOTS];
    long moved = spool_placement_plan_shards(&p, grow_to, target, &err);
    cr_assert_geq(moved, 0, "%s", err.msg);
    /* Deterministic. */
    cr_assert_eq(spool_placement_plan_shards(&again, grow_to, target2, &err), moved);
    cr_assert_eq(memcmp(target, target2, sizeof target), 0);
    cr_assert_eq(memcmp(&p, &again, sizeof p), 0);
    cr_assert_eq(p.shards, grow_to);
    /* Every shard ends with floor or ceil of SPOOL_SLOTS / shards slots. */
    uint32_t count[SPOOL_MAX_SHARDS] = {0};
    long diff = 0;
    for (uint32_t i = 0; i < SPOOL_SLOTS; i++) {
        cr_assert_lt(target[i], grow_to);
        count[target[i]]++;
        if (target[i] != p.slot_shard[i]) {
            diff++;
            cr_assert_geq(target[i], shards, "slot %u moves to an old shard", i);
        }
    }
    cr_assert_eq(diff, moved);
    uint32_t lo = SPOOL_SLOTS / grow_to, hi = lo + (SPOOL_SLOTS % grow_to != 0);
    for (uint32_t s = 0; s < grow_to; s++)
        cr_assert(count[s] == lo || count[s] == hi, "shard %u has %u slots", s, count[s]);
    /* The fewest moves: the new shards' slots and nothing else (they start empty). */
    long need = 0;
    for (uint32_t s = shards; s < grow_to; s++)
        need += count[s];
    cr_assert_eq(moved, need);
    /* New replica sets: R distinct nodes each; node loads differ by at most one. */
    uint32_t r = replicas < nodes ? replicas : nodes;
    for (uint32_t s = shards; s < grow_to; s++) {
        cr_assert_eq(p.n_replicas[s], r);
        for (uint32_t i = 0; i < r; i++)
            for (uint32_t j = 0; j < i; j++)
                cr_assert_neq(p.replica[s][i], p.replica[s][j]);
    }
    uint32_t min = UINT32_MAX, max = 0;
    for (uint32_t i = 0; i < nodes; i++) {
        uint32_t l = spool_placement_load(&p, peers[i].id);
        min = l < min ? l : min;
        max = l > max ? l : max;
    }
    cr_assert_leq(max - min, 1, "loads %u..%u", min, max);
}

Test(placement, plan_shards_2_to_4)
{
    plan_check(3, 2, 3, 4);
}

Test(placement, plan_shards_uneven)
{
    plan_check(3, 3, 2, 4); /* 1366/1365/1365 -> 1024 each */
    plan_check(5, 4, 2, 6); /* 4096 % 6 = 4: ceil shares */
    plan_check(4, 3, 1, 7);
    plan_check(1, 1, 1, 3);
}

Test(placement, plan_shards_2_to_4_exact)
{
    struct spool_peer peers[3] = {{1, "a:1"}, {2, "b:2"}, {3, "c:3"}};
    struct spool_placement p;
    struct spool_err err;
    cr_assert_eq(spool_placement_init(&p, peers, 3, 2, 2, &err), 0);
    static uint16_t target[SPOOL_SLOTS];
    cr_assert_eq(spool_placement_plan_shards(&p, 4, target, &err), 2048);
    /* Shard 2 takes its slots from shard 0, shard 1's furthest-above-share first: the lowest
     * slots of each alternately. Loads: 1,2 / 2,3 before; shards 2 and 3 on the least loaded. */
    cr_assert_eq(target[0], 2);
    cr_assert_eq(target[1], 2);
    cr_assert_eq(p.replica[2][0], 1);
    cr_assert_eq(p.replica[2][1], 3);
}

Test(placement, plan_shards_refuses)
{
    struct spool_peer peers[1] = {{1, "a:1"}};
    struct spool_placement p;
    struct spool_err err;
    static uint16_t target[SPOOL_SLOTS];
    cr_assert_eq(spool_placement_init(&p, peers, 1, 4, 1, &err), 0);
    cr_assert_eq(spool_placement_plan_shards(&p, 4, target, &err), -1);
    cr_assert_eq(spool_placement_plan_shards(&p, 2, target, &err), -1);
    cr_assert_eq(spool_placement_plan_shards(&p, SPOOL_MAX_SHARDS + 1, target, &err), -1);
    cr_assert_eq(p.shards, 4);
}

Test(placement, slot_map_reshard_fields_roundtrip)
{
    struct spool_peer peers[3] = {{1, "a:1"}, {2, "b:2"}, {3, "c:3"}};
    static struct spool_slot_map m, back;
    struct spool_err err;
    memset(&m, 0, sizeof m);
    m.epoch = 7;
    cr_assert_eq(spool_placement_init(&m.p, peers, 3, 2, 3, &err), 0);
    long moved = spool_placement_plan_shards(&m.p, 4, m.slot_target, &err);
    cr_assert_eq(moved, 2048);
    m.change = SPOOL_CHANGE_SHARDS;
    m.shards_before = 2;
    m.move_phase = SPOOL_MOVE_COPY;
    m.move_from = 1;
    m.move_to = 3;
    m.move_slots[0] = 0x81;
    m.move_slots[SPOOL_SLOT_BITMAP_BYTES - 1] = 0x40;
    Spool__SlotMap *pm = spool_slot_map_proto_new(&m);
    cr_assert_not_null(pm);
    size_t len = spool__slot_map__get_packed_size(pm);
    uint8_t *buf = malloc(len);
    spool__slot_map__pack(pm, buf);
    spool_slot_map_proto_free(pm);
    Spool__SlotMap *u = spool__slot_map__unpack(NULL, len, buf);
    cr_assert_not_null(u);
    cr_assert_eq(spool_slot_map_from_proto(u, &back), 0);
    cr_assert_eq(back.p.shards, 4);
    cr_assert_eq(back.change, SPOOL_CHANGE_SHARDS);
    cr_assert_eq(back.shards_before, 2);
    cr_assert_eq(back.move_phase, SPOOL_MOVE_COPY);
    cr_assert_eq(back.move_from, 1);
    cr_assert_eq(back.move_to, 3);
    cr_assert_eq(memcmp(back.move_slots, m.move_slots, SPOOL_SLOT_BITMAP_BYTES), 0);
    cr_assert_eq(memcmp(back.slot_target, m.slot_target, sizeof m.slot_target), 0);
    cr_assert_eq(back.p.n_replicas[3], 3);
    /* A target naming a shard beyond the count is refused. */
    u->slot_target.data[2 * 5] = 9;
    cr_assert_eq(spool_slot_map_from_proto(u, &back), -1);
    spool__slot_map__free_unpacked(u, NULL);
    free(buf);
}
