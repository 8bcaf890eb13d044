"""What the status page shows (`GET /v1/status`), built from what the control plane knows.

- Regions and their places: the steering definitions of the head version (latitude and
  longitude of every region, by name, across zones).
- A region's state: set down by hand at the head version (`gtm steer region ... --health
  down`: the control plane knows it the moment it is committed), else what the freshest
  live DNS node reports it serves and why (probes, the region's balancer), else its
  balancer's report. Headroom, request rate and p95 come from the region reports the DNS
  nodes pass on in their health summaries.
- The DNS traffic split per region: from the live DNS nodes' reports (``info.dns_split``:
  steered answers per region since each worker started, gtm.control.dnsnode), added up.
- Nodes (version, lag, last contact), the newest events, certificates close to expiry.

The pure functions below turn those facts into the page's JSON; StatusSource gathers
them, re-reads the head document only when the version changes, and answers every
viewer from one result for STATUS_CACHE seconds, so many open pages cost the store little.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.name

from gtm.control.liveness import LIVE, Liveness
from gtm.control.nodes_view import node_items
from gtm.control.service import ConfigService
from gtm.control.store import CertificateRecord
from gtm.errors import GtmError
from gtm.steering.definitions import parse_steering

STATUS_CACHE = 0.5  # seconds one answer serves every viewer
RECENT_EVENTS = 20
NO_SPLIT = ("No live DNS node reports its answers per region, so the traffic split "
            "cannot be shown; it appears here once one does.")


@dataclass(frozen=True)
class Place:
    name: str
    latitude: float
    longitude: float
    zones: tuple[str, ...]


@dataclass(frozen=True)
class HandSet:
    zone: str
    health: str
    headroom: float | None
    reason: str


@dataclass(frozen=True)
class Layout:
    """What one version says: where the regions are, and their hand-set state."""

    version: int
    places: tuple[Place, ...] = ()
    hand_set: dict[str, tuple[HandSet, ...]] = field(default_factory=dict)


def layout_of(version: int, document: dict[str, Any]) -> Layout:
    places: dict[str, Place] = {}
    for zone, raw in sorted((document.get("steering") or {}).items()):
        try:
            steering = parse_steering(raw, dns.name.from_text(zone), "status")
        except (GtmError, ValueError, TypeError, dns.exception.DNSException):
            continue  # a stored version compiled; this only guards against the unforeseen
        for region in steering.regions.values():
            known = places.get(region.name)
            zones = (*known.zones, zone) if known else (zone,)
            places[region.name] = Place(region.name, region.latitude, region.longitude, zones)
    hand_set: dict[str, list[HandSet]] = {}
    for zone, table in sorted((document.get("state") or {}).items()):
        regions = table.get("regions") if isinstance(table, dict) else None
        for name, state in (regions or {}).items():
            if isinstance(state, dict):
                headroom = state.get("headroom")
                hand_set.setdefault(name, []).append(HandSet(
                    zone, str(state.get("health", "up")),
                    float(headroom) if isinstance(headroom, int | float) else None,
                    str(state.get("reason", ""))))
    return Layout(version, tuple(places[n] for n in sorted(places)),
                  {k: tuple(v) for k, v in hand_set.items()})


def health_summaries(nodes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The health summaries of live nodes, freshest first."""
    live = sorted((n for n in nodes if n["state"] == LIVE), key=lambda n: -n["last_contact"])
    return [n["info"]["health"] for n in live if isinstance(n["info"].get("health"), dict)]


def region_view(place: Place, layout: Layout, summaries: Sequence[dict[str, Any]],
                any_live_node: bool, now: float) -> dict[str, Any]:
    down_by_hand = [h for h in layout.hand_set.get(place.name, ()) if h.health == "down"]
    fact = next((s["regions"][place.name] for s in summaries
                 if isinstance(s.get("regions"), dict) and place.name in s["regions"]), None)
    served = [s["served"][zone]["regions"][place.name] for s in summaries[:1]
              for zone in place.zones
              if place.name in ((s.get("served") or {}).get(zone) or {}).get("regions", {})]
    # A node's "admin" cause may predate the head version: the hand-set state above is
    # the control plane's own and always current.
    served_down = [v for v in served if v.get("state") == "down" and v.get("cause") != "admin"]
    if down_by_hand:
        state, cause, reason = "down", "admin", down_by_hand[0].reason
    elif served_down:
        state, cause, reason = "down", str(served_down[0].get("cause")), \
            str(served_down[0].get("reason"))
    elif fact is not None:
        state, cause = ("up" if fact.get("healthy") else "down"), "region report"
        reason = str(fact.get("detail", ""))
    elif any_live_node:
        state, cause, reason = "up", "none", "no health data: served as up"
    else:
        state, cause, reason = "unknown", "none", "no live DNS node reports"
    hand_headroom = next((h.headroom for h in layout.hand_set.get(place.name, ())
                          if h.headroom is not None), None)
    return {
        "name": place.name, "latitude": place.latitude, "longitude": place.longitude,
        "zones": list(place.zones), "state": state, "cause": cause, "reason": reason,
        "headroom": fact.get("headroom") if fact else hand_headroom,
        "requests_per_s": fact.get("requests_per_s") if fact else None,
        "p95_ms": fact.get("p95_ms") if fact else None,
        "backends": [{"address": b.get("address"), "health": b.get("health"),
                      "state": b.get("state")} for b in (fact or {}).get("backends", [])][:20],
        "report_age": round(now - float(fact["time"]), 1) if fact and "time" in fact else None,
    }


def dns_split(nodes: Sequence[dict[str, Any]], regions: Sequence[str]) -> dict[str, Any]:
    counts: dict[str, float] = {}
    reporting = 0
    for node in nodes:
        split = node["info"].get("dns_split") if node["state"] == LIVE else None
        if isinstance(split, dict):
            reporting += 1
            for region, count in split.items():
                if isinstance(count, int | float) and not isinstance(count, bool):
                    counts[str(region)] = counts.get(str(region), 0) + float(count)
    total = sum(counts.values())
    if not reporting:
        return {"available": False, "note": NO_SPLIT, "shares": {}}
    return {"available": True, "nodes": reporting, "note": "",
            "shares": {r: round(counts.get(r, 0) / total, 4) if total else 0.0
                       for r in sorted({*regions, *counts})}}


def certificate_views(records: Sequence[CertificateRecord], now: float,
                      within_days: float) -> list[dict[str, Any]]:
    close = sorted((r for r in records
                    if not r.deleted and r.not_after - now <= within_days * 86400),
                   key=lambda r: r.not_after)
    return [{"name": r.name, "names": list(r.names[:5]),
             "not_after": dt.datetime.fromtimestamp(r.not_after, dt.UTC).isoformat(),
             "days_left": round((r.not_after - now) / 86400, 1),
             "expired": r.not_after <= now} for r in close]


def node_view(item: dict[str, Any]) -> dict[str, Any]:
    info = item.get("info") or {}
    return {"node_id": item["node_id"], "kind": item["kind"], "state": item["state"],
            "version": item["version"], "lag_versions": item["lag_versions"],
            "seconds_since_contact": item["seconds_since_contact"],
            "host": info.get("host"), "error": info.get("error")}


class StatusSource:
    def __init__(self, service: ConfigService, liveness: Liveness, warning_days: float = 30.0):
        self.service = service
        self.liveness = liveness
        self.warning_days = warning_days
        self._layout = Layout(0)
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def status(self) -> dict[str, Any]:
        async with self._lock:  # one build at a time; the others take its result
            if self._cached is not None and time.monotonic() - self._cached[0] < STATUS_CACHE:
                return self._cached[1]
            body = await self._build()
            self._cached = (time.monotonic(), body)
            return body

    async def _build(self) -> dict[str, Any]:
        store = self.service.store
        head = await store.head()
        if head != self._layout.version:
            self._layout = layout_of(head, await self.service.document_at(head))
        layout = self._layout
        nodes = [n for n in await node_items(self.service, self.liveness, head)
                 if n["state"] != "gone"]
        events = await store.last_events(RECENT_EVENTS)
        certificates = await store.certificates(0)
        now = time.time()
        summaries = health_summaries(nodes)
        any_live = any(n["state"] == LIVE for n in nodes)
        return {
            "time": now, "version": head,
            "map": {"projection": "equirectangular", "outline": "graticule every 30 degrees; "
                    "no land outlines (no map data is shipped)"},
            "regions": [region_view(p, layout, summaries, any_live, now)
                        for p in layout.places],
            "dns_split": dns_split(nodes, [p.name for p in layout.places]),
            "nodes": [node_view(n) for n in nodes],
            "events": [s.event.public() for s in reversed(events)],
            "certificates": {"within_days": self.warning_days,
                             "items": certificate_views(certificates, now, self.warning_days)},
        }
