#!/usr/bin/env bash
# Day-2 changes benchmark (issue 13): every change that `havip reload` applies, and a
# rolling restart, RUNS times on one lab (scripts/lab.sh), by the lab test itself
# (tests/lab_reload.rs with HAVIP_RELOAD_RUNS=RUNS, release build): the same watcher,
# probes, outage computation and assertions. Prints a table (markdown) on stdout: per
# change kind, the outage (the longest gap between answers less one 10 ms probe interval;
# 0 = no probe lost) median / max, probes lost, the slowest `havip reload` answer, and the
# time from the last node's reload to the change in effect on every node (status polled
# every 100 ms) median / max. Progress and per-change figures go to stderr. The results
# belong in docs/benchmarks.md.
#
# As root. Takes the lab lock (/tmp/havip-lab.lock) itself, after building, and holds it
# for the run only; bounded (RUNS x 3 min + 5 min). Env: RUNS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-reload.sh needs root (network namespaces, netlink, raw sockets)" >&2
    exit 1
fi
runs=${RUNS:-5}
case $runs in '' | *[!0-9]* | 0) echo "RUNS must be a positive number, not '$runs'" >&2; exit 2 ;; esac

# Under sudo, root's PATH may lack the invoking user's cargo (bench-failover.sh does the same).
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
command -v cargo >/dev/null || { echo "bench-reload.sh: cargo not found" >&2; exit 1; }
target=${CARGO_TARGET_DIR:-target}
cargo test --release --no-run --test lab_reload >&2

bench=$(find "$target/release/deps" -maxdepth 1 -type f -executable -name 'lab_reload-*' \
    -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)
[ -n "$bench" ] || { echo "lab_reload test binary not found under $target/release/deps" >&2; exit 1; }

# Cleanup on any exit: the test takes the lab down in Drop, but a signal skips Drop. Then
# the test is ended by its PID and `scripts/lab.sh down` ends whatever runs in the lab's
# namespaces and deletes them (with the test's havip, so a lab of another build is not
# left half up).
bench_pid=""
out=$(mktemp)
# shellcheck disable=SC2317  # called from the trap below, which shellcheck cannot follow
cleanup() {
    if [ -n "$bench_pid" ]; then
        kill "$bench_pid" 2>/dev/null || true
        wait "$bench_pid" 2>/dev/null || true
        HAVIP_BIN="$target/release/havip" scripts/lab.sh down >/dev/null 2>&1 || true
    fi
    rm -f "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

exec 9>/tmp/havip-lab.lock
echo "bench-reload: waiting for the lab lock (/tmp/havip-lab.lock)" >&2
flock 9
echo "bench-reload: $runs run(s) of every change on $(uname -n), $(nproc) cores" >&2
# timeout passes our TERM on to the test. Its table is its stdout (println); the test
# harness's own lines are left out.
timeout $((runs * 180 + 300)) env HAVIP_RELOAD_RUNS="$runs" "$bench" --nocapture --test-threads=1 \
    >"$out" &
bench_pid=$!
status=0
wait "$bench_pid" || status=$?
bench_pid=""
grep '^|' "$out" || true
exit $status
