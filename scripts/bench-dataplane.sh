#!/usr/bin/env bash
# Data-plane benchmark (issue 3), as root: in network namespaces that the test creates and
# removes (tests/support/netns.rs), 10 runs each of hold() -> first GARP/NA on the client's
# wire, and SIGKILL of the holder -> kernel removing the VIP (address_lifetime 3 s).
# Prints min/median/max; append them to docs/benchmarks.md with the date and machine.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example vip_tool
cargo test --release --quiet --test vip_netns -- --ignored bench_dataplane --nocapture 2>&1 |
  grep '^BENCH'
echo "machine: $(uname -srm), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "date: $(date -u +%Y-%m-%d)"
