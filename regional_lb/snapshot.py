"""The compiled, immutable view the data plane reads: everything a request reads but
the runtime records (backend counters and health, pool queues, per-client tables).

A worker holds one :class:`Snapshot` and replaces it with one assignment. Compiling is
pure (:func:`compile_snapshot` changes no live object, so it runs in a thread and a
compile that fails changes nothing): backend records carry over from the previous
snapshot by pool and address, so counters, in-flight requests and pooled connections
survive a reload, and what the new config says of them (admin state, weight, limits,
slow start, queue bounds) is written into them by :meth:`Snapshot.go_live`, in the same
synchronous step as the assignment.

A connection takes the worker's snapshot when a request starts and reads that one until
the request ends. The parse caches live here too: a cached parse was checked against
this snapshot's limits, the caches of two balancers in one process are apart, and a
reload starts with empty ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regional_lb.accesslog import make_access_log
from regional_lb.balancing import BackendState, PoolState, build_pool_state
from regional_lb.client_limits import ListenerAdmission, RateLimit, cookie_value
from regional_lb.config import LbConfig, Limits, ListenerSpec, RouteSpec, Timeouts
from regional_lb.pool_queue import PoolQueue

if TYPE_CHECKING:
    from regional_lb.l7.parser import Request, Response
    from regional_lb.tls.listener import ListenerTls

# A carried-over queue's bounds under the new config: (classes, capacity, timeout).
QueueBounds = tuple[tuple[str, ...], int, float]
# The HTTP/2 header list of a backend's response, by (status, block, length, via).
H2HeadersKey = tuple[int, bytes, "int | bool | None", bytes]


@dataclass(frozen=True)
class Route:
    spec: RouteSpec
    pool: PoolState
    limits: RateLimit | None = None  # the route's own rate limit

    def matches(self, request: Request, host: bytes) -> bool:
        spec = self.spec
        if spec.host is not None and spec.host != host:
            return False
        if spec.path_prefix is not None and not request.path.startswith(spec.path_prefix):
            return False
        if spec.header is not None:
            value = request.header(spec.header[0])
            if value is None or (spec.header[1] is not None and value != spec.header[1]):
                return False
        return True


@dataclass(frozen=True)
class Listener:
    spec: ListenerSpec
    pool: PoolState
    routes: tuple[Route, ...]
    health_path: bytes
    default_host: bytes  # Host for HTTP/1.0 requests without one
    tls: ListenerTls | None = None  # TLS state (front context, counters) when terminating
    proto: bytes = b"http"          # X-Forwarded-Proto and Forwarded proto=
    upgrades: frozenset[bytes] = frozenset()  # protocols an Upgrade may switch to
    # The Via line (RFC 9110 7.6.3) for messages received as HTTP/1.0 and 1.1, or empty.
    via: tuple[bytes, bytes] = (b"", b"")
    h2: bool = False   # HTTP/2 offered: by ALPN (TLS), or by prior knowledge (h2c)
    # Per-client limits of the listener or its routes (regional_lb.client_limits); None:
    # none, and the one check a request pays for them.
    admission: ListenerAdmission | None = None

    def route(self, request: Request) -> PoolState:
        """The first route that matches, else the listener's pool."""
        route = self.match(request)
        return route.pool if route is not None else self.pool

    def match(self, request: Request) -> Route | None:
        """The first route that matches, or None."""
        if self.routes:
            host = request.host.rsplit(b":", 1)[0] if b"]" not in request.host else request.host
            for route in self.routes:
                if route.matches(request, host):
                    return route
        return None

    def priority(self, request: Request, route: Route | None) -> int:
        """A request's queue class: from the header when it names one, else the
        route's, else the listener's."""
        spec = self.spec.priority
        if spec.header is not None:
            value = request.header(spec.header)
            if value is not None:
                for known, rank in spec.values:
                    if known == value:
                        return rank
        if route is not None and route.spec.priority is not None:
            return route.spec.priority
        return spec.default


@dataclass(frozen=True)
class Snapshot:
    version: int
    config: LbConfig
    pools: Mapping[str, PoolState]
    listeners: Mapping[str, Listener]
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    access_log: Callable[[Any, float], None] | None = None
    acme_tokens: Path | None = None  # where HTTP-01 tokens are (worker 0 writes them)
    queue_bounds: Mapping[str, QueueBounds] = field(default_factory=dict)
    # Caches by bytes seen (hot path: one dict lookup). Bounded by their users.
    requests: dict[bytes, Request] = field(default_factory=dict)
    responses: dict[bytes, Response] = field(default_factory=dict)
    suffixes: dict[tuple[bytes, bytes, bytes], bytes] = field(default_factory=dict)
    h2_headers: dict[H2HeadersKey, list[tuple[bytes, bytes]]] = field(default_factory=dict)

    def backends(self) -> dict[str, BackendState]:
        """Every backend by "pool/address"."""
        return {f"{p.name}/{b.key}": b for p in self.pools.values() for b in p.backends}

    def go_live(self, now: float) -> None:
        """Write the config's settings into the runtime records it carries. Call on the
        event loop right before assigning the snapshot, with no await in between."""
        for pool in self.pools.values():
            pool.go_live(now)
        for name, bounds in self.queue_bounds.items():
            pool = self.pools[name]
            assert pool.queue is not None
            if bounds[1] == 0 and not pool.queue.size:
                pool.queue = None  # a queue turned off, with no one waiting: gone now
            else:
                pool.queue.configure(*bounds)


def balance_key(pool: PoolState, request: Request, client_ip: bytes) -> bytes:
    """What consistent hashing hashes: the client address, a cookie or a header."""
    kind = pool.hash_key
    if kind == "client_ip":
        return client_ip
    if kind.startswith("header:"):
        return request.header(kind[7:].lower().encode()) or client_ip
    return cookie_value(request, kind[7:].encode() + b"=") or client_ip


def via_lines(pseudonym: str) -> tuple[bytes, bytes]:
    if not pseudonym:
        return (b"", b"")
    return (b"\r\nVia: 1.0 " + pseudonym.encode(), b"\r\nVia: 1.1 " + pseudonym.encode())


def compile_snapshot(config: LbConfig, previous: Snapshot | None,
                     seed: int | None = None,
                     tls: Mapping[str, ListenerTls] | None = None) -> Snapshot:
    """The snapshot of ``config``, carrying ``previous``'s runtime records over.

    Pure: it reads the previous snapshot's records and changes none of them (nor
    anything else live), so it may run in a thread while the previous one serves."""
    old_pools = previous.pools if previous is not None else {}
    pools = {}
    queue_bounds = {}
    for spec in config.pools:
        old = old_pools.get(spec.name)
        prior = {b.key: b for b in old.backends} if old is not None else {}
        pools[spec.name] = pool = build_pool_state(spec, prior, first=previous is None,
                                                   seed=seed)
        pool.queue, bounds = _queue(config, spec.name, old.queue if old is not None else None)
        if bounds is not None:
            queue_bounds[spec.name] = bounds
    listeners = {
        spec.name: Listener(
            spec=spec,
            pool=pools[spec.pool],
            routes=tuple(Route(r, pools[r.pool], RateLimit(r.limits, f"{spec.name}/{i}")
                               if r.limits is not None else None)
                         for i, r in enumerate(spec.routes)),
            health_path=spec.health_path.encode(),
            default_host=str(spec.bind).encode(),
            tls=(tls or {}).get(spec.name),
            proto=b"https" if spec.tls is not None else b"http",
            upgrades=frozenset(name.encode() for name in spec.upgrades),
            via=via_lines(config.via),
            h2=spec.h2c or (spec.tls is not None and "h2" in spec.tls.policy.alpn),
            admission=ListenerAdmission(spec.name, spec.limits)
            if spec.limits is not None or any(r.limits for r in spec.routes) else None,
        )
        for spec in config.listeners
    }
    version = previous.version + 1 if previous is not None else 1
    return Snapshot(version, config, pools, listeners, config.timeouts, config.limits,
                    make_access_log(config.access_log),
                    config.acme.tokens_dir if config.acme is not None else None,
                    queue_bounds)


def _queue(config: LbConfig, name: str, old: PoolQueue | None
           ) -> tuple[PoolQueue | None, QueueBounds | None]:
    """The pool's queue: the one it had (waiters keep their place) with the bounds it
    takes when the snapshot goes live, or a new one (no bounds to apply), or none."""
    spec = config.pool(name)
    if spec.queue_size == 0:
        if old is None:
            return None, None
        # Waiters still get their turn, no one new joins them; whether any are left is
        # seen when the snapshot goes live. (A queue's names and timeout change only then,
        # and compiles do not overlap: reading them here races with nothing.)
        return old, (old.names, 0, old.timeout)
    if old is None:
        return PoolQueue(name, config.priority_classes, spec.queue_size,
                         spec.queue_timeout), None
    return old, (config.priority_classes, spec.queue_size, spec.queue_timeout)
