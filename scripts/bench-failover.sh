#!/usr/bin/env bash
# Failover benchmark, havip against keepalived, on the lab of scripts/lab.sh (the e2e
# suite's: vagrant/nodes.conf, conf/*.toml as provisioned) by benches/failover_lab.rs.
# As root. Installs Debian's keepalived if missing but never enables or starts its service:
# the bench runs its own instances by hand inside the lab's namespaces.
#
# Env: RUNS (default 10), IMPLS (havip,havip-tuned,havip-fast,ka-1,ka-0.1), FAULTS
# (hard,kill,sigstop,stop,partition,manual), IDLE_SECS (default 30, 0 to skip). The table
# goes to stdout, progress to stderr; the results belong in docs/failover-bench.md. Who
# holds the VIP comes from scripts/vip-watch.py (python3), the lab's watcher. The lab's
# names are fixed (hv-*): not beside the e2e suite, the demo or another lab.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "bench-failover.sh needs root (network namespaces, netlink, raw sockets)" >&2
    exit 1
fi

need=()
command -v keepalived >/dev/null || need+=(keepalived)
command -v nft >/dev/null || need+=(nftables)
command -v ip >/dev/null || need+=(iproute2)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -q
    # policy-rc.d (where present) keeps the package from starting the service; without
    # a config file keepalived.service would not start anyway. We never start it.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

# Under sudo, root's PATH may lack the invoking user's cargo (demo.sh does the same).
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
command -v cargo >/dev/null || { echo "bench-failover.sh: cargo not found (install Rust, or run with sudo -E / as root with cargo in PATH)" >&2; exit 1; }
cargo build --release --bench failover_lab --bin havip

# Cleanup on any exit: the bench takes the lab down in Drop, but a signal skips Drop. Then
# the bench is ended by its PID and `scripts/lab.sh down` ends whatever runs in the lab's
# namespaces (the daemons, keepalived, the watcher's `ip monitor`) and deletes them. The
# watcher itself (vip-watch.py, in this namespace) ends when the bench's end closes its stdin.
bench_pid=""
# shellcheck disable=SC2317  # called from the trap below, which shellcheck cannot follow
cleanup() {
    [ -n "$bench_pid" ] || return 0
    kill "$bench_pid" 2>/dev/null || true
    wait "$bench_pid" 2>/dev/null || true
    scripts/lab.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Run the built binary directly so that $! is the bench itself.
bench=$(find target/release/deps -maxdepth 1 -type f -executable -name 'failover_lab-*' \
    -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2)
[ -n "$bench" ] || { echo "failover_lab bench binary not found" >&2; exit 1; }
"$bench" --bench &
bench_pid=$!
status=0
wait "$bench_pid" || status=$?
bench_pid=""
exit $status
