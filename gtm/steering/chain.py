"""Evaluating a steered name's filter chain for one client: a pure function with a trace.

The chain starts from the pool's enabled endpoints that can answer the query type,
runs each filter in order (each may narrow, reorder or reweight the candidates),
then drops endpoints that may not be handed out. If nothing is left, the name's
fallback applies, so an answer is never empty by accident. Every step is recorded
for ``gtm explain``, and every step that looks at the client reports how much of
the client's address it looked at, which becomes the ECS scope.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from gtm.geo.distance import great_circle_km
from gtm.steering.model import (
    CapacityFilter,
    Endpoint,
    FailoverFilter,
    Filter,
    GeoFilter,
    IPNetwork,
    LatencyFilter,
    ProximityFilter,
    SteeredName,
    Steering,
)
from gtm.steering.state import SteeringState

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class LocationLike(Protocol):
    @property
    def country(self) -> str | None: ...
    @property
    def continent(self) -> str | None: ...
    @property
    def subdivision(self) -> str | None: ...
    @property
    def latitude(self) -> float | None: ...
    @property
    def longitude(self) -> float | None: ...
    @property
    def prefix_len(self) -> int: ...


class LocatorLike(Protocol):
    def locate(self, ip: IPAddress) -> LocationLike: ...


@dataclass(frozen=True)
class Client:
    """Whom the answer is for: the ECS subnet when sent, else the resolver itself."""

    address: IPAddress
    source_prefix: int  # ECS source prefix, or the full width for a resolver address
    from_ecs: bool = False

    @property
    def width(self) -> int:
        return self.address.max_prefixlen


@dataclass(frozen=True)
class Candidate:
    endpoint: Endpoint
    healthy: bool
    weight: float


@dataclass(frozen=True)
class Step:
    name: str
    detail: str
    kept: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Decision:
    candidates: tuple[Candidate, ...]
    scope: int  # how many leading bits of the client address the decision depends on
    steps: tuple[Step, ...]
    fallback: str | None = None  # which fallback answered, if any
    fixed_addresses: tuple[str, ...] = ()


@dataclass
class _Run:
    """Mutable state of one evaluation; only Decision leaves this module."""

    name: SteeredName
    steering: Steering
    state: SteeringState
    client: Client | None
    locator: LocatorLike | None
    steps: list[Step]
    scope: int = 0
    _location: LocationLike | None = None

    def location(self) -> LocationLike | None:
        if self.client is None or self.locator is None:
            return None
        if self._location is None:
            self._location = self.locator.locate(self.client.address)
        return self._location

    def depend_on(self, bits: int) -> None:
        self.scope = max(self.scope, bits)


def decide(
    name: SteeredName,
    steering: Steering,
    state: SteeringState,
    serves: Callable[[Endpoint], bool],
    client: Client | None = None,
    locator: LocatorLike | None = None,
) -> Decision:
    """Run the chain; ``serves`` says whether an endpoint can answer this query type."""
    run = _Run(name, steering, state, client, locator, [])
    pool = steering.pools[name.pool]
    candidates = _initial(run, pool.endpoints, serves)
    for spec in name.filters:
        candidates = _FILTERS[spec.kind](run, candidates, spec)
    healthy = _healthy_only(run, candidates)
    if healthy:
        return Decision(tuple(healthy), _scope(run), tuple(run.steps))
    return _fallback(run, serves)


def _initial(run: _Run, endpoints: Sequence[Endpoint], serves: Callable[[Endpoint], bool]):
    kept, dropped = [], []
    for endpoint in endpoints:
        if not endpoint.enabled:
            dropped.append((endpoint.name, "disabled"))
        elif not serves(endpoint):
            dropped.append((endpoint.name, "no record of the query type"))
        else:
            kept.append(Candidate(endpoint, run.state.healthy(endpoint), float(endpoint.weight)))
    run.steps.append(Step(f"pool {run.name.pool}", "enabled endpoints that can answer",
                          _names(kept), tuple(dropped)))
    return kept


def _healthy_only(run: _Run, candidates: list[Candidate]) -> list[Candidate]:
    kept = [c for c in candidates if c.healthy]
    dropped = tuple((c.endpoint.name, run.state.why_not(c.endpoint))
                    for c in candidates if not c.healthy)
    run.steps.append(Step("health", "only endpoints that may be handed out", _names(kept),
                          dropped))
    return kept


def _fallback(run: _Run, serves: Callable[[Endpoint], bool]) -> Decision:
    fallback = run.name.fallback
    if fallback.mode == "addresses":
        run.steps.append(Step("fallback", "no healthy candidate: fixed answer",
                              fallback.addresses))
        return Decision((), _scope(run), tuple(run.steps), "addresses", fallback.addresses)
    if fallback.mode == "pool":
        assert fallback.pool is not None
        pool = run.steering.pools[fallback.pool]
        enabled = [Candidate(e, run.state.healthy(e), float(e.weight))
                   for e in pool.endpoints if e.enabled and serves(e)]
        chosen = [c for c in enabled if c.healthy] or enabled
        detail = f"no healthy candidate: pool {pool.name}" + (
            "" if any(c.healthy for c in enabled) else " (none healthy there either: open)")
        run.steps.append(Step("fallback", detail, _names(chosen)))
        return Decision(tuple(chosen), _scope(run), tuple(run.steps), f"pool {pool.name}")
    pool = run.steering.pools[run.name.pool]
    everyone = [Candidate(e, False, float(e.weight)) for e in pool.endpoints
                if e.enabled and serves(e)]
    run.steps.append(Step("fallback", "no healthy candidate: fail open to every enabled "
                          "endpoint", _names(everyone)))
    return Decision(tuple(everyone), _scope(run), tuple(run.steps), "open")


def _scope(run: _Run) -> int:
    if run.client is None:
        return 0
    return min(run.scope, run.client.width)


# ---- filters ----


def _failover(run: _Run, candidates: list[Candidate], spec: FailoverFilter) -> list[Candidate]:
    for index, group in enumerate(spec.groups):
        members = [c for c in candidates
                   if c.endpoint.name in group or c.endpoint.region in group]
        healthy = sum(1 for c in members if c.healthy)
        if healthy >= spec.min_healthy:
            dropped = [(c.endpoint.name, f"not in priority group {index + 1}")
                       for c in candidates if c not in members]
            run.steps.append(Step(
                "failover", f"group {index + 1} {list(group)} has {healthy} healthy "
                f"(needs {spec.min_healthy})", _names(members), tuple(dropped)))
            return members
    run.steps.append(Step("failover", f"no group has {spec.min_healthy} healthy endpoints",
                          (), tuple((c.endpoint.name, "no group qualified") for c in candidates)))
    return []


def _geo(run: _Run, candidates: list[Candidate], spec: GeoFilter) -> list[Candidate]:
    order, why = _geo_order(run, spec)
    return _keep_regions(run, "geo", candidates, order, spec.keep, why)


def _geo_order(run: _Run, spec: GeoFilter) -> tuple[tuple[str, ...], str]:
    client = run.client
    if client is None:
        return spec.default, "no client address: default"
    networks = [n for n, _ in spec.networks]
    match = _network_match(run, client, networks)
    if match is not None:
        return spec.networks[match][1], f"client in {spec.networks[match][0]}"
    location = run.location()
    if location is not None:
        run.depend_on(location.prefix_len)
    for label, table, key in (
        ("subdivision", spec.subdivisions, location.subdivision if location else None),
        ("country", spec.countries, location.country if location else None),
        ("continent", spec.continents, location.continent if location else None),
    ):
        if key is not None and key in table:
            return table[key], f"{label} {key}"
    known = location.country if location and location.country else "unknown"
    return spec.default, f"country {known}: default"


def _proximity(run: _Run, candidates: list[Candidate], spec: ProximityFilter) -> list[Candidate]:
    location = run.location()
    if location is not None:
        run.depend_on(location.prefix_len)
    if location is None or location.latitude is None or location.longitude is None:
        run.steps.append(Step("proximity", "client location unknown: order unchanged",
                              _names(candidates)))
        return candidates
    lat, lon = location.latitude, location.longitude
    distance = {
        name: great_circle_km(lat, lon, region.latitude, region.longitude)
        + spec.bias_km.get(name, 0.0)
        for name, region in run.steering.regions.items()
    }
    order = tuple(sorted(distance, key=lambda r: (distance[r], r)))
    why = "nearest first: " + ", ".join(f"{r} {distance[r]:.0f} km" for r in order[:4])
    return _keep_regions(run, "proximity", candidates, order, spec.keep, why)


def _latency(run: _Run, candidates: list[Candidate], spec: LatencyFilter) -> list[Candidate]:
    client = run.client
    match = None if client is None else _network_match(run, client, [n for n, _ in spec.table])
    if match is None:
        run.steps.append(Step("latency", "client network not in the table: order unchanged",
                              _names(candidates)))
        return candidates
    network, rtts = spec.table[match]
    order = tuple(sorted(rtts, key=lambda r: (rtts[r], r)))
    why = f"client in {network}: " + ", ".join(f"{r} {rtts[r]:.0f} ms" for r in order[:4])
    return _keep_regions(run, "latency", candidates, order, spec.keep, why)


def _capacity(run: _Run, candidates: list[Candidate], spec: CapacityFilter) -> list[Candidate]:
    regions = list(dict.fromkeys(c.endpoint.region for c in candidates if c.healthy))
    remaining = 1.0
    shares: dict[str, float] = {}
    for index, region in enumerate(regions):
        headroom = run.state.headroom(region)
        last = index == len(regions) - 1
        share = remaining if last else remaining * min(1.0, headroom / spec.spill_below)
        shares[region] = share
        remaining -= share
    out = []
    for region in regions:
        members = [c for c in candidates if c.endpoint.region == region and c.healthy]
        total = sum(c.weight for c in members)
        for c in members:
            part = c.weight / total if total > 0 else 1.0 / len(members)
            out.append(replace(c, weight=part * shares[region]))
    dropped = tuple((c.endpoint.name, "unhealthy") for c in candidates if not c.healthy)
    detail = "traffic share by headroom: " + ", ".join(
        f"{r} {shares[r]:.0%} (headroom {run.state.headroom(r):.2f})" for r in regions)
    kept = [c for c in out if c.weight > 0]
    dropped += tuple((c.endpoint.name, "region saturated") for c in out if c.weight <= 0)
    run.steps.append(Step("capacity", detail, _names(kept), dropped))
    return kept


_FILTERS: dict[str, Callable[[_Run, list[Candidate], Filter], list[Candidate]]] = {
    "failover": _failover,  # type: ignore[dict-item]
    "geo": _geo,  # type: ignore[dict-item]
    "proximity": _proximity,  # type: ignore[dict-item]
    "latency": _latency,  # type: ignore[dict-item]
    "capacity": _capacity,  # type: ignore[dict-item]
}


# ---- shared helpers ----


def _keep_regions(
    run: _Run,
    label: str,
    candidates: list[Candidate],
    order: Sequence[str],
    keep: int,
    why: str,
) -> list[Candidate]:
    """Keep the candidates of the first `keep` regions in order that have a healthy one."""
    chosen: list[str] = []
    for region in order:
        if any(c.endpoint.region == region and c.healthy for c in candidates):
            chosen.append(region)
        if len(chosen) == keep:
            break
    rank = {region: index for index, region in enumerate(chosen)}
    kept = sorted((c for c in candidates if c.endpoint.region in rank),
                  key=lambda c: rank[c.endpoint.region])
    dropped = tuple(
        (c.endpoint.name, f"region {c.endpoint.region} not chosen")
        for c in candidates if c.endpoint.region not in rank
    )
    detail = f"{why}; regions {chosen or 'none with a healthy endpoint'}"
    run.steps.append(Step(label, detail, _names(kept), dropped))
    return kept


def _network_match(run: _Run, client: Client, networks: Sequence[IPNetwork]) -> int | None:
    """Index of the most specific network holding the client (networks sorted longest
    first), recording how many address bits that answer depends on."""
    found = None
    for index, network in enumerate(networks):
        if network.version == client.address.version and client.address in network:
            found = index
            run.depend_on(network.prefixlen)
            break
    # The answer also depends on not being in the more specific networks nearby:
    # the scope must be long enough to exclude each one the client is not in.
    for network in networks:
        if network.version != client.address.version or client.address in network:
            continue
        run.depend_on(_common_prefix(client.address, network) + 1)
    return found


def _common_prefix(address: IPAddress, network: IPNetwork) -> int:
    width = address.max_prefixlen
    diff = int(address) ^ int(network.network_address)
    common = width - diff.bit_length()
    return min(common, network.prefixlen - 1)


def _names(candidates: Sequence[Candidate] | Sequence[str]) -> tuple[str, ...]:
    return tuple(c if isinstance(c, str) else c.endpoint.name for c in candidates)
