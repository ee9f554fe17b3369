#!/bin/sh
# The Vagrant rig's host bridge (lxc provider only): every container's eth1 is cabled to
# it, and it carries the host's own lab address 198.18.0.1/24, so that the host (the
# client of the rig) reaches the nodes and nothing for 198.18.0.0/24 is ever routed out
# of the machine's own interfaces. The containers get no other interface and no default
# route: lab traffic cannot leave the bridge. Called by the Vagrantfile's triggers and by
# e2e.sh; idempotent, and safe when `vagrant up` runs its triggers in parallel (vagrant-lxc
# brings the machines up in parallel).
#
# Usage (as root): host-bridge.sh up | down
#   up    create the bridge if missing, give it 198.18.0.1/24, set it up
#   down  delete the bridge, but only when no container is cabled to it any more
# Environment: HAVIP_RIG_BRIDGE (default havip-rig0), HAVIP_RIG_HOST_ADDRESS
# (default 198.18.0.1/24).
set -eu
bridge=${HAVIP_RIG_BRIDGE:-havip-rig0}
address=${HAVIP_RIG_HOST_ADDRESS:-198.18.0.1/24}

die() { echo "host-bridge: $*" >&2; exit 1; }
case $address in 198.18.0.*/24) ;; *) die "the rig only uses 198.18.0.0/24, not $address" ;; esac

exists() { [ -d "/sys/class/net/$bridge/bridge" ]; }

case ${1:-} in
  up)
    if ! exists; then
      [ ! -e "/sys/class/net/$bridge" ] || die "$bridge exists and is not a bridge"
      # Another trigger may create it at the same moment: then it exists, and that is fine.
      ip link add "$bridge" type bridge 2>/dev/null || exists || die "cannot create the bridge $bridge"
    fi
    ip addr replace "$address" dev "$bridge"
    ip link set "$bridge" up
    ;;
  down)
    exists || exit 0
    ports=$(find "/sys/class/net/$bridge/brif" -mindepth 1 -maxdepth 1 -printf '%f ' 2>/dev/null) || true
    if [ -n "$ports" ]; then
      echo "host-bridge: $bridge still has ports ($ports), kept"
      exit 0
    fi
    ip link del "$bridge" 2>/dev/null || ! exists || die "cannot delete the bridge $bridge"
    ;;
  *) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac
