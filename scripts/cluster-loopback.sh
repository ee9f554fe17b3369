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

"$bin" keygen --out "$work/cluster.key" >/dev/null
addr() { case $1 in gw-a) echo 127.0.0.11;; gw-b) echo 127.0.0.12;; witness) echo 127.0.0.13;; esac; }

for n in gw-a gw-b witness; do
  mkdir -p "$work/$n"
  {
    printf '[node]\nname = "%s"\nrole = "%s"\ndata_dir = "%s"\n\n' "$n" "$([ "$n" = witness ] && echo witness || echo gateway)" "$work/$n/data"
    printf '[cluster]\nlisten = "%s:7400"\nkey_file = "%s"\n' "$(addr "$n")" "$work/cluster.key"
    for p in gw-a gw-b witness; do printf '[[cluster.peers]]\nname = "%s"\naddress = "%s:7400"\n' "$p" "$(addr "$p")"; done
    printf '\n[control]\nsocket = "%s"\n\n' "$work/$n/havip.sock"
    case $n in
      witness) printf '[[vip_group]]\nname = "crm"\n' ;;
      gw-a) printf '[[vip_group]]\nname = "crm"\ninterface = "eth1"\naddresses = ["198.18.0.50/24"]\npriority = 150\nfailback_delay = "2s"\n' ;;
      gw-b) printf '[[vip_group]]\nname = "crm"\ninterface = "eth1"\naddresses = ["198.18.0.50/24"]\npriority = 100\nfailback_delay = "2s"\n' ;;
    esac
  } > "$work/$n/havip.toml"
done
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
