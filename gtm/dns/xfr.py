"""Zone transfers (AXFR, RFC 5936; IXFR, RFC 1995): what a zone transfers as, and the
messages that carry it. Pure: zones in, wire messages out.

A transfer holds the zone's static records and, for each steered name, its default
answer: what a client with no known location gets while every region is healthy (the
union of the rotation's variants). Secondaries cannot steer; they serve that answer.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset
import dns.serial
import dns.tsig

from gtm.dns.steered import SteerInput, steer
from gtm.dns.zone import AAAA, CNAME, SOA, Zone

A = dns.rdatatype.A
MESSAGE_LIMIT = 65535
TSIG_ROOM = 512  # kept free in every message for the TSIG record
# One RR of the zone: owner, TTL and data (rdata objects hash by their wire form).
Record = tuple[dns.name.Name, int, dns.rdata.Rdata]


@dataclass(frozen=True)
class ZoneContent:
    """A zone as it transfers: its SOA and every other record."""

    origin: dns.name.Name
    soa: dns.rrset.RRset
    records: frozenset[Record]

    @property
    def serial(self) -> int:
        return int(self.soa[0].serial)


def zone_content(zone: Zone) -> ZoneContent:
    records: set[Record] = set()
    for node in zone.nodes.values():
        for rdtype, rrset in node.items():
            if rdtype != SOA:
                records.update((rrset.name, rrset.ttl, rdata) for rdata in rrset)
    if zone.steering is not None:
        for steered in zone.steering.names.values():
            pool = zone.steering.pools[steered.pool]
            for rdtype in ((CNAME,) if pool.is_cname else (A, AAAA)):
                chosen = steer(zone, steered, steered.name, rdtype, SteerInput())
                for variant in chosen.variants:
                    if variant is not None:
                        records.update((variant.name, variant.ttl, rdata) for rdata in variant)
    return ZoneContent(zone.origin, zone.soa, frozenset(records))


def newer(serial: int, than: int) -> bool:
    """Serial number arithmetic (RFC 1982)."""
    return dns.serial.Serial(serial) > dns.serial.Serial(than)


def axfr_rrsets(content: ZoneContent) -> Iterator[dns.rrset.RRset]:
    """SOA, the records (one RRset per owner and type, in canonical order), SOA."""
    yield content.soa
    yield from _grouped(content.records)
    yield content.soa


def ixfr_rrsets(old: ZoneContent, new: ZoneContent) -> Iterator[dns.rrset.RRset]:
    """One condensed difference sequence from ``old`` to ``new`` (RFC 1995 sections 4, 5):
    new SOA, old SOA, what went, new SOA, what came, new SOA."""
    yield new.soa
    yield old.soa
    yield from _grouped(old.records - new.records)
    yield new.soa
    yield from _grouped(new.records - old.records)
    yield new.soa


def up_to_date(content: ZoneContent) -> Iterator[dns.rrset.RRset]:
    """The IXFR answer to a client that has the current serial or a newer one."""
    yield content.soa


def changed_records(old: ZoneContent, new: ZoneContent) -> int:
    return len(old.records ^ new.records)


def _grouped(records: Iterable[Record]) -> Iterator[dns.rrset.RRset]:
    groups: dict[tuple[dns.name.Name, int, int], dns.rrset.RRset] = {}
    for name, ttl, rdata in records:
        key = (name, rdata.rdtype, ttl)
        rrset = groups.get(key)
        if rrset is None:
            rrset = groups[key] = dns.rrset.RRset(name, dns.rdataclass.IN, rdata.rdtype)
            rrset.update_ttl(ttl)
        rrset.add(rdata)
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2])):
        yield groups[key]


def messages(query: dns.message.Message, rrsets: Iterable[dns.rrset.RRset],
             key: dns.tsig.Key | None) -> Iterator[bytes]:
    """The answer messages of a transfer, each up to 64 KB; with ``key``, every message
    is signed, the first over the query's MAC and each next over the previous one
    (RFC 8945 5.3.1)."""
    context = None
    first = True
    renderer = _start(query, first)
    pending = 0
    for rrset in rrsets:
        try:
            renderer.add_rrset(dns.renderer.ANSWER, rrset)
            pending += 1
            continue
        except dns.exception.TooBig:
            if pending == 0:
                raise
        context, wire = _finish(renderer, query, key, context)
        yield wire
        first = False
        renderer = _start(query, first)
        renderer.add_rrset(dns.renderer.ANSWER, rrset)  # TooBig: an RRset over 64 KB
        pending = 1
    yield _finish(renderer, query, key, context)[1]


def _start(query: dns.message.Message, first: bool) -> dns.renderer.Renderer:
    flags = dns.flags.QR | dns.flags.AA
    renderer = dns.renderer.Renderer(query.id, flags, MESSAGE_LIMIT)
    renderer.reserve(TSIG_ROOM)
    if first:  # later messages may leave the question out (RFC 5936 2.2.1)
        for rrset in query.question:
            renderer.add_question(rrset.name, rrset.rdtype, rrset.rdclass)
    return renderer


def _finish(renderer: dns.renderer.Renderer, query: dns.message.Message,
            key: dns.tsig.Key | None, context: object) -> tuple[object, bytes]:
    renderer.release_reserved()
    renderer.write_header()
    if key is not None:
        context = renderer.add_multi_tsig(context, key.name, key, 300, query.id, 0, b"",
                                          query.mac if context is None else b"",
                                          key.algorithm)
    return context, renderer.get_wire()


def unsigned_tsig_error(reply: bytes, query: dns.message.Message, error: int) -> bytes:
    """``reply`` with a TSIG record carrying ``error`` and no MAC (RFC 8945 5.2: BADKEY,
    BADSIG), so the client learns why it was refused."""
    tsig = query.tsig[0] if query.tsig else None
    if tsig is None or query.keyname is None:
        return reply
    rdata = tsig.replace(mac=b"", error=error, other=b"", time_signed=int(time.time()))
    data = rdata.to_wire()
    owner = query.keyname.to_wire() or b""
    record = owner + struct.pack("!HHIH", dns.rdatatype.TSIG,
                                                   dns.rdataclass.ANY, 0, len(data)) + data
    arcount = struct.unpack_from("!H", reply, 10)[0]
    return reply[:10] + struct.pack("!H", arcount + 1) + reply[12:] + record
