#!/usr/bin/env python3
"""The Vagrant rig's figures of a fault (vagrant/e2e.sh): the outage, from the client
probe's answers (scripts/lab-probe.py), and the two holders, from the split-brain
watcher's lines (scripts/vip-watch.py). Pure: log lines in, figures out; no clock.

Usage:
  e2e-figures.py outage FROM_MS TO_MS <PROBE_LOG       prints "MS BEFORE AFTER"
  e2e-figures.py two-holders FROM_MS TO_MS <WATCH_LOG  prints "COUNT MS"
  e2e-figures.py --self-test

Why this is not the lab's code: the lab e2e suite and the benchmark compute the outage
in Rust (tests/support/outage.rs, `longest_gap`), inside cargo targets. The rig runs
havip from its Debian package on hosts that need no Rust toolchain, and a computation
called from a shell script cannot link a test-support module; a havip subcommand would
ship lab tooling to every gateway. So the rig keeps this one copy, with the same rule and
the same cases in its self-test as outage.rs's tests: change both together.

The two holders are not computed here at all: like the lab (tests/support/watch.rs),
the rig counts the overlaps the watcher itself reports (`overlap-begin`, `overlap`), and
only clips them to a fault's window.
"""
import sys


def longest_gap(answers, start, end):
    """The longest time without an answer over [start, end], counted from the last answer
    strictly before `start` (or from `start` itself when there is none), up to `end` if
    nothing answered after the last answer; as (length, before, after), before/after
    None where nobody answered. `answers` are (ms, who); those after `end` are ignored,
    their order is not assumed. The rule of tests/support/outage.rs `longest_gap`."""
    inside = sorted((a for a in answers if a[0] <= end), key=lambda a: a[0])
    earlier = [a for a in inside if a[0] < start]
    previous, who = (earlier[-1][0], earlier[-1][1]) if earlier else (start, None)
    gap = (0, who, None)
    for when, nxt in (a for a in inside if a[0] >= start):
        if when - previous > gap[0]:
            gap = (when - previous, who, nxt)
        previous, who = when, nxt
    if end - previous > gap[0]:
        gap = (end - previous, who, None)
    return gap


def probe_answers(lines):
    """(answer ms, who) of every answered probe: "SENT_MS ANSWER_MS WHO", WHO "-" for none."""
    answers = []
    for line in lines:
        f = line.split()
        if len(f) == 3 and f[2] != "-":
            answers.append((int(f[1]), f[2]))
    return answers


def two_holders(lines, start, end):
    """The watcher's overlaps that touch [start, end], as (count, ms), ms clipped to the
    window; one the watcher has begun and not ended counts up to `end`. An overlap of
    0 ms is still one."""
    spans = []
    begun = {}
    for line in lines:
        f = line.split()
        if len(f) == 4 and f[0] == "overlap-begin":
            begun[f[1]] = int(f[2])
        elif len(f) == 5 and f[0] == "overlap":
            spans.append((int(f[2]), int(f[3])))
            begun.pop(f[1], None)
    spans.extend((s, end) for s in begun.values())
    count = ms = 0
    for s, e in spans:
        if s > end or e < start:
            continue
        count += 1
        ms += min(e, end) - max(s, start)
    return count, ms


def self_test():
    # outage.rs's cases, verbatim.
    a = [(0, "a"), (10, "a"), (20, "a"), (450, "b"), (460, "b")]
    assert longest_gap(a, 25, 500) == (430, "a", "b")
    a = [(0, "a"), (10, "a"), (300, "b")]
    assert longest_gap(a, 10, 300)[0] == 290
    assert longest_gap(a, 11, 300)[0] == 290
    a = [(0, "a"), (10, "a"), (20, "b")]
    assert longest_gap(a, 5, 900) == (880, "b", None)
    a = [(300, "b"), (310, "b")]
    assert longest_gap(a, 100, 310) == (200, None, "b")
    assert longest_gap([], 100, 150)[0] == 50
    a = [(20, "a"), (0, "a"), (10, "a"), (2000, "b")]
    assert longest_gap(a, 15, 100) == (80, "a", None)
    # The probe's lines: unanswered probes are not answers.
    assert probe_answers(["1 3 gw-a", "2 502 -", "junk"]) == [(3, "gw-a")]
    # The watcher's overlaps: clipped, a 0 ms one counted, an open one up to the end.
    watch = ["ready 1", "hold 5 crm gw-a", "overlap-begin crm 10 gw-a,gw-b",
             "overlap crm 10 10 gw-a,gw-b", "overlap-begin crm2 30 gw-a,gw-b",
             "overlap crm2 30 55 gw-a,gw-b", "overlap-begin crm 90 gw-a,gw-b"]
    assert two_holders(watch, 0, 100) == (3, 0 + 25 + 10)
    assert two_holders(watch, 40, 50) == (1, 10)
    assert two_holders(watch, 56, 89) == (0, 0)
    assert two_holders(watch[:2], 0, 100) == (0, 0)
    print("e2e-figures self-test: ok")


def main(argv):
    if argv[1:] == ["--self-test"]:
        self_test()
        return 0
    if len(argv) != 4 or argv[1] not in ("outage", "two-holders"):
        sys.stderr.write(__doc__)
        return 2
    start, end = int(argv[2]), int(argv[3])
    if argv[1] == "outage":
        length, before, after = longest_gap(probe_answers(sys.stdin), start, end)
        print(length, before or "-", after or "nobody")
    else:
        print(*two_holders(sys.stdin, start, end))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
