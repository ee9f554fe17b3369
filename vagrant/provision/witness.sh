#!/bin/sh
# Provisions the witness: its havip TOML (from conf/NAME.toml, addresses from
# vagrant/nodes.conf), the shared cluster key and on a VM the havip binary and systemd
# unit. In the lab (HAVIP_LAB_DIR set) it only writes files; scripts/lab.sh starts havip.
# Usage: witness.sh NAME ADDRESS, e.g. witness.sh witness 198.18.0.13
set -eu
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
usage_check "$@"
write_havip_config "$1" "$2"
install_havip_unit
