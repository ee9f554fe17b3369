#!/usr/bin/env bash
# The one-command demo (as root, on a fresh Debian machine or any Linux with namespaces):
# installs what it needs (iproute2, nftables, python3), builds havip, brings up the lab
# (scripts/lab.sh: gw-a, gw-b, witness, crm-1, crm-2, client in network namespaces on
# 198.18.0.0/24), starts the three daemons with the real data plane, shows `havip status`,
# then SIGKILLs the master of VIP group `crm` while the client probes the VIP every 10 ms,
# and shows who answers and the measured outage; restarts the killed node and shows the
# failback; then shows the load balancer behind the VIP (each gateway's HAProxy, port
# 8080, over crm-1 and crm-2) following `havip backend drain` and `ready`; tears everything
# down on any exit.
#
# What answers on the VIP: every gateway runs a tiny HTTP responder on port 80 that says
# its own name. Only the holder of 198.18.0.50 receives the client's packets, so the
# client SEES which gateway holds the VIP (scripts/lab-probe.py, one GET every 10 ms).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run it as root (network namespaces): as root, scripts/demo.sh; with sudo, sudo scripts/demo.sh" >&2; exit 1; }

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then PATH=$HOME/.cargo/bin:$PATH; fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "== installing Rust (rustup, minimal profile): havip needs a current stable Rust"
  command -v curl >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl ca-certificates gcc >/dev/null
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
  PATH=$HOME/.cargo/bin:$PATH
fi

# Not --quiet: the first build takes minutes (about six on two cores), and cargo's own
# progress is the sign of life.
echo "== building havip (release; the first build takes a few minutes)"
cargo build --release
export HAVIP_BIN=$PWD/target/release/havip
vip=$(awk '$1 == "crm" && $2 == "vip" { print $3 }' vagrant/nodes.conf)
probe_pid=""
probe_log=$(mktemp /tmp/havip-demo-probe.XXXXXX)
cleanup() {
  if [ -n "$probe_pid" ]; then kill "$probe_pid" 2>/dev/null || true; wait "$probe_pid" 2>/dev/null || true; fi
  rm -f "$probe_log"
  scripts/lab.sh down >/dev/null 2>&1 || true
  echo "== lab torn down"
}
trap cleanup EXIT

now_ms() { date +%s%3N; }
holder() { scripts/lab.sh holders | awk -v g="${1:-crm}" '$1 == g { print $2 }'; }
# wait_for WHO LIMIT_TENTHS [GROUP]: bounded wait until GROUP (crm) is held by WHO.
wait_for() {
  for _ in $(seq 1 "$2"); do [ "$(holder "${3:-crm}")" = "$1" ] && return 0; sleep 0.1; done
  echo "demo: $1 did not take ${3:-crm} within $(($2 / 10)) s; logs in /run/havip-lab/*/havip.log" >&2
  tail -n 20 /run/havip-lab/*/havip.log >&2
  return 1
}
# answered_by WHO AFTER_MS LIMIT_TENTHS: bounded wait for the probe to get an answer from WHO.
answered_by() {
  for _ in $(seq 1 "$3"); do
    awk -v w="$1" -v t="$2" '$3 == w && $2 > t { found = 1 } END { exit !found }' "$probe_log" && return 0
    sleep 0.1
  done
  return 1
}
# outage FROM_MS: the gap at the switch (last answer from the old holder to the first from the
# new one) and the longest gap between two answers, counted from the last answer before FROM.
outage() {
  awk '$3 != "-" { print $2, $3 }' "$probe_log" | sort -n | awk -v t="$1" '
    $1 < t { last = $1; who = $2; next }
    {
      if (last != "" && $1 - last > gap) { gap = $1 - last }
      if (last != "" && $2 != who && sw == "") { sw = $1 - last; from = who; to = $2 }
      last = $1; who = $2
    }
    END {
      if (sw == "") printf "%d ms (no switch seen; longest gap between two answers)\n", gap
      else printf "%d ms (%s -> %s; longest gap between two answers in that time: %d ms)\n", sw, from, to, gap
    }'
}

# first_by WHO FROM_MS: milliseconds from FROM to WHO's first answer to a probe sent after it.
first_by() {
  awk -v w="$1" -v t="$2" '$3 == w && $1 >= t && (min == "" || $2 < min) { min = $2 } END { print min - t }' "$probe_log"
}

echo "== lab up (scripts/lab.sh up)"
scripts/lab.sh up
echo "== starting havip on gw-a, gw-b, witness (scripts/lab.sh start-havip)"
scripts/lab.sh start-havip
# Settled: each preferred gateway holds its group (active/active: gw-a crm, gw-b crm2)
# for one second in a row; right after start, a gateway whose checks have not passed yet
# hands over, and failback returns the group after failback_delay (5 s).
settled=0
for _ in $(seq 1 400); do
  if [ "$(holder crm)" = gw-a ] && [ "$(holder crm2)" = gw-b ]; then settled=$((settled + 1)); else settled=0; fi
  [ "$settled" -ge 10 ] && break
  sleep 0.1
done
[ "$settled" -ge 10 ] || { echo "demo: the lab did not settle (crm on gw-a, crm2 on gw-b)" >&2; exit 1; }
echo "== havip status (on gw-a)"
ip netns exec hv-gw-a "$HAVIP_BIN" status --config /run/havip-lab/gw-a/havip.toml
echo "== who holds which VIP (ip -n hv-gw-X addr)"
scripts/lab.sh holders

ip netns exec hv-client python3 scripts/lab-probe.py "$vip" 80 10 300 >"$probe_log" 2>/dev/null &
probe_pid=$!
answered_by "$(holder)" 0 50 || { echo "demo: the client gets no answer from the VIP" >&2; exit 1; }
echo "== the client asks http://$vip/ every 10 ms; answered by: $(tail -n 1 "$probe_log" | awk '{ print $3 }')"

master=$(holder)
other=$([ "$master" = gw-a ] && echo gw-b || echo gw-a)
echo "== SIGKILL of havip on the master, $master"
t0=$(now_ms)
scripts/lab.sh stop-havip "$master" KILL
answered_by "$other" "$t0" 100 || { echo "demo: $other never answered" >&2; exit 1; }
sleep 1
echo "   now answered by: $(tail -n 1 "$probe_log" | awk '{ print $3 }')"
echo "   outage seen by the client: $(outage "$t0")"
echo "   $other answered first $(first_by "$other" "$t0") ms after the kill"
echo "   (the killed daemon could not remove its VIP: the lab's supervisor ran \`havip release\`"
echo "   at once, as systemd's ExecStopPost does, so only $other holds it:)"
scripts/lab.sh holders

echo "== restarting havip on $master; failback after failback_delay (5 s)"
t1=$(now_ms)
scripts/lab.sh start-havip "$master"
wait_for "$master" 300
answered_by "$master" "$t1" 50 || true
sleep 1
echo "   answered by: $(tail -n 1 "$probe_log" | awk '{ print $3 }')"
echo "   outage during failback: $(outage "$t1")"
scripts/lab.sh holders

# six_requests: who answered six requests to VIP:8080 (each through the holder's HAProxy).
six_requests() {
  for _ in 1 2 3 4 5 6; do
    ip netns exec hv-client curl -s --max-time 2 "http://$vip:8080/" || echo failed
  done | sort | uniq -c | awk '{ printf "%s%s x%s", sep, $2, $1; sep = ", " } END { print "" }'
}
on() { local node=$1; shift; ip netns exec "hv-$node" "$HAVIP_BIN" "$@" --config "/run/havip-lab/$node/havip.toml"; }
echo "== behind the VIP: each gateway's HAProxy (conf/haproxy.cfg, port 8080) over crm-1 and crm-2"
echo "   6 requests to http://$vip:8080/ answered by: $(six_requests)"
echo "== havip backend drain crm-1 (on gw-b: any node commits it, every gateway's HAProxy applies it)"
on gw-b backend drain crm-1
# The command returns once gw-b's own HAProxy holds it; the holder's applies it within ms.
sleep 0.2
echo "   answered by: $(six_requests)"
echo "== havip backend ready crm-1"
on gw-a backend ready crm-1
sleep 0.2
echo "   answered by: $(six_requests)"
echo "== done"
