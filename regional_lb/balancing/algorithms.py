"""The balancing algorithms. Each is ``(pool, key, now, exclude) -> BackendState | None``.

No I/O; the only effects are on the cursors and weights kept in the pool state passed
in (round-robin position, smooth-WRR current weights, the seeded random generator).
``exclude`` holds backends already tried for this request (retries go elsewhere).
None means no backend is available: the proxy answers 503.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from regional_lb.balancing.maglev import key_hash

if TYPE_CHECKING:  # the state module looks pickers up here when it compiles a pool
    from regional_lb.balancing.state import BackendState, PoolState

Picker = Callable[["PoolState", bytes, float, Collection["BackendState"]], "BackendState | None"]


def _candidates(pool: PoolState, exclude: Collection[BackendState]) -> list[BackendState]:
    return [b for b in pool.backends if b.available and b not in exclude]


def round_robin(pool: PoolState, key: bytes, now: float,
                exclude: Collection[BackendState]) -> BackendState | None:
    backends = pool.backends
    count = len(backends)
    cursor = pool.cursor
    for step in range(count):
        backend = backends[(cursor + step) % count]
        if backend.up and backend.active < backend.max_connections and backend not in exclude:
            pool.cursor = (cursor + step + 1) % count
            return backend
    return None


def weighted_round_robin(pool: PoolState, key: bytes, now: float,
                         exclude: Collection[BackendState]) -> BackendState | None:
    """Smooth weighted round robin (nginx): even spreading, e.g. a a b a c a a for 5:1:1."""
    best, best_index, total = None, -1, 0.0
    current = pool.wrr
    for index, backend in enumerate(pool.backends):
        if not backend.available or backend in exclude:
            continue
        weight = backend.effective_weight(now, pool.slow_start)
        current[index] += weight
        total += weight
        if best is None or current[index] > current[best_index]:
            best, best_index = backend, index
    if best is not None:
        current[best_index] -= total
    return best


def _load(backend: BackendState, now: float, pool: PoolState) -> float:
    return (backend.active + 1) / backend.effective_weight(now, pool.slow_start)


def least_connections(pool: PoolState, key: bytes, now: float,
                      exclude: Collection[BackendState]) -> BackendState | None:
    """Fewest in flight per unit of weight; ties rotate so equal backends share evenly."""
    backends = pool.backends
    count = len(backends)
    best, best_load = None, 0.0
    for step in range(count):
        backend = backends[(pool.cursor + step) % count]
        if not backend.available or backend in exclude:
            continue
        load = _load(backend, now, pool)
        if best is None or load < best_load:
            best, best_load = backend, load
    pool.cursor = (pool.cursor + 1) % max(count, 1)
    return best


def _two_choices(pool: PoolState, exclude: Collection[BackendState],
                 cost: Callable[[BackendState], float]) -> BackendState | None:
    candidates = _candidates(pool, exclude)
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    first, second = pool.rng.sample(candidates, 2)
    return first if cost(first) <= cost(second) else second


def least_request(pool: PoolState, key: bytes, now: float,
                  exclude: Collection[BackendState]) -> BackendState | None:
    """Power of two choices: the less loaded of two backends drawn at random."""
    return _two_choices(pool, exclude, lambda b: _load(b, now, pool))


def peak_ewma(pool: PoolState, key: bytes, now: float,
              exclude: Collection[BackendState]) -> BackendState | None:
    """Two choices on peak-EWMA response time times load (Finagle, Linkerd)."""
    def cost(backend: BackendState) -> float:
        return (backend.ewma + 1e-6) * _load(backend, now, pool)

    return _two_choices(pool, exclude, cost)


def consistent_hash(pool: PoolState, key: bytes, now: float,
                    exclude: Collection[BackendState]) -> BackendState | None:
    """Maglev: the key's table entry, or the next entries' owners when that one is out."""
    table = pool.table
    if not table:
        return None
    size = len(table)
    slot = key_hash(key) % size
    backends = pool.backends
    for step in range(min(size, 64 * len(backends) + 1)):
        backend = backends[table[(slot + step) % size]]
        if backend.available and backend not in exclude:
            return backend
    return None


def random_choice(pool: PoolState, key: bytes, now: float,
                  exclude: Collection[BackendState]) -> BackendState | None:
    candidates = _candidates(pool, exclude)
    return pool.rng.choice(candidates) if candidates else None


PICKERS: dict[str, Picker] = {
    "round_robin": round_robin,
    "weighted_round_robin": weighted_round_robin,
    "least_connections": least_connections,
    "least_request": least_request,
    "peak_ewma": peak_ewma,
    "consistent_hash": consistent_hash,
    "random": random_choice,
}


def pick(pool: PoolState, key: bytes = b"", now: float = 0.0,
         exclude: Collection[BackendState] = ()) -> BackendState | None:
    """The backend for one request (or connection) of this pool, or None when none is up."""
    return pool.picker(pool, key, now, exclude)
