#!/usr/bin/env python3
"""The Vagrant rig's VIP watcher (e2e.sh): which gateways hold each VIP, every INTERVAL ms.

Usage (as root, on the host): rig-watch.py INTERVAL_MS SECONDS VIP[,VIP...] NAME=PID...
  NAME=PID: a gateway and a process in its network namespace (the container's init).
Prints one line per sample: "UNIX_MS HOLDERS..." with, for each VIP in order, the names
of the gateways that have it on eth1 joined by commas, or "none". A sample asks every
gateway within a fraction of a millisecond: one long-lived `ip -batch` per gateway
(inside its namespace through nsenter) answers each query, so a sample costs no fork.
It only reads addresses, never changes anything, and stops after SECONDS.
"""
import subprocess
import sys
import time


def main():
    interval = int(sys.argv[1]) / 1000.0
    seconds = float(sys.argv[2])
    vips = sys.argv[3].split(",")
    gateways = [arg.split("=", 1) for arg in sys.argv[4:]]
    ips = {}
    for name, pid in gateways:
        # -force: a failing query (eth1 gone) must not end the batch.
        ips[name] = subprocess.Popen(
            ["nsenter", "-t", pid, "-n", "ip", "-o", "-4", "-force", "-batch", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1)
    start = time.monotonic()
    tick = start
    while time.monotonic() - start < seconds:
        at = int(time.time() * 1000)
        shown = {}
        for name, _ in gateways:
            shown[name] = query(ips[name])
        fields = []
        for vip in vips:
            needle = " %s/" % vip
            who = [n for n, _ in gateways if needle in shown[n]]
            fields.append(",".join(who) or "none")
        sys.stdout.write("%d %s\n" % (at, " ".join(fields)))
        sys.stdout.flush()
        tick += interval
        time.sleep(max(0.0, tick - time.monotonic()))


def query(ip):
    """eth1's IPv4 addresses as ip prints them; "" once the namespace is gone. `addr show
    dev lo` ends each answer (loopback always has 127.0.0.1)."""
    if ip.poll() is not None:
        return ""
    try:
        ip.stdin.write("addr show dev eth1\naddr show dev lo\n")
        ip.stdin.flush()
        text = []
        for _ in range(100):
            line = ip.stdout.readline()
            if not line or ": lo " in line:
                break
            text.append(line)
        return "".join(text)
    except (BrokenPipeError, OSError):
        return ""


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
