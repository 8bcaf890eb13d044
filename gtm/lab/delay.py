"""A region's delay line: a userspace relay of IP packets, since the kernel has no netem.

The core namespace routes every packet into or out of a region through the region's
TUN device; the delay line reads each one, holds it for half the path's round-trip
latency and writes it back, when the kernel routes it on. Working on packets rather
than connections, it delays TCP handshakes and UDP datagrams alike, keeps the
clients' addresses, and drops a configured share of the packets, TCP and UDP alike, as
a lossy path does: a lost UDP datagram is a lost DNS answer or probe, a lost TCP
segment a retransmission (a lost SYN: a connection a second late or timed out), which
is what health checks and clients see on such a path.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import struct
from dataclasses import dataclass, field

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
MAX_PACKET = 65535
MAX_IN_FLIGHT = 20000  # packets held at once; beyond it the path drops (a full queue)


def open_tun(name: str) -> int:
    """Create (or attach to) a TUN device in the calling thread's network namespace."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


@dataclass
class PathSettings:
    """What a region's path does: per peer address the round-trip milliseconds (from
    distance), an override for all peers when set, and the share of packets lost."""

    defaults: dict[bytes, float]
    base_ms: float
    override_ms: float | None = None
    loss: float = 0.0

    def round_trip_ms(self, peer: bytes) -> float:
        if self.override_ms is not None:
            return self.override_ms
        return self.defaults.get(peer, self.base_ms)


@dataclass
class Counters:
    forwarded: int = 0
    dropped_loss: int = 0
    dropped_full: int = 0
    write_errors: int = 0
    in_flight: int = field(default=0)


TIMER_SLACK = 0.001  # seconds: see DelayLine._take


class DelayLine:
    """One region's path; ``region_net`` is its /24 (three packed octets)."""

    def __init__(self, region: str, fd: int, region_net: bytes, settings: PathSettings):
        self.region = region
        self.fd = fd
        self.region_net = region_net
        self.settings = settings
        self.counters = Counters()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._random = random.Random()

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._readable)

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
        os.close(self.fd)

    def _readable(self) -> None:
        assert self._loop is not None
        for _ in range(64):  # a burst at a time, then let the loop breathe
            try:
                packet = os.read(self.fd, MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.counters.write_errors += 1
                return
            self._take(packet)

    def _take(self, packet: bytes) -> None:
        assert self._loop is not None
        if len(packet) < 20 or packet[0] >> 4 != 4:
            self.counters.in_flight += 1
            self._loop.call_soon(self._write, packet)  # not IPv4: passed on undelayed
            return
        settings = self.settings
        if settings.loss > 0 and self._random.random() < settings.loss:
            self.counters.dropped_loss += 1
            return
        if self.counters.in_flight >= MAX_IN_FLIGHT:
            self.counters.dropped_full += 1
            return
        destination = packet[16:20]
        peer = packet[12:16] if destination[:3] == self.region_net else destination
        delay = settings.round_trip_ms(peer) / 2000.0  # half the round trip each way
        self.counters.in_flight += 1
        # uvloop's timers count whole milliseconds of a cached clock and can fire up to
        # 1 ms early: a packet must never beat the path's latency, so wait 1 ms longer.
        self._loop.call_later(delay + TIMER_SLACK if delay else 0.0, self._write, packet)

    def _write(self, packet: bytes) -> None:
        self.counters.in_flight = max(0, self.counters.in_flight - 1)
        try:
            os.write(self.fd, packet)
            self.counters.forwarded += 1
        except OSError:
            self.counters.write_errors += 1
