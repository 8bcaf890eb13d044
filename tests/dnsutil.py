"""Helpers shared by the DNS tests: zones from master-file text, queries, parsed replies."""

from __future__ import annotations

import struct
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rdatatype
import dns.rrset

from gtm.dns.answer import ZoneSet
from gtm.dns.engine import Engine
from gtm.dns.loader import load_zone
from gtm.dns.render import ServerIdentity
from gtm.dns.zone import Zone, compile_zone
from gtm.dns.zonefile import read_master_text


def zone_file(directory: Path, origin: str, text: str) -> Path:
    """Write master-file text as ``<origin>.zone`` in directory and return its path."""
    path = directory / f"{origin.rstrip('.')}.zone"
    path.write_text(text, encoding="utf-8")
    return path


def load(directory: Path, origin: str, text: str) -> Zone:
    """A zone loaded the way the server loads it: from ``<origin>.zone`` on disk."""
    return load_zone(zone_file(directory, origin, text))


def zone_from_text(origin: str, text: str) -> Zone:
    """A zone compiled from text without touching the disk (for module-level fixtures)."""
    name = dns.name.from_text(origin)
    return compile_zone(name, read_master_text(text, name, f"{origin}zone"), f"{origin}zone")


def engine_for(*zones: Zone, nsid: bytes | None = None) -> Engine:
    return Engine(ZoneSet.of(zones), ServerIdentity(nsid=nsid))


def query(qname: str, rdtype: str = "A", **kwargs: object) -> dns.message.QueryMessage:
    """A dnspython query; kwargs go to dns.message.make_query (use_edns, options, ...)."""
    return dns.message.make_query(qname, rdtype, **kwargs)  # type: ignore[arg-type]


def ask(
    engine: Engine, qname: str, rdtype: str = "A", tcp: bool = False, **kwargs: object
) -> dns.message.Message:
    """Send one query through the engine and parse the reply."""
    return exchange(engine, query(qname, rdtype, **kwargs), tcp=tcp)


def exchange(
    engine: Engine, message: dns.message.Message, tcp: bool = False
) -> dns.message.Message:
    reply = engine.respond(message.to_wire(), tcp=tcp)
    assert reply is not None, "the engine gave no reply to a query"
    return dns.message.from_wire(reply)


def raw_reply(engine: Engine, wire: bytes, tcp: bool = False) -> dns.message.Message:
    reply = engine.respond(wire, tcp=tcp)
    assert reply is not None, "the engine gave no reply"
    return dns.message.from_wire(reply)


def rrset_texts(section: list[dns.rrset.RRset]) -> set[str]:
    """Every record of a section as 'owner TTL IN TYPE rdata' lines, owner absolute."""
    return {line for rrset in section for line in rrset.to_text().splitlines()}


def rrsets_of(section: list[dns.rrset.RRset]) -> list[tuple[str, str]]:
    """A section as (lower-case owner, type) pairs in order."""
    return [
        (rrset.name.to_text().lower(), dns.rdatatype.to_text(rrset.rdtype)) for rrset in section
    ]


def is_aa(message: dns.message.Message) -> bool:
    return bool(message.flags & dns.flags.AA)


def is_tc(message: dns.message.Message) -> bool:
    return bool(message.flags & dns.flags.TC)


def header(
    qid: int = 0x1234,
    flags: int = 0x0100,
    qdcount: int = 1,
    ancount: int = 0,
    nscount: int = 0,
    arcount: int = 0,
) -> bytes:
    return struct.pack("!6H", qid, flags, qdcount, ancount, nscount, arcount)


def wire_name(text: str) -> bytes:
    return dns.name.from_text(text).to_wire()


def question(name: str = "www.example.test.", rdtype: int = 1, rdclass: int = 1) -> bytes:
    return wire_name(name) + struct.pack("!HH", rdtype, rdclass)


def opt_record(
    options: bytes = b"",
    owner: bytes = b"\x00",
    udp_size: int = 1232,
    version: int = 0,
    rdlength: int | None = None,
) -> bytes:
    """An OPT pseudo-record; rdlength may lie about the options' length."""
    length = len(options) if rdlength is None else rdlength
    return owner + struct.pack("!HHBBHH", 41, udp_size, 0, version, 0, length) + options


def option(code: int, payload: bytes) -> bytes:
    return struct.pack("!HH", code, len(payload)) + payload


def ecs_payload(family: int, source: int, scope: int, address: bytes) -> bytes:
    return struct.pack("!HBB", family, source, scope) + address


def ecs_option(payload: bytes) -> dns.edns.GenericOption:
    """An ECS option with exactly these payload octets (dnspython would fix bad ones)."""
    return dns.edns.GenericOption(dns.edns.OptionType.ECS, payload)
