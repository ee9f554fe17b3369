#!/usr/bin/env python3
"""The lab's client probe: every INTERVAL ms, a TCP connect and a tiny HTTP GET to the
VIP's responder (each gateway runs one on port 80 that answers with its name), each in
its own thread with a 500 ms budget, so one lost SYN never delays the next probe.

Usage (inside the client's namespace): lab-probe.py VIP [PORT] [INTERVAL_MS] [SECONDS]
Prints one line per probe as it completes: "SENT_UNIX_MS ANSWER_UNIX_MS WHO", WHO being
the name that answered or "-" (no answer within 500 ms); for each "-", a line on stderr
"SENT_UNIX_MS WHY" says what the client saw (timed out, refused, reset, a bad answer) and
in which stage (connect: the handshake; answer: the request after it), so
that a lost probe can be told from a moved VIP. An outage is the gap between
the last answer before a fault and the first after it. Bounded: it stops after SECONDS
(default 600) and never has more than 100 probes in flight.
"""
import socket
import sys
import threading
import time

BUDGET = 0.5


def probe(vip, port, lock):
    sent = time.time()
    who = "-"
    why = "no answer"
    stage = "connect"
    try:
        with socket.create_connection((vip, port), timeout=BUDGET) as conn:
            stage = "answer"
            conn.settimeout(max(0.01, BUDGET - (time.time() - sent)))
            conn.sendall(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")
            data = b""
            while len(data) < 4096:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            body = data.split(b"\r\n\r\n", 1)
            if data.startswith(b"HTTP/1.") and b" 200 " in data[:16] and len(body) == 2:
                who = body[1].decode(errors="replace").strip() or "-"
            else:
                why = "bad answer: %r" % data[:40]
    except OSError as e:
        why = "%s (%s)" % (type(e).__name__, stage) + (": " + e.strerror if getattr(e, "strerror", None) else "")
    answered = time.time()
    with lock:
        sys.stdout.write("%d %d %s\n" % (sent * 1000, answered * 1000, who))
        sys.stdout.flush()
        if who == "-":
            sys.stderr.write("%d %s after %d ms\n" % (sent * 1000, why, (answered - sent) * 1000))
            sys.stderr.flush()


def main():
    vip = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 80
    interval = (int(sys.argv[3]) if len(sys.argv) > 3 else 10) / 1000.0
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else 600.0
    lock = threading.Lock()
    start = time.monotonic()
    tick = start
    while time.monotonic() - start < seconds:
        if threading.active_count() < 101:
            threading.Thread(target=probe, args=(vip, port, lock), daemon=True).start()
        tick += interval
        time.sleep(max(0.0, tick - time.monotonic()))


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        pass
