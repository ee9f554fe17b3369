# shellcheck shell=sh
# Shared by the provisioning scripts (POSIX sh, sourced): where things go, the node list,
# the havip config writer. Two modes:
#   - a VM (the Vagrant rig): files under /etc/havip and /var/lib/havip, systemd units;
#   - the lab (scripts/lab.sh): HAVIP_LAB_DIR=/run/havip-lab/<node> is set, everything
#     goes into that directory, nothing is installed and no systemd unit is written;
#     long-running services are started in the background with a PID file there.
# Environment: HAVIP_LAB_DIR (lab mode), HAVIP_INTERFACE (the VIP interface; default
# eth1), HAVIP_CLUSTER_KEY (the shared key to copy; default vagrant/cluster.key),
# HAVIP_DEB (the havip package to install on a VM, from scripts/build-deb.sh).
# It never touches an interface: addresses are the job of the Vagrantfile or lab.sh.

provision_dir=$(cd "$(dirname "$0")" && pwd)
vagrant_dir=$(dirname "$provision_dir")
repo_dir=$(dirname "$vagrant_dir")
nodes_conf=${HAVIP_NODES:-$vagrant_dir/nodes.conf}

die() { echo "provision: $*" >&2; exit 1; }

# usage_check NAME ADDRESS: both given, and NAME is in the node list with ADDRESS.
usage_check() {
  [ $# -eq 2 ] || die "usage: $0 NAME ADDRESS (a line of $nodes_conf)"
  listed=$(node_address "$1")
  [ "$listed" = "$2" ] || die "$1 has address '${listed:-none}' in $nodes_conf, not $2"
}

# node_address NAME: the address of NAME in the node list (empty when absent).
node_address() {
  awk -v n="$1" '$1 !~ /^#/ && $1 == n { print $3; exit }' "$nodes_conf"
}

# The real python3 (not a shim), so that a PID file names the server itself.
python3_exe() {
  python3 -c 'import sys; print(sys.executable)'
}

# start_bg NAME_OF_PIDFILE COMMAND...: lab mode only; starts COMMAND in the background
# with its output in <lab dir>/<name>.log and its PID in <lab dir>/<name>.pid.
start_bg() {
  name=$1; shift
  "$@" </dev/null >"$HAVIP_LAB_DIR/$name.log" 2>&1 &
  echo $! >"$HAVIP_LAB_DIR/$name.pid"
}

# install_name_http UNIT NAME BIND PORT: the small "who am I" HTTP service.
install_name_http() {
  unit=$1 name=$2 bind=$3 port=$4
  if [ -n "${HAVIP_LAB_DIR:-}" ]; then
    start_bg "$unit" "$(python3_exe)" "$provision_dir/name-http.py" "$name" "$bind" "$port"
    return
  fi
  command -v python3 >/dev/null 2>&1 || apt-get install -y -qq python3 >/dev/null
  install -m 0755 "$provision_dir/name-http.py" /usr/local/bin/havip-name-http
  cat >"/etc/systemd/system/$unit.service" <<UNIT
[Unit]
Description=havip lab: HTTP service answering with "$name"
After=network-online.target
[Service]
ExecStart=/usr/local/bin/havip-name-http $name $bind $port
DynamicUser=true
AmbientCapabilities=CAP_NET_BIND_SERVICE
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
  systemctl daemon-reload
  systemctl enable --now "$unit.service"
}

# The start of the config writers' awk programs: the node list (awk variable `nodes`)
# read into addr[NAME].
node_addresses_awk='
    BEGIN {
      while ((getline line < nodes) > 0) {
        split(line, f, /[ \t]+/)
        if (f[1] != "" && f[1] !~ /^#/) addr[f[1]] = f[3]
      }
    }'

# write_havip_config NAME ADDRESS: the node's havip TOML from conf/NAME.toml, with every
# address taken from the node list and the paths of this mode.
write_havip_config() {
  name=$1 address=$2
  template=${HAVIP_TEMPLATE:-$repo_dir/conf/$name.toml}
  [ -f "$template" ] || die "no template $template for $name"
  if [ -n "${HAVIP_LAB_DIR:-}" ]; then
    etc=$HAVIP_LAB_DIR data=$HAVIP_LAB_DIR/data socket=$HAVIP_LAB_DIR/havip.sock
  else
    etc=/etc/havip data=/var/lib/havip socket=/run/havip/havip.sock
  fi
  mkdir -p "$etc"
  key=${HAVIP_CLUSTER_KEY:-$vagrant_dir/cluster.key}
  [ -f "$key" ] || die "no cluster key at $key (make one with: havip keygen --out $key)"
  install -m 0600 "$key" "$etc/cluster.key"
  backends=1
  if grep -q '^\[\[backend\]\]' "$template" && ! has_haproxy; then
    backends=0
    echo "provision: $name: no haproxy installed here, so its havip config leaves out the [[backend]] pools (install Debian's haproxy to run the load balancer behind the VIP)" >&2
  fi
  # Line by line: remembers the name of the table entry it is in, so a peer's address,
  # a group's VIP and a check's URL are looked up by name in the node list. Without
  # HAProxy, the [[backend]] tables are left out, and every line up to the next other
  # table header (comments too); headers are matched as conf/ writes them (`[[backend]]`,
  # `[[backend.server]]` at the start of the line).
  awk -v self="$address" -v data="$data" -v key="$etc/cluster.key" -v sock="$socket" \
      -v iface="${HAVIP_INTERFACE:-eth1}" -v nodes="$nodes_conf" \
      -v hsock="$(haproxy_socket)" -v backends="$backends" "$node_addresses_awk"'
    /^\[/ { entry = ""; skip = (!backends && $0 ~ /^\[\[?backend[].]/) }
    skip { next }
    /^haproxy = / { sub(/socket = "[^"]*"/, "socket = \"" hsock "\"") }
    /^name = "/ { entry = $3; gsub(/"/, "", entry); sub(/-http$/, "", entry) }
    /^data_dir = / { $0 = "data_dir = \"" data "\"" }
    /^key_file = / { $0 = "key_file = \"" key "\"" }
    /^socket = / { $0 = "socket = \"" sock "\"" }
    /^listen = / { $0 = "listen = \"" self ":7400\"" }
    /^metrics = / { $0 = "metrics = \"" self ":9400\"" }
    /^interface = / { $0 = "interface = \"" iface "\"" }
    /^address = / && (entry in addr) { sub(/"[0-9.]+:/, "\"" addr[entry] ":") }
    /^addresses = / && (entry in addr) { sub(/"[0-9.]+\//, "\"" addr[entry] "/") }
    /^url = / && (entry in addr) { sub(/\/\/[0-9.]+:/, "//" addr[entry] ":") }
    { print }
  ' "$template" >"$etc/havip.toml.new"
  mv "$etc/havip.toml.new" "$etc/havip.toml"
  mkdir -p "$data"
  chmod 0700 "$data"
}

# has_haproxy: Debian's haproxy is installed here (the lab's host, or a VM whose box has it).
has_haproxy() { command -v haproxy >/dev/null 2>&1; }

# haproxy_socket: where this mode's HAProxy has its admin socket (conf/haproxy.cfg's path
# on a VM; the gateway's lab directory in the lab, which runs no system service).
haproxy_socket() {
  if [ -n "${HAVIP_LAB_DIR:-}" ]; then echo "$HAVIP_LAB_DIR/haproxy-admin.sock"; else echo /run/haproxy/admin.sock; fi
}

# install_haproxy: the gateway's HAProxy from conf/haproxy.cfg (the servers' addresses
# from the node list), checked by `haproxy -c` before it replaces anything. In the lab:
# the socket in the lab directory (mode 600, root's: no havip group there) and HAProxy in
# the background with a PID file, up once its socket is there; on a VM:
# /etc/haproxy/haproxy.cfg (the package's own kept once as haproxy.cfg.orig) and the
# package's unit restarted. Without haproxy installed it does nothing
# (write_havip_config left the pools out).
install_haproxy() {
  has_haproxy || return 0
  if [ -n "${HAVIP_LAB_DIR:-}" ]; then
    cfg=$HAVIP_LAB_DIR/haproxy.cfg
    stats="stats socket $(haproxy_socket) mode 600 level admin"
  else
    cfg=/etc/haproxy/haproxy.cfg
    stats=
  fi
  awk -v nodes="$nodes_conf" -v stats="$stats" "$node_addresses_awk"'
    stats != "" && $1 == "stats" && $2 == "socket" { $0 = "    " stats }
    $1 == "server" && ($2 in addr) { sub(/ [0-9.]+:/, " " addr[$2] ":") }
    { print }
  ' "$repo_dir/conf/haproxy.cfg" >"$cfg.new"
  haproxy -c -q -f "$cfg.new" || die "haproxy -c refused $cfg.new (from conf/haproxy.cfg)"
  if [ -z "${HAVIP_LAB_DIR:-}" ] && [ -f "$cfg" ] && [ ! -f "$cfg.orig" ]; then
    cp -p "$cfg" "$cfg.orig"
  fi
  mv "$cfg.new" "$cfg"
  if [ -z "${HAVIP_LAB_DIR:-}" ]; then
    systemctl restart haproxy.service
    return
  fi
  rm -f "$(haproxy_socket)"
  start_bg haproxy "$(command -v haproxy)" -db -f "$cfg"
  # Bounded (5 s): a HAProxy that cannot start fails the provisioning, with its log.
  tries=0
  while [ ! -S "$(haproxy_socket)" ]; do
    tries=$((tries + 1))
    [ "$tries" -le 50 ] || die "HAProxy did not start: $(tail -n 5 "$HAVIP_LAB_DIR/haproxy.log")"
    sleep 0.1
  done
}

# install_havip_unit: a VM only: havip's Debian package (HAVIP_DEB: its user, the binary
# at /usr/sbin/havip, the unit), then the unit enabled and started on the config and key
# written above, as an operator would.
install_havip_unit() {
  [ -z "${HAVIP_LAB_DIR:-}" ] || return 0
  deb=${HAVIP_DEB:-}
  [ -f "$deb" ] || die "no havip package at '${deb}' (scripts/build-deb.sh, then set HAVIP_DEB)"
  dpkg -i "$deb" || die "dpkg -i $deb failed"
  chown havip:havip /etc/havip/cluster.key
  systemctl enable --now havip.service
}
