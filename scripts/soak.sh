#!/usr/bin/env bash
# The chaos soak (tests/lab_chaos.rs) for as long as asked: random faults one after another
# on the namespace lab (SIGKILL, SIGTERM, SIGSTOP, isolation, link down, the gateways cut
# from each other, a gateway's CRM servers unreachable, manual failover, reload), each on a
# random node for 1-4 s, then healed. Asserts never two holders, no late release, no panic,
# and recovery within 30 s of every heal; prints the seed and the worst outage per fault.
#
# Usage (as root): scripts/soak.sh [SECONDS]     default 1800 (30 min)
# Env: HAVIP_CHAOS_SEED replays a run's faults; PROFILE=release|debug (default release).
# `cargo test` runs the same test for 90 s. One lab at a time: the lab's names are fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-1800}
[ "$(id -u)" -eq 0 ] || { echo "soak.sh needs root (the lab's namespaces)" >&2; exit 1; }
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
profile=()
[ "${PROFILE:-release}" = debug ] || profile=(--release)

log="${CARGO_TARGET_DIR:-target}/soak.log"
mkdir -p "$(dirname "$log")"
echo "soak: $seconds s, full output in $log (the daemons' logs: target/tmp/lab-e2e/chaos/)" >&2
# Bounded: the soak itself, plus the lab's start and stop, plus a margin.
status=0
HAVIP_CHAOS_SECONDS=$seconds timeout $((seconds + 900)) \
    cargo test "${profile[@]}" --test lab_chaos -- --exact chaos_soak --nocapture >"$log" 2>&1 ||
    status=$?
grep -E "^lab chaos|panicked|test result" "$log" || true
[ "$status" -eq 0 ] || { echo "soak FAILED (exit $status): see $log" >&2; exit "$status"; }
