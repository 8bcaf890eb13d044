"""Admission by client: rate limits, connection and request caps (issue 11, part 3).

The protocols call three pairs of functions on the worker's :class:`Limiter`, the same
for an HTTP/1.1 connection and for an HTTP/2 stream:

- ``open_connection(limits, client_ip)`` at accept -> a held cell, 0, or REFUSED;
  ``close_connection(cell)`` when the connection goes.
- ``admit(limits, route, request, client_ip)`` before a request is sent on -> a held
  cell (or 0) and 0.0, or REFUSED and the seconds the client should wait (429);
  ``finish_request(cell)`` when its response has ended (or it failed).

A listener without ``limits`` (and whose routes have none) costs one attribute check
per request: ``Listener.admission is None``. The state lives in regional_lb.client_tables,
shared by the workers of a balancer.

A protocol built on ClientProtocol (an HTTP/2 stream) is admitted and queued by the
inherited ``_dispatch`` and ``_pick_and_send``. Where it overrides the ends of a request
it must do what ClientProtocol does there: ``_end_limits()`` when a request is refused,
cancelled or reset (it releases the request's count and leaves the queue); answer a
queued request first in ``on_timeout`` (``self.waiting``: 503); wake the pool's queue
after ``backend.active -= 1``; pass ``error.headers`` (Retry-After) to error_response;
and a connection handed to another protocol hands over ``connection_cell``, released
when that protocol's connection is lost.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING

from regional_lb.client_tables import ClientTables
from regional_lb.config_limits import ClientLimitsSpec, RateLimitSpec
from regional_lb.errors import HttpError

if TYPE_CHECKING:
    from regional_lb.l7.parser import Request

REFUSED = -1
ADMITTED = (0, 0.0)
ADDRESS_CACHE = 4096  # client address -> its network key, per listener; cleared when full


class RateLimit:
    """A compiled rate limit: the bucket parameters and how to key a request."""

    __slots__ = ("by_address", "cookie", "header", "interval", "salt", "spec", "tolerance")

    def __init__(self, spec: RateLimitSpec, scope: str):
        self.spec = spec
        self.interval = 1.0 / spec.rate
        self.tolerance = (spec.burst - 1) * self.interval
        kind, _, name = spec.key.partition(":")
        self.header = name.encode() if kind == "header" else None
        self.cookie = name.encode() + b"=" if kind == "cookie" else None
        self.by_address = self.header is None and self.cookie is None
        # Different limits never share buckets; the same scope keeps them across reloads.
        self.salt = hash(("gtm-rate", scope, spec.key))

    def key(self, request: Request, network: bytes) -> bytes:
        if self.header is not None:
            return request.header(self.header) or network
        if self.cookie is not None:
            return cookie_value(request, self.cookie) or network
        return network


def cookie_value(request: Request, wanted: bytes) -> bytes | None:
    """The value of one cookie (``wanted`` is ``NAME=``), or None."""
    for part in (request.header(b"cookie") or b"").split(b";"):
        part = part.strip()
        if part.startswith(wanted):
            return part[len(wanted) :]
    return None


class ListenerAdmission:
    """A listener's limits, compiled for the data plane (one per snapshot)."""

    __slots__ = ("allow", "count_salt", "max_connections", "max_requests", "name", "networks",
                 "rate", "v4_bits", "v6_bits")

    def __init__(self, name: str, spec: ClientLimitsSpec | None):
        spec = spec or ClientLimitsSpec()
        self.name = name
        self.rate = RateLimit(spec.rate, name) if spec.rate is not None else None
        self.max_connections = spec.max_connections
        self.max_requests = spec.max_requests
        self.v4_bits, self.v6_bits = spec.ipv4_prefix, spec.ipv6_prefix
        self.allow = spec.allow
        self.count_salt = hash(("gtm-count", name))
        self.networks: dict[bytes, bytes | None] = {}

    def network(self, client_ip: bytes) -> bytes | None:
        """The client's network as a key (its address when the prefixes are full
        length), or None for an allowed client. Cached per address."""
        networks = self.networks
        try:
            return networks[client_ip]
        except KeyError:
            pass
        key = client_network(client_ip, self.v4_bits, self.v6_bits, self.allow)
        if len(networks) >= ADDRESS_CACHE:
            networks.clear()
        networks[client_ip] = key
        return key


def client_network(client_ip: bytes, v4_bits: int, v6_bits: int,
                   allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
                   ) -> bytes | None:
    """``10.1.2.3`` with /24 -> ``10.1.2.0/24``; an IPv4-mapped IPv6 address counts as
    IPv4. None when the address is in ``allow``."""
    text = client_ip.decode("ascii", "replace").split("%", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return client_ip  # not an address (a Unix socket, say): keyed as it is
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if allow and any(address in network for network in allow):
        return None
    if isinstance(address, ipaddress.IPv4Address):
        if v4_bits == 32:
            return address.packed
        return ipaddress.IPv4Network((address, v4_bits), strict=False).network_address.packed \
            + bytes((v4_bits,))
    if v6_bits == 128:
        return address.packed
    return ipaddress.IPv6Network((address, v6_bits), strict=False).network_address.packed \
        + bytes((v6_bits,))


@dataclass
class LimitCounts:
    """What one listener refused, by reason (read by the metrics collector)."""

    rate: int = 0
    requests: int = 0
    connections: int = 0


class Limiter:
    """One worker's view of its balancer's client tables: ``column`` is its index."""

    def __init__(self, tables: ClientTables, column: int = 0):
        self.tables = tables
        self.take = tables.rate.take
        self.column = column
        self.refused: dict[str, LimitCounts] = {}
        if tables.workers > 1:
            tables.counts.clear_column(column)

    def counts(self, listener: str) -> LimitCounts:
        counts = self.refused.get(listener)
        if counts is None:
            counts = self.refused[listener] = LimitCounts()
        return counts

    # -- connections ----------------------------------------------------------------------
    def open_connection(self, limits: ListenerAdmission, client_ip: bytes) -> int:
        if not limits.max_connections:
            return 0
        network = limits.network(client_ip)
        if network is None:
            return 0
        table = self.tables.counts
        cell = table.acquire(table.connections, hash(network) ^ limits.count_salt,
                             self.column, limits.max_connections)
        if cell == REFUSED:
            self.counts(limits.name).connections += 1
        return cell

    def close_connection(self, cell: int) -> None:
        self.tables.counts.release(self.tables.counts.connections, cell)

    # -- requests -------------------------------------------------------------------------
    def admit(self, limits: ListenerAdmission, route: RateLimit | None, request: Request,
              client_ip: bytes) -> tuple[int, float]:
        """(held cell or 0, 0.0) to go on; (REFUSED, seconds to wait) for a 429.

        A route's bucket is charged first, then the listener's: a request the route
        refuses costs the listener's bucket nothing (the reverse does not hold)."""
        network = limits.network(client_ip)
        if network is None:
            return ADMITTED
        rate = limits.rate
        if route is not None or rate is not None:
            now = monotonic()  # one clock for every worker (loop.time() may differ)
            take = self.take
            if route is not None:
                key = network if route.by_address else route.key(request, network)
                wait = take(hash(key) ^ route.salt, now, route.interval, route.tolerance)
                if wait:
                    return self._too_fast(limits, wait)
            if rate is not None:
                key = network if rate.by_address else rate.key(request, network)
                wait = take(hash(key) ^ rate.salt, now, rate.interval, rate.tolerance)
                if wait:
                    return self._too_fast(limits, wait)
        if not limits.max_requests:
            return ADMITTED
        table = self.tables.counts
        cell = table.acquire(table.requests, hash(network) ^ limits.count_salt, self.column,
                             limits.max_requests)
        if cell == REFUSED:
            self.counts(limits.name).requests += 1
            return REFUSED, 1.0
        return cell, 0.0

    def _too_fast(self, limits: ListenerAdmission, wait: float) -> tuple[int, float]:
        self.counts(limits.name).rate += 1
        return REFUSED, wait

    def finish_request(self, cell: int) -> None:
        self.tables.counts.release(self.tables.counts.requests, cell)


def too_many_requests(wait: float) -> HttpError:
    """The 429 for a refused request, with Retry-After (RFC 9110 10.2.3, RFC 6585 4):
    whole seconds, at least 1."""
    error = HttpError(429, "too many requests")
    error.headers = b"Retry-After: %d\r\n" % max(1, math.ceil(wait))
    return error
