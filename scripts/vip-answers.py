#!/usr/bin/env python3
"""Who still answers for a VIP, as a neighbour on its LAN sees it (issue 14 item 9): every
INTERVAL ms, an ARP who-has for the VIP (broadcast) and a TCP SYN to VIP:PORT sent to
one host's MAC address, whatever the neighbour tables say. Every frame that host sends
*as the VIP* is an answer: an ARP reply whose sender is the VIP, or an IPv4 packet whose
source is the VIP (a SYN-ACK, or a RST when nothing listens). A host without the address
sends neither: it does not answer ARP for it, and a gateway that forwards the SYN
forwards it with the client's source, not the VIP's.

Usage (inside the client's namespace, as root):
  vip-answers.py IFACE CLIENT_IP VIP TARGET_MAC[,MAC...] [PORT] [INTERVAL_MS] [SECONDS]
The SYN goes to the first MAC; an answer from any of them counts (a host answers ARP
for a local address on each of its interfaces on the segment). Prints JSON lines:
{"event": "ready"} once the socket is bound, then {"event": "answer", "kind": "arp" or
"tcp", "unix_ms": N} per answer, N the kernel's receive time of the frame
(SO_TIMESTAMPNS, so a loaded probe never stamps an answer late). Bounded: it stops after SECONDS (default 60), and sends at most one
ARP request and one SYN per interval.
"""
import json
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


def mac_bytes(text):
    return bytes(int(part, 16) for part in text.split(":"))


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def arp_request(my_mac, my_ip, vip):
    eth = b"\xff" * 6 + my_mac + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, ETH_P_IP, 6, 4, 1) + my_mac + my_ip + b"\0" * 6 + vip
    return eth + arp


def syn(my_mac, target_mac, my_ip, vip, sport, port, seq):
    tcp = struct.pack("!HHIIBBHHH", sport, port, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = my_ip + vip + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), seq & 0xFFFF, 0, 64, 6, 0, my_ip, vip)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return target_mac + my_mac + struct.pack("!H", ETH_P_IP) + ip + tcp


def answer_kind(frame, target_macs, vip):
    """'arp' or 'tcp' if `frame` is the target answering as the VIP, else None."""
    if len(frame) < 14 or frame[6:12] not in target_macs:
        return None
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype == ETH_P_ARP and len(frame) >= 42:
        op = struct.unpack("!H", frame[20:22])[0]
        if op == 2 and frame[28:32] == vip:
            return "arp"
    if ethertype == ETH_P_IP and len(frame) >= 34 and frame[26:30] == vip:
        return "tcp"
    return None


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    iface, my_ip, vip, target = sys.argv[1:5]
    port = int(sys.argv[5]) if len(sys.argv) > 5 else 80
    interval = (int(sys.argv[6]) if len(sys.argv) > 6 else 10) / 1000.0
    seconds = float(sys.argv[7]) if len(sys.argv) > 7 else 60.0
    my_ip, vip = socket.inet_aton(my_ip), socket.inet_aton(vip)
    target_macs = [mac_bytes(m) for m in target.split(",")]
    target_mac = target_macs[0]
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    my_mac = sock.getsockname()[4]
    sock.settimeout(interval / 2)
    print(json.dumps({"event": "ready"}), flush=True)
    end = time.monotonic() + seconds
    next_send, seq = 0.0, 1
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_send:
            sock.send(arp_request(my_mac, my_ip, vip))
            sock.send(syn(my_mac, target_mac, my_ip, vip, 40000 + seq % 20000, port, seq))
            seq += 1
            next_send = now + interval
        try:
            frame, ancillary, _, _ = sock.recvmsg(2048, socket.CMSG_SPACE(16))
        except socket.timeout:
            continue
        kind = answer_kind(frame, target_macs, vip)
        if kind:
            received_ms = int(time.time() * 1000)
            for level, kind_of, data in ancillary:
                if level == socket.SOL_SOCKET and kind_of == SO_TIMESTAMPNS and len(data) >= 16:
                    sec, nsec = struct.unpack("qq", data[:16])
                    received_ms = sec * 1000 + nsec // 1_000_000
            print(json.dumps({"event": "answer", "kind": kind, "unix_ms": received_ms}), flush=True)


if __name__ == "__main__":
    main()
