"""The engine's handling of whole packets: opcodes, malformed queries, silence, the cache."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest

from gtm.dns.answer import ZoneSet
from gtm.dns.cookies import Cookies
from gtm.dns.engine import Engine
from gtm.dns.render import ServerIdentity
from tests.dnsutil import (
    ask,
    ecs_payload,
    engine_for,
    exchange,
    header,
    opt_record,
    option,
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


def test_opt_as_query_type_is_nodata_as_knot_answers(engine):
    reply = ask(engine, "www.example.test.", "OPT")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer == []


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


# Error replies keep what parsed: the question, and an OPT record when the query had one
# (RFC 6891 section 7), so a client tells a format error from a server without EDNS.

def test_formerr_keeps_the_question_and_answers_edns_with_edns(engine):
    query = dns.message.make_query("www.example.test.", "A", use_edns=0, want_dnssec=True)
    reply = raw_reply(engine, query.to_wire() + b"\x00")  # one octet after the last record
    assert reply.rcode() == dns.rcode.FORMERR
    assert [q.to_text() for q in reply.question] == ["www.example.test. IN A"]
    assert reply.edns == 0
    assert reply.ednsflags & dns.flags.DO  # as asked (RFC 3225)
    assert reply.payload == 1232
    assert not reply.options


def test_formerr_without_edns_has_no_opt(engine):
    wire = dns.message.make_query("Www.Example.test.", "TXT").to_wire() + b"\x00"
    reply = raw_reply(engine, wire)
    assert reply.rcode() == dns.rcode.FORMERR
    assert [q.to_text() for q in reply.question] == ["Www.Example.test. IN TXT"]
    assert reply.edns == -1


def test_formerr_about_the_opt_record_itself_carries_an_opt(engine):
    bad_ecs = option(8, ecs_payload(3, 24, 0, b"\xc0\x00\x02"))  # family 3 does not exist
    wire = header(qid=80, arcount=1) + question() + opt_record(bad_ecs)
    reply = raw_reply(engine, wire)
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.edns == 0
    assert not reply.options  # the bad option is not echoed
    assert len(reply.question) == 1


def test_two_opt_records_get_formerr_with_one_opt(engine):
    wire = header(qid=81, arcount=2) + question() + opt_record() + opt_record()
    reply = raw_reply(engine, wire)
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.edns == 0


def test_notimp_keeps_the_question_and_the_opt(engine):
    message = dns.message.make_query("example.test.", "SOA", use_edns=0)
    message.set_opcode(7)
    reply = exchange(engine, message)
    assert reply.rcode() == dns.rcode.NOTIMP
    assert [q.to_text() for q in reply.question] == ["example.test. IN SOA"]
    assert reply.edns == 0


def test_a_question_count_of_two_is_answered_without_a_question(engine):
    wire = header(qid=82, qdcount=2, arcount=1) + question() * 2 + opt_record()
    reply = raw_reply(engine, wire)
    assert reply.rcode() == dns.rcode.FORMERR
    assert reply.question == []


def test_refused_keeps_the_question_and_the_opt(engine):
    reply = ask(engine, "www.example.com.", "A", use_edns=0)
    assert reply.rcode() == dns.rcode.REFUSED
    assert [q.to_text() for q in reply.question] == ["www.example.com. IN A"]
    assert reply.edns == 0


def test_an_error_reply_to_a_query_with_a_cookie_carries_our_cookie():
    cookies = Cookies([bytes(range(16))])
    server = Engine(ZoneSet.of([zone_from_text("example.test.", ZONE)]), ServerIdentity(),
                    cookies=cookies)
    client = bytes.fromhex("2464c4abcf10c957")
    message = dns.message.make_query("example.test.", "SOA", use_edns=0,
                                     options=[dns.edns.GenericOption(10, client)])
    message.set_opcode(7)
    wire = server.respond(message.to_wire(), tcp=False, peer="198.51.100.7")
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.rcode() == dns.rcode.NOTIMP
    (cookie,) = [o for o in reply.options if o.otype == dns.edns.OptionType.COOKIE]
    assert cookie.to_wire()[:8] == client
    assert len(cookie.to_wire()) == 24  # the client's cookie and a server cookie of 16
