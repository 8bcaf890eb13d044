"""The hook for what is not a plain query: zone transfers and dynamic updates.

The transports hand a message to the engine's ``operations`` (when one is set) instead
of answering it when :func:`is_operation` says so: an UPDATE (RFC 2136) over UDP or TCP,
an AXFR or IXFR query over TCP. The work (TSIG, access rules, the control plane) lives
above this package (gtm.control.zoneops) and answers when it is done; plain queries never
come here, and the check costs a byte test on a cache miss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

OPCODE_UPDATE = 5
AXFR = 252
IXFR = 251


class Channel(Protocol):
    """A TCP conversation, seen by an operation answering on it."""

    def send(self, message: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...


class Operations(Protocol):
    def datagram(self, data: bytes, peer: tuple[str, int],
                 send: Callable[[bytes, tuple[str, int]], None]) -> None: ...

    async def stream(self, data: bytes, peer: str | None, channel: Channel) -> None: ...


def is_operation(data: bytes, tcp: bool) -> bool:
    """An UPDATE, or over TCP a query for AXFR or IXFR (a transfer needs a stream)."""
    if len(data) < 12:
        return False
    opcode = (data[2] >> 3) & 0xF
    if opcode == OPCODE_UPDATE:
        return True
    if not tcp or opcode != 0 or data[2] & 0x80 or data[4:6] != b"\x00\x01":
        return False
    end = _name_end(data, 12)
    if end is None or end + 2 > len(data):
        return False
    return int.from_bytes(data[end:end + 2], "big") in (AXFR, IXFR)


def _name_end(data: bytes, at: int) -> int | None:
    while at < len(data):
        length = data[at]
        if length == 0:
            return at + 1
        if length & 0xC0:
            return None  # a question name is never compressed
        at += 1 + length
    return None
