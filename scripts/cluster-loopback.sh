#!/usr/bin/env bash
# A three-node havip cluster (gw-a, gw-b, witness) on loopback addresses 127.0.0.11-13,
# in observe-only mode: no root, no interfaces touched; the daemons log the VIP changes
# they would make. Shows election, a SIGKILL failover, failback and a graceful stop, then
# cleans up (also on Ctrl-C). Usage: scripts/cluster-loopback.sh [--keep] (keep: leave it
# running until Enter is pressed).
set -euo pipefail
cd "$(dirname "$0")/.."

keep=false
[ "${1:-}" = "--keep" ] && keep=true

cargo build --release --quiet
bin="$PWD/target/release/havip"
work=$(mktemp -d /tmp/havip-loopback.XXXXXX)
declare -A pid=()

cleanup() {
  for n in "${!pid[@]}"; do
    kill -TERM "${pid[$n]}" 2>/dev/null || true
  done
  for n in "${!pid[@]}"; do
    wait "${pid[$n]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source-path=SCRIPTDIR source=loopback-lib.sh
. scripts/loopback-lib.sh
write_loopback_cluster "$bin" "$work" 127.0.0 'failback_delay = "2s"\n'
"$bin" check-config "$work"/*/havip.toml

start() { "$bin" run --observe-only --config "$work/$1/havip.toml" >>"$work/$1/log" 2>&1 & pid[$1]=$!; }
holder() {
  for n in gw-a gw-b; do
    if "$bin" status --json --socket "$work/$n/havip.sock" 2>/dev/null | grep -q '"holding": true'; then echo "$n"; return; fi
  done
  echo none
}
wait_holder() { # name, limit in tenths of a second (bounded loop)
  for _ in $(seq 1 "$2"); do [ "$(holder)" = "$1" ] && return 0; sleep 0.1; done
  echo "timed out waiting for $1 to hold; logs in $work" >&2; return 1
}

echo "== starting gw-a, gw-b, witness (observe-only) in $work"
for n in gw-a gw-b witness; do start "$n"; done
wait_holder gw-a 150
"$bin" status --socket "$work/witness/havip.sock"

echo; echo "== SIGKILL the master (gw-a)"
t0=$(date +%s%N); kill -KILL "${pid[gw-a]}"; wait "${pid[gw-a]}" 2>/dev/null || true; unset 'pid[gw-a]'
wait_holder gw-b 50
echo "gw-b holds the VIP $(( ($(date +%s%N) - t0) / 1000000 )) ms after the kill (polling with the CLI, so +-100 ms)"

echo; echo "== restart gw-a: failback after failback_delay (2s)"
start gw-a
wait_holder gw-a 150
"$bin" status --socket "$work/gw-b/havip.sock"
"$bin" history --socket "$work/gw-a/havip.sock"

if $keep; then
  echo; echo "cluster running; sockets: $work/*/havip.sock  (press Enter to stop)"; read -r _
fi
echo; echo "== graceful stop (SIGTERM releases the VIPs and hands over)"
