#!/usr/bin/env python3
"""Who holds each VIP, from the kernel's own address events: the split-brain watcher of
the lab e2e suite, the failover benchmark and the Vagrant rig (one algorithm, one test).

Usage (as root):
  vip-watch.py --netns WATCH --node NAME=NETNS... --vip GROUP=ADDR... [--seconds N]
  vip-watch.py --holders --node NAME=NETNS... --vip GROUP=ADDR...
  vip-watch.py --self-test

WATCH is a network namespace that sees every NETNS (the lab's bridge namespace hv-br;
"-" for the current one). The watcher gives each NETNS a namespace id in WATCH and runs
ONE `ip -ts monitor all-nsid address` there: one netlink socket, one queue, so the
address events of every node arrive in the order the kernel made them (address changes
are serialised under the RTNL lock). A hand-over (old holder deletes, new holder adds)
can therefore never look like two holders, and an overlap of any length, even shorter
than a millisecond, cannot be missed. Sampling `ip addr` in each namespace, as the
watchers did before, could do both.

A node holds GROUP while it has any of the group's addresses (kernel expiry of an
address lifetime is a delete event like any other). Output, one line per event, flushed:
  ready UNIX_MS                     subscribed and seeded from a dump; events follow
  hold UNIX_MS GROUP NODE           NODE got GROUP
  release UNIX_MS GROUP NODE        NODE lost GROUP
  overlap-begin GROUP FROM_MS NODE,NODE...  two or more hold GROUP from now on
  overlap GROUP FROM_MS TO_MS NODE,NODE...   two or more held GROUP (printed when it
                                    ends, or at exit if it has not ended: TO_MS = exit);
                                    FROM_MS is its overlap-begin's, NODEs all that held
  synced UNIX_MS                    every event before the last "sync" line read on
                                    stdin has been printed
  error TEXT                        events may have been lost: the run proves nothing
  summary events=N overlaps=N overlap_ms=N
Times are the kernel events' read times (`ip -ts`), so an overlap's duration is as exact
as the reader was quick; its existence and count do not depend on timing at all.

It only reads (plus a /32 on the watch namespace's loopback, added and removed to know
the subscription is live, and again for every "sync" line on stdin), assigns namespace
ids inside WATCH, and stops after --seconds, on SIGTERM or when its stdin, if a pipe,
closes. `--holders` prints "GROUP NODE,NODE" (or "GROUP none") per group from one dump
of every node's addresses, the same rule applied to a snapshot, and exits.
"""
import argparse
import datetime
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time

# `[2026-12-02T17:41:44.811200] [nsid 1]Deleted 3: if3    inet 198.18.0.50/24 ...`
EVENT = re.compile(
    r"^\[(?P<ts>[0-9T:.\-]+)\]\s*(?:\[nsid (?P<nsid>-?\d+|current)\])?\s*(?P<deleted>Deleted )?"
    r"\d+:\s+\S+\s+inet6?\s+(?P<addr>[0-9a-fA-F.:]+)/\d+")
# Added to the watch namespace's own loopback once: its event proves the subscription.
MARKER = "127.255.77.77"
# Added and removed again for every "sync" request: its event follows every earlier one.
SYNC_MARKER = "127.255.77.78"


def ts_ms(text):
    """`ip -ts` prints local time; naive datetimes convert as local, as ip wrote them."""
    return int(datetime.datetime.fromisoformat(text).timestamp() * 1000)


class Timeline:
    """Holders per group from ordered address events. Pure: no I/O, no clock."""

    def __init__(self, vips, out):
        self.group_of = {}
        for group, addr in vips:
            self.group_of[canon(addr)] = group
        self.groups = sorted({g for g, _ in vips})
        self.addrs = {}        # (node, group) -> set of the group's addresses it has
        self.open = {}         # group -> start of the current overlap
        self.overlaps = 0
        self.overlap_ms = 0
        self.events = 0
        self.out = out

    def holders(self, group):
        return sorted(n for (n, g), a in self.addrs.items() if g == group and a)

    def apply(self, at_ms, node, addr, present):
        """One kernel event: `node` has (`present`) or no longer has `addr`."""
        group = self.group_of.get(canon(addr))
        if group is None or node is None:
            return
        have = self.addrs.setdefault((node, group), set())
        before = bool(have)
        if present:
            have.add(canon(addr))
        else:
            have.discard(canon(addr))
        if bool(have) == before:
            return  # a lifetime refresh, or a second address of a group already held
        self.events += 1
        self.out("%s %d %s %s" % ("hold" if have else "release", at_ms, group, node))
        holders = self.holders(group)
        if len(holders) > 1 and group not in self.open:
            self.open[group] = (at_ms, holders)
            self.out("overlap-begin %s %d %s" % (group, at_ms, ",".join(holders)))
        elif group in self.open:
            start, who = self.open[group]
            who = sorted(set(who) | set(holders))
            if len(holders) > 1:
                self.open[group] = (start, who)
            else:
                self.close(group, start, at_ms, who)

    def close(self, group, start, end, who):
        del self.open[group]
        self.overlaps += 1
        self.overlap_ms += end - start
        self.out("overlap %s %d %d %s" % (group, start, end, ",".join(who)))

    def finish(self, at_ms):
        for group in list(self.open):
            start, who = self.open[group]
            self.close(group, start, at_ms, who)
        self.out("summary events=%d overlaps=%d overlap_ms=%d"
                 % (self.events, self.overlaps, self.overlap_ms))


def canon(addr):
    return addr.lower()


def parse(line, node_of):
    """(unix_ms, node, addr, present) of one `ip -ts -o monitor` line, None for others;
    node None for an event of the watch namespace itself (the marker)."""
    m = EVENT.match(line)
    if not m:
        return None
    nsid = m.group("nsid")
    node = node_of.get(int(nsid)) if nsid not in (None, "current") else None
    return ts_ms(m.group("ts")), node, m.group("addr"), m.group("deleted") is None


def ip(watch, *args):
    cmd = ["ip"] + (["-n", watch] if watch != "-" else []) + list(args)
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def assign_nsids(watch, nodes):
    """The id of every node's namespace in WATCH: an existing one, or one we set."""
    ids = {}
    listed = ip(watch, "netns", "list-id").stdout
    for name, netns in nodes:
        m = re.search(r"nsid (\d+) \(iproute2 netns name: %s\)" % re.escape(netns), listed)
        if not m:
            free = 1000 + len(ids)
            while re.search(r"nsid %d " % free, listed):
                free += 1
            r = ip(watch, "netns", "set", netns, str(free))
            if r.returncode != 0:
                sys.exit("vip-watch: cannot give %s an id in %s: %s" % (netns, watch, r.stderr.strip()))
            listed = ip(watch, "netns", "list-id").stdout
            m = re.search(r"nsid (\d+) \(iproute2 netns name: %s\)" % re.escape(netns), listed)
            if not m:
                sys.exit("vip-watch: %s has no id in %s after setting one" % (netns, watch))
        ids[int(m.group(1))] = name
    return ids


def seed(timeline, nodes, now_ms):
    """What each node has before the first event (the monitor is already subscribed, so
    a change racing this dump is also an event, and applying both is idempotent)."""
    for name, netns in nodes:
        out = subprocess.run(["ip", "-n", netns, "-o", "addr", "show"],
                             capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            m = re.search(r"\sinet6?\s+([0-9a-fA-F.:]+)/\d+", line)
            if m:
                timeline.apply(now_ms, name, m.group(1), True)


def run(args):
    nodes = [tuple(n.split("=", 1)) for n in args.node]
    vips = [tuple(v.split("=", 1)) for v in args.vip]
    lock = threading.Lock()

    def out(text):
        with lock:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()

    node_of = assign_nsids(args.netns, nodes)
    timeline = Timeline(vips, out)
    cmd = ["ip"] + (["-n", args.netns] if args.netns != "-" else [])
    monitor = subprocess.Popen(cmd + ["-ts", "-o", "monitor", "all-nsid", "address"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               bufsize=1)
    stop = threading.Event()
    ready = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def marker(address):
        ip(args.netns, "addr", "add", address + "/32", "dev", "lo")
        ip(args.netns, "addr", "del", address + "/32", "dev", "lo")

    def commands():
        # Our parent holds the pipe: a "sync" line asks for a `synced` once every event
        # before it is out (the marker's own event comes after them: one queue); at EOF,
        # our parent is done or dead, and we stop.
        for line in sys.stdin:
            if line.strip() == "sync" and ready.is_set():
                marker(SYNC_MARKER)
        stop.set()
    if stat.S_ISFIFO(os.fstat(0).st_mode):
        threading.Thread(target=commands, daemon=True).start()
    threading.Thread(target=lambda: (time.sleep(args.seconds), stop.set()), daemon=True).start()

    def stderr_reader():
        for line in monitor.stderr:
            # `ip` looks up the name of every namespace in /run/netns for an nsid; one that
            # someone else adds or deletes at that moment answers this. It concerns that
            # lookup, not the event stream (the data-plane tests make labs in parallel).
            if "Peer netns reference is invalid" in line:
                continue
            out("error ip monitor: %s" % line.strip())
    threading.Thread(target=stderr_reader, daemon=True).start()

    def reader():
        for line in monitor.stdout:
            event = parse(line, node_of)
            if event is None:
                continue
            at_ms, node, addr, present = event
            if node is None:
                if addr == MARKER and present and not ready.is_set():
                    seed(timeline, nodes, at_ms)
                    out("ready %d" % at_ms)
                    ready.set()
                elif addr == SYNC_MARKER and present and ready.is_set():
                    out("synced %d" % at_ms)
                continue
            if ready.is_set():
                timeline.apply(at_ms, node, addr, present)
        if not stop.is_set():
            out("error ip monitor ended")
            stop.set()
    reading = threading.Thread(target=reader, daemon=True)
    reading.start()

    # Subscribed once our own marker's event comes back (bounded: 50 tries, 5 s).
    for _ in range(50):
        marker(MARKER)
        if ready.wait(0.1):
            break
    if not ready.is_set():
        out("error the address monitor never reported our marker")
        stop.set()
    stop.wait()
    monitor.terminate()
    try:
        monitor.wait(2)
    except subprocess.TimeoutExpired:
        monitor.kill()
    reading.join(2)
    timeline.finish(int(time.time() * 1000))


def snapshot(args):
    """`--holders`: who holds each group now, from one dump of every node's addresses."""
    nodes = [tuple(n.split("=", 1)) for n in args.node]
    vips = [tuple(v.split("=", 1)) for v in args.vip]
    timeline = Timeline(vips, lambda _: None)
    seed(timeline, nodes, int(time.time() * 1000))
    for group in timeline.groups:
        print("%s %s" % (group, ",".join(timeline.holders(group)) or "none"))


def self_test():
    """The algorithm on hand-written event orders (a test of it runs in `cargo test`)."""
    lines = []
    t = Timeline([("crm", "198.18.0.50"), ("crm", "2001:db8::50"), ("crm2", "198.18.0.51")],
                 lines.append)
    t.apply(1, "gw-a", "198.18.0.50", True)
    t.apply(2, "gw-a", "198.18.0.50", True)          # lifetime refresh: no event
    t.apply(3, "gw-a", "2001:DB8::50", True)          # second address: no event
    t.apply(4, "gw-a", "198.18.0.99", True)           # not a VIP
    t.apply(5, "gw-a", "198.18.0.50", False)          # still has the IPv6 one
    t.apply(6, "gw-a", "2001:db8::50", False)         # hand-over: delete first ...
    t.apply(6, "gw-b", "198.18.0.50", True)           # ... then add, same ms: no overlap
    assert t.holders("crm") == ["gw-b"], t.holders("crm")
    assert t.overlaps == 0, lines
    t.apply(10, "gw-a", "198.18.0.50", True)          # add before the other's delete
    t.apply(10, "gw-b", "198.18.0.50", False)         # same ms: still an overlap
    assert t.overlaps == 1 and t.overlap_ms == 0, lines
    assert lines[-4:] == ["hold 10 crm gw-a", "overlap-begin crm 10 gw-a,gw-b",
                          "release 10 crm gw-b", "overlap crm 10 10 gw-a,gw-b"], lines
    t.apply(20, "gw-b", "198.18.0.51", True)
    t.apply(30, "gw-a", "198.18.0.51", True)          # crm2 overlap opens ...
    t.apply(31, "witness", "198.18.0.51", True)       # ... a third joins
    t.apply(52, "gw-a", "198.18.0.51", False)         # kernel expiry is a delete
    assert t.overlaps == 1, lines                     # two still hold
    t.apply(55, "witness", "198.18.0.51", False)
    assert t.overlaps == 2 and t.overlap_ms == 25, lines
    assert "overlap crm2 30 55 gw-a,gw-b,witness" in lines, lines
    t.apply(60, "gw-a", "198.18.0.51", True)          # open at exit: closed by finish
    t.finish(100)
    assert t.overlaps == 3 and t.overlap_ms == 65, lines
    assert lines[-1] == "summary events=11 overlaps=3 overlap_ms=65", lines[-1]
    assert lines.count("overlap-begin crm2 60 gw-a,gw-b") == 1, lines
    # A holder from the dump at the start (seed) overlaps the first one to add after it.
    seeded = []
    s = Timeline([("crm", "198.18.0.50")], seeded.append)
    s.apply(0, "gw-b", "198.18.0.50", True)
    s.apply(5, "gw-a", "198.18.0.50", True)
    assert seeded == ["hold 0 crm gw-b", "hold 5 crm gw-a", "overlap-begin crm 5 gw-a,gw-b"], seeded
    node_of = {1: "gw-a"}
    ev = parse("[2026-12-02T17:41:44.826913] [nsid 1]Deleted 3: if3    inet 198.18.0.50/24 "
               "scope global dynamic d0\\       valid_lft 5sec preferred_lft 5sec", node_of)
    assert ev[1:] == ("gw-a", "198.18.0.50", False), ev
    ev = parse("[2026-12-02T17:41:44.835540] [nsid 1]3: if3    inet6 2001:db8::50/64 "
               "scope global nodad", node_of)
    assert ev[1:] == ("gw-a", "2001:db8::50", True), ev
    ev = parse("[2026-12-02T17:41:44.835540] [nsid current]1: lo    inet 127.255.77.77/32 scope host lo",
               node_of)
    assert ev[1:] == (None, MARKER, True), ev
    assert parse("[2026-12-02T17:41:44.8] 3: lan0    link/ether aa:bb", node_of) is None
    print("vip-watch self-test: ok")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--netns", default="-")
    p.add_argument("--node", action="append", default=[])
    p.add_argument("--vip", action="append", default=[])
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--holders", action="store_true")
    p.add_argument("--self-test", action="store_true")
    args = p.parse_args()
    if args.self_test:
        self_test()
        return
    if not args.node or not args.vip:
        p.error("--node and --vip are required")
    if args.holders:
        snapshot(args)
        return
    run(args)


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
