#!/usr/bin/env python3
"""ICMP echo prober for bench/recovery: run it inside a network namespace
(`ip netns exec NS python3 recovery_probe.py PEER INTERVAL`).

Unlike ping(8), it keeps a fixed schedule whatever happens: iputils ping slows down and does
not advance its sequence number while sends fail (ENOBUFS on a tap without carrier), which
hides exactly the losses a recovery benchmark must count. Every probe is reported:

  S <seq> <send time>                 sent
  E <seq> <send time> <errno>         the send failed (counts as lost)
  R <seq> <send time> <receive time>  its echo reply came back

Times are CLOCK_REALTIME seconds (time.time()), comparable with the caller's clock.
Stops on SIGINT or SIGTERM.
"""

import os
import signal
import socket
import struct
import sys
import threading
import time

ICMP_ECHO, ICMP_ECHOREPLY = 8, 0
MAGIC = b"vdeR"


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def packet(ident, seq, sent):
    payload = MAGIC + struct.pack("!Qd", seq, sent) + b"\0" * 36
    header = struct.pack("!BBHHH", ICMP_ECHO, 0, 0, ident, seq & 0xFFFF)
    csum = checksum(header + payload)
    return struct.pack("!BBHHH", ICMP_ECHO, 0, csum, ident, seq & 0xFFFF) + payload


def main():
    peer, interval = sys.argv[1], float(sys.argv[2])
    ident = os.getpid() & 0xFFFF
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    out_lock = threading.Lock()
    stop = threading.Event()

    def emit(line):
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def on_signal(_signum, _frame):
        stop.set()
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def receive():
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                data, _ = sock.recvfrom(2048)
            except socket.timeout:
                continue
            except OSError:
                continue
            now = time.time()
            ihl = (data[0] & 0x0F) * 4
            icmp = data[ihl:]
            if len(icmp) < 8 + 20:
                continue
            kind, _code, _csum, rid, _rseq = struct.unpack("!BBHHH", icmp[:8])
            if kind != ICMP_ECHOREPLY or rid != ident or icmp[8:12] != MAGIC:
                continue
            seq, sent = struct.unpack("!Qd", icmp[12:28])
            emit(f"R {seq} {sent:.6f} {now:.6f}")

    receiver = threading.Thread(target=receive, daemon=True)
    receiver.start()
    start = time.time()
    seq = 0
    while not stop.is_set():
        seq += 1
        due = start + (seq - 1) * interval
        delay = due - time.time()
        if delay > 0:
            stop.wait(delay)
            if stop.is_set():
                break
        sent = time.time()
        try:
            sock.sendto(packet(ident, seq, sent), (peer, 0))
            emit(f"S {seq} {sent:.6f}")
        except OSError as e:
            emit(f"E {seq} {sent:.6f} {e.errno}")
    # Let replies of the last probes arrive.
    time.sleep(0.3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
