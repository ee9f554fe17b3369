#!/bin/sh
# What vagrant/e2e.sh checks of the installed unit on this node: `systemd-analyze verify`
# must say nothing (its findings are printed as "verify: ..." lines), and the unit's
# exposure score from `systemd-analyze security` ("exposure 2.0 OK"). Read-only.
set -u
systemd-analyze verify havip.service 2>&1 | sed 's/^/verify: /'
systemd-analyze security havip.service --no-pager 2>/dev/null |
  awk '/Overall exposure level/ { print "exposure", $(NF-2), $(NF-1) }'
