"""The queue in front of a pool whose backends are all at ``max_connections``.

Instead of a 503 at once, a request waits (up to ``queue_timeout``, at most
``queue_size`` of them) for a backend slot. Classes are served highest first, FIFO
within a class. Whoever frees a slot (a response ended, a failed request let its
backend go) dispatches the next waiter at once; the worker's sweeper also looks, for
slots that free otherwise (a backend back to health, a reload). One queue per pool name
lives across reloads, so requests queued before a reload are served after it.

A waiter is any object with ``waiting`` (its entry, or None) and ``from_queue()``,
which tries for a slot again: True when it got one (or is gone), False when it must go
on waiting (then it goes back to the head of its class).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Any, Protocol

from regional_lb.balancing.state import LATENCY_BUCKETS

# Results of a queued request, as counted: served by a backend slot, waited too long,
# left (the client closed), refused at once (the queue was full).
DISPATCHED, TIMEOUT, ABANDONED, FULL = range(4)
RESULTS = ("dispatched", "timeout", "abandoned", "full")


class Waiter(Protocol):
    waiting: list[Any] | None

    def from_queue(self) -> bool: ...


class ClassStats:
    """Per class: the results and the wait before dispatch (a histogram)."""

    __slots__ = ("depth", "results", "wait_buckets", "wait_sum")

    def __init__(self) -> None:
        self.depth = 0
        self.results = [0, 0, 0, 0]
        self.wait_buckets = [0] * len(LATENCY_BUCKETS)
        self.wait_sum = 0.0


class PoolQueue:
    __slots__ = ("capacity", "dead", "lines", "names", "pool", "size", "stats", "timeout")

    def __init__(self, pool: str, names: tuple[str, ...], capacity: int, timeout: float):
        self.pool = pool
        self.names = names
        self.capacity = capacity
        self.timeout = timeout
        self.lines: list[deque[list[Any]]] = [deque() for _ in names]
        self.stats = [ClassStats() for _ in names]
        self.size = 0   # live waiters
        self.dead = 0   # entries of waiters that left, not yet skipped or compacted

    def configure(self, names: tuple[str, ...], capacity: int, timeout: float) -> None:
        """A reload: new bounds apply to new arrivals; waiters keep their place."""
        self.capacity, self.timeout = capacity, timeout
        if names == self.names:
            return
        entries = [entry for line in self.lines for entry in line if entry[0] is not None]
        self.names = names
        self.lines = [deque() for _ in names]
        self.stats = [ClassStats() for _ in names]
        self.dead = 0
        for entry in entries:
            entry[2] = min(entry[2], len(names) - 1)
            self.lines[entry[2]].append(entry)
            self.stats[entry[2]].depth += 1

    # -- entering and leaving ---------------------------------------------------------------
    def push(self, waiter: Waiter, rank: int, now: float) -> bool:
        """Queue a waiter of class ``rank``; False (counted) when the queue is full."""
        if self.size >= self.capacity:
            self.stats[rank].results[FULL] += 1
            return False
        entry = [waiter, now, rank]
        waiter.waiting = entry
        self.lines[rank].append(entry)
        self.size += 1
        self.stats[rank].depth += 1
        return True

    def leave(self, waiter: Waiter, result: int) -> None:
        """A waiter goes without a slot (timed out, or its client closed)."""
        entry = waiter.waiting
        if entry is None:
            return
        waiter.waiting = None
        entry[0] = None
        rank = entry[2]
        self.size -= 1
        self.dead += 1
        stats = self.stats[rank]
        stats.depth -= 1
        stats.results[result] += 1
        if self.dead > 64 and self.dead > self.size:
            self._compact()

    def _compact(self) -> None:
        """Drop the entries of waiters that left: memory stays bounded by the live ones."""
        for index, line in enumerate(self.lines):
            self.lines[index] = deque(entry for entry in line if entry[0] is not None)
        self.dead = 0

    # -- dispatch ---------------------------------------------------------------------------
    def dispatch(self, now: float) -> bool:
        """Give a freed slot to the first waiter, highest class first: True when one
        took it (False: none waiting, or the first could still not get a slot)."""
        while self.size:
            entry = self._first()
            waiter, since, rank = entry
            waiter.waiting = None
            self.size -= 1
            stats = self.stats[rank]
            stats.depth -= 1
            if not waiter.from_queue():
                waiter.waiting = entry  # still no slot: back at the head of its class
                self.lines[rank].appendleft(entry)
                self.size += 1
                stats.depth += 1
                return False
            waited = now - since
            stats.results[DISPATCHED] += 1
            stats.wait_sum += waited
            stats.wait_buckets[bisect_left(LATENCY_BUCKETS, waited)] += 1
            return True
        return False

    def _first(self) -> list[Any]:
        for line in self.lines:
            while line:
                entry = line.popleft()
                if entry[0] is not None:
                    return entry
                self.dead -= 1
        raise AssertionError("queue size and entries disagree")

    def pump(self, now: float) -> None:
        """Dispatch while slots are free (the sweeper's look)."""
        while self.size and self.dispatch(now):
            pass
