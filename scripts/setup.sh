#!/usr/bin/env bash
# Installs everything Spool needs to build and test on Debian 12, as root, idempotently:
#   - Debian packages (only the missing ones; `apt-get update` only when something is missing)
#   - libraft 0.22.1 built from Debian 13's source package into $SPOOL_DEPS (default
#     /opt/spool-deps), because Debian 12's libraft 0.15 has a Raft safety bug (Figure 8).
# Nothing of libraft is committed. A stamp file makes a second run take well under a second.
# deploy/Dockerfile runs this same script, so CI exercising it exercises the image build steps.
set -euo pipefail

SPOOL_DEPS=${SPOOL_DEPS:-/opt/spool-deps}
RAFT_VERSION=0.22.1
RAFT_DEBIAN_VERSION=0.22.1-1
RAFT_BUILD_ID=$RAFT_DEBIAN_VERSION+spool2   # bump when the local fixes below change

log() { printf 'setup: %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" != 0 ]; then
    log "must run as root (it installs Debian packages)"; exit 1
  fi
}

# Build and runtime packages. Keep in step with the README's dependency list.
PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  autoconf automake libtool                 # to build libraft from source
  libuv1-dev liblz4-dev                     # event loop, compression
  libprotobuf-c-dev protobuf-c-compiler     # proto/ -> C
  libcriterion-dev                          # unit tests
  libhttp-parser-dev                        # HTTP/1.1 request parsing
  libwslay-dev                              # WebSocket framing (RFC 6455)
  libjansson-dev                            # JSON
  libssl-dev                                # HMAC-SHA256 (JWT), SHA-1 (WebSocket handshake)
  libnats-dev                               # bench/publish: the NATS JetStream peer's C client
  curl                                      # health checks (also the container's HEALTHCHECK)
)
# Only the test command needs these (fuzzing, process-level tests, peers for benchmarks).
if [ "${SPOOL_SETUP_TEST:-0}" = 1 ]; then
  PACKAGES+=(clang libclang-rt-14-dev procps iproute2 python3 nodejs npm nats-server chromium)
fi

install_packages() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  # Node may come from nodesource rather than Debian's package; accept any working node+npm.
  if command -v node >/dev/null && command -v npm >/dev/null; then
    local keep=()
    for p in "${missing[@]}"; do [ "$p" = nodejs ] || [ "$p" = npm ] || keep+=("$p"); done
    missing=("${keep[@]+"${keep[@]}"}")
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    need_root
    log "installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

build_raft() {
  local prefix="$SPOOL_DEPS/raft-$RAFT_VERSION"
  if [ -f "$prefix/.stamp-$RAFT_BUILD_ID" ]; then return; fi
  need_root
  log "building libraft $RAFT_DEBIAN_VERSION from Debian 13's source package into $prefix"
  local work; work=$(mktemp -d); chmod 755 "$work"
  trap 'rm -rf "$work"' RETURN
  cat >"$work/trixie-src.sources" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  local aptopts=(-o "Dir::Etc::sourcelist=$work/trixie-src.sources" -o "Dir::Etc::sourceparts=-"
                 -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Get::List-Cleanup=0)
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  apt-get "${aptopts[@]}" update -q >/dev/null
  (cd "$work" && apt-get "${aptopts[@]}" source --download-only "raft=$RAFT_DEBIAN_VERSION" >/dev/null 2>&1)
  tar -C "$work" -xzf "$work/raft_$RAFT_VERSION.orig.tar.gz"
  # Local fix: a follower already installing a snapshot answers a resent InstallSnapshot with
  # "async" and never frees the resent copy (a leak per resend, seen by LeakSanitizer in our
  # lagging-replica test). Answering RAFT_BUSY makes recv.c free it and ignore the message, which
  # is what the surrounding comment intends.
  perl -0pi -e 's/(infof\("already taking or installing snapshot"\);\s*)return 0;/$1return RAFT_BUSY;/' \
    "$work/raft-$RAFT_VERSION/src/replication.c"
  grep -A1 'already taking or installing snapshot' "$work/raft-$RAFT_VERSION/src/replication.c" | grep -q 'return RAFT_BUSY;'
  # Local fix: a follower that receives a configuration entry inside an AppendEntries batch (not
  # its first entry) records the batch's first index as its uncommitted configuration index
  # (replicationAppend passes `index` where `index + i` is meant, as client.c does), so applying
  # the entry at its real index never clears the mark; once that follower leads, every
  # raft_add/raft_assign/raft_remove is refused (RAFT_CANTCHANGE) for good.
  # tests/cluster/test_raft_config_batch.c fails without this.
  perl -0pi -e 's/membershipUncommittedChange\(r, index, entry\)/membershipUncommittedChange(r, index + i, entry)/' \
    "$work/raft-$RAFT_VERSION/src/replication.c"
  grep -q 'membershipUncommittedChange(r, index + i, entry)' "$work/raft-$RAFT_VERSION/src/replication.c"
  (cd "$work/raft-$RAFT_VERSION" &&
     autoreconf -i >/dev/null 2>&1 &&
     ./configure --prefix="$prefix" --disable-shared --enable-static --with-pic \
       --disable-example --disable-benchmark >/dev/null &&
     make -j"$(nproc)" >/dev/null 2>&1 &&
     make install >/dev/null)
  grep -q "RAFT_VERSION_MINOR 22" "$prefix/include/raft.h"
  rm -f "$prefix"/.stamp-*
  touch "$prefix/.stamp-$RAFT_BUILD_ID"
}

# Deploy checks render the Kubernetes overlays with kubectl's built-in kustomize; machines that
# already carry a kubectl (from any source) keep it, others get Debian's.
install_kubectl() {
  if [ "${SPOOL_SETUP_TEST:-0}" = 1 ] && ! command -v kubectl >/dev/null; then
    need_root
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kubernetes-client >/dev/null
  fi
}

install_packages
install_kubectl
build_raft
