#!/bin/sh
# Provisions a CRM server: a small HTTP service on ADDRESS:8080 answering /health with
# 200 "ok" (the gateways' health checks) and / with its own name. On a VM a systemd
# unit; in the lab (HAVIP_LAB_DIR set) a background process with a PID file.
# Usage: crm.sh NAME ADDRESS, e.g. crm.sh crm-1 198.18.0.21
set -eu
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"
usage_check "$@"
[ -z "${HAVIP_LAB_DIR:-}" ] || mkdir -p "$HAVIP_LAB_DIR"
install_name_http crm-http "$1" "$2" 8080
