#!/usr/bin/env bash
# 1,000 HTTP health checks at a 1 s interval against local keep-alive servers on
# 127.0.0.1 for 60 s; prints the monitor process's CPU use (percent of one core), its
# peak RSS and the p50/p99 probe latency. CHECKS=N, BENCH_SECONDS=N, LISTENERS=N, RUNTIME=current to change.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs, kernel $(uname -r), $(date -u +%F)"
CLK_TCK="$(getconf CLK_TCK)" exec cargo bench --bench health_monitor
