# Automatic leader spreading (--rebalance-interval): after node 3 of a 6-shard, 3-node cluster
# leaves and rejoins (the other two then lead 3 shards each and node 3 none), the nodes hand
# leaderships over by themselves until each leads 2, within a bounded time.
source "$(dirname "$0")/lib.sh"
for i in 1 2 3; do start_node "$i" --rebalance-interval 300ms; done
for i in 1 2 3; do wait_ready "$i"; done
wait_leads 1 "2 2 2" 20
skew --rebalance-interval 300ms
wait_leads 1 "2 2 2" 20
wait_leads 2 "2 2 2" 20
for i in 1 2 3; do stop_node "$i"; done
echo "PASS"
