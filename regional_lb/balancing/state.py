"""Runtime state the pickers read: backends with their counters, and one pool's cursors.

A :class:`BackendState` is a runtime record that outlives snapshots (a reload keeps
its counters, health, in-flight requests and pooled connections); a :class:`PoolState`
belongs to one snapshot, so its lookup tables (Maglev) are built once, off the hot path,
and never change. Building a pool reads the previous records and changes none: what
the config says of each backend is a frozen :class:`BackendSettings` on the pool, which
:meth:`PoolState.go_live` writes into the records when the snapshot is swapped in.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regional_lb.balancing.maglev import build_table
from regional_lb.config import PoolSpec

if TYPE_CHECKING:
    from regional_lb.outlier import BackendMonitor
    from regional_lb.pool_queue import PoolQueue

SLOW_START_FLOOR = 0.1  # a ramping backend gets at least this share of its weight
EWMA_DECAY = 10.0       # seconds: how fast peak-EWMA forgets a slow response
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, math.inf)


class BackendState:
    """One backend: admin state, health (set by the health checker), counters.

    ``idle`` holds pooled keep-alive connections; the transport owns what is in it.
    """

    __slots__ = (
        "_admin", "_healthy", "_weight", "active", "connections", "ewma", "ewma_stamp",
        "failures", "host", "idle", "key", "latency_buckets", "latency_sum", "max_connections",
        "monitor", "panic", "port", "requests", "responses", "since", "up",
    )

    def __init__(self, host: str, port: int, weight: int = 1, admin: str = "enabled"):
        self.key = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.host = host
        self.port = port
        self._weight = weight
        self._admin = admin
        self._healthy = True
        self.panic = False  # the pool is in panic: balanced over even when not healthy
        self.up = False  # enabled, healthy and weighted: kept current by the setters below
        self._refresh()
        self.since: float | None = None  # start of slow start; None once ramped
        self.max_connections = 10000
        self.active = 0          # requests (L7) or connections (L4) in flight
        self.connections = 0     # open upstream connections, busy or idle
        self.requests = 0
        self.failures = 0        # connect errors, resets, timeouts, bad responses
        self.responses = [0, 0, 0, 0, 0, 0]  # by status class: [0]=none, [1]=1xx ... [5]=5xx
        self.ewma = 0.0
        self.ewma_stamp = 0.0
        self.latency_buckets = [0] * len(LATENCY_BUCKETS)
        self.latency_sum = 0.0
        self.idle: list[object] = []
        # Health checks and passive outlier detection (regional_lb.health); None: neither.
        self.monitor: BackendMonitor | None = None

    def _refresh(self) -> None:
        # The one place panic mode acts: every picker reads ``up`` (or ``available``).
        self.up = self._admin == "enabled" and (self._healthy or self.panic) \
            and self._weight > 0

    def set_panic(self, panic: bool) -> None:
        self.panic = panic
        self._refresh()

    @property
    def admin(self) -> str:
        return self._admin

    @admin.setter
    def admin(self, value: str) -> None:
        self._admin = value
        self._refresh()

    @property
    def healthy(self) -> bool:
        return self._healthy

    @healthy.setter
    def healthy(self, value: bool) -> None:
        self._healthy = value
        self._refresh()

    @property
    def weight(self) -> int:
        return self._weight

    @weight.setter
    def weight(self, value: int) -> None:
        self._weight = value
        self._refresh()

    @property
    def available(self) -> bool:
        return self.up and self.active < self.max_connections

    def effective_weight(self, now: float, slow_start: float) -> float:
        if self.since is None or slow_start <= 0:
            return float(self.weight)
        ramp = (now - self.since) / slow_start
        if ramp >= 1.0:
            self.since = None
            return float(self.weight)
        return self.weight * max(ramp, SLOW_START_FLOOR)

    def observe(self, seconds: float, now: float) -> None:
        """Record a response time: latency histogram and the peak-sensitive EWMA."""
        self.latency_sum += seconds
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.observe_ewma(seconds, now)

    def observe_ewma(self, seconds: float, now: float) -> None:
        if seconds > self.ewma:
            self.ewma = seconds
        else:
            keep = math.exp(-(now - self.ewma_stamp) / EWMA_DECAY)
            self.ewma = self.ewma * keep + seconds * (1.0 - keep)
        self.ewma_stamp = now

    def configure(self, settings: BackendSettings, now: float) -> None:
        """What a config says of this backend, as a snapshot goes live (on the loop)."""
        if settings.ramp:
            self.since = now
        self._admin = settings.admin
        self._weight = settings.weight
        self.max_connections = settings.max_connections
        self._refresh()

    def set_healthy(self, healthy: bool, now: float) -> None:
        """The hook for health checking: a recovered backend ramps up through slow start."""
        if healthy and not self.healthy:
            self.since = now
        self.healthy = healthy


@dataclass(frozen=True, slots=True)
class BackendSettings:
    """A backend as one config has it, applied to its record when that config goes live."""

    admin: str
    weight: int
    max_connections: int
    ramp: bool  # slow start begins: new, or enabled again (not at the first start)


class PoolState:
    """What one pool's picker reads and the cursors it moves."""

    __slots__ = ("algorithm", "backends", "cursor", "hash_key", "hashed", "name", "picker",
                 "queue", "retry_budget", "retry_cap", "retry_tokens", "rng", "settings",
                 "slow_start", "spec", "table", "track_ewma", "wrr")

    def __init__(self, spec: PoolSpec, backends: tuple[BackendState, ...], seed: int | None,
                 settings: tuple[BackendSettings, ...] | None = None):
        if settings is None:  # the records as they are (tests build pools by hand)
            settings = tuple(BackendSettings(b.admin, b.weight, b.max_connections, False)
                             for b in backends)
        self.spec = spec
        self.settings = settings
        self.name = spec.name
        self.algorithm = spec.algorithm
        self.hash_key = spec.hash_key
        self.slow_start = spec.slow_start
        self.backends = backends
        self.cursor = 0
        self.rng = random.Random(seed)
        self.wrr = [0.0] * len(backends)
        self.retry_tokens = 10.0
        self.retry_budget = spec.retry_budget
        self.retry_cap = 10.0 + 100 * spec.retry_budget
        # From the settings, not the records: those still hold the live snapshot's weights.
        self.table = build_table([(b.key, s.weight) for b, s in zip(backends, settings,
                                                                   strict=True)]) \
            if spec.algorithm == "consistent_hash" else ()
        self.hashed = spec.algorithm == "consistent_hash"
        self.track_ewma = spec.algorithm == "peak_ewma"
        # Requests waiting for a backend slot (regional_lb.pool_queue); None: no queue.
        self.queue: PoolQueue | None = None
        from regional_lb.balancing.algorithms import PICKERS

        self.picker = PICKERS[spec.algorithm]

    def go_live(self, now: float) -> None:
        """Write this pool's settings into its backend records: part of the swap, in the
        same synchronous step as the snapshot's assignment (no request sees half)."""
        for backend, settings in zip(self.backends, self.settings, strict=True):
            backend.configure(settings, now)

    def admit_request(self) -> None:
        if self.retry_tokens < self.retry_cap:
            self.retry_tokens += self.retry_budget

    def take_retry(self) -> bool:
        """A retry within the budget (at most retry_budget of requests, plus a reserve)."""
        if self.retry_tokens >= 1.0:
            self.retry_tokens -= 1.0
            return True
        return False


def build_pool_state(
    spec: PoolSpec,
    previous: Mapping[str, BackendState],
    first: bool = False,
    seed: int | None = None,
) -> PoolState:
    """A pool for a new snapshot, reusing the records of backends it already had.

    Pure: the previous records are read (their admin state, which only a swap changes),
    never written; new backends get new records, seen by nobody until the swap. A
    backend that is new, or becomes enabled again, starts slow start (not at first start).
    """
    states = []
    settings = []
    for backend in spec.backends:
        state = previous.get(backend.key)
        if state is None:
            state = BackendState(backend.address.host, backend.address.port)
            ramp = not first
        else:
            ramp = state.admin != "enabled" and backend.state == "enabled"
        states.append(state)
        settings.append(BackendSettings(backend.state, backend.weight, spec.max_connections,
                                        ramp))
    return PoolState(spec, tuple(states), seed, tuple(settings))
