"""What the live configuration answers a client: `gtm explain` as data (gtm_answer).

The same path as `gtm explain` against the API: the document is compiled by
gtm.config.document.compile_document and the name is steered by the DNS engine's
gtm.dns.steered.steer, so the answer here is the answer a node gives."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cache
from typing import Any

import dns.name
import dns.rdatatype

from gtm.config.document import compile_document
from gtm.dns.steered import SteerInput, record_type_for, steer
from gtm.dns.zone import name_key
from gtm.errors import ConfigError
from gtm.geo.locate import DEFAULT_DATABASE, Locator
from gtm.steering.chain import Client


@dataclass(frozen=True)
class Answer:
    addresses: tuple[str, ...]
    regions: tuple[str, ...]
    scope: int
    fallback: str | None


@cache
def locator() -> Locator | None:
    """The shipped geo database, as `gtm explain` uses it (None when it is missing)."""
    return Locator(DEFAULT_DATABASE) if DEFAULT_DATABASE.exists() else None


def answer(document: dict[str, Any], source: str, name: str, subnet: str | None,
           qtype: str) -> Answer:
    """Raises ConfigError for a name that is not steered, or a bad subnet or type."""
    zones = compile_document(document, source).zones
    qname = dns.name.from_text(name)
    zone = zones.find(name_key(qname))
    if zone is None:
        raise ConfigError(f"{qname} is in no zone of the configuration")
    steered = zone.steering.names.get(name_key(qname)) if zone.steering else None
    if steered is None:
        raise ConfigError(f"{qname} is not a steered name in zone {zone.origin}")
    try:
        rdtype = dns.rdatatype.from_text(qtype)
    except dns.rdatatype.UnknownRdatatype:
        raise ConfigError(f"unknown query type {qtype!r}") from None
    answer_type = record_type_for(steered, zone, rdtype)
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
