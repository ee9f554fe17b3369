# shellcheck shell=bash
# Sourced by the loopback scripts (cluster-loopback.sh, bench-idle.sh): the configs of a
# three-node observe-only cluster on loopback addresses, one VIP group `crm`.

# write_loopback_cluster BIN DIR PREFIX [GATEWAY_EXTRA]: a cluster key and
# DIR/{gw-a,gw-b,witness}/havip.toml with nodes on PREFIX.11-13 (e.g. PREFIX=127.0.9),
# gw-a priority 150, gw-b 100; GATEWAY_EXTRA (TOML lines) is added to both gateways' group.
write_loopback_cluster() {
  local bin=$1 dir=$2 prefix=$3 extra=${4:-} n p
  "$bin" keygen --out "$dir/cluster.key" >/dev/null
  for n in gw-a gw-b witness; do
    mkdir -p "$dir/$n"
    {
      printf '[node]\nname = "%s"\nrole = "%s"\ndata_dir = "%s"\n\n' "$n" \
        "$([ "$n" = witness ] && echo witness || echo gateway)" "$dir/$n/data"
      printf '[cluster]\nlisten = "%s:7400"\nkey_file = "%s"\n' "$(loopback_addr "$prefix" "$n")" "$dir/cluster.key"
      for p in gw-a gw-b witness; do
        printf '[[cluster.peers]]\nname = "%s"\naddress = "%s:7400"\n' "$p" "$(loopback_addr "$prefix" "$p")"
      done
      printf '\n[control]\nsocket = "%s"\n\n' "$dir/$n/havip.sock"
      case $n in
        witness) printf '[[vip_group]]\nname = "crm"\n' ;;
        gw-a) printf '[[vip_group]]\nname = "crm"\ninterface = "eth1"\naddresses = ["198.18.0.50/24"]\npriority = 150\n%b' "$extra" ;;
        gw-b) printf '[[vip_group]]\nname = "crm"\ninterface = "eth1"\naddresses = ["198.18.0.50/24"]\npriority = 100\n%b' "$extra" ;;
      esac
    } >"$dir/$n/havip.toml"
  done
}

loopback_addr() {
  case $2 in gw-a) echo "$1.11" ;; gw-b) echo "$1.12" ;; witness) echo "$1.13" ;; esac
}
