"""The compiled, immutable view the data plane reads: listeners, routes, pools.

A worker holds one :class:`Snapshot` and replaces it with one assignment. Backend
states carry over from the previous snapshot by address, so counters, in-flight
requests and pooled connections survive a reload.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from regional_lb.balancing import BackendState, PoolState, build_pool_state
from regional_lb.client_limits import ListenerAdmission, RateLimit, cookie_value
from regional_lb.config import LbConfig, ListenerSpec, RouteSpec
from regional_lb.pool_queue import PoolQueue

if TYPE_CHECKING:
    from regional_lb.l7.parser import Request
    from regional_lb.tls.listener import ListenerTls


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

    def backends(self) -> dict[str, BackendState]:
        """Every backend by "pool/address"."""
        return {f"{p.name}/{b.key}": b for p in self.pools.values() for b in p.backends}


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


def compile_snapshot(config: LbConfig, previous: Snapshot | None, now: float,
                     seed: int | None = None,
                     tls: Mapping[str, ListenerTls] | None = None) -> Snapshot:
    old_pools = previous.pools if previous is not None else {}
    pools = {}
    for spec in config.pools:
        old = old_pools.get(spec.name)
        prior = {b.key: b for b in old.backends} if old is not None else {}
        pools[spec.name] = pool = build_pool_state(spec, prior, now, first=previous is None,
                                                   seed=seed)
        pool.queue = _queue(config, spec.name, old.queue if old is not None else None)
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
    return Snapshot(version, config, pools, listeners)


def _queue(config: LbConfig, name: str, old: PoolQueue | None) -> PoolQueue | None:
    """The pool's queue: the one it had (waiters keep their place), or a new one."""
    spec = config.pool(name)
    if spec.queue_size == 0:
        if old is None or not old.size:
            return None
        old.capacity = 0  # its waiters still get their turn; no one new joins them
        return old
    if old is None:
        return PoolQueue(name, config.priority_classes, spec.queue_size, spec.queue_timeout)
    old.configure(config.priority_classes, spec.queue_size, spec.queue_timeout)
    return old
