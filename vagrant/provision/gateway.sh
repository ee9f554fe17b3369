#!/bin/sh
# Provisions a gateway: its havip TOML (from conf/NAME.toml, addresses from
# vagrant/nodes.conf), the shared cluster key, the "who am I" responder on port 80 (it
# answers on the VIP while this gateway holds it, so a client SEES which gateway answers),
# HAProxy on port 8080 over the CRM servers (conf/haproxy.cfg, when Debian's haproxy is
# installed; the havip TOML leaves out its [[backend]] pools otherwise), and on a VM the
# havip binary and systemd unit. In the lab (HAVIP_LAB_DIR set) it only writes files and
# starts the responder and HAProxy; scripts/lab.sh starts havip itself.
# Usage: gateway.sh NAME ADDRESS, e.g. gateway.sh gw-a 198.18.0.11 (see lib.sh for the env)
set -eu
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
usage_check "$@"
write_havip_config "$1" "$2"
install_name_http havip-responder "$1" 0.0.0.0 80
install_havip_unit
# After the unit: on a VM, HAProxy's socket belongs to the group the package made.
install_haproxy
