"""What a configuration answers a client: `gtm explain` as data (gtm_answer), and the
plan-time answer simulation of gtm_steered_name (``simulated_answers``).

The same path as `gtm explain` against the API: the document is compiled by
gtm.config.document.compile_document, a node's health summary (the first node that
reports one, as `gtm explain` takes it) is merged in by gtm.health.overlay, and the
name is steered by the DNS engine's gtm.dns.steered.steer, so the answer here is the
answer a node gives.

A simulated answer is one line, ``"REGIONS ADDRESSES"`` (``"eu-west 127.0.1.1"``,
``"eu-west,us-east 127.0.1.1,127.0.2.1"``, ``"fallback:addresses 192.0.2.1"``): the
regions the filter chain left, in its order, and every address the answer rotates over
for a client of that subnet, sorted. A weighted pick is never drawn: the set it draws
from is listed (sticky names list the one pick for the subnet's own address, which is
what every client of the subnet gets). So the text changes only when the configuration
or the health does, never from one plan to the next.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import dns.name
import dns.rdatatype

from gtm.config.document import compile_document
from gtm.dns.answer import ZoneSet
from gtm.dns.steered import SteerInput, record_type_for, steer
from gtm.dns.zone import name_key
from gtm.errors import ConfigError
from gtm.geo.locate import DEFAULT_DATABASE, Locator
from gtm.steering.chain import Client

SIMULATED_TYPES = ("A", "AAAA", "CNAME")  # the first the name is steered for


@dataclass(frozen=True)
class Answer:
    addresses: tuple[str, ...]
    regions: tuple[str, ...]
    scope: int
    fallback: str | None

    def line(self) -> str:
        regions = ",".join(self.regions) or "-"
        if self.fallback is not None:
            regions = f"fallback:{self.fallback}"
        return f"{regions} {','.join(self.addresses) or '(no answer)'}"


@cache
def locator() -> Locator | None:
    """The shipped geo database, as `gtm explain` uses it (None when it is missing)."""
    return Locator(DEFAULT_DATABASE) if DEFAULT_DATABASE.exists() else None


def compiled(document: dict[str, Any], source: str,
             health: Mapping[str, Any] | None = None) -> ZoneSet:
    """The document's zones, with a node's health summary merged in as nodes merge it."""
    zones = compile_document(document, source).zones
    if not health:
        return zones
    from gtm.health.overlay import overlay
    from gtm.health.service import facts_from_summary

    return overlay(zones, facts_from_summary(health))


def answer(document: dict[str, Any], source: str, name: str, subnet: str | None,
           qtype: str, health: Mapping[str, Any] | None = None) -> Answer:
    """Raises ConfigError for a name that is not steered, or a bad subnet or type."""
    return answer_in(compiled(document, source, health), name, subnet, qtype)


def answer_in(zones: ZoneSet, name: str, subnet: str | None, qtype: str | None) -> Answer:
    """``qtype`` None: the first of A, AAAA and CNAME the name is steered for."""
    qname = dns.name.from_text(name)
    zone = zones.find(name_key(qname))
    if zone is None:
        raise ConfigError(f"{qname} is in no zone of the configuration")
    steered = zone.steering.names.get(name_key(qname)) if zone.steering else None
    if steered is None:
        raise ConfigError(f"{qname} is not a steered name in zone {zone.origin}")
    answer_type = None
    for text in (qtype,) if qtype else SIMULATED_TYPES:
        try:
            rdtype = dns.rdatatype.from_text(text)
        except dns.rdatatype.UnknownRdatatype:
            raise ConfigError(f"unknown query type {qtype!r}") from None
        answer_type = record_type_for(steered, zone, rdtype)
        if answer_type is not None:
            break
    if answer_type is None:
        raise ConfigError(f"{qname} is steered for A, AAAA or CNAME, not {qtype}")
    client = None
    if subnet:
        try:
            network = ipaddress.ip_network(subnet, strict=False)
        except ValueError as exc:
            raise ConfigError(f"client_subnet: {exc}") from None
        client = Client(network.network_address, network.prefixlen, from_ecs=True)
    records = steer(zone, steered, qname, answer_type, SteerInput(client, locator()))
    addresses = sorted({r.to_text() for rrset in records.variants if rrset is not None
                        for r in rrset})
    regions: list[str] = []
    for candidate in records.decision.candidates:
        if candidate.endpoint.region not in regions:
            regions.append(candidate.endpoint.region)
    return Answer(tuple(addresses), tuple(regions), records.scope, records.decision.fallback)


def simulate(zones: ZoneSet, name: str, vantage_points: Mapping[str, str]) -> dict[str, str]:
    """label -> the answer line a client in that subnet gets. Raises ConfigError."""
    return {label: answer_in(zones, name, subnet, None).line()
            for label, subnet in sorted(vantage_points.items())}
