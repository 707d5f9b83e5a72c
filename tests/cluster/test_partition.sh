#!/usr/bin/env bash
# Partition test: three spoold nodes, each in its own network namespace on a bridge in a hub
# namespace (all created here, removed on exit); the driver runs in the hub, cuts the leader's
# link under load and restores it. Addresses are a /24 in 10.213.x.0 that exists only inside
# these namespaces. Skips (exit 0 with a note) where namespaces cannot be created.
set -euo pipefail
prefix="spool$$"
subnet="10.213.$(( $$ % 200 + 20 ))"
hub="$prefix-hub"
cleanup() {
  for i in 1 2 3; do ip netns del "$prefix-n$i" 2>/dev/null || true; done
  ip netns del "$hub" 2>/dev/null || true
}
trap cleanup EXIT
if ! ip netns add "$hub" 2>/dev/null; then
  echo "partition: network namespaces unavailable here; skipped"
  exit 0
fi
ip -n "$hub" link set lo up
ip -n "$hub" link add br0 type bridge
ip -n "$hub" addr add "$subnet.254/24" dev br0
ip -n "$hub" link set br0 up
for i in 1 2 3; do
  ns="$prefix-n$i"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  host_end="vs$$x$i"   # interface names are limited to 15 characters
  ip link add "$host_end" type veth peer name veth0 netns "$ns"
  ip link set "$host_end" netns "$hub"
  ip -n "$hub" link set "$host_end" master br0 up
  ip -n "$ns" addr add "$subnet.$i/24" dev veth0
  ip -n "$ns" link set veth0 up
done
SPOOL_NETNS="$prefix:$subnet" ip netns exec "$hub" python3 "$(dirname "$0")/faults.py" partition
