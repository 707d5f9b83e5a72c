#!/usr/bin/env bash
# Deploy checks: render both kustomize overlays with kubectl's built-in kustomize, validate every
# object against the Kubernetes API schemas (tests/deploy/validate.mjs, pinned kubernetes-models),
# then check that every metric the alerts and the Grafana dashboard name is one that a running
# spoold exports on /metrics.
set -euo pipefail
src=${SPOOL_SOURCE:?}
here="$src/tests/deploy"
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
[ -d "$here/node_modules/kubernetes-models" ] || (cd "$here" && npm ci --no-audit --no-fund >/dev/null)

for overlay in dev prod; do
  kubectl kustomize "$src/deploy/kubernetes/overlays/$overlay" >"$work/$overlay.yaml" 2>"$work/$overlay.err" ||
    { cat "$work/$overlay.err"; exit 1; }
done
node "$here/validate.mjs" "$work/dev.yaml" "$work/prod.yaml" | tail -1

# Metric names used by the alerts and the dashboard (histogram series map to their family).
grep -ohE 'spool_[a-z0-9_]+' "$src/deploy/kubernetes/base/prometheusrule.yaml" \
  "$src/deploy/kubernetes/base/spool-dashboard.json" | sed -E 's/_(bucket|sum|count)$//' | sort -u >"$work/used"

port=$(python3 -c 'import socket,random
while True:
    p=random.randint(20000,32000); s=socket.socket()
    try: s.bind(("127.0.0.1",p)); print(p); break
    except OSError: pass
    finally: s.close()')
"${SPOOLD:?}" --data "$work/data" --listen "127.0.0.1:$port" --cluster-listen "127.0.0.1:$((port+1))" \
  --anonymous --log-level warn 2>"$work/spoold.log" &
pid=$!
for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.05; done
curl -sf "http://127.0.0.1:$port/metrics" | awk '/^# TYPE /{print $3}' | sort -u >"$work/exported"
missing=$(comm -23 "$work/used" "$work/exported")
echo "metrics named by alerts and dashboard: $(wc -l <"$work/used"), exported: $(wc -l <"$work/exported")"
if [ -n "$missing" ]; then
  echo "named but not exported by spoold:"; echo "$missing"; exit 1
fi
kill -TERM "$pid"; wait "$pid"; pid=""
echo "deploy: 2 overlays rendered and valid; every metric in alerts and dashboard is exported"
