"""The answer engine: a pure function from a question and the served zones to an answer.

It follows RFC 1034 section 4.3.2 for an authoritative server, with wildcards as
RFC 4592 refines them, negative answers as RFC 2308 asks, CNAME rcodes per RFC 6604,
and ANY answered minimally per RFC 8482. No I/O, no clock: the same question and
zones always give the same answer, so it is tested without sockets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from gtm.dns.steered import SteerInput, decision_kind, record_type_for, steer
from gtm.dns.zone import (
    ADDRESS_TYPES,
    CNAME,
    DS,
    NS,
    NameKey,
    Node,
    Zone,
    name_key,
)
from gtm.steering.model import SteeredName

MAX_CNAME_CHAIN = 16
ANY = dns.rdatatype.ANY
CLASS_IN = 1
CLASS_ANY = 255
ADDITIONAL_TARGET_TYPES = (dns.rdatatype.MX, dns.rdatatype.NS, dns.rdatatype.SRV)
ANY_PREFERENCE = (dns.rdatatype.A, dns.rdatatype.AAAA)
REFUSED_TYPES = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
# Asked at a CNAME owner, these are about the owner itself, never its target: DNSSEC
# records a CNAME owner may hold beside it (RFC 2181 section 10.1, RFC 4035 2.5).
OWNER_ONLY_TYPES = (dns.rdatatype.RRSIG, dns.rdatatype.NSEC)


@dataclass(frozen=True, slots=True)
class Answer:
    rcode: int
    authoritative: bool = False
    answer: tuple[dns.rrset.RRset, ...] = ()
    authority: tuple[dns.rrset.RRset, ...] = ()
    additional: tuple[dns.rrset.RRset, ...] = ()
    # A referral's glue is required data: losing it to truncation sets TC (RFC 9471).
    additional_required: bool = False
    # The ECS scope this answer is valid for: 0 when it does not depend on the client.
    scope_prefix: int = 0
    # Steered answers: every answer section the cache should rotate through.
    variants: tuple[tuple[dns.rrset.RRset, ...], ...] = ()
    # Per variant: (steered name, region, decision kind), for the traffic-split metric.
    tallies: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class ZoneSet:
    """The zones one server answers for, found by longest suffix."""

    zones: Mapping[NameKey, Zone]

    @classmethod
    def of(cls, zones: Iterable[Zone]) -> ZoneSet:
        return cls({zone.key: zone for zone in zones})

    def find(self, key: NameKey) -> Zone | None:
        for depth in range(len(key)):
            zone = self.zones.get(key[depth:])
            if zone is not None:
                return zone
        return None


def answer(
    qname: dns.name.Name,
    qtype: int,
    qclass: int,
    zones: ZoneSet,
    steer_input: SteerInput | None = None,
) -> Answer:
    """Answer one question from the zones, as an authoritative server that never recurses.

    Meta and obsolete types (OPT, MAILA, MAILB, TSIG, MD, ...) are asked like any other:
    no zone holds them, so the answer is NODATA, as Knot gives (BIND's NOTIMP for MAILA
    and FORMERR for OPT rest on no RFC)."""
    key = name_key(qname)
    zone = zones.find(key)
    if zone is not None and qtype == DS and key == zone.key:
        # DS belongs to the parent side of the cut (RFC 4035 3.1.4.1), when we serve it too.
        zone = zones.find(key[1:]) or zone
    if zone is None or qclass not in (CLASS_IN, CLASS_ANY) or qtype in REFUSED_TYPES:
        return Answer(dns.rcode.REFUSED)
    return _Lookup(zone, qtype, steer_input or SteerInput()).run(qname, key)


class _Lookup:
    """One question's walk through one zone, accumulating the CNAME chain."""

    def __init__(self, zone: Zone, qtype: int, steer_input: SteerInput):
        self.zone = zone
        self.qtype = qtype
        self.steer_input = steer_input
        self.chain: list[dns.rrset.RRset] = []
        self.visited: set[NameKey] = set()

    def run(self, qname: dns.name.Name, key: NameKey) -> Answer:
        while True:
            self.visited.add(key)
            outcome = self._step(qname, key)
            if isinstance(outcome, Answer):
                return outcome
            cname = outcome
            self.chain.append(cname)
            target: dns.name.Name = cname[0].target
            target_key = name_key(target)
            # Chains are followed inside this zone only; a loop or an overlong chain
            # ends with what was found, as a resolver would then give up anyway.
            inside = target.is_subdomain(self.zone.origin)
            if not inside or target_key in self.visited or len(self.chain) >= MAX_CNAME_CHAIN:
                return self._positive([])
            qname, key = target, target_key

    def _step(self, qname: dns.name.Name, key: NameKey) -> Answer | dns.rrset.RRset:
        """Answer for one name, or return the CNAME RRset to follow."""
        zone = self.zone
        apex_depth = len(zone.key)
        for depth in range(apex_depth + 1, len(key) + 1):
            ancestor = key[len(key) - depth :]
            at_qname = depth == len(key)
            if ancestor in zone.cuts and not (at_qname and self.qtype == DS):
                return self._referral(ancestor)
            if ancestor not in zone.existing:
                return self._wildcard(qname, key[len(key) - depth + 1 :])
        steered = zone.steering.names.get(key) if zone.steering is not None else None
        if steered is not None:
            rdtype = record_type_for(steered, zone, self.qtype)
            if rdtype is not None:
                return self._steered(qname, steered, rdtype)
        return self._from_node(qname, zone.node(key), synthesized=False)

    def _steered(self, qname: dns.name.Name, steered: SteeredName, rdtype: int) -> Answer:
        records = steer(self.zone, steered, qname, rdtype, self.steer_input)
        if records.variants[0] is None:
            return self._negative(dns.rcode.NOERROR)
        kept = [(rrset, region) for rrset, region in zip(records.variants, records.regions,
                                                          strict=True) if rrset is not None]
        sections = tuple((*self.chain, rrset) for rrset, _region in kept)
        name, kind = steered.name.to_text(), decision_kind(records.decision)
        return Answer(
            dns.rcode.NOERROR,
            authoritative=True,
            answer=sections[0],
            scope_prefix=records.scope,
            variants=sections,
            tallies=tuple((name, region, kind) for _rrset, region in kept),
        )

    def _wildcard(
        self, qname: dns.name.Name, closest_encloser: NameKey
    ) -> Answer | dns.rrset.RRset:
        source = (b"*", *closest_encloser)
        if source not in self.zone.existing:
            return self._negative(dns.rcode.NXDOMAIN)
        return self._from_node(qname, self.zone.node(source), synthesized=True)

    def _from_node(
        self, qname: dns.name.Name, node: Node, synthesized: bool
    ) -> Answer | dns.rrset.RRset:
        def owned(rrset: dns.rrset.RRset) -> dns.rrset.RRset:
            return _renamed(rrset, qname) if synthesized else rrset

        if CNAME in node and self.qtype != CNAME:
            if self.qtype == ANY:  # the CNAME alone, as Knot answers (RFC 8482 practice)
                return self._positive([owned(node[CNAME])])
            if self.qtype in OWNER_ONLY_TYPES:  # none stored: NODATA, the chain not followed
                return self._negative(dns.rcode.NOERROR)
            return owned(node[CNAME])
        if self.qtype == ANY:
            chosen = _minimal_any(node)
            return self._positive([owned(chosen)]) if chosen else self._negative(dns.rcode.NOERROR)
        rrset = node.get(self.qtype)
        if rrset is None:
            return self._negative(dns.rcode.NOERROR)
        return self._positive([owned(rrset)])

    def _positive(self, rrsets: list[dns.rrset.RRset]) -> Answer:
        answer = (*self.chain, *rrsets)
        return Answer(
            dns.rcode.NOERROR,
            authoritative=True,
            answer=answer,
            additional=tuple(self._additional(rrsets)),
        )

    def _negative(self, rcode: int) -> Answer:
        return Answer(
            rcode,
            authoritative=True,
            answer=tuple(self.chain),
            authority=(self.zone.negative_soa,),
        )

    def _referral(self, cut: NameKey) -> Answer:
        ns_rrset = self.zone.nodes[cut][NS]
        glue = [rr for ns in ns_rrset for rr in self.zone.addresses_for(ns.target)]
        return Answer(
            dns.rcode.NOERROR,
            # AA stays set only when a CNAME from our authoritative data led here.
            authoritative=bool(self.chain),
            answer=tuple(self.chain),
            authority=(ns_rrset,),
            additional=tuple(_unique(glue)),
            additional_required=True,
        )

    def _additional(self, rrsets: list[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
        """Addresses of in-zone targets named by MX, NS and SRV answers."""
        found: list[dns.rrset.RRset] = []
        for rrset in rrsets:
            if rrset.rdtype not in ADDITIONAL_TARGET_TYPES:
                continue
            for rdata in rrset:
                target = rdata.exchange if rrset.rdtype == dns.rdatatype.MX else rdata.target
                if target.is_subdomain(self.zone.origin):
                    found.extend(self.zone.addresses_for(target))
        return _unique(found)


def _minimal_any(node: Node) -> dns.rrset.RRset | None:
    """One RRset for ANY (RFC 8482 section 4.1): an address if there is one."""
    for rdtype in ANY_PREFERENCE:
        if rdtype in node:
            return node[rdtype]
    if not node:
        return None
    return node[min(node)]


def _renamed(rrset: dns.rrset.RRset, owner: dns.name.Name) -> dns.rrset.RRset:
    copy = dns.rrset.RRset(owner, rrset.rdclass, rrset.rdtype)
    copy.update(rrset)
    copy.ttl = rrset.ttl
    return copy


def _unique(rrsets: list[dns.rrset.RRset]) -> list[dns.rrset.RRset]:
    seen: set[tuple[NameKey, int]] = set()
    out = []
    for rrset in rrsets:
        marker = (name_key(rrset.name), rrset.rdtype)
        if marker not in seen:
            seen.add(marker)
            out.append(rrset)
    return out


__all__ = ["ADDRESS_TYPES", "Answer", "ZoneSet", "answer"]
