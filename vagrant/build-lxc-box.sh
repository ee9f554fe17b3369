#!/usr/bin/env bash
# Builds the Debian 12 (bookworm) box of the Vagrant rig's lxc provider and adds it to
# Vagrant as havip/bookworm-lxc. No box can be downloaded where the rig must run (CI), so
# it is made here: debootstrap from the Debian archive, with the mirror taken from this
# host's apt sources at run time (never written into this script), systemd, sshd, sudo,
# iproute2, python3, curl and a `vagrant` user with Vagrant's well-known insecure key and
# passwordless sudo; packed in vagrant-lxc's box format (metadata.json, rootfs.tar.gz made
# with --xattrs so that file capabilities survive, lxc-config).
#
# Idempotent: does nothing when the box is already added (--force rebuilds the box file),
# and reuses the debootstrapped rootfs and the downloaded .debs under $cache, so that a
# rebuild after --force takes seconds. It never touches a network interface.
#
# Usage (as root): vagrant/build-lxc-box.sh [--force]
# Environment: HAVIP_BOX_CACHE (default /var/cache/havip-box), HAVIP_BOX_MIRROR (a Debian
# mirror URI, to override what the apt sources say), HAVIP_BOX_NAME (havip/bookworm-lxc).
set -euo pipefail

suite=bookworm
box_name=${HAVIP_BOX_NAME:-havip/bookworm-lxc}
cache=${HAVIP_BOX_CACHE:-/var/cache/havip-box}
force=0
[ "${1:-}" = --force ] && force=1

die() { echo "build-lxc-box: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (debootstrap, chroot); run it with sudo"
for tool in debootstrap vagrant tar gzip; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (apt-get install debootstrap vagrant vagrant-lxc lxc)"
done

# The box goes to the Vagrant of whoever called sudo (their ~/.vagrant.d), not root's.
as_caller() {
  if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then sudo -u "$SUDO_USER" -H "$@"; else "$@"; fi
}

if [ $force = 0 ] && as_caller vagrant box list 2>/dev/null | grep -q "^$box_name *(lxc,"; then
  echo "build-lxc-box: $box_name (lxc) is already added; --force rebuilds it"
  exit 0
fi

# apt_mirror: the URI of the first enabled `deb` source of this host that serves Debian's
# `main` for a release (not -security/-updates/-backports), from the one-line format
# (sources.list, *.list) and the deb822 format (*.sources). Files with other suffixes are
# ignored, as apt ignores them. A source of the suite we build is preferred.
apt_mirror() {
  local files=() f
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  awk -v want="$suite" '
    # One source: type, URIs, suites, components (space-separated lists).
    function consider(types, uris, suites, comps,    n, i, u, s, nu, ns) {
      if ((" " types " ") !~ / deb / || (" " comps " ") !~ / main /) return
      ns = split(suites, s, " "); nu = split(uris, u, " ")
      for (i = 1; i <= ns; i++) {
        if (s[i] ~ /-(security|updates|backports|proposed-updates)$/ || s[i] ~ /\//) continue
        for (n = 1; n <= nu; n++) {
          if (u[n] !~ /^(https?|ftp|file):/) continue
          if (s[i] == want && best == "") best = u[n]
          if (any == "") any = u[n]
        }
      }
    }
    function flush() {
      if (enabled != "no" && uris != "") consider(types, uris, suites, comps)
      types = uris = suites = comps = ""; enabled = ""
    }
    FILENAME != last { flush(); last = FILENAME; deb822 = (FILENAME ~ /\.sources$/) }
    deb822 && /^[ \t]*$/ { flush(); next }
    /^[ \t]*#/ { next }
    deb822 {
      key = tolower($1); sub(/:$/, "", key); $1 = ""; val = $0; sub(/^[ \t]+/, "", val)
      if (key == "types") types = val; else if (key == "uris") uris = val
      else if (key == "suites") suites = val; else if (key == "components") comps = val
      else if (key == "enabled") enabled = tolower(val)
      next
    }
    $1 == "deb" {
      line = $0; sub(/^deb[ \t]+/, "", line)
      if (line ~ /^\[/) sub(/^\[[^]]*\][ \t]*/, "", line)
      n = split(line, w, /[ \t]+/); c = ""
      for (i = 3; i <= n; i++) c = c " " w[i]
      consider("deb", w[1], w[2], c)
    }
    END { flush(); print (best != "" ? best : any) }
  ' "${files[@]}"
}

mirror=${HAVIP_BOX_MIRROR:-$(apt_mirror)}
[ -n "$mirror" ] || die "no Debian mirror in /etc/apt/sources.list{,.d/*.list,.d/*.sources}; set HAVIP_BOX_MIRROR"

rootfs=$cache/rootfs
work=$cache/work
mkdir -p "$cache/debs"

# Unmounts whatever debootstrap or a chroot left mounted under DIR (deepest first).
unmount_under() {
  local dir=$1 m
  [ -d "$dir" ] || return 0
  for m in $(findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d "/") == 1 || $0 == d' | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}
cleanup() {
  unmount_under "$rootfs.tmp"
  unmount_under "$rootfs"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

arch=$(dpkg --print-architecture)
case $arch in
  amd64) lxc_arch=x86_64 ;;
  arm64) lxc_arch=aarch64 ;;
  *) lxc_arch=$arch ;;
esac

started=$(date +%s)
if [ -f "$rootfs/.havip-box-complete" ]; then
  echo "build-lxc-box: reusing the rootfs cached in $rootfs"
else
  echo "build-lxc-box: debootstrap $suite from $mirror (from the host's apt sources) into $rootfs"
  unmount_under "$rootfs.tmp"
  rm -rf "$rootfs.tmp"
  # minbase + what the rig needs: systemd as init (libnss-myhostname: `hostname -f`
  # resolves, so Vagrant sets the hostname without restarting interfaces), sshd for vagrant ssh, sudo for the
  # provisioner, iproute2 for havip's operators, python3 for the HTTP services, curl.
  debootstrap --variant=minbase --arch="$arch" --cache-dir="$cache/debs" \
    --include=systemd,systemd-sysv,dbus,libnss-myhostname,openssh-server,sudo,iproute2,python3,curl,ca-certificates,procps,iputils-ping,less \
    "$suite" "$rootfs.tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -20 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }
  unmount_under "$rootfs.tmp"

  r=$rootfs.tmp
  # The vagrant user: Vagrant's insecure public key (from this host's Vagrant, which
  # replaces it with a per-machine key on the first `vagrant up`), passwordless sudo.
  pub=$(find /usr/share/rubygems-integration /usr/lib/ruby /opt/vagrant -path '*vagrant-*/keys/vagrant.pub' 2>/dev/null | head -1 || true)
  [ -n "$pub" ] || die "cannot find Vagrant's keys/vagrant.pub (is vagrant installed?)"
  chroot "$r" useradd --create-home --shell /bin/bash vagrant
  install -d -m 0700 "$r/home/vagrant/.ssh"
  install -m 0600 "$pub" "$r/home/vagrant/.ssh/authorized_keys"
  chroot "$r" chown -R vagrant:vagrant /home/vagrant/.ssh
  printf 'vagrant ALL=(ALL) NOPASSWD:ALL\nDefaults:vagrant !requiretty\n' >"$r/etc/sudoers.d/vagrant"
  chmod 0440 "$r/etc/sudoers.d/vagrant"
  # Per-container identity: sshd host keys are made at first boot (not shared by every
  # container of the box), the machine id by systemd.
  rm -f "$r"/etc/ssh/ssh_host_*
  cat >"$r/etc/systemd/system/ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate the SSH host keys of this container
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
[Install]
WantedBy=ssh.service
UNIT
  chroot "$r" systemctl enable ssh-hostkeys.service >/dev/null 2>&1
  : >"$r/etc/machine-id"
  rm -f "$r/var/lib/dbus/machine-id"
  # Nothing in a container may configure its interfaces: LXC sets them up from the
  # Vagrantfile. No console gettys (a container has no ttys to log in on).
  chroot "$r" systemctl mask getty@tty1.service serial-getty@console.service \
    systemd-networkd-wait-online.service >/dev/null 2>&1 || true
  echo "# filled in by vagrant" >"$r/etc/hostname"
  : >"$r/etc/fstab"
  chroot "$r" apt-get clean
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/log/*.log
  touch "$r/.havip-box-complete"
  rm -rf "$rootfs"
  mv "$r" "$rootfs"
  echo "build-lxc-box: rootfs ready in $(($(date +%s) - started)) s"
fi

# The box: metadata.json, rootfs.tar.gz (vagrant-lxc strips two leading components:
# ./rootfs/...), lxc-config (appended to each container's config).
rm -rf "$work"
mkdir -p "$work"
tar --numeric-owner --xattrs --xattrs-include='*' --exclude=./rootfs/.havip-box-complete \
  -czf "$work/rootfs.tar.gz" -C "$cache" ./rootfs
cat >"$work/metadata.json" <<JSON
{
  "provider": "lxc",
  "version": "1.0.0",
  "built-on": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "description": "Debian $suite for the havip rig, built by vagrant/build-lxc-box.sh from $mirror"
}
JSON
cat >"$work/lxc-config" <<CONF
# Debian's common container settings (cgroup, /proc and /sys mounts, dropped capabilities).
lxc.include = /usr/share/lxc/config/debian.common.conf
lxc.arch = $lxc_arch
# No network here: the Vagrantfile defines every interface of the rig's containers.
CONF
box=$cache/havip-bookworm-lxc.box
tar -cf "$box.tmp" -C "$work" metadata.json rootfs.tar.gz lxc-config
mv "$box.tmp" "$box"
chmod 0644 "$box"
as_caller vagrant box add --force --name "$box_name" "$box" >/dev/null
echo "build-lxc-box: added $box_name (lxc) from $box in $(($(date +%s) - started)) s"
