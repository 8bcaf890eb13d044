"""Health facts into the serving snapshot: one path for config swaps and health flips.

The zones a node is given (from a zone directory or a control-plane version) are
its *base*. What it serves is the base with the current health facts merged into
each zone's SteeringState. ``ServingFeed.serve`` (a new base) and
``ServingFeed.request`` (new facts) both end in the same ``_rebuild``, so a new
config version never drops the health overlay and a flip never resurrects old
config. Flips are coalesced: at most one rebuild per ``coalesce`` seconds, however
many arrive, because each rebuild clears the engine's answer caches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gtm import metrics
from gtm.dns.answer import ZoneSet
from gtm.dns.zone import Zone
from gtm.health.quorum import HealthFacts, target_id
from gtm.steering.model import Endpoint
from gtm.steering.state import EndpointState, RegionState, SteeringState

FactsSource = Callable[[], HealthFacts]


def overlay(zones: ZoneSet, facts: HealthFacts, doubt_ttl: int | None = None) -> ZoneSet:
    """The zones with health facts merged in; zones without steering are shared as they are."""
    if not facts.endpoints and not facts.regions:
        return zones
    return ZoneSet.of(_zone(zone, facts, doubt_ttl) for zone in zones.zones.values())


def _zone(zone: Zone, facts: HealthFacts, doubt_ttl: int | None) -> Zone:
    steering = zone.steering
    if steering is None:
        return zone
    origin = zone.origin.to_text()
    endpoints = dict(zone.state.endpoints)
    doubtful: set[str] = set()
    for pool in steering.pools.values():
        for endpoint in pool.endpoints:
            agreed = facts.endpoints.get(target_id(origin, endpoint.name))
            if agreed is None:
                continue
            # Health facts replace hand-set health; admin overlays stay and still win.
            base = zone.state.endpoint_state(endpoint.name)
            reason = agreed.reason if base.admin == "none" else base.reason
            endpoints[endpoint.name] = EndpointState(agreed.state, base.admin, reason)
            if agreed.doubt:
                doubtful.add(pool.name)
    regions = dict(zone.state.regions)
    for name in steering.regions:
        fact = facts.regions.get(name)
        if fact is None:
            continue
        base_region = zone.state.region_state(name)
        # A region set down by hand stays down; the balancer's word can only take it out.
        health = "down" if base_region.health == "down" or not fact.healthy else "up"
        reason = fact.detail if not fact.healthy else base_region.reason
        regions[name] = RegionState(health, fact.headroom, reason)  # type: ignore[arg-type]
    state = SteeringState(endpoints, regions)
    names = steering.names
    if doubt_ttl is not None and doubtful:
        # While observers disagree, resolvers should come back soon for the settled answer.
        names = {key: (replace(steered, ttl=min(steered.ttl, doubt_ttl))
                       if steered.pool in doubtful else steered)
                 for key, steered in names.items()}
        steering = replace(steering, names=names)
    return replace(zone, steering=steering, state=state)


def served_states(served: ZoneSet, base: ZoneSet, facts: HealthFacts) -> dict[str, Any]:
    """What each steered zone hands out right now, and why: per region and endpoint its
    served state and cause, "admin" (set by hand: `gtm steer`, drain, force), "probe"
    (the health checks' agreed verdict), "region report" (the region's balancer),
    "region" (an endpoint whose region is down) or "none" (nothing known: up)."""
    out: dict[str, Any] = {}
    for key, zone in served.zones.items():
        if zone.steering is None:
            continue
        origin = zone.origin.to_text()
        given = base.zones.get(key)
        hand = given.state if given is not None else SteeringState()
        regions = {name: _region_cause(name, zone.state, hand, facts)
                   for name in sorted(zone.steering.regions)}
        endpoints = {}
        for pool in zone.steering.pools.values():
            for endpoint in pool.endpoints:
                probed = target_id(origin, endpoint.name) in facts.endpoints
                endpoints[endpoint.name] = _endpoint_cause(
                    endpoint, zone.state, probed, regions.get(endpoint.region))
        out[origin] = {"regions": regions, "endpoints": endpoints}
    return out


def _region_cause(name: str, state: SteeringState, hand: SteeringState,
                  facts: HealthFacts) -> dict[str, str]:
    fact = facts.regions.get(name)
    set_by_hand = hand.region_state(name)
    if set_by_hand.health == "down":  # wins over any report (see _zone)
        cause, reason = "admin", set_by_hand.reason
    elif fact is not None:
        cause, reason = "region report", fact.detail
    else:
        cause, reason = "none", ""
    return {"state": state.region_state(name).health, "cause": cause, "reason": reason}


def _endpoint_cause(endpoint: Endpoint, state: SteeringState, probed: bool,
                    region: dict[str, str] | None) -> dict[str, str]:
    served = state.endpoint_state(endpoint.name)
    handed_out = "up" if state.healthy(endpoint) else "down"
    if served.admin != "none":  # force_up, force_down, drain: they win
        reason = served.admin + (f" ({served.reason})" if served.reason else "")
        return {"state": handed_out, "cause": "admin", "reason": reason}
    if served.health == "up" and region is not None and region["state"] != "up":
        reason = f"region {endpoint.region} down ({region['cause']}: {region['reason']})"
        return {"state": handed_out, "cause": "region", "reason": reason}
    if probed:
        cause = "probe"
    else:
        cause = "admin" if served.health != "up" else "none"  # set by hand, or nothing
    return {"state": handed_out, "cause": cause, "reason": served.reason}


class ServingFeed:
    """The one way zones reach a DNS engine: ``serve(base)`` and coalesced ``request()``."""

    def __init__(self, swap: Callable[[ZoneSet], None], coalesce: float = 0.5):
        self.swap = swap
        self.coalesce = coalesce
        self.base: ZoneSet = ZoneSet.of([])
        # What the last rebuild swapped in, and the facts it was made with.
        self.served: ZoneSet = ZoneSet.of([])
        self.served_facts = HealthFacts()
        self.facts: FactsSource | None = None
        self.doubt_ttl: int | None = None
        self.on_base: list[Callable[[ZoneSet], None]] = []  # the prober re-reads its targets
        self.last_rebuild = 0.0
        self._pending: asyncio.TimerHandle | asyncio.Handle | None = None

    def serve(self, zones: ZoneSet) -> None:
        """A new base (config version or zone reload): merged and swapped in at once."""
        self.base = zones
        for listener in self.on_base:
            listener(zones)
        self._rebuild()

    def request(self) -> None:
        """New health facts: rebuild now, or when the coalescing interval has passed."""
        if self._pending is not None:
            return  # one rebuild is already due; it will read the newest facts
        loop = asyncio.get_running_loop()
        wait = self.last_rebuild + self.coalesce - time.monotonic()
        if wait <= 0:
            # call_soon, not now: flips arriving in the same loop turn share the rebuild.
            self._pending = loop.call_soon(self._rebuild)
        else:
            self._pending = loop.call_later(wait, self._rebuild)

    def current_facts(self) -> HealthFacts:
        return self.facts() if self.facts is not None else HealthFacts()

    def _rebuild(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        facts = self.current_facts()
        self.served = overlay(self.base, facts, self.doubt_ttl)
        self.served_facts = facts
        self.swap(self.served)
        self.last_rebuild = time.monotonic()
        metrics.health_rebuilds.inc()

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
