#!/usr/bin/env python3
"""Silent TCP connections to one address and port (the chaos soak's flood, from the lab's
client namespace against a node's peer port): opens COUNT connections at RATE per second,
sends nothing, holds them open for HOLD seconds, then closes them all. Bounded in count
(at most 5,000), rate and time (it gives up opening after COUNT / RATE + 5 s).

Usage (inside a lab namespace): lab-flood.py ADDRESS PORT [COUNT] [RATE] [HOLD] [SOURCES]
SOURCES: comma-separated local addresses the connections are bound to in turn (a flood
from many addresses; they must be on the namespace's interface), default the kernel's.
Prints one JSON line: opened, failed (connect errors or timeouts), closed_by_peer (seen
closed by the far end before HOLD ended: a node closes strangers unread, after
telling them they are not listed), seconds (the
time taken to open them).
"""
import json
import resource
import socket
import sys
import time

MAX_COUNT = 5000


def main():
    address, port = sys.argv[1], int(sys.argv[2])
    count = min(int(sys.argv[3]) if len(sys.argv) > 3 else 1000, MAX_COUNT)
    rate = max(1, int(sys.argv[4]) if len(sys.argv) > 4 else 1000)
    hold = min(float(sys.argv[5]) if len(sys.argv) > 5 else 2.0, 30.0)
    sources = [a for a in (sys.argv[6].split(",") if len(sys.argv) > 6 else []) if a]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, count + 64)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    open_socks, failed = [], 0
    start = time.monotonic()
    give_up = start + count / rate + 5
    for i in range(count):
        if time.monotonic() > give_up:
            break
        s = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET)
        s.settimeout(0.5)
        try:
            if sources:
                s.bind((sources[i % len(sources)], 0))
            s.connect((address, port))
            s.setblocking(False)
            open_socks.append(s)
        except OSError:
            failed += 1
            s.close()
        pause = start + (i + 1) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    took = time.monotonic() - start
    time.sleep(hold)
    closed = 0
    for s in open_socks:
        try:
            # A node closes a stranger after one empty "not listed" record (two zero
            # bytes), reading nothing of it.
            if s.recv(16) in (b"", b"\x00\x00"):
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    print(json.dumps({"opened": len(open_socks), "failed": failed, "closed_by_peer": closed,
                      "seconds": round(took, 2)}))


if __name__ == "__main__":
    main()
