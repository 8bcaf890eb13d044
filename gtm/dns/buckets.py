"""Steered answers for EDNS Client Subnet queries, cached per client location bucket.

A resolver forwarding many clients sends each client's /24 (or /56): the packets
differ only in the ECS address, so a cache keyed on whole packets misses for every
new client. But a steered answer holds for every address inside its ECS scope
(the geo database network, narrowed by CIDR rules), so it is cached under
(the packet without its ID and ECS address, the address cut to that scope).

The reply to a query whose only EDNS option is ECS ends with the ECS address echoed,
so a cached reply is stored without its ID and that address, and a hit is
``ID + stored + the query's own address bytes``: no parsing, no rendering.
Queries of any other shape (several options, a TSIG, ...) take the full path.
"""

from __future__ import annotations

from gtm.dns.cache import DEFAULT_CACHE_BYTES, REPLY_OVERHEAD, TRIM_TO
from gtm.dns.stats import Tally
from gtm.dns.wire import OPTION_ECS, plain_opt

_ECS_CODE = OPTION_ECS.to_bytes(2, "big")
# Estimated bytes beyond the replies' own: a bucket (its _Replies, the bodies' tuple,
# the int key and the table slot), and a question's _Entry with its key.
BUCKET_OVERHEAD = 256
ENTRY_OVERHEAD = 512


def ecs_shape(data: bytes) -> tuple[int, int, int] | None:
    """(offset of the ECS address, address width, address as int) for a plain query
    whose one EDNS option is a valid ECS; None for anything else."""
    if len(data) < 12 or data[2] & 0xF8:
        return None
    opt = plain_opt(data)
    if opt is None:
        return None
    try:
        option = opt + 11
        rdlength = (data[opt + 9] << 8) | data[opt + 10]
        option_length = (data[option + 2] << 8) | data[option + 3]
    except IndexError:
        return None
    if option + rdlength != len(data) or data[option : option + 2] != _ECS_CODE:
        return None
    return _address(data, option, rdlength, option_length)


def _address(data: bytes, option: int, rdlength: int, option_length: int) -> tuple[
    int, int, int] | None:
    if option_length + 4 != rdlength or option_length < 4:
        return None
    family = (data[option + 4] << 8) | data[option + 5]
    source, scope = data[option + 6], data[option + 7]
    width = 32 if family == 1 else 128 if family == 2 else 0
    octets = option_length - 4
    if not width or scope or not 0 < source <= width or octets != (source + 7) // 8:
        return None
    if source % 8 and data[-1] & (0xFF >> (source % 8)):
        return None  # bits past the prefix: FORMERR, which the full path gives
    start = option + 8
    return start, width, int.from_bytes(data[start:], "big") << (width - 8 * octets)


class _Entry:
    """One question's buckets: for each scope length seen, bucket -> rotation."""

    __slots__ = ("by_scope",)

    def __init__(self) -> None:
        self.by_scope: list[tuple[int, dict[int, _Replies]]] = []

    def table(self, scope: int) -> dict[int, _Replies]:
        for known, table in self.by_scope:
            if known == scope:
                return table
        table = {}
        self.by_scope.append((scope, table))
        self.by_scope.sort(key=lambda item: -item[0])  # most specific first
        return table


class _Replies:
    __slots__ = ("bodies", "tallies", "turn")

    def __init__(self, bodies: tuple[bytes, ...], turn: int, tallies: tuple[Tally, ...] | None):
        self.bodies = bodies
        self.turn = turn % len(bodies)
        self.tallies = tallies  # the traffic split, as gtm.dns.engine.Rotation counts it

    def next(self) -> bytes:
        turn = self.turn
        self.turn = (turn + 1) % len(self.bodies)
        if self.tallies is not None:
            self.tallies[turn].count += 1
        return self.bodies[turn]


class LocationBuckets:
    """Per question, per ECS scope, per address bucket: the steered replies.

    Bounded by buckets (``limit``) and by estimated bytes (``max_bytes``); when full,
    the oldest buckets go a slice at a time (gtm.dns.cache.TRIM_TO): those of the
    question first cached, in the order they were stored.
    """

    def __init__(self, limit: int, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.limit = limit
        self.max_bytes = max_bytes
        self.entries: dict[bytes, _Entry] = {}
        self.size = 0  # buckets held
        self.used = 0  # estimated bytes held

    def clear(self) -> None:
        self.entries.clear()
        self.size = 0
        self.used = 0

    def lookup(self, data: bytes) -> bytes | None:
        entries = self.entries
        if not entries:
            return None
        shape = ecs_shape(data)
        if shape is None:
            return None
        start, width, address = shape
        entry = entries.get(data[2:start])
        if entry is None:
            return None
        for scope, table in entry.by_scope:
            replies = table.get(address >> (width - scope))
            if replies is not None:
                return data[:2] + replies.next() + data[start:]
        return None

    def store(self, data: bytes, scope: int, replies: tuple[bytes, ...], turn: int,
              tallies: tuple[Tally, ...] | None = None) -> bool:
        """Keep replies (each without its 2-byte ID) for the bucket of this query.

        Returns False, storing nothing, when the query or the replies do not have the
        shape a bucket needs."""
        shape = ecs_shape(data)
        if shape is None or self.limit <= 0:
            return False
        start, width, address = shape
        tail = data[start:]
        if not all(reply.endswith(tail) for reply in replies):
            return False
        bodies = tuple(reply[: len(reply) - len(tail)] for reply in replies)
        question = data[2:start]
        size = _bucket_size(bodies)
        entry_size = len(question) + ENTRY_OVERHEAD  # when the question is new
        if size + entry_size > self.max_bytes:
            return False
        if self.size >= self.limit or self.used + size + entry_size > self.max_bytes:
            self._trim(size + entry_size)
        entry = self.entries.get(question)
        if entry is None:
            entry = self.entries[question] = _Entry()
            size += entry_size
        table = entry.table(scope)
        bucket = address >> (width - scope)
        old = table.get(bucket)
        if old is not None:
            self.size -= 1
            self.used -= _bucket_size(old.bodies)
        table[bucket] = _Replies(bodies, turn, tallies)
        self.size += 1
        self.used += size
        return True

    def _trim(self, room: int) -> None:
        """Drop the oldest buckets until at TRIM_TO of both limits, room bytes to spare."""
        keep_size = int(self.limit * TRIM_TO)
        keep_bytes = int(self.max_bytes * TRIM_TO) - room
        for question in list(self.entries):
            if self.size <= keep_size and self.used <= keep_bytes:
                return
            entry = self.entries[question]
            for _scope, table in entry.by_scope:
                victims = []
                for bucket, replies in table.items():
                    if self.size <= keep_size and self.used <= keep_bytes:
                        break
                    victims.append(bucket)
                    self.size -= 1
                    self.used -= _bucket_size(replies.bodies)
                for bucket in victims:
                    del table[bucket]
            entry.by_scope = [(scope, table) for scope, table in entry.by_scope if table]
            if not entry.by_scope:
                del self.entries[question]
                self.used -= len(question) + ENTRY_OVERHEAD


def _bucket_size(bodies: tuple[bytes, ...]) -> int:
    return BUCKET_OVERHEAD + sum(len(body) + REPLY_OVERHEAD for body in bodies)
