"""Rendering an Answer to wire format, with EDNS and truncation at RRset boundaries."""

from __future__ import annotations

from dataclasses import dataclass

import dns.edns
import dns.exception
import dns.flags
import dns.rcode
import dns.renderer
import dns.rrset

from gtm.dns.answer import Answer
from gtm.dns.wire import (
    FLAG_AA,
    FLAG_CD,
    FLAG_QR,
    FLAG_RD,
    FLAG_TC,
    ClientSubnet,
    Query,
    client_subnet_option,
)

CLASSIC_UDP_LIMIT = 512
TCP_LIMIT = 65535
BADVERS = 16
OPT_FIXED_LEN = 11  # root owner, type, class, TTL, RDLENGTH


@dataclass(frozen=True, slots=True)
class ServerIdentity:
    """What the server says about itself in every response."""

    edns_udp_size: int = 1232
    nsid: bytes | None = None


def udp_limit(query: Query, server: ServerIdentity) -> int:
    """The largest UDP response for this requester (RFC 6891 section 6.2.5)."""
    if query.edns is None:
        return CLASSIC_UDP_LIMIT
    return max(CLASSIC_UDP_LIMIT, min(query.edns.udp_size, server.edns_udp_size))


def render(query: Query, result: Answer, server: ServerIdentity, limit: int,
           cookie: bytes | None = None) -> bytes:
    """The reply; ``cookie``: the COOKIE option value (client and server cookie) to send."""
    rcode = result.rcode
    flags = FLAG_QR | (query.flags & (FLAG_RD | FLAG_CD)) | (rcode & 0xF)
    if result.authoritative:
        flags |= FLAG_AA
    out = dns.renderer.Renderer(query.id, flags, limit)
    out.add_question(query.qname, query.qtype, query.qclass)
    opt = _opt_for(query, server, rcode, result.scope_prefix, cookie)
    out.reserve(opt.size if opt else 0)
    if not _add_sections(out, result):
        if limit >= TCP_LIMIT:
            # TC sends a client to TCP; over TCP it is a dead end. Zones with an RRset
            # this big are refused when compiled, so only a huge steered answer gets here.
            return render(query, Answer(dns.rcode.SERVFAIL), server, limit, cookie)
        out.flags |= FLAG_TC
    out.release_reserved()
    if opt is not None:
        out.add_edns(0, opt.flags, server.edns_udp_size, opt.options)
    out.write_header()
    return out.get_wire()


def badvers(query: Query, server: ServerIdentity, cookie: bytes | None = None) -> bytes:
    """The answer to an EDNS version we do not speak (RFC 6891 section 6.1.3)."""
    flags = FLAG_QR | (query.flags & (FLAG_RD | FLAG_CD))
    out = dns.renderer.Renderer(query.id, flags, TCP_LIMIT)
    out.add_question(query.qname, query.qtype, query.qclass)
    opt = _opt_for(query, server, BADVERS, 0, cookie)
    assert opt is not None
    out.add_edns(0, opt.flags, server.edns_udp_size, opt.options)
    out.write_header()
    return out.get_wire()


def _add_sections(out: dns.renderer.Renderer, result: Answer) -> bool:
    """Add whole RRsets while they fit; False when required data was left out."""
    for rrset in result.answer:
        if not _try_add(out, dns.renderer.ANSWER, rrset):
            return False
    for rrset in result.authority:
        if not _try_add(out, dns.renderer.AUTHORITY, rrset):
            return False
    for rrset in result.additional:
        if not _try_add(out, dns.renderer.ADDITIONAL, rrset):
            # Optional additional data is dropped quietly (RFC 2181 section 9);
            # a referral's glue is not optional.
            return not result.additional_required
    return True


def _try_add(out: dns.renderer.Renderer, section: int, rrset: dns.rrset.RRset) -> bool:
    try:
        out.add_rrset(section, rrset)
    except dns.exception.TooBig:
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Opt:
    flags: int  # the OPT TTL field: extended rcode, version 0, DO
    options: list[dns.edns.Option]

    @property
    def size(self) -> int:
        return OPT_FIXED_LEN + sum(4 + len(option.to_wire() or b"") for option in self.options)


def _opt_for(query: Query, server: ServerIdentity, rcode: int, scope: int,
             cookie: bytes | None = None) -> _Opt | None:
    edns = query.edns
    if edns is None:
        return None
    options: list[dns.edns.Option] = []
    if edns.client_subnet is not None:
        options.append(_ecs_echo(edns.client_subnet, scope))
    if edns.nsid_requested and server.nsid is not None:
        options.append(dns.edns.GenericOption(dns.edns.OptionType.NSID, server.nsid))
    if cookie is not None:
        options.append(dns.edns.GenericOption(dns.edns.OptionType.COOKIE, cookie))
    flags = ((rcode >> 4) & 0xFF) << 24
    if edns.dnssec_ok:
        flags |= dns.flags.DO
    return _Opt(flags, options)


def _ecs_echo(subnet: ClientSubnet, scope: int) -> dns.edns.Option:
    # GenericOption keeps the client's address octets exactly as sent.
    return dns.edns.GenericOption(dns.edns.OptionType.ECS, client_subnet_option(subnet, scope)[4:])


__all__ = ["ServerIdentity", "badvers", "render", "udp_limit"]
