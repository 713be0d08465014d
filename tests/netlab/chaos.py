#!/usr/bin/env python3
"""A bad home link in userspace: forwards IP packets between two TUN devices
(each in its own network namespace) and drops, delays, reorders and
rate-limits them on the way.

The kernel here has no netem qdisc, so the lab's home links are TUN pairs
made by lab.sh (`ip tuntap add ... mode tun`, persistent) with this program
attached to both ends. It may be stopped and started again with other
settings; the devices, addresses and routes stay.

    chaos.py --a NS:DEV --b NS:DEV [--loss 0.05] [--delay-ms 100]
             [--jitter-ms 30] [--rate-a-to-b BPS] [--rate-b-to-a BPS]
             [--queue-ms 500] [--seed N]

Rates are in bits per second (0: unlimited). A packet that would wait more
than --queue-ms behind the rate limit is dropped, as a router's full buffer
drops it. Jitter is uniform in +/- jitter-ms, so packets overtake each other
(reordering). Counters are printed on SIGTERM/SIGINT and every --report-s.
"""

import argparse
import ctypes
import errno
import fcntl
import heapq
import os
import random
import select
import signal
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000

libc = ctypes.CDLL("libc.so.6", use_errno=True)


def enter_netns(name):
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns into netns {name}: {os.strerror(e)}")
    finally:
        os.close(fd)


def open_tun(spec):
    """Attaches to the persistent TUN device DEV in namespace NS."""
    ns, dev = spec.split(":", 1)
    enter_netns(ns)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    ifr = struct.pack("16sH22x", dev.encode(), IFF_TUN | IFF_NO_PI)
    try:
        fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as e:
        sys.exit(f"chaos: cannot attach to TUN {dev} in netns {ns}: {e}; run lab.sh up first")
    return fd


class Direction:
    def __init__(self, name, out_fd, rate_bps, args, rng):
        self.name = name
        self.out_fd = out_fd
        self.rate = rate_bps
        self.args = args
        self.rng = rng
        self.link_free_at = 0.0
        self.sent = self.lost = self.overflow = self.bytes = 0

    def schedule(self, pkt, now, heap, seq):
        """Returns the time pkt leaves the link, or None if it is dropped."""
        a = self.args
        if a.loss > 0 and self.rng.random() < a.loss:
            self.lost += 1
            return None
        start = now
        if self.rate > 0:
            start = max(now, self.link_free_at)
            if start - now > a.queue_ms / 1000.0:
                self.overflow += 1
                return None
            self.link_free_at = start + len(pkt) * 8.0 / self.rate
            start = self.link_free_at
        delay = a.delay_ms
        if a.jitter_ms > 0:
            delay += self.rng.uniform(-a.jitter_ms, a.jitter_ms)
        heapq.heappush(heap, (start + max(delay, 0.0) / 1000.0, seq, self, pkt))
        return True

    def report(self):
        return (f"{self.name}: sent {self.sent} ({self.bytes} bytes), lost {self.lost}, "
                f"dropped at a full queue {self.overflow}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", required=True, help="NS:DEV of one end")
    p.add_argument("--b", required=True, help="NS:DEV of the other end")
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--delay-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--rate-a-to-b", type=float, default=0.0, help="bits/s, 0 = unlimited")
    p.add_argument("--rate-b-to-a", type=float, default=0.0, help="bits/s, 0 = unlimited")
    p.add_argument("--queue-ms", type=float, default=500.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--report-s", type=float, default=0.0)
    args = p.parse_args()
    if not 0.0 <= args.loss < 1.0:
        sys.exit("chaos: --loss must be in [0, 1)")

    fa = open_tun(args.a)
    fb = open_tun(args.b)
    rng = random.Random(args.seed)
    a_to_b = Direction(f"{args.a} -> {args.b}", fb, args.rate_a_to_b, args, rng)
    b_to_a = Direction(f"{args.b} -> {args.a}", fa, args.rate_b_to_a, args, rng)
    by_fd = {fa: a_to_b, fb: b_to_a}

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    print("chaos: ready", flush=True)

    heap = []
    seq = 0
    next_report = time.monotonic() + args.report_s if args.report_s > 0 else None
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    while not stop:
        now = time.monotonic()
        while heap and heap[0][0] <= now:
            _, _, d, pkt = heapq.heappop(heap)
            try:
                os.write(d.out_fd, pkt)
                d.sent += 1
                d.bytes += len(pkt)
            except OSError as e:
                # No reader on the far device yet (EIO) or a full queue: lost.
                if e.errno not in (errno.EIO, errno.EAGAIN, errno.ENOBUFS):
                    raise
                d.lost += 1
        if next_report is not None and now >= next_report:
            print("chaos: " + "; ".join(d.report() for d in by_fd.values()), flush=True)
            next_report = now + args.report_s
        timeout_ms = 200
        if heap:
            timeout_ms = max(0, min(timeout_ms, int((heap[0][0] - now) * 1000) + 1))
        try:
            ready = poller.poll(timeout_ms)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd, _ in ready:
            d = by_fd[fd]
            for _ in range(256):
                try:
                    pkt = os.read(fd, 65536)
                except BlockingIOError:
                    break
                seq += 1
                d.schedule(pkt, now, heap, seq)
    print("chaos: " + "; ".join(d.report() for d in by_fd.values()), flush=True)


if __name__ == "__main__":
    main()
