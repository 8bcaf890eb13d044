"""Parsing of DNS queries from wire format (RFC 1035 section 4, RFC 6891, RFC 7871).

The server parses only what a query may carry: the header, one question, and the
additional section's OPT record with its options. Anything malformed raises a
:class:`FormErr`; packets that must not be answered at all raise :class:`Drop`.
Written by hand rather than with dnspython because the rules for what is FORMERR,
NOTIMP or silence are the server's to decide, and because it is the slow path's
first cost.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

import dns.name

from gtm.errors import DnsWireError
from gtm.wording import counted

HEADER_LEN = 12
OPCODE_QUERY = 0
TYPE_OPT = 41
OPTION_NSID = 3
OPTION_ECS = 8
OPTION_COOKIE = 10
MAX_POINTER_HOPS = 64
MAX_NAME_WIRE_LEN = 255
MAX_LABEL_LEN = 63

FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_CD = 0x0010
DO_BIT = 0x8000  # in the OPT record's TTL field


class Drop(DnsWireError):
    """A packet that gets no reply: too short to carry a header, or a response."""


class FormErr(DnsWireError):
    """A malformed query; answered with FORMERR."""


class NotImp(DnsWireError):
    """A well-formed header with an opcode this server does not implement."""


@dataclass(frozen=True, slots=True)
class ClientSubnet:
    """An EDNS Client Subnet option as the client sent it (RFC 7871)."""

    family: int
    source_prefix: int
    scope_prefix: int
    address: bytes  # exactly ceil(source_prefix / 8) octets, as on the wire

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        width = 4 if self.family == 1 else 16
        packed = self.address + bytes(width - len(self.address))
        return ipaddress.ip_network((packed, self.source_prefix))


@dataclass(frozen=True, slots=True)
class Edns:
    """The requester's OPT record (RFC 6891 section 6.1)."""

    version: int
    udp_size: int
    dnssec_ok: bool
    client_subnet: ClientSubnet | None
    nsid_requested: bool
    # The COOKIE option's value as sent (RFC 7873), unchecked: the engine checks it when
    # cookies are on, and a server without them ignores it.
    cookie: bytes | None = None


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int
    qname: dns.name.Name
    qtype: int
    qclass: int
    question_wire: bytes  # name, type and class exactly as asked (case kept)
    edns: Edns | None


_COUNTS_ONE_QUESTION_ONE_ADDITIONAL = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_OPT_OWNER_AND_TYPE = b"\x00" + TYPE_OPT.to_bytes(2, "big")


def plain_opt(data: bytes) -> int | None:
    """Where the OPT record of a plain query starts (its root owner): a query of one
    question whose only other record is an OPT. None for any other shape, which the full
    parser handles. The fast paths (ECS buckets, cookies) find their option from here."""
    if len(data) < 12 or data[4:12] != _COUNTS_ONE_QUESTION_ONE_ADDITIONAL:
        return None
    position = 12
    try:
        while (length := data[position]) != 0:
            if length > 63:
                return None
            position += length + 1
    except IndexError:
        return None
    opt = position + 5  # past the root label, QTYPE and QCLASS
    return opt if data[opt : opt + 3] == _OPT_OWNER_AND_TYPE else None


def opcode_of(flags: int) -> int:
    return (flags >> 11) & 0xF


def parse_query(data: bytes) -> Query:
    """Parse a query, or raise Drop, NotImp or FormErr."""
    if len(data) < HEADER_LEN:
        raise Drop("shorter than a DNS header")
    qid, flags, qdcount, ancount, nscount, arcount = struct.unpack_from("!6H", data)
    if flags & FLAG_QR:
        raise Drop("QR set: a response, not a query")
    if opcode_of(flags) != OPCODE_QUERY:
        raise NotImp(f"opcode {opcode_of(flags)} is not implemented")
    if qdcount != 1:
        raise FormErr(f"QDCOUNT is {qdcount}, must be 1")
    labels, offset = read_name(data, HEADER_LEN)
    if offset + 4 > len(data):
        raise FormErr("question truncated")
    qtype, qclass = struct.unpack_from("!HH", data, offset)
    question_end = offset + 4
    offset = skip_records(data, question_end, ancount + nscount)
    edns, offset = read_additional(data, offset, arcount)
    if offset != len(data):
        raise FormErr(f"{counted(len(data) - offset, 'octet')} after the last record")
    return Query(
        id=qid,
        flags=flags,
        qname=dns.name.Name(labels),
        qtype=qtype,
        qclass=qclass,
        question_wire=data[HEADER_LEN:question_end],
        edns=edns,
    )


def read_name(data: bytes, offset: int) -> tuple[list[bytes], int]:
    """Read a possibly compressed name; return its labels (root included) and the end offset."""
    labels: list[bytes] = []
    wire_len = 1
    end: int | None = None
    hops = 0
    position = offset
    while True:
        if position >= len(data):
            raise FormErr("name runs past the end of the message")
        length = data[position]
        kind = length & 0xC0
        if kind == 0xC0:
            if position + 1 >= len(data):
                raise FormErr("compression pointer truncated")
            target = ((length & 0x3F) << 8) | data[position + 1]
            if end is None:
                end = position + 2
            hops += 1
            # Pointers must point backwards; that alone makes loops impossible,
            # and the hop limit bounds the work on pathological chains.
            if target >= position or hops > MAX_POINTER_HOPS:
                raise FormErr("compression pointer loop or forward pointer")
            position = target
            continue
        if kind != 0:
            raise FormErr(f"unsupported label type 0x{kind:02x}")
        if length == 0:
            labels.append(b"")
            return labels, (end if end is not None else position + 1)
        wire_len += length + 1
        if wire_len > MAX_NAME_WIRE_LEN:
            raise FormErr("name longer than 255 octets")
        label = data[position + 1 : position + 1 + length]
        if len(label) != length:
            raise FormErr("label runs past the end of the message")
        labels.append(label)
        position += 1 + length


def skip_records(data: bytes, offset: int, count: int) -> int:
    for _ in range(count):
        offset = _record_bounds(data, offset)[1]
    return offset


def _record_bounds(data: bytes, offset: int) -> tuple[int, int]:
    """Return (start of the fixed fields, end of rdata) of the record at offset."""
    _, fixed = read_name(data, offset)
    if fixed + 10 > len(data):
        raise FormErr("resource record truncated")
    (rdlength,) = struct.unpack_from("!H", data, fixed + 8)
    end = fixed + 10 + rdlength
    if end > len(data):
        raise FormErr("rdata runs past the end of the message")
    return fixed, end


def read_additional(data: bytes, offset: int, count: int) -> tuple[Edns | None, int]:
    edns: Edns | None = None
    for _ in range(count):
        start = offset
        fixed, end = _record_bounds(data, offset)
        (rtype,) = struct.unpack_from("!H", data, fixed)
        if rtype == TYPE_OPT:
            if edns is not None:
                raise FormErr("more than one OPT record")
            if data[start] != 0 or fixed != start + 1:
                raise FormErr("OPT owner name is not the root")
            edns = _parse_opt(data, fixed, end)
        offset = end
    return edns, offset


def _parse_opt(data: bytes, fixed: int, end: int) -> Edns:
    udp_size, _ext_rcode, version, zflags, _ = struct.unpack_from("!HBBHH", data, fixed + 2)
    subnet: ClientSubnet | None = None
    nsid = False
    cookie: bytes | None = None
    position = fixed + 10
    while position < end:
        if position + 4 > end:
            raise FormErr("EDNS option header truncated")
        code, length = struct.unpack_from("!HH", data, position)
        value = data[position + 4 : position + 4 + length]
        if position + 4 + length > end:
            raise FormErr(f"EDNS option {code} runs past the OPT record")
        if code == OPTION_ECS:
            if subnet is not None:
                raise FormErr("more than one client-subnet option")
            subnet = parse_client_subnet(value)
        elif code == OPTION_NSID:
            nsid = True
        elif code == OPTION_COOKIE:
            if cookie is not None:
                raise FormErr("more than one COOKIE option")
            cookie = value
        position += 4 + length
    return Edns(
        version=version,
        udp_size=udp_size,
        dnssec_ok=bool(zflags & 0x8000),
        client_subnet=subnet,
        nsid_requested=nsid,
        cookie=cookie,
    )


def parse_client_subnet(value: bytes) -> ClientSubnet:
    """Validate an ECS option payload as RFC 7871 section 6 asks."""
    if len(value) < 4:
        raise FormErr("client-subnet option shorter than 4 octets")
    family, source, scope = struct.unpack_from("!HBB", value)
    address = value[4:]
    if family not in (1, 2):
        raise FormErr(f"client-subnet family {family} is not IPv4 (1) or IPv6 (2)")
    max_prefix = 32 if family == 1 else 128
    if source > max_prefix:
        raise FormErr(f"client-subnet source prefix {source} exceeds {max_prefix}")
    if scope != 0:
        raise FormErr("client-subnet scope prefix must be 0 in a query")
    if len(address) != (source + 7) // 8:
        raise FormErr(
            f"client-subnet address has {counted(len(address), 'octet')}, "
            f"source prefix /{source} needs {(source + 7) // 8}"
        )
    if source % 8 and address[-1] & (0xFF >> (source % 8)):
        raise FormErr("client-subnet address has bits set beyond the source prefix")
    return ClientSubnet(family, source, scope, address)


def client_subnet_option(subnet: ClientSubnet, scope_prefix: int) -> bytes:
    """The ECS option for a response: the client's option echoed with our scope."""
    payload = struct.pack("!HBB", subnet.family, subnet.source_prefix, scope_prefix)
    payload += subnet.address
    return struct.pack("!HH", OPTION_ECS, len(payload)) + payload


def error_reply(data: bytes, rcode: int, udp_size: int = 1232) -> bytes:
    """The reply to a query that could not be answered normally: no answer, but the
    question when it parses (a client matches replies to questions) and an OPT record
    when the query had one (RFC 6891 section 7: a FORMERR about the OPT record itself
    must carry one, so the client tells a format error from a server without EDNS).

    From the header, ID, opcode and RD are copied and QR is set. Only a query of one
    question (or none) is searched for its OPT: that bounds the work a hostile packet
    can ask of the error path.
    """
    qid, flags, qdcount = struct.unpack_from("!HHH", data)
    reply_flags = FLAG_QR | (flags & 0x7800) | (flags & FLAG_RD) | (rcode & 0xF)
    question, records_at = _salvage_question(data, qdcount)
    opt_ttl = _salvage_opt_ttl(data, records_at) if records_at is not None else None
    opt = b""
    if opt_ttl is not None:
        # Version 0, the DO bit as asked (RFC 3225), no options: the query's may be
        # what was wrong with it.
        opt = b"\x00" + struct.pack("!HHIH", TYPE_OPT, udp_size, opt_ttl & DO_BIT, 0)
    counts = (1 if question else 0, 0, 0, 1 if opt else 0)
    return struct.pack("!6H", qid, reply_flags, *counts) + question + opt


def _salvage_question(data: bytes, qdcount: int) -> tuple[bytes, int | None]:
    """(the question rewritten without compression, or b"", where the records start or
    None when that is unknown) for a query of at most one question."""
    if qdcount == 0:
        return b"", HEADER_LEN
    if qdcount != 1:
        return b"", None
    try:
        labels, end = read_name(data, HEADER_LEN)
    except FormErr:
        return b"", None
    if end + 4 > len(data):
        return b"", None
    name = b"".join(bytes((len(label),)) + label for label in labels)
    return name + data[end : end + 4], end + 4


def _salvage_opt_ttl(data: bytes, offset: int) -> int | None:
    """The TTL field (extended rcode, version, flags) of the query's OPT record, or None
    when it has none or the records before it do not parse."""
    ancount, nscount, arcount = struct.unpack_from("!HHH", data, 6)
    try:
        offset = skip_records(data, offset, ancount + nscount)
        for _ in range(arcount):
            fixed, end = _record_bounds(data, offset)
            if struct.unpack_from("!H", data, fixed)[0] == TYPE_OPT:
                return int(struct.unpack_from("!I", data, fixed + 4)[0])
            offset = end
    except FormErr:
        return None
    return None
