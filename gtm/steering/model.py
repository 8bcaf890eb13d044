"""The steering model: regions, endpoints, pools, steered names and their policy chains.

Everything here is frozen; a definitions file or control-plane document compiles
into these objects once, and the answer path only reads them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import dns.name

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Selection = Literal["weighted", "sticky", "multivalue"]


@dataclass(frozen=True)
class Region:
    name: str
    latitude: float
    longitude: float
    country: str | None = None
    continent: str | None = None


@dataclass(frozen=True)
class Endpoint:
    name: str
    region: str
    ipv4: str | None = None
    ipv6: str | None = None
    cname: dns.name.Name | None = None
    weight: int = 1
    capacity: int | None = None
    enabled: bool = True
    # The address probed by health checks when it differs from the one served (NAT).
    check_address: str | None = None


CheckType = Literal["tcp", "http", "https", "dns", "exec"]


@dataclass(frozen=True)
class HealthCheck:
    """How a pool's endpoints are probed (``[pools.<name>.check]``); see gtm.health."""

    type: CheckType
    port: int | None = None  # None: the type's default (80, 443, 53); unused by exec
    interval: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 2
    # While a state is changing (a failure seen while up, a success while down) the
    # next probes come this fast, so fall x interval is the bound, not the typical case.
    fastinter: float = 0.5
    jitter: float = 0.1  # each delay is stretched or shrunk by up to this fraction
    # http / https
    method: str = "GET"
    path: str = "/"
    host: str | None = None
    expect: tuple[int, ...] = (200,)
    body: str | None = None  # a substring the response body must contain
    sni: str | None = None
    verify: bool = True
    cert_warn_days: int = 14
    # dns
    query: str | None = None
    qtype: str = "A"
    rcode: str = "NOERROR"
    answer: str | None = None  # an rdata text the answer must contain
    # exec: argv, with {address} and {port} substituted
    command: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pool:
    name: str
    endpoints: tuple[Endpoint, ...]
    check: HealthCheck | None = None

    @property
    def is_cname(self) -> bool:
        return any(e.cname is not None for e in self.endpoints)


# ---- filters: each narrows or reorders the candidates (NS1-style chain) ----


@dataclass(frozen=True)
class FailoverFilter:
    groups: tuple[tuple[str, ...], ...]  # endpoint or region names, best group first
    min_healthy: int = 1
    kind: Literal["failover"] = "failover"


@dataclass(frozen=True)
class GeoFilter:
    default: tuple[str, ...]
    networks: tuple[tuple[IPNetwork, tuple[str, ...]], ...] = ()
    subdivisions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    countries: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    continents: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    keep: int = 1
    kind: Literal["geo"] = "geo"


@dataclass(frozen=True)
class ProximityFilter:
    bias_km: Mapping[str, float] = field(default_factory=dict)
    keep: int = 1
    kind: Literal["proximity"] = "proximity"


@dataclass(frozen=True)
class LatencyFilter:
    # client network -> region -> round-trip time in milliseconds
    table: tuple[tuple[IPNetwork, Mapping[str, float]], ...]
    keep: int = 1
    kind: Literal["latency"] = "latency"


@dataclass(frozen=True)
class CapacityFilter:
    # A region whose headroom falls below this keeps a proportional share of the
    # traffic and spills the rest to the next region in order.
    spill_below: float = 0.2
    kind: Literal["capacity"] = "capacity"


Filter = FailoverFilter | GeoFilter | ProximityFilter | LatencyFilter | CapacityFilter


@dataclass(frozen=True)
class Fallback:
    """What to answer when no candidate is healthy; never an accidental empty answer."""

    mode: Literal["open", "pool", "addresses"] = "open"
    pool: str | None = None
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class SteeredName:
    name: dns.name.Name
    pool: str
    ttl: int = 30
    answers: int = 1
    filters: tuple[Filter, ...] = ()
    select: Selection = "weighted"
    sticky_prefix_v4: int = 24
    sticky_prefix_v6: int = 56
    fallback: Fallback = Fallback()


@dataclass(frozen=True)
class Steering:
    """The steering definitions of one zone."""

    regions: Mapping[str, Region]
    pools: Mapping[str, Pool]
    names: Mapping[tuple[bytes, ...], SteeredName]
    source: str

    def endpoint(self, name: str) -> Endpoint | None:
        for pool in self.pools.values():
            for endpoint in pool.endpoints:
                if endpoint.name == name:
                    return endpoint
        return None
