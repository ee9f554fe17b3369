#!/usr/bin/env bash
# Idle cost of a havip node: three release daemons (gw-a, gw-b, witness) on loopback
# addresses 127.0.9.11-13, observe-only (no root, no interface touched), one VIP group,
# no health checks. After SETTLE seconds it samples utime+stime from /proc/PID/stat over
# SECONDS_MEASURED seconds and prints each node's share of one core and its RSS.
# Usage: scripts/bench-idle.sh            (env: SETTLE=8 MEASURE=20 HAVIP_BIN=... TIMERS=...)
#        PERF=1 scripts/bench-idle.sh     (also perf-record the master; report in /tmp)
# What the bare heartbeat messages cost on this machine, without havip (the floor under
# these figures): cargo bench --bench idle_floor
set -euo pipefail
cd "$(dirname "$0")/.."

settle=${SETTLE:-8}
measure=${MEASURE:-20}
if [ -z "${HAVIP_BIN:-}" ]; then cargo build --release --quiet; fi
bin=${HAVIP_BIN:-$PWD/target/release/havip}
work=$(mktemp -d /tmp/havip-idle.XXXXXX)
declare -A pid=()

cleanup() {
  for n in "${!pid[@]}"; do kill -TERM "${pid[$n]}" 2>/dev/null || true; done
  for n in "${!pid[@]}"; do wait "${pid[$n]}" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source-path=SCRIPTDIR source=loopback-lib.sh
. scripts/loopback-lib.sh
write_loopback_cluster "$bin" "$work" 127.0.9
# TIMERS='heartbeat = "200ms"|election_timeout = "600ms..1200ms"': other [timers] lines.
if [ -n "${TIMERS:-}" ]; then
  for n in gw-a gw-b witness; do printf '\n[timers]\n%s\n' "${TIMERS//|/$'\n'}" >>"$work/$n/havip.toml"; done
fi

for n in gw-a gw-b witness; do
  "$bin" run --observe-only --config "$work/$n/havip.toml" >>"$work/$n/log" 2>&1 &
  pid[$n]=$!
done
sleep "$settle"

# CPU time in ns from the scheduler's own accounting (/proc/PID/task/*/schedstat), summed
# over the threads: utime+stime in /proc/PID/stat counts whole 10 ms ticks, which at
# 0.5 % of a core over 20 s is 10 ticks, too coarse to compare two builds.
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ s += $1 } END { print s }'; }
now_ns() { date +%s%N; }
rss() { awk '/^VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
anon() { awk '/^RssAnon/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
declare -A before=()
for n in gw-a gw-b witness; do before[$n]=$(cpu_ns "${pid[$n]}"); done
started=$(now_ns)
if [ "${PERF:-0}" = 1 ]; then
  perf record -g -o /tmp/havip-idle.perf -p "${pid[gw-a]}" -- sleep "$measure" 2>/dev/null
else
  sleep "$measure"
fi
elapsed=$(( $(now_ns) - started ))
printf '%-8s %8s %9s %9s\n' node "cpu %" "RSS MiB" "anon MiB"
for n in gw-a gw-b witness; do
  used=$(( $(cpu_ns "${pid[$n]}") - ${before[$n]} ))
  printf '%-8s %8s %9s %9s\n' "$n" "$(awk -v u="$used" -v e="$elapsed" 'BEGIN { printf "%.3f", 100 * u / e }')" \
    "$(rss "${pid[$n]}")" "$(anon "${pid[$n]}")"
done
"$bin" status --socket "$work/witness/havip.sock" | head -5
if [ "${PERF:-0}" = 1 ]; then echo "perf data: /tmp/havip-idle.perf (perf report -i /tmp/havip-idle.perf)"; fi
