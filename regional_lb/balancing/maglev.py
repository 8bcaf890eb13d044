"""Maglev consistent hashing (Eisenbud et al., NSDI 2016), with weights.

The lookup table maps a key's hash to a backend index. When a backend leaves, only
the keys it held move (plus a small share near 1/M); weights give each backend that
many fill turns per round.
"""

from __future__ import annotations

import hashlib

TABLE_SIZES = (1021, 4093, 16381, 65521)  # primes; at least 100 entries per backend


def key_hash(data: bytes, salt: bytes = b"") -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, key=salt).digest(), "big")


def table_size(backends: int) -> int:
    for size in TABLE_SIZES:
        if size >= 100 * backends:
            return size
    return TABLE_SIZES[-1]


def build_table(backends: list[tuple[str, int]]) -> tuple[int, ...]:
    """Entry -> index into backends; empty when no backend has weight."""
    members = [(i, name.encode(), w) for i, (name, w) in enumerate(backends) if w > 0]
    if not members:
        return ()
    size = table_size(len(members))
    offsets = [key_hash(name, b"offset") % size for _, name, _ in members]
    skips = [key_hash(name, b"skip") % (size - 1) + 1 for _, name, _ in members]
    nexts = [0] * len(members)
    table = [-1] * size
    filled = 0
    while True:
        for m, (index, _name, weight) in enumerate(members):
            for _turn in range(weight):
                slot = (offsets[m] + nexts[m] * skips[m]) % size
                while table[slot] >= 0:
                    nexts[m] += 1
                    slot = (offsets[m] + nexts[m] * skips[m]) % size
                table[slot] = index
                nexts[m] += 1
                filled += 1
                if filled == size:
                    return tuple(table)
