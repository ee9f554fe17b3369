#!/usr/bin/env bash
# The chaos soak (tests/lab_chaos.rs) for as long as asked: random faults on the namespace
# lab (SIGKILL, SIGTERM, SIGSTOP, isolation, link down, any pair of nodes cut apart, 5 %
# loss, a gateway's CRM servers unreachable, a flood of silent connections to a peer
# port, manual failover, maintenance, reload), one in three with a second fault nested
# inside on other nodes, each for 1-4 s, then healed. It fails on two holders, a late
# release, a panic, a heal not followed by a holder answering within 30 s, or a committed
# operator command missing from a node's history; it prints the seed, the faults by kind
# with their worst outage, and what it checked.
#
# Usage (as root): scripts/soak.sh [--minutes N] [--seed S]    default 30 minutes, a new seed
# Env: PROFILE=release|debug (default release). `cargo test` runs the same test for 90 s
# with a fixed seed. One lab at a time: the lab's names are fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=30
seed=$(date +%s)
while [ $# -gt 0 ]; do
    case $1 in
        --minutes) minutes=${2:?--minutes needs a number}; shift 2 ;;
        --seed) seed=${2:?--seed needs a number}; shift 2 ;;
        -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
        *) echo "soak.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
done
case $minutes$seed in *[!0-9]*) echo "soak.sh: --minutes and --seed take whole numbers" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "soak.sh needs root (the lab's namespaces)" >&2; exit 1; }
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
profile=()
[ "${PROFILE:-release}" = debug ] || profile=(--release)

seconds=$((minutes * 60))
log="${CARGO_TARGET_DIR:-target}/soak.log"
mkdir -p "$(dirname "$log")"
echo "soak: $minutes min, seed $seed; full output in $log, the daemons' logs in target/tmp/lab-e2e/chaos/" >&2
# Bounded: the soak itself, plus the lab's start and stop, plus a margin.
status=0
HAVIP_CHAOS_SECONDS=$seconds HAVIP_CHAOS_SEED=$seed timeout $((seconds + 900)) \
    cargo test "${profile[@]}" --test lab_chaos -- --exact chaos_soak --nocapture >"$log" 2>&1 ||
    status=$?
grep -E "^lab chaos: seed|panicked|test result" "$log" || true
[ "$status" -eq 0 ] || { echo "soak FAILED (exit $status): see $log" >&2; exit "$status"; }
