"""The engine's handling of whole packets: opcodes, malformed queries, silence, the cache."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest

from gtm.dns.answer import ZoneSet
from gtm.dns.engine import Engine
from tests.dnsutil import (
    ask,
    engine_for,
    exchange,
    header,
    question,
    raw_reply,
    rrset_texts,
    zone_from_text,
)

ZONE = """
$TTL 300
@    SOA ns.example.net. hostmaster.example.net. 1 7200 900 1209600 60
@    NS  ns.example.net.
www  A   192.0.2.1
"""

NEW_ZONE = """
$TTL 300
@    SOA ns.example.net. hostmaster.example.net. 2 7200 900 1209600 60
@    NS  ns.example.net.
www  A   198.51.100.1
"""


@pytest.fixture
def engine() -> Engine:
    return engine_for(zone_from_text("example.test.", ZONE))


def assert_bare_error(reply: dns.message.Message, rcode: int, qid: int) -> None:
    assert reply.id == qid
    assert reply.flags & dns.flags.QR
    assert reply.rcode() == rcode
    assert not reply.flags & dns.flags.AA
    assert reply.answer == reply.authority == reply.additional == []


@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.IQUERY, 7])
def test_unknown_opcode_is_notimp(engine, opcode):
    message = dns.message.make_query("example.test.", "SOA")
    message.set_opcode(opcode)
    reply = exchange(engine, message)
    assert_bare_error(reply, dns.rcode.NOTIMP, message.id)
    assert reply.opcode() == opcode


@pytest.mark.parametrize("qdcount", [0, 2])
def test_question_count_other_than_one_is_formerr(engine, qdcount):
    wire = header(qid=77, qdcount=qdcount) + question() * qdcount
    assert_bare_error(raw_reply(engine, wire), dns.rcode.FORMERR, 77)


def test_malformed_query_is_formerr(engine):
    wire = header(qid=78) + question()[:-2]  # the class is cut off
    assert_bare_error(raw_reply(engine, wire), dns.rcode.FORMERR, 78)


def test_formerr_keeps_the_rd_bit_and_never_sets_ra(engine):
    reply = raw_reply(engine, header(qid=79, flags=0x0100, qdcount=0))
    assert reply.flags & dns.flags.RD
    assert not reply.flags & dns.flags.RA


def test_opt_as_query_type_is_formerr(engine):
    assert ask(engine, "www.example.test.", "OPT").rcode() == dns.rcode.FORMERR


@pytest.mark.parametrize("length", range(12))
def test_packet_shorter_than_a_header_gets_no_reply(engine, length):
    wire = dns.message.make_query("www.example.test.", "A").to_wire()
    assert engine.respond(wire[:length], tcp=False) is None


def test_response_gets_no_reply(engine):
    reply_wire = engine.respond(dns.message.make_query("www.example.test.", "A").to_wire(), False)
    assert reply_wire is not None
    assert engine.respond(reply_wire, tcp=False) is None
    assert engine.respond(reply_wire, tcp=True) is None


def test_response_with_unknown_opcode_gets_no_reply(engine):
    message = dns.message.make_query("www.example.test.", "A")
    message.flags |= dns.flags.QR
    message.set_opcode(dns.opcode.NOTIFY)
    assert engine.respond(message.to_wire(), tcp=False) is None


def test_reply_echoes_id_and_sets_qr(engine):
    message = dns.message.make_query("www.example.test.", "A", id=4242)
    reply = exchange(engine, message)
    assert reply.id == 4242
    assert reply.flags & dns.flags.QR
    assert reply.opcode() == dns.opcode.QUERY


def test_same_query_with_another_id_differs_only_in_the_id(engine):
    first = dns.message.make_query("www.example.test.", "A", id=1)
    second = dns.message.make_query("www.example.test.", "A", id=2)
    one = engine.respond(first.to_wire(), tcp=False)
    two = engine.respond(second.to_wire(), tcp=False)
    assert one is not None and two is not None
    assert one[:2] == b"\x00\x01"
    assert two[:2] == b"\x00\x02"
    assert one[2:] == two[2:]


def test_cached_udp_answer_is_not_served_over_tcp():
    big = "$TTL 300\n@ SOA ns.example.net. h.example.net. 1 2 3 4 60\n@ NS ns.example.net.\n"
    big += "".join(f"many A 192.0.2.{i}\n" for i in range(1, 61))
    engine = engine_for(zone_from_text("example.test.", big))
    wire = dns.message.make_query("many.example.test.", "A").to_wire()
    udp = dns.message.from_wire(engine.respond(wire, tcp=False))
    tcp = dns.message.from_wire(engine.respond(wire, tcp=True))
    assert udp.flags & dns.flags.TC
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 60


def test_swap_serves_the_new_zones_from_the_next_query(engine):
    wire = dns.message.make_query("www.example.test.", "A", id=9).to_wire()
    before = dns.message.from_wire(engine.respond(wire, tcp=False))
    engine.swap(ZoneSet.of([zone_from_text("example.test.", NEW_ZONE)]))
    after = dns.message.from_wire(engine.respond(wire, tcp=False))
    assert rrset_texts(before.answer) == {"www.example.test. 300 IN A 192.0.2.1"}
    assert rrset_texts(after.answer) == {"www.example.test. 300 IN A 198.51.100.1"}


def test_swap_to_no_zones_refuses_what_was_served(engine):
    assert ask(engine, "www.example.test.").rcode() == dns.rcode.NOERROR
    engine.swap(ZoneSet.of([]))
    assert ask(engine, "www.example.test.").rcode() == dns.rcode.REFUSED
