#!/usr/bin/env bash
# The network-namespace twin of the lab (DESIGN.md "The lab"): one namespace per host of
# vagrant/nodes.conf (hv-gw-a, hv-gw-b, hv-witness, hv-crm-1, hv-crm-2, hv-client), each
# with one interface lan0 on 198.18.0.0/24 (and 2001:db8::/64), cabled to a bridge that
# lives in its own namespace (hv-br). The veth pairs are created inside the namespaces,
# so no interface ever appears on the host, and a host blackhole route for 198.18.0.0/24
# keeps lab traffic from ever leaving the machine. Hosts are provisioned with the same
# scripts as the Vagrant rig (vagrant/provision/*.sh) into /run/havip-lab/<node>/.
#
# Usage (as root):
#   scripts/lab.sh up                  clean what a crashed run left, build the topology,
#                                      provision every host (CRM services and the gateways'
#                                      responders run; havip does not yet)
#   scripts/lab.sh start-havip [NODE]  start havip (the real data plane) in gw-a, gw-b,
#                                      witness (or only NODE); PID in <dir>/havip.pid
#   scripts/lab.sh stop-havip NODE [SIGNAL]  signal NODE's havip (default TERM) and wait
#   scripts/lab.sh holders             "GROUP NODE" per VIP, NODE "none" or several
#   scripts/lab.sh status              namespaces, VIP holders, `havip status` per node
#   scripts/lab.sh down                stop everything started (by PID), delete the
#                                      namespaces and /run/havip-lab
# Environment: HAVIP_BIN (default target/release/havip).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
nodes_conf=$repo/vagrant/nodes.conf
run=/run/havip-lab
bridge=hv-br
bin=${HAVIP_BIN:-$repo/target/release/havip}

die() { echo "lab: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces); run it with sudo"

# hosts [ROLE]: "name role address" lines of the node list (VIP lines excluded).
hosts() {
  awk -v r="${1:-}" '$1 !~ /^#/ && NF == 3 && $2 != "vip" && (r == "" || $2 == r)' "$nodes_conf"
}
vips() { awk '$1 !~ /^#/ && NF == 3 && $2 == "vip" { print $1, $3 }' "$nodes_conf"; }
havip_nodes() { hosts | awk '$2 == "gateway" || $2 == "witness" { print $1 }'; }
ns() { echo "hv-$1"; }

# kill_pidfile FILE NETNS: signals the process of FILE only if it still lives in NETNS
# (a stale PID file can never make us kill a stranger); TERM, then KILL after 3 s.
kill_pidfile() {
  local file=$1 netns=$2 pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  rm -f "$file"
  in_netns "$pid" "$netns" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
in_netns() { [ -n "$1" ] && ip netns identify "$1" 2>/dev/null | grep -qx "$2"; }

down() {
  local name netns pid
  for name in $(hosts | awk '{ print $1 }'); do
    netns=$(ns "$name")
    for f in "$run/$name"/*.pid; do [ -e "$f" ] && kill_pidfile "$f" "$netns"; done
    if ip netns list | awk '{ print $1 }' | grep -qx "$netns"; then
      # Whatever else still runs in a lab namespace was started by the lab.
      for pid in $(ip netns pids "$netns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
      ip netns del "$netns"
    fi
  done
  if ip netns list | awk '{ print $1 }' | grep -qx "$bridge"; then ip netns del "$bridge"; fi
  rm -rf "$run"
  # The blackhole route stays: it only ever keeps 198.18.0.0/24 off the host's network.
}

add_netns() {
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}

up() {
  local name role address netns last
  [ -x "$bin" ] || die "no havip binary at $bin (cargo build --release, or set HAVIP_BIN)"
  down
  # At a high metric, so that a host interface on the prefix (the Vagrant rig's bridge)
  # still wins while it exists; the blackhole only catches what nothing else routes.
  ip route replace blackhole 198.18.0.0/24 metric 4242
  mkdir -p "$run"
  add_netns "$bridge"
  ip -n "$bridge" link add br0 type bridge
  ip -n "$bridge" link set br0 up
  while read -r name role address; do
    netns=$(ns "$name")
    add_netns "$netns"
    # Both ends are born inside namespaces: the port in hv-br, lan0 in the host's.
    ip -n "$bridge" link add "p-$name" type veth peer name lan0 netns "$netns"
    ip -n "$bridge" link set "p-$name" master br0 up
    last=${address##*.}
    ip -n "$netns" addr add "$address/24" dev lan0
    ip -n "$netns" addr add "2001:db8::$(printf '%x' "$last")/64" dev lan0 nodad
    ip -n "$netns" link set lan0 up
  done < <(hosts)
  "$bin" keygen --out "$run/cluster.key" >/dev/null
  while read -r name role address; do
    [ "$role" = client ] && continue
    mkdir -p "$run/$name"
    ip netns exec "$(ns "$name")" env HAVIP_LAB_DIR="$run/$name" HAVIP_INTERFACE=lan0 \
      HAVIP_CLUSTER_KEY="$run/cluster.key" sh "$repo/vagrant/provision/$role.sh" "$name" "$address"
  done < <(hosts)
  "$bin" check-config "$run"/*/havip.toml >/dev/null
  echo "lab up: $(hosts | wc -l) hosts on 198.18.0.0/24 in namespaces hv-*, files in $run"
}

start_havip() {
  local name names=("$@")
  [ $# -gt 0 ] || mapfile -t names < <(havip_nodes)
  for name in "${names[@]}"; do
    [ -f "$run/$name/havip.toml" ] || die "$name is not a havip node of the lab (is it up?)"
    if [ -f "$run/$name/havip.pid" ] && in_netns "$(cat "$run/$name/havip.pid")" "$(ns "$name")"; then
      continue
    fi
    rm -f "$run/$name/havip.pid"
    # A supervisor like systemd's ExecStopPost in conf/havip.service: however the daemon
    # dies (SIGKILL too), `havip release` removes the VIPs it left at once (after a
    # graceful stop there is nothing left, and it says so).
    # shellcheck disable=SC2016 # expanded by the inner shell
    ip netns exec "$(ns "$name")" env HAVIP_LOG="${HAVIP_LOG:-info,openraft=warn}" \
      bash -c '"$1" run --config "$2" & echo $! >"$3"; wait $!; "$1" release --config "$2"' \
      supervisor "$bin" "$run/$name/havip.toml" "$run/$name/havip.pid" \
      </dev/null >>"$run/$name/havip.log" 2>&1 &
    echo $! >"$run/$name/supervisor.pid"
    for _ in $(seq 1 50); do [ -s "$run/$name/havip.pid" ] && break; sleep 0.02; done
    [ -s "$run/$name/havip.pid" ] || die "havip of $name did not start (see $run/$name/havip.log)"
  done
}

stop_havip() {
  local name=$1 signal=${2:-TERM} pid
  [ -f "$run/$name/havip.pid" ] || die "no havip running for $name"
  pid=$(cat "$run/$name/havip.pid")
  in_netns "$pid" "$(ns "$name")" || die "havip of $name (PID $pid) is not running"
  kill -"$signal" "$pid"
  case $signal in STOP|CONT|SIGSTOP|SIGCONT) return 0 ;; esac
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$run/$name/havip.pid"
  # ...and for its supervisor's `havip release`, so a restart never races it.
  if [ -f "$run/$name/supervisor.pid" ]; then
    pid=$(cat "$run/$name/supervisor.pid")
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$run/$name/supervisor.pid"
  fi
}

holders() {
  local group vip who name
  while read -r group vip; do
    who=$(for name in $(hosts gateway | awk '{ print $1 }'); do
      ip -n "$(ns "$name")" -o -4 addr show dev lan0 2>/dev/null | grep -q " $vip/" && echo "$name"
    done | paste -sd, -) || true
    echo "$group ${who:-none}"
  done < <(vips)
}

status() {
  echo "== namespaces"; ip netns list | awk '$1 ~ /^hv-/ { print "  " $1 }'
  echo "== VIP holders (ip -n hv-GW addr)"; holders | sed 's/^/  /'
  local name
  for name in $(havip_nodes); do
    echo "== havip status on $name"
    ip netns exec "$(ns "$name")" "$bin" status --config "$run/$name/havip.toml" 2>&1 | sed 's/^/  /' || true
  done
}

case ${1:-} in
  up) up ;;
  down) down; echo "lab down" ;;
  start-havip) shift; start_havip "$@" ;;
  stop-havip) shift; [ $# -ge 1 ] || die "usage: lab.sh stop-havip NODE [SIGNAL]"; stop_havip "$@" ;;
  holders) holders ;;
  status) status ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
