#!/usr/bin/env bash
# The network-namespace twin of the lab (DESIGN.md "The lab"), the one lab of the e2e
# suite, the failover benchmark and the demo: one namespace per host of vagrant/nodes.conf
# (hv-gw-a, hv-gw-b, hv-witness, hv-crm-1, hv-crm-2, hv-client), each with one interface
# lan0 on 198.18.0.0/24 (and 2001:db8::/64), cabled to a bridge that lives in its own
# namespace (hv-br, ports p-NODE). The veth pairs are created inside the namespaces, so no
# interface ever appears on the host, and a host blackhole route for 198.18.0.0/24 keeps
# lab traffic from ever leaving the machine. Hosts are provisioned with the same scripts
# as the Vagrant rig (vagrant/provision/*.sh) into /run/havip-lab/<node>/. Who holds a VIP
# is always scripts/vip-watch.py's answer (`watch`, `holders`).
#
# Usage (as root):
#   scripts/lab.sh up                  clean what a crashed run left, build the topology,
#                                      provision every host (CRM services and the gateways'
#                                      responders run; havip does not yet)
#   scripts/lab.sh start-havip [NODE]  start havip (the real data plane) in gw-a, gw-b,
#                                      witness (or only NODE); PID in <dir>/havip.pid. An
#                                      extra NODE: <dir>/NODE/havip.toml and, in
#                                      <dir>/NODE/host, the lab host it runs on
#   scripts/lab.sh stop-havip NODE [SIGNAL]  signal NODE's havip (default TERM) and wait
#   scripts/lab.sh watch [ARGS]        run scripts/vip-watch.py on every havip node and every
#                                      address of every VIP group (ARGS: e.g. --seconds N)
#   scripts/lab.sh holders             "GROUP NODE" per VIP group, NODE "none" or several
#   scripts/lab.sh status              namespaces, VIP holders, `havip status` per node
#   scripts/lab.sh net [NODE...]       only the bridge and NODE's namespace and cable, with
#                                      its addresses (no provisioning): a data-plane fixture
#   scripts/lab.sh down                stop everything started (by PID), delete the
#                                      namespaces and the lab's directory
# Environment: HAVIP_BIN (default target/release/havip); HAVIP_LAB_PREFIX (default hv-):
# the prefix of every namespace name, for a second lab beside the default one (the
# data-plane tests make one per test, in parallel); its files go to
# /run/havip-lab.PREFIX, so its `down` never touches the default lab's.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
nodes_conf=$repo/vagrant/nodes.conf
bin=${HAVIP_BIN:-$repo/target/release/havip}

die() { echo "lab: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces); run it with sudo"

prefix=${HAVIP_LAB_PREFIX:-hv-}
case $prefix in
  hv-) run=/run/havip-lab ;;
  *[!a-z0-9-]* | "") die "HAVIP_LAB_PREFIX '$prefix': only a-z, 0-9 and '-'" ;;
  *) run=/run/havip-lab.${prefix%-} ;;
esac
bridge=${prefix}br

# hosts [ROLE]: "name role address" lines of the node list (VIP lines excluded).
hosts() {
  awk -v r="${1:-}" '$1 !~ /^#/ && NF == 3 && $2 != "vip" && (r == "" || $2 == r)' "$nodes_conf"
}
havip_nodes() { hosts | awk '$2 == "gateway" || $2 == "witness" { print $1 }'; }
ns() { echo "$prefix$1"; }
# daemon_ns NAME: the namespace NAME's havip runs in: its host's, or the host named in
# <dir>/NAME/host for an extra daemon a test adds on another host (a witness replacing
# the lab's, run on crm-1).
daemon_ns() {
  if [ -f "$run/$1/host" ]; then ns "$(cat "$run/$1/host")"; else ns "$1"; fi
}
# has_netns NAME: the namespace exists (awk reads all of the list: no SIGPIPE under pipefail).
has_netns() { ip netns list | awk -v n="$1" '$1 == n { found = 1 } END { exit !found }'; }

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

# del_netns NAME: kills what still runs in the namespace (started by the lab, or a test
# or benchmark on it) and deletes it.
del_netns() {
  local pid
  has_netns "$1" || return 0
  for pid in $(ip netns pids "$1" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  ip netns del "$1"
}

down() {
  local name netns
  for name in $(hosts | awk '{ print $1 }'); do
    netns=$(ns "$name")
    for f in "$run/$name"/*.pid; do [ -e "$f" ] && kill_pidfile "$f" "$netns"; done
    del_netns "$netns"
  done
  # The bridge's: the watcher's `ip monitor` runs there.
  del_netns "$bridge"
  rm -rf "$run"
  # The blackhole route stays: it only ever keeps 198.18.0.0/24 off the host's network.
}

add_netns() {
  ip netns add "$1"
  ip -n "$1" link set lo up
  ip netns exec "$1" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
}

# The bridge's namespace and the host route that keeps the prefix on this machine.
bridge_up() {
  # At a high metric, so that a host interface on the prefix (the Vagrant rig's bridge)
  # still wins while it exists; the blackhole only catches what nothing else routes.
  ip route replace blackhole 198.18.0.0/24 metric 4242
  has_netns "$bridge" && return 0
  add_netns "$bridge"
  ip -n "$bridge" link add br0 type bridge
  ip -n "$bridge" link set br0 up
}

# cable NAME ADDRESS: NAME's namespace, cabled to the bridge, with its addresses.
cable() {
  local name=$1 address=$2 netns last
  netns=$(ns "$name")
  add_netns "$netns"
  # Both ends are born inside namespaces: the port in the bridge's, lan0 in the host's.
  ip -n "$bridge" link add "p-$name" type veth peer name lan0 netns "$netns"
  ip -n "$bridge" link set "p-$name" master br0 up
  last=${address##*.}
  ip -n "$netns" addr add "$address/24" dev lan0
  ip -n "$netns" addr add "2001:db8::$(printf '%x' "$last")/64" dev lan0 nodad
  ip -n "$netns" link set lan0 up
}

# small_neighbour_queue NAME: the client's probes (a connection every 10 ms to each VIP)
# also ask addresses a test adds later. While such an address is unresolved, the kernel
# queues the probes' SYNs (about 230 with the default 212,992 bytes) and sends them all at
# once when it comes up: that burst overflowed the gateway responder's listen backlog
# (Python's 5) and lost the next probe of another VIP (session 16, tcpdump). Two packets
# keep the instrument from flooding what it measures.
small_neighbour_queue() {
  ip netns exec "$(ns "$1")" sysctl -qw net.ipv4.neigh.lan0.unres_qlen_bytes=2048 \
    net.ipv6.neigh.lan0.unres_qlen_bytes=2048
}

up() {
  local name role address
  [ -x "$bin" ] || die "no havip binary at $bin (cargo build --release, or set HAVIP_BIN)"
  down
  bridge_up
  mkdir -p "$run"
  while read -r name role address; do cable "$name" "$address"; done < <(hosts)
  small_neighbour_queue "$(hosts client | awk '{ print $1; exit }')"
  "$bin" keygen --out "$run/cluster.key" >/dev/null
  while read -r name role address; do
    [ "$role" = client ] && continue
    mkdir -p "$run/$name"
    ip netns exec "$(ns "$name")" env HAVIP_LAB_DIR="$run/$name" HAVIP_INTERFACE=lan0 \
      HAVIP_CLUSTER_KEY="$run/cluster.key" sh "$repo/vagrant/provision/$role.sh" "$name" "$address"
  done < <(hosts)
  "$bin" check-config "$run"/*/havip.toml >/dev/null
  echo "lab up: $(hosts | wc -l) hosts on 198.18.0.0/24 in namespaces $prefix*, files in $run"
}

net() {
  local name address
  bridge_up
  for name in "$@"; do
    address=$(hosts | awk -v n="$name" '$1 == n { print $3 }')
    [ -n "$address" ] || die "$name is not a host of $nodes_conf"
    cable "$name" "$address"
  done
}

start_havip() {
  local name names=("$@")
  [ $# -gt 0 ] || mapfile -t names < <(havip_nodes)
  for name in "${names[@]}"; do
    [ -f "$run/$name/havip.toml" ] || die "$name is not a havip node of the lab (is it up?)"
    if [ -f "$run/$name/havip.pid" ] && in_netns "$(cat "$run/$name/havip.pid")" "$(daemon_ns "$name")"; then
      continue
    fi
    rm -f "$run/$name/havip.pid"
    # A supervisor like systemd's ExecStopPost in conf/havip.service: however the daemon
    # dies (SIGKILL too), `havip release` removes the VIPs it left at once (after a
    # graceful stop there is nothing left, and it says so).
    # HAVIP_LOG only when given: the daemon's default filter otherwise, as under systemd.
    # shellcheck disable=SC2016 # expanded by the inner shell
    ip netns exec "$(daemon_ns "$name")" env ${HAVIP_LOG:+HAVIP_LOG="$HAVIP_LOG"} \
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
  in_netns "$pid" "$(daemon_ns "$name")" || die "havip of $name (PID $pid) is not running"
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

# vip_addresses: "GROUP ADDRESS" for every address of every VIP group, IPv6 included, as
# the gateways' havip.toml (conf/NODE.toml as the provisioning wrote it) configure them.
vip_addresses() {
  local name file
  for name in $(hosts gateway | awk '{ print $1 }'); do
    file=$run/$name/havip.toml
    [ -f "$file" ] || die "no $file (is the lab up?)"
    awk '
      /^\[/ { group = ""; in_group = ($0 ~ /^\[\[vip_group\]\]/) }
      in_group && /^name = "/ { group = $3; gsub(/"/, "", group) }
      in_group && group != "" && /^addresses = \[/ {
        list = $0; sub(/^[^[]*\[/, "", list); sub(/\].*$/, "", list)
        n = split(list, parts, ",")
        for (i = 1; i <= n; i++) {
          address = parts[i]; gsub(/[" ]/, "", address); sub(/\/.*/, "", address)
          if (address != "") print group, address
        }
      }' "$file"
  done | sort -u
}

# vip_watch ARGS: scripts/vip-watch.py with every havip node and every VIP address.
vip_watch() {
  local watched=() name group address
  for name in $(havip_nodes); do watched+=(--node "$name=$(ns "$name")"); done
  while read -r group address; do watched+=(--vip "$group=$address"); done < <(vip_addresses)
  exec python3 "$repo/scripts/vip-watch.py" "${watched[@]}" "$@"
}

status() {
  echo "== namespaces"; ip netns list | awk -v p="$prefix" 'index($1, p) == 1 { print "  " $1 }'
  echo "== VIP holders (scripts/vip-watch.py --holders)"; ("$0" holders || true) | sed 's/^/  /'
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
  watch) shift; vip_watch --netns "$bridge" "$@" ;;
  holders) vip_watch --holders ;;
  status) status ;;
  net) shift; net "$@" ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
