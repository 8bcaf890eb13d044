"""The query parser's verdict on bad input, and the engine's robustness on any bytes."""

from __future__ import annotations

import struct

import dns.edns
import dns.message
import dns.name
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gtm.dns.engine import Engine
from gtm.dns.wire import Drop, FormErr, NotImp, parse_query
from tests.dnsutil import (
    ecs_payload,
    engine_for,
    header,
    opt_record,
    option,
    question,
    zone_from_text,
)

TYPE_CLASS = struct.pack("!HH", 1, 1)


def test_well_formed_query_parses():
    wire = header(qid=5, arcount=1) + question("WWW.example.test.") + opt_record(
        option(8, ecs_payload(1, 24, 0, b"\xc0\x00\x02")) + option(3, b""), udp_size=4096
    )
    parsed = parse_query(wire)
    assert parsed.id == 5
    assert parsed.qname.labels == (b"WWW", b"example", b"test", b"")
    assert (parsed.qtype, parsed.qclass) == (1, 1)
    assert parsed.edns is not None
    assert parsed.edns.udp_size == 4096
    assert parsed.edns.nsid_requested
    assert parsed.edns.client_subnet is not None
    assert str(parsed.edns.client_subnet.network) == "192.0.2.0/24"


def test_compressed_question_name_pointing_backwards_is_accepted():
    # A record in the additional section names "www" + a pointer back to the question.
    target = question("example.test.")
    record = b"\x03www\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + bytes(4)
    parsed = parse_query(header(arcount=1) + target + record)
    assert parsed.qname == dns.name.from_text("example.test.")


def test_pointer_to_itself_is_formerr():
    with pytest.raises(FormErr, match="pointer"):
        parse_query(header() + b"\xc0\x0c" + TYPE_CLASS)


def test_pointer_loop_is_formerr():
    # "a" then a pointer back to the "a": an endless name.
    with pytest.raises(FormErr):
        parse_query(header() + b"\x01a\xc0\x0c" + TYPE_CLASS)


def test_forward_pointer_is_formerr():
    # The pointer targets a valid name placed after it (offset 18).
    wire = header() + b"\xc0\x12" + TYPE_CLASS + b"\x00"
    with pytest.raises(FormErr, match="pointer"):
        parse_query(wire)


def test_truncated_pointer_is_formerr():
    with pytest.raises(FormErr):
        parse_query(header() + b"\x01a\xc0")


@pytest.mark.parametrize(("length_octet", "kind"), [(64, "0x40"), (0x7F, "0x40"), (0x80, "0x80")])
def test_label_length_over_63_is_an_unsupported_label_type(length_octet, kind):
    wire = header() + bytes([length_octet]) + b"a" * (length_octet & 0x3F) + b"\x00" + TYPE_CLASS
    with pytest.raises(FormErr, match=kind):
        parse_query(wire)


def test_name_of_255_octets_is_accepted():
    name = b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3d" + b"d" * 61
    assert len(name + b"\x00") == 255
    parsed = parse_query(header() + name + b"\x00" + TYPE_CLASS)
    assert len(parsed.qname.to_wire()) == 255


def test_name_over_255_octets_is_formerr():
    name = b"\x3f" + b"a" * 63 + b"\x3f" + b"b" * 63 + b"\x3f" + b"c" * 63 + b"\x3e" + b"d" * 62
    with pytest.raises(FormErr, match="255"):
        parse_query(header() + name + b"\x00" + TYPE_CLASS)


def test_name_over_255_octets_through_pointers_is_formerr():
    # Each name in the additional section points at the previous one, growing by 63.
    long_label = b"\x3f" + b"x" * 63
    wire = header(arcount=4) + question("a.")
    previous = 12
    for _ in range(4):
        offset = len(wire)
        wire += long_label + struct.pack("!H", 0xC000 | previous)
        wire += struct.pack("!HHIH", 1, 1, 0, 0)
        previous = offset
    with pytest.raises(FormErr, match="255"):
        parse_query(wire)


@pytest.mark.parametrize("cut", [1, 2, 3, 4])
def test_truncated_question_is_formerr(cut):
    with pytest.raises(FormErr):
        parse_query(header() + question()[:-cut])


def test_name_running_past_the_end_is_formerr():
    with pytest.raises(FormErr):
        parse_query(header() + b"\x07example")


def test_trailing_junk_is_formerr():
    with pytest.raises(FormErr, match="after the last record"):
        parse_query(header() + question() + b"\x00")


def test_counted_record_missing_is_formerr():
    with pytest.raises(FormErr):
        parse_query(header(arcount=1) + question())


def test_record_with_rdata_past_the_end_is_formerr():
    record = b"\x00" + struct.pack("!HHIH", 1, 1, 0, 4) + b"\x01\x02"
    with pytest.raises(FormErr):
        parse_query(header(ancount=1) + question() + record)


def test_two_opt_records_are_formerr():
    with pytest.raises(FormErr, match="OPT"):
        parse_query(header(arcount=2) + question() + opt_record() + opt_record())


def test_opt_owner_other_than_root_is_formerr():
    with pytest.raises(FormErr, match="root"):
        parse_query(header(arcount=1) + question() + opt_record(owner=b"\x01a\x00"))


def test_opt_owner_as_pointer_is_formerr():
    with pytest.raises(FormErr, match="root"):
        parse_query(header(arcount=1) + question() + opt_record(owner=b"\xc0\x0c"))


def test_edns_option_header_truncated_is_formerr():
    with pytest.raises(FormErr, match="truncated"):
        parse_query(header(arcount=1) + question() + opt_record(b"\x00\x08"))


def test_edns_option_longer_than_the_opt_record_is_formerr():
    options = struct.pack("!HH", 8, 7) + ecs_payload(1, 24, 0, b"\xc0\x00")
    with pytest.raises(FormErr, match="runs past"):
        parse_query(header(arcount=1) + question() + opt_record(options))


def test_opt_rdlength_past_the_message_is_formerr():
    with pytest.raises(FormErr):
        parse_query(header(arcount=1) + question() + opt_record(b"", rdlength=8))


def test_short_packet_and_response_are_dropped():
    with pytest.raises(Drop):
        parse_query(header()[:11])
    with pytest.raises(Drop):
        parse_query(header(flags=0x8000) + question())


def test_unknown_opcode_is_notimp():
    with pytest.raises(NotImp):
        parse_query(header(flags=4 << 11) + question())


# Property: whatever arrives, the engine answers sanely or stays silent.

ZONE = """
$TTL 300
@     SOA ns1 hostmaster 1 7200 900 1209600 60
@     NS  ns1
ns1   A   192.0.2.53
www   A   192.0.2.1
*.w   TXT "wild"
alias CNAME www
sub   NS  ns.sub
ns.sub A  192.0.2.9
"""

ENGINE = engine_for(zone_from_text("example.test.", ZONE), nsid=b"n1")

SEEDS = [
    dns.message.make_query("www.example.test.", "A").to_wire(),
    dns.message.make_query("alias.example.test.", "ANY", use_edns=0).to_wire(),
    dns.message.make_query(
        "x.w.example.test.", "TXT", want_dnssec=True, options=[dns.edns.NSIDOption(b"")]
    ).to_wire(),
    dns.message.make_query(
        "a.sub.example.test.", "A", options=[dns.edns.ECSOption("192.0.2.0", 24)]
    ).to_wire(),
]


@st.composite
def mutated_queries(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(data)))
    return bytes(data[:cut]) if draw(st.booleans()) else bytes(data)


packets = st.one_of(st.binary(max_size=600), mutated_queries())


def check_reply(engine: Engine, data: bytes, tcp: bool) -> None:
    reply = engine.respond(data, tcp=tcp)
    silent = len(data) < 12 or bool(data[2] & 0x80)
    if silent:
        assert reply is None
        return
    assert reply is not None
    assert len(reply) >= 12
    assert reply[:2] == data[:2]
    assert reply[2] & 0x80
    assert reply[3] & 0x0F != 2, "SERVFAIL means the engine hit an internal error"
    if not tcp:
        assert len(reply) <= 1232


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=packets, tcp=st.booleans())
def test_engine_answers_any_bytes_with_its_id_and_qr_or_stays_silent(data, tcp):
    check_reply(ENGINE, data, tcp)
