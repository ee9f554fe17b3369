#!/usr/bin/env bash
# 20 SIGKILLs of the master of a three-node loopback cluster (observe-only, default
# timers); prints min/median/max time until another gateway holds. ROUNDS=N to change.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench --bench failover_loopback
