"""Answering a steered name: the steering chain's decision turned into RRsets.

The answer carries every variant the cache should rotate through (see
``gtm.steering.select.variants``) and the ECS scope the decision depends on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from gtm.dns.zone import AAAA, CNAME, Zone
from gtm.steering.chain import Candidate, Client, Decision, LocatorLike, decide
from gtm.steering.model import Endpoint, SteeredName
from gtm.steering.select import sticky_scope, variants

A = dns.rdatatype.A
ANY = dns.rdatatype.ANY


@dataclass(frozen=True)
class SteerInput:
    """What a steered answer may depend on beyond the zone: the client and the geo data."""

    client: Client | None = None
    locator: LocatorLike | None = None
    seed: int = 0


@dataclass(frozen=True)
class SteeredRecords:
    variants: tuple[dns.rrset.RRset | None, ...]  # None: no record of this type (NODATA)
    scope: int
    decision: Decision
    # Per variant: the region of its first record, the one most clients connect to
    # ("none" for fixed fallback addresses); what the traffic-split metric counts.
    regions: tuple[str, ...] = ()


def decision_kind(decision: Decision) -> str:
    """steered (healthy candidates), fallback (a fallback with something healthy, or
    fixed addresses) or fail_open (handing out endpoints not known to be healthy)."""
    if decision.fallback is None:
        return "steered"
    if decision.candidates and not any(c.healthy for c in decision.candidates):
        return "fail_open"
    return "fallback"


def record_type_for(steered: SteeredName, zone: Zone, qtype: int) -> int | None:
    """The record type a steered name answers this query with, or None to fall through."""
    assert zone.steering is not None
    pool = zone.steering.pools[steered.pool]
    if pool.is_cname:
        return CNAME
    if qtype in (A, ANY):
        return A
    if qtype == AAAA:
        return AAAA
    return None


def steer(
    zone: Zone, steered: SteeredName, qname: dns.name.Name, rdtype: int, inputs: SteerInput
) -> SteeredRecords:
    assert zone.steering is not None
    serves = _serves(rdtype)
    decision = decide(steered, zone.steering, zone.state, serves, inputs.client, inputs.locator)
    client = inputs.client
    scope = decision.scope
    if decision.fixed_addresses:
        chosen = [_fixed_rrset(qname, rdtype, steered.ttl, decision.fixed_addresses)]
        regions = ["none"]
    else:
        picks = variants(steered, decision.candidates, client, inputs.seed)
        if steered.select == "sticky" and client is not None and decision.candidates:
            scope = max(scope, sticky_scope(steered, client))
        # Variants repeat (a rotation of 32 over two endpoints): build each set once,
        # so the renderer can also render each distinct answer once.
        built: dict[tuple[str, ...], dns.rrset.RRset | None] = {}
        for pick in picks:
            names = tuple(c.endpoint.name for c in pick)
            if names not in built:
                built[names] = _rrset(qname, rdtype, steered.ttl, pick)
        chosen = [built[tuple(c.endpoint.name for c in pick)] for pick in picks]
        regions = [pick[0].endpoint.region if pick else "none" for pick in picks]
    if client is None or not client.from_ecs:
        scope = 0
    else:
        scope = min(scope, client.source_prefix)
    return SteeredRecords(tuple(chosen), scope, decision, tuple(regions))


def _serves(rdtype: int) -> Callable[[Endpoint], bool]:
    if rdtype == CNAME:
        return lambda e: e.cname is not None
    if rdtype == AAAA:
        return lambda e: e.ipv6 is not None
    return lambda e: e.ipv4 is not None


def _rrset(
    qname: dns.name.Name, rdtype: int, ttl: int, picks: Sequence[Candidate]
) -> dns.rrset.RRset | None:
    if not picks:
        return None
    texts = [_value(c.endpoint, rdtype) for c in picks]
    return dns.rrset.from_text_list(
        qname, ttl, dns.rdataclass.IN, dns.rdatatype.RdataType.make(rdtype), texts
    )


def _value(endpoint: Endpoint, rdtype: int) -> str:
    if rdtype == CNAME:
        assert endpoint.cname is not None
        return endpoint.cname.to_text()
    value = endpoint.ipv6 if rdtype == AAAA else endpoint.ipv4
    assert value is not None
    return value


def _fixed_rrset(
    qname: dns.name.Name, rdtype: int, ttl: int, addresses: Sequence[str]
) -> dns.rrset.RRset | None:
    version = 6 if rdtype == AAAA else 4
    texts = [a for a in addresses if ipaddress.ip_address(a).version == version]
    if rdtype == CNAME or not texts:
        return None
    return dns.rrset.from_text_list(
        qname, ttl, dns.rdataclass.IN, dns.rdatatype.RdataType.make(rdtype), texts
    )


__all__ = ["SteerInput", "SteeredRecords", "decision_kind", "record_type_for", "steer"]
