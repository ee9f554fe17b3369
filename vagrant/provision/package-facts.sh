#!/bin/sh
# Prints, on one line, what vagrant/e2e.sh checks of the installed havip package on this
# node: the package version, the unit's state, the daemon's user and its effective
# capabilities (CapEff from /proc, hex), and its fence's (`havip fence`, the daemon's
# child, which must be able to remove addresses: "none" if there is no fence). Read-only.
set -u
version=$(dpkg-query -W -f='${Version}' havip 2>/dev/null || echo none)
active=$(systemctl is-active havip 2>/dev/null || true)
pid=$(systemctl show -p MainPID --value havip 2>/dev/null || echo 0)
user=$(ps -o user= -p "$pid" 2>/dev/null || echo none)
capeff=$(awk '/^CapEff:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo none)
fence=$(awk '{ print $1 }' "/proc/$pid/task/$pid/children" 2>/dev/null || true)
fence_capeff=none
[ -z "$fence" ] || fence_capeff=$(awk '/^CapEff:/ { print $2 }' "/proc/$fence/status" 2>/dev/null || echo none)
echo "$version ${active:-unknown} ${user:-none} ${capeff:-none} ${fence_capeff:-none}"
