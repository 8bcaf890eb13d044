"""Response caches bounded by entries and by an estimate of their memory.

The caches stay plain dicts, because every transport's fast path reads them directly
(one ``dict.get`` per packet). What they hold is tracked beside them in a
:class:`Budget`: the estimated bytes, from the lengths of keys and values plus a fixed
overhead per entry (the Python objects and the dict slot, measured in
tests/unit/test_dns_cache.py, where the estimate is checked to cover what is really
allocated). When a new entry would go over either limit, the oldest entries go, a slice
at a time (down to seven eighths of the limits), so a flood of distinct questions costs
amortised O(1) per entry and never empties the whole cache at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

# bytes objects for key and value (33 bytes each beyond their length) and the dict's
# entry and index, with the headroom a dict keeps between resizes.
STATIC_ENTRY_OVERHEAD = 192
# A steered entry: the key tuple, the peer's text, the Rotation and its tuples.
ROTATION_OVERHEAD = 384
# Each pre-rendered reply: a bytes object (33 + its length, rounded up) and a tuple slot.
REPLY_OVERHEAD = 64
DEFAULT_CACHE_BYTES = 16 << 20
TRIM_TO = 7 / 8  # a trim leaves this share of each limit used


class Budget:
    """The limits of one cache and its estimated size (its entry count is len(cache))."""

    __slots__ = ("max_bytes", "max_entries", "used")

    def __init__(self, max_entries: int, max_bytes: int):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.used = 0  # estimated bytes held


def static_size(key: bytes, value: bytes) -> int:
    return len(key) + len(value) + STATIC_ENTRY_OVERHEAD


def put(cache: dict[K, V], key: K, value: V, budget: Budget,
        size_of: Callable[[K, V], int]) -> None:
    """Store value under key, first evicting the oldest entries if it would not fit."""
    size = size_of(key, value)
    if budget.max_entries <= 0 or size > budget.max_bytes:
        return
    old = cache.get(key)
    if old is not None:
        budget.used -= size_of(key, old)
    elif len(cache) >= budget.max_entries or budget.used + size > budget.max_bytes:
        trim(cache, budget, size_of, size)
    cache[key] = value
    budget.used += size


def trim(cache: dict[K, V], budget: Budget, size_of: Callable[[K, V], int],
         room: int = 0) -> None:
    """Drop the oldest entries (dicts keep insertion order) until the cache is at
    TRIM_TO of its limits with room bytes to spare."""
    keep_entries = int(budget.max_entries * TRIM_TO)
    keep_bytes = int(budget.max_bytes * TRIM_TO) - room
    count, used = len(cache), budget.used
    victims = []
    for key, value in cache.items():
        if count <= keep_entries and used <= keep_bytes:
            break
        victims.append(key)
        count -= 1
        used -= size_of(key, value)
    for key in victims:
        del cache[key]
    budget.used = used


def clear(cache: dict[K, V], budget: Budget) -> None:
    cache.clear()
    budget.used = 0
