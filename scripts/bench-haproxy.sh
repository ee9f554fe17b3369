#!/usr/bin/env bash
# HAProxy behind the VIP (issue 16), as root: in network namespaces the test creates and
# removes (tests/haproxy_netns.rs, the lab's topology with a real HAProxy on each gateway),
# with a client asking VIP:8080 every 10 ms, for `balance roundrobin` and `leastconn`, a
# new connection per request and one kept-alive connection: `havip backend drain` until
# both HAProxies apply it, a CRM server's death until both mark it down, a manual
# failover, and a SIGKILL of the holder's daemon. Prints, per fault, how long it took,
# the requests that failed and the longest gap between answers; the figures belong in
# docs/benchmarks.md with the date and machine.
#
# A request counts in the window of the fault during which it ended (a window runs to the
# next fault's start), so a request in flight when a fault begins is that fault's.
#
# Usage: scripts/bench-haproxy.sh        Env: RUNS (default 1) runs of each combination;
# BENCH_PCAP=DIR: tcpdump of port 8080 on the client, gw-a, gw-b and crm-1, kept in DIR
# for a run where a request failed with no fault or during a drain (with the hosts' TCP
# trouble counters printed), removed otherwise.
# Needs Debian's haproxy (installed if missing). One lab at a time: run it under
# `flock /tmp/havip-lab.lock` beside other lab users.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "bench-haproxy.sh needs root (network namespaces)" >&2; exit 1; }
if ! command -v haproxy >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q haproxy
fi
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
# HAVIP_DRAIN_ONLY=1: only drains and readies, CYCLES (default 20) of them per combination,
# each failed request printed with its time after the command (bench_drain_cycles).
bench=bench_haproxy
if [ "${HAVIP_DRAIN_ONLY:-0}" = 1 ]; then bench=bench_drain_cycles; fi
RUNS=${RUNS:-1} cargo test --release --quiet --test haproxy_netns -- --ignored "$bench" --exact --nocapture 2>&1 |
  grep '^BENCH'
echo "machine: $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); haproxy $(haproxy -v | head -n1 | awk '{print $3}')"
echo "date: $(date -u +%Y-%m-%d)"
