"""Per-client state shared by the workers of one balancer, in fixed-size shared memory.

Two tables, made once before the workers fork (``gtm lb serve``) and inherited by
every worker, a restarted one too (anonymous ``MAP_SHARED`` memory):

:class:`RateTable` -- token buckets as GCRA (the generic cell rate algorithm, a token
bucket that keeps one number per key: the *theoretical arrival time*, TAT). A bucket is
8 bytes of key hash and 8 bytes of TAT. Every update is one aligned 8-byte store, which
the CPU never tears, so a reader in another worker sees an old TAT or a new one, never
half of each. Two workers updating the same key in the same microsecond can both read
the old TAT; one of the two tokens is then not charged. No lock: each such race lets
one request more through, and it needs two requests of one key in two workers within
the ~1 us between the read and the write. Buckets are found in a set of ``RATE_WAYS``
slots; a new key takes an empty slot, else one whose TAT has passed (a full bucket: the
same as a new one, so nothing is lost), else the one with the earliest TAT (the bucket
closest to full). A flood of new keys therefore evicts the keys that sent least and
keeps the ones deep in debt; an evicted key starts again with a full bucket (at most
``burst`` requests more for it).

:class:`CountTable` -- open connections and requests in flight per key. Counts must
never drift (a count that only grows would lock a client out for good), so each worker
writes only its own column: a key's slot has one counter per worker, the total is their
sum, and a connection decrements exactly the cell it incremented. A worker that
crashed leaves its column behind: the worker started in its place zeroes it first. A
slot is reused only when every column of it is 0; with none free in a key's set of
``COUNT_WAYS``, the key is not counted (``full`` counts those): the caps are about
fairness, while the workers' own ``max_client_connections`` still bounds everything.
Two workers may both see a total one below the cap and both admit: the cap can be
exceeded by at most workers - 1.

Keys are Python's ``hash()`` of the key bytes: random per balancer start (so clients
cannot aim at one set) and the same in every worker, which fork from one process.
"""

from __future__ import annotations

import mmap

RATE_WAYS = 8
COUNT_WAYS = 16
EMPTY = 0


def _key(h: int) -> int:
    return h or 1  # 0 marks an empty slot


class RateTable:
    """GCRA buckets: ``take`` charges one request to a key."""

    def __init__(self, slots: int):
        self.slots = slots
        self.memory = mmap.mmap(-1, slots * 16)  # anonymous, MAP_SHARED: forks share it
        self.keys = memoryview(self.memory)[: slots * 8].cast("q")
        self.tats = memoryview(self.memory)[slots * 8 :].cast("d")
        self.mask = slots - 1
        self.evictions = 0  # buckets still in debt given to another key (this worker)

    def take(self, h: int, now: float, interval: float, tolerance: float) -> float:
        """0.0 when the request conforms (and is charged), else seconds until one would.

        ``interval`` is 1/rate, ``tolerance`` (burst - 1) * interval.
        """
        h = h or 1  # 0 marks an empty slot
        index = h & self.mask
        if self.keys[index] != h:
            index = self._slot(h, index, now)
        tats = self.tats
        tat = tats[index]
        if tat < now:
            tat = now
        if tat - now > tolerance:
            return tat - now - tolerance
        tats[index] = tat + interval
        return 0.0

    def _slot(self, h: int, index: int, now: float) -> int:
        """The key's slot in its set, found or taken (see the module docstring)."""
        keys, tats = self.keys, self.tats
        start = index & ~(RATE_WAYS - 1)
        victim, earliest = start, float("inf")
        for slot in range(start, start + RATE_WAYS):
            key = keys[slot]
            if key == h:
                return slot
            tat = tats[slot] if key != EMPTY else -1.0
            if tat < earliest:
                victim, earliest = slot, tat
        if earliest > now:
            self.evictions += 1
        keys[victim] = h
        tats[victim] = 0.0
        return victim

    def used(self) -> int:
        """Slots holding a key (for tests and the curious; walks the table)."""
        return sum(1 for key in self.keys if key != EMPTY)


class CountTable:
    """Connections and requests in flight per key, one column per worker."""

    def __init__(self, slots: int, workers: int):
        self.slots, self.workers = slots, workers
        cells = slots * workers
        self.memory = mmap.mmap(-1, slots * 8 + cells * 8)
        view = memoryview(self.memory)
        self.keys = view[: slots * 8].cast("q")
        self.connections = view[slots * 8 : slots * 8 + cells * 4].cast("i")
        self.requests = view[slots * 8 + cells * 4 :].cast("i")
        self.mask = slots - 1
        self.full = 0  # keys not counted: every slot of their set was in use (this worker)

    def clear_column(self, column: int) -> None:
        """Forget what a previous worker of this index held (it is gone)."""
        zeros = memoryview(bytes(self.slots * 4)).cast("i")  # one store per array
        self.connections[column :: self.workers] = zeros
        self.requests[column :: self.workers] = zeros

    def acquire(self, counts: memoryview, h: int, column: int, cap: int) -> int:
        """Count one more for the key: its cell + 1, 0 when not counted, -1 at the cap."""
        h = _key(h)
        index = h & self.mask
        if self.keys[index] != h:
            index = self._slot(h, index)
            if index < 0:
                self.full += 1
                return 0
        workers = self.workers
        base = index * workers
        total = counts[base] if workers == 1 else sum(counts[base : base + workers])
        if total >= cap:
            return -1
        counts[base + column] += 1
        return base + column + 1

    @staticmethod
    def release(counts: memoryview, cell: int) -> None:
        counts[cell - 1] -= 1

    def _slot(self, h: int, index: int) -> int:
        keys, workers = self.keys, self.workers
        start = index & ~(COUNT_WAYS - 1)
        free = -1
        for slot in range(start, start + COUNT_WAYS):
            key = keys[slot]
            if key == h:
                return slot
            if free < 0 and (key == EMPTY or self._unused(slot * workers)):
                free = slot
        if free >= 0:
            keys[free] = h
        return free

    def _unused(self, base: int) -> bool:
        end = base + self.workers
        return not any(self.connections[base:end]) and not any(self.requests[base:end])

    def total(self, counts: memoryview, h: int) -> int:
        """Every worker's count for a key (0 when it has no slot)."""
        h = _key(h)
        start = (h & self.mask) & ~(COUNT_WAYS - 1)
        for slot in range(start, start + COUNT_WAYS):
            if self.keys[slot] == h:
                base = slot * self.workers
                return sum(counts[base : base + self.workers])
        return 0


class ClientTables:
    """Both tables of one balancer; ``slots`` is rounded up to a power of two."""

    def __init__(self, slots: int, workers: int = 1):
        size = 1 << max(6, (slots - 1).bit_length())
        self.rate = RateTable(size)
        self.counts = CountTable(size, workers)
        self.workers = workers
