"""A zone compiled for answering: validated once, then read-only.

Names are keyed by their lower-cased label tuples (root label included), which
makes lookups case-insensitive and cheaper to hash than dnspython Names.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from gtm.dns.zonefile import Record
from gtm.errors import ZoneError
from gtm.steering.model import Steering
from gtm.steering.state import SteeringState

NameKey = tuple[bytes, ...]
Node = Mapping[int, dns.rrset.RRset]

SOA = dns.rdatatype.SOA
NS = dns.rdatatype.NS
CNAME = dns.rdatatype.CNAME
A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
DS = dns.rdatatype.DS
ADDRESS_TYPES = (A, AAAA)
TXT = dns.rdatatype.TXT
SPF = dns.rdatatype.SPF
FIXED_RDATA_LEN = {A: 4, AAAA: 16}
EMPTY_NODE: Node = MappingProxyType({})
# The most an RRset may take on the wire and still fit a DNS message (65,535 octets)
# with the header (12), the longest question (259) and an OPT record with every option
# we send (ECS 24, cookie 44, NSID 259, the record 11): anything larger could be served
# over no transport at all.
MAX_RRSET_WIRE = 65535 - 12 - 259 - 11 - 24 - 44 - 259


def name_key(name: dns.name.Name) -> NameKey:
    return tuple(label.lower() for label in name.labels)


@dataclass(frozen=True)
class Zone:
    origin: dns.name.Name
    source: str
    nodes: Mapping[NameKey, Node]
    existing: frozenset[NameKey]  # names with data, plus empty non-terminals
    cuts: frozenset[NameKey]  # delegation points below the apex
    warnings: tuple[str, ...] = field(default=())
    steering: Steering | None = None
    state: SteeringState = field(default_factory=SteeringState)

    @property
    def key(self) -> NameKey:
        return name_key(self.origin)

    @property
    def soa(self) -> dns.rrset.RRset:
        return self.nodes[self.key][SOA]

    @property
    def serial(self) -> int:
        return int(self.soa[0].serial)

    @property
    def negative_soa(self) -> dns.rrset.RRset:
        """The SOA for negative answers, its TTL capped by MINIMUM (RFC 2308 section 3)."""
        soa = self.soa
        ttl = min(soa.ttl, int(soa[0].minimum))
        capped = dns.rrset.RRset(soa.name, soa.rdclass, soa.rdtype)
        capped.update(soa)
        capped.ttl = ttl
        return capped

    def node(self, key: NameKey) -> Node:
        return self.nodes.get(key, EMPTY_NODE)

    def addresses_for(self, target: dns.name.Name) -> list[dns.rrset.RRset]:
        """A and AAAA RRsets of a name in this zone (authoritative data or glue)."""
        node = self.node(name_key(target))
        return [node[t] for t in ADDRESS_TYPES if t in node]


def compile_zone(origin: dns.name.Name, records: Iterable[Record], source: str) -> Zone:
    """Build a Zone from records, or raise ZoneError naming the file, line and reason."""
    origin_key = name_key(origin)
    first_line: dict[tuple[NameKey, int], Record] = {}
    grouped: dict[NameKey, dict[int, dns.rrset.RRset]] = {}
    warnings: list[str] = []
    for record in records:
        key = name_key(record.name)
        _check_in_zone(record, origin, key, origin_key)
        rrsets = grouped.setdefault(key, {})
        rrset = rrsets.get(record.rdtype)
        if rrset is None:
            rrset = dns.rrset.RRset(record.name, dns.rdataclass.IN, record.rdata.rdtype)
            rrsets[record.rdtype] = rrset
            first_line[(key, record.rdtype)] = record
            rrset.update_ttl(record.ttl)
        elif dns.rdatatype.is_singleton(record.rdata.rdtype):
            # dnspython would silently replace the first record; a second one is an error.
            kind = dns.rdatatype.to_text(record.rdata.rdtype)
            reason = f"more than one {kind} record at {record.name}"
            raise ZoneError(reason, record.source, record.line)
        elif record.ttl != rrset.ttl:
            warnings.append(
                f"{record.source}:{record.line}: TTL {record.ttl} differs within the "
                f"{dns.rdatatype.to_text(rrset.rdtype)} RRset; using {min(rrset.ttl, record.ttl)}"
            )
            rrset.update_ttl(record.ttl)
        rrset.add(record.rdata)
    _check_apex(grouped, origin_key, origin, source, first_line)
    cuts = frozenset(k for k, n in grouped.items() if NS in n and k != origin_key)
    glue_names = frozenset(name_key(ns.target) for n in grouped.values() for ns in n.get(NS, ()))
    for key, rrsets in grouped.items():
        _check_node(key, rrsets, first_line, origin_key, cuts, glue_names)
        _check_sizes(key, rrsets, first_line)
    existing = _existing_names(grouped, origin_key)
    nodes = {k: MappingProxyType(dict(v)) for k, v in grouped.items()}
    zone = Zone(origin, source, MappingProxyType(nodes), existing, cuts, tuple(warnings))
    _check_glue(zone, first_line)
    return zone


def attach_steering(zone: Zone, steering: Steering, state: SteeringState) -> Zone:
    """The zone with its steered names, which must not clash with its static data."""
    for key, steered in steering.names.items():
        pool = steering.pools[steered.pool]
        node = zone.node(key)
        clashing = [t for t in node if pool.is_cname or t in (CNAME, *ADDRESS_TYPES)]
        where = f"names.{steered.name}"
        if clashing:
            kinds = ", ".join(dns.rdatatype.to_text(dns.rdatatype.RdataType.make(t))
                              for t in clashing)
            raise ZoneError(f"steered name {steered.name} clashes with static {kinds} records",
                            steering.source, where)
        if key == zone.key and pool.is_cname:
            raise ZoneError("the zone apex cannot be a CNAME", steering.source, where)
        if key in zone.cuts or _enclosing_cut(key, zone.cuts) is not None:
            raise ZoneError(f"steered name {steered.name} is at or below a delegation",
                            steering.source, where)
    existing = set(zone.existing)
    for key in steering.names:
        for depth in range(len(key) - len(zone.key) + 1):
            existing.add(key[depth:])
    return replace(zone, existing=frozenset(existing), steering=steering, state=state)


def _check_in_zone(record: Record, origin: dns.name.Name, key: NameKey, origin_key: NameKey):
    if key[len(key) - len(origin_key) :] != origin_key or len(key) < len(origin_key):
        raise ZoneError(
            f"{record.name} is outside the zone {origin}", record.source, record.line
        )


def _check_apex(
    grouped: Mapping[NameKey, Mapping[int, dns.rrset.RRset]],
    origin_key: NameKey,
    origin: dns.name.Name,
    source: str,
    first_line: Mapping[tuple[NameKey, int], Record],
) -> None:
    apex = grouped.get(origin_key, {})
    if SOA not in apex:
        # Name where the zone's data begins (the first record read), where its SOA belongs.
        first = next(iter(first_line.values()), None)
        where = (first.source, first.line) if first is not None else (source, 1)
        raise ZoneError(f"no SOA record at the apex {origin}", *where)
    if NS not in apex:
        soa = first_line[(origin_key, SOA)]
        raise ZoneError(f"no NS records at the apex {origin}", soa.source, soa.line)


def _check_node(
    key: NameKey,
    rrsets: Mapping[int, dns.rrset.RRset],
    first_line: Mapping[tuple[NameKey, int], Record],
    origin_key: NameKey,
    cuts: frozenset[NameKey],
    glue_names: frozenset[NameKey],
) -> None:
    def fail(rdtype: int, reason: str) -> None:
        record = first_line[(key, rdtype)]
        raise ZoneError(reason, record.source, record.line)

    name = rrsets[next(iter(rrsets))].name
    if SOA in rrsets and key != origin_key:
        fail(SOA, f"SOA record at {name}, which is not the zone apex")
    if CNAME in rrsets:
        others = [t for t in rrsets if t != CNAME]
        if others:
            fail(
                CNAME,
                f"CNAME at {name} next to other data "
                f"({', '.join(dns.rdatatype.to_text(rrsets[t].rdtype) for t in others)})",
            )
    # Glue: addresses of a name some NS record names; any other address there is occluded.
    glue_types = ADDRESS_TYPES if key in glue_names else ()
    below = _enclosing_cut(key, cuts)
    if below is not None:
        stray = [t for t in rrsets if t not in glue_types]
        if stray:
            fail(stray[0], f"{name} lies below the delegation at {_text(below)}; only glue may")
    elif key in cuts:
        stray = [t for t in rrsets if t not in (NS, DS, *glue_types)]
        if stray:
            fail(stray[0], f"{name} is a delegation point; it may hold only NS, DS and glue")


def _check_sizes(key: NameKey, rrsets: Mapping[int, dns.rrset.RRset],
                 first_line: Mapping[tuple[NameKey, int], Record]) -> None:
    for rdtype, rrset in rrsets.items():
        # A cheap upper bound first; only an RRset that might be too big is rendered.
        if _size_bound(rrset) <= MAX_RRSET_WIRE:
            continue
        size = _wire_size(rrset)
        if size > MAX_RRSET_WIRE:
            record = first_line[(key, rdtype)]
            kind = dns.rdatatype.to_text(rrset.rdtype)
            raise ZoneError(
                f"the {kind} RRset at {rrset.name} takes {size:,} octets on the wire, more "
                f"than a DNS message can carry ({MAX_RRSET_WIRE:,} with header, question "
                f"and EDNS): split it over several names", record.source, record.line)


def _size_bound(rrset: dns.rrset.RRset) -> int:
    """At least the RRset's wire size: each record's owner, fixed fields and data, no
    name compressed."""
    per_record = len(rrset.name.to_wire() or b"") + 10
    rdtype = rrset.rdtype
    if rdtype in FIXED_RDATA_LEN:
        return len(rrset) * (per_record + FIXED_RDATA_LEN[rdtype])
    if rdtype in (TXT, SPF):
        return sum(per_record + sum(len(s) + 1 for s in rd.strings) for rd in rrset)
    return sum(per_record + len(rd.to_wire()) for rd in rrset)


def _wire_size(rrset: dns.rrset.RRset) -> int:
    """The RRset's size as a reply carries it: owner names compressed after the first."""
    out = io.BytesIO()
    rrset.to_wire(out, compress={})
    return out.tell()


def _enclosing_cut(key: NameKey, cuts: frozenset[NameKey]) -> NameKey | None:
    """The delegation strictly above key, if any."""
    for depth in range(1, len(key)):
        if key[depth:] in cuts:
            return key[depth:]
    return None


def _existing_names(
    grouped: Mapping[NameKey, Mapping[int, dns.rrset.RRset]], origin_key: NameKey
) -> frozenset[NameKey]:
    """Every owner name and every empty non-terminal between it and the apex."""
    existing: set[NameKey] = set()
    for key in grouped:
        for depth in range(len(key) - len(origin_key) + 1):
            existing.add(key[depth:])
    return frozenset(existing)


def _check_glue(zone: Zone, first_line: Mapping[tuple[NameKey, int], Record]) -> None:
    """In-zone name servers need addresses, or resolvers cannot reach them."""
    for key in (zone.key, *sorted(zone.cuts)):
        for ns in zone.nodes[key][NS]:
            target: dns.name.Name = ns.target
            if not target.is_subdomain(zone.origin) or zone.addresses_for(target):
                continue
            record = first_line[(key, NS)]
            kind = "glue" if key != zone.key else "address records"
            raise ZoneError(
                f"name server {target} is inside the zone but has no {kind} (A or AAAA)",
                record.source,
                record.line,
            )


def _text(key: NameKey) -> str:
    return dns.name.Name(key).to_text()
