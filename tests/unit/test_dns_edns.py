"""EDNS(0) (RFC 6891), truncation, Client Subnet (RFC 7871) and NSID (RFC 5001)."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from gtm.dns.answer import Answer
from gtm.dns.engine import Engine
from gtm.dns.render import TCP_LIMIT, ServerIdentity, render
from gtm.dns.wire import parse_query
from tests.dnsutil import (
    ask,
    ecs_option,
    ecs_payload,
    engine_for,
    exchange,
    is_tc,
    query,
    rrsets_of,
    zone_from_text,
)

BIG_ZONE = (
    """
$TTL 300
@        SOA ns1 hostmaster 1 7200 900 1209600 60
@        NS  ns1
ns1      A   192.0.2.53
www      A   192.0.2.1
alias    CNAME many
mx       MX  10 m0
"""
    + "".join(f"many A 192.0.2.{i}\n" for i in range(1, 41))
    + "".join(f'big TXT "record {i:02d} of sixty, padded to be long enough"\n' for i in range(60))
    + "".join(f"mx MX {i} m{i}\n" for i in range(1, 12))
    + "".join(f"m{i} A 198.51.100.{j}\n" for i in range(12) for j in range(1, 4))
    + "".join(f"deleg NS ns{i}.deleg\nns{i}.deleg AAAA 2001:db8::{i}\n" for i in range(40))
)

UDP_CLASSIC = 512
OUR_UDP = 1232


@pytest.fixture(scope="module")
def engine() -> Engine:
    return engine_for(zone_from_text("example.test.", BIG_ZONE))


@pytest.fixture(scope="module")
def nsid_engine() -> Engine:
    return engine_for(zone_from_text("example.test.", BIG_ZONE), nsid=b"gtm-node-7")


def udp_wire(engine: Engine, message: dns.message.Message) -> bytes:
    wire = engine.respond(message.to_wire(), tcp=False)
    assert wire is not None
    return wire


# OPT record


def test_reply_without_edns_has_no_opt(engine):
    assert ask(engine, "www.example.test.").edns == -1


def test_opt_is_echoed_with_our_udp_size(engine):
    reply = ask(engine, "www.example.test.", use_edns=0, payload=4096)
    assert reply.edns == 0
    assert reply.payload == OUR_UDP
    assert reply.rcode() == dns.rcode.NOERROR


def test_edns_version_above_zero_is_badvers(engine):
    reply = ask(engine, "www.example.test.", use_edns=1)
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0
    assert reply.answer == []


def test_do_bit_is_echoed(engine):
    assert ask(engine, "www.example.test.", want_dnssec=True).ednsflags & dns.flags.DO
    assert not ask(engine, "www.example.test.", use_edns=0).ednsflags & dns.flags.DO


def test_unknown_edns_option_is_ignored(engine):
    option = dns.edns.GenericOption(65001, b"\x01\x02")
    reply = ask(engine, "www.example.test.", use_edns=0, options=[option])
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.options == ()


# Truncation


def test_big_answer_without_edns_is_truncated_to_512(engine):
    wire = udp_wire(engine, query("many.example.test."))
    reply = dns.message.from_wire(wire)
    assert len(wire) <= UDP_CLASSIC
    assert is_tc(reply)
    assert reply.answer == []  # 40 A records do not fit; none are sent


def test_truncation_keeps_whole_rrsets(engine):
    reply = dns.message.from_wire(udp_wire(engine, query("alias.example.test.")))
    assert is_tc(reply)
    assert rrsets_of(reply.answer) == [("alias.example.test.", "CNAME")]


def test_same_big_answer_over_tcp_is_complete(engine):
    reply = ask(engine, "many.example.test.", tcp=True)
    assert not is_tc(reply)
    assert len(reply.answer[0]) == 40


def test_edns_client_size_lets_a_bigger_answer_through(engine):
    wire = udp_wire(engine, query("many.example.test.", use_edns=0, payload=1232))
    reply = dns.message.from_wire(wire)
    assert UDP_CLASSIC < len(wire) <= OUR_UDP
    assert not is_tc(reply)
    assert len(reply.answer[0]) == 40


def test_udp_answer_never_exceeds_our_size_even_if_the_client_allows_more(engine):
    wire = udp_wire(engine, query("big.example.test.", "TXT", use_edns=0, payload=65000))
    reply = dns.message.from_wire(wire)
    assert len(wire) <= OUR_UDP
    assert is_tc(reply)
    assert reply.answer == []
    assert reply.edns == 0  # the OPT record survives truncation
    complete = ask(engine, "big.example.test.", "TXT", tcp=True, use_edns=0, payload=65000)
    assert not is_tc(complete)
    assert len(complete.answer[0]) == 60


def test_udp_answer_respects_a_client_size_below_ours(engine):
    wire = udp_wire(engine, query("many.example.test.", use_edns=0, payload=600))
    assert len(wire) <= 600
    assert is_tc(dns.message.from_wire(wire))


def test_client_size_below_512_counts_as_512(engine):
    wire = udp_wire(engine, query("www.example.test.", use_edns=0, payload=100))
    reply = dns.message.from_wire(wire)
    assert not is_tc(reply)
    assert len(reply.answer) == 1


def test_optional_additional_data_is_dropped_without_tc(engine):
    reply = dns.message.from_wire(udp_wire(engine, query("mx.example.test.", "MX")))
    assert not is_tc(reply)
    assert len(reply.answer[0]) == 12
    full = ask(engine, "mx.example.test.", "MX", tcp=True)
    assert len(full.additional) == 12
    assert len(reply.additional) < len(full.additional)


def test_referral_glue_that_does_not_fit_sets_tc(engine):
    wire = udp_wire(engine, query("host.deleg.example.test.", use_edns=0, payload=1232))
    reply = dns.message.from_wire(wire)
    assert is_tc(reply)
    assert rrsets_of(reply.authority) == [("deleg.example.test.", "NS")]  # the NS set fits
    full = ask(engine, "host.deleg.example.test.", tcp=True)
    assert not is_tc(full)
    assert len(full.additional) == 40


# EDNS Client Subnet


@pytest.mark.parametrize(
    ("address", "prefix"),
    [("192.0.2.0", 24), ("198.51.100.0", 22), ("0.0.0.0", 0), ("2001:db8:1::", 48), ("::", 0)],
)
def test_client_subnet_is_echoed_with_scope_zero(engine, address, prefix):
    sent = dns.edns.ECSOption(address, prefix)
    reply = ask(engine, "www.example.test.", use_edns=0, options=[sent])
    assert reply.rcode() == dns.rcode.NOERROR
    [echoed] = [o for o in reply.options if o.otype == dns.edns.OptionType.ECS]
    assert isinstance(echoed, dns.edns.ECSOption)
    assert (echoed.family, echoed.srclen, echoed.scopelen) == (sent.family, prefix, 0)
    assert echoed.address == sent.address


def test_client_subnet_is_echoed_on_negative_answers(engine):
    reply = ask(
        engine, "nope.example.test.", use_edns=0, options=[dns.edns.ECSOption("192.0.2.0", 24)]
    )
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert [o.otype for o in reply.options] == [dns.edns.OptionType.ECS]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(ecs_payload(3, 24, 0, b"\xc0\x00\x02"), id="unknown-family"),
        pytest.param(ecs_payload(0, 0, 0, b""), id="family-zero"),
        pytest.param(ecs_payload(1, 33, 0, b"\xc0\x00\x02\x00\x00"), id="ipv4-prefix-over-32"),
        pytest.param(ecs_payload(2, 129, 0, bytes(17)), id="ipv6-prefix-over-128"),
        pytest.param(ecs_payload(1, 24, 0, b"\xc0\x00\x02\x00"), id="address-too-long"),
        pytest.param(ecs_payload(1, 24, 0, b"\xc0\x00"), id="address-too-short"),
        pytest.param(ecs_payload(2, 56, 0, bytes(16)), id="ipv6-full-address"),
        pytest.param(ecs_payload(1, 22, 0, b"\xc6\x33\x65"), id="bits-beyond-prefix"),
        pytest.param(ecs_payload(1, 24, 24, b"\xc0\x00\x02"), id="scope-set-in-query"),
        pytest.param(b"\x00\x01\x18", id="shorter-than-4-octets"),
    ],
)
def test_invalid_client_subnet_is_formerr(engine, payload):
    message = query("www.example.test.", use_edns=0, options=[ecs_option(payload)])
    reply = exchange(engine, message)
    assert reply.id == message.id
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.answer == []


def test_two_client_subnet_options_are_formerr(engine):
    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    reply = ask(engine, "www.example.test.", use_edns=0, options=[ecs, ecs])
    assert reply.rcode() == dns.rcode.FORMERR


# NSID


def test_nsid_is_returned_when_configured(nsid_engine):
    request = dns.edns.GenericOption(dns.edns.OptionType.NSID, b"")
    reply = ask(nsid_engine, "www.example.test.", use_edns=0, options=[request])
    [nsid] = [o for o in reply.options if o.otype == dns.edns.OptionType.NSID]
    assert nsid.to_wire() == b"gtm-node-7"


def test_nsid_is_not_returned_unless_asked(nsid_engine):
    assert ask(nsid_engine, "www.example.test.", use_edns=0).options == ()


def test_nsid_is_absent_when_not_configured(engine):
    request = dns.edns.GenericOption(dns.edns.OptionType.NSID, b"")
    reply = ask(engine, "www.example.test.", use_edns=0, options=[request])
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.options == ()


def test_an_rrset_no_tcp_message_can_carry_gets_servfail_not_tc():
    """TC tells a client to retry over TCP; over TCP that is a dead end."""
    big = dns.rrset.from_text_list("big.example.test.", 300, "IN", "AAAA",
                                   [f"2001:db8::{i:x}" for i in range(3000)])
    wire = dns.message.make_query("big.example.test.", "AAAA", use_edns=0).to_wire()
    reply = dns.message.from_wire(render(parse_query(wire), Answer(dns.rcode.NOERROR, True, (big,)),
                                         ServerIdentity(), TCP_LIMIT))
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert not reply.flags & dns.flags.TC
    assert reply.answer == []
    assert [q.to_text() for q in reply.question] == ["big.example.test. IN AAAA"]
    assert reply.edns == 0
