"""What the answer engine says for ordinary questions (RFC 1034 4.3.2, 2308, 6604, 8482)."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import pytest

from gtm.dns.engine import Engine
from tests.dnsutil import ask, engine_for, is_aa, rrset_texts, rrsets_of, zone_from_text

DS_DIGEST = "2BB183AF5F22588179A53B0A98631FAD1A292118" + "0" * 24

EXAMPLE = f"""
$TTL 3600
@         IN SOA ns1.example.test. hostmaster.example.test. (
              2024010101 ; serial
              7200 900 1209600
              300 )      ; minimum: negative answers live 300 s
@         NS    ns1
@         NS    ns2.example.net.
@         MX    10 mail
@         MX    20 mail.example.net.
ns1       A     192.0.2.53
          AAAA  2001:db8::53
mail      A     192.0.2.25
www       A     192.0.2.80
          A     192.0.2.81
          AAAA  2001:db8::80
          TXT   "hello"
onlytxt   TXT   "just text"
alias     CNAME www
chain1    CNAME chain2
chain2    CNAME www
outside   CNAME www.example.net.
dangling  CNAME nothing
loop1     CNAME loop2
loop2     CNAME loop1
_sip._udp SRV   10 60 5060 sip
sip       A     192.0.2.60
a.b.c     TXT   "deep"
sub       NS    ns.sub
sub       NS    ns.example.net.
sub       DS    12345 8 2 {DS_DIGEST}
ns.sub    A     192.0.2.99
nods      NS    ns.example.net.
"""

SHORT_SOA = """
@   60 IN SOA ns.example.net. hostmaster.example.net. 1 7200 900 1209600 300
@   3600 NS   ns.example.net.
www 3600 A    192.0.2.1
"""


@pytest.fixture(scope="module")
def engine() -> Engine:
    return engine_for(
        zone_from_text("example.test.", EXAMPLE), zone_from_text("short.test.", SHORT_SOA)
    )


def soa_ttl(reply: dns.message.Message) -> int:
    assert rrsets_of(reply.authority) == [(reply.authority[0].name.to_text().lower(), "SOA")]
    return reply.authority[0].ttl


def test_existing_name_gets_authoritative_noerror_answer(engine):
    reply = ask(engine, "www.example.test.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert rrset_texts(reply.answer) == {
        "www.example.test. 3600 IN A 192.0.2.80",
        "www.example.test. 3600 IN A 192.0.2.81",
    }
    assert reply.authority == []


def test_missing_name_is_nxdomain_with_soa_in_authority(engine):
    reply = ask(engine, "nope.example.test.", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert is_aa(reply)
    assert reply.answer == []
    assert rrsets_of(reply.authority) == [("example.test.", "SOA")]


def test_missing_type_is_nodata_with_soa_in_authority(engine):
    reply = ask(engine, "onlytxt.example.test.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert reply.answer == []
    assert rrsets_of(reply.authority) == [("example.test.", "SOA")]


def test_empty_non_terminal_is_nodata_not_nxdomain(engine):
    for name in ("c.example.test.", "b.c.example.test."):
        reply = ask(engine, name, "TXT")
        assert reply.rcode() == dns.rcode.NOERROR, name
        assert reply.answer == []
        assert rrsets_of(reply.authority) == [("example.test.", "SOA")]


def test_negative_ttl_is_soa_minimum_when_smaller_than_soa_ttl(engine):
    assert soa_ttl(ask(engine, "nope.example.test.", "A")) == 300
    assert soa_ttl(ask(engine, "onlytxt.example.test.", "A")) == 300


def test_negative_ttl_is_soa_ttl_when_smaller_than_minimum(engine):
    assert soa_ttl(ask(engine, "nope.short.test.", "A")) == 60
    assert soa_ttl(ask(engine, "www.short.test.", "TXT")) == 60


def test_apex_soa_query_keeps_the_soa_ttl(engine):
    reply = ask(engine, "example.test.", "SOA")
    assert [rrset.ttl for rrset in reply.answer] == [3600]


def test_delegation_gives_referral_without_aa_and_with_glue(engine):
    reply = ask(engine, "host.sub.example.test.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert not is_aa(reply)
    assert reply.answer == []
    assert rrset_texts(reply.authority) == {
        "sub.example.test. 3600 IN NS ns.sub.example.test.",
        "sub.example.test. 3600 IN NS ns.example.net.",
    }
    assert rrset_texts(reply.additional) == {"ns.sub.example.test. 3600 IN A 192.0.2.99"}


def test_ns_query_at_the_delegation_point_is_a_referral(engine):
    reply = ask(engine, "sub.example.test.", "NS")
    assert not is_aa(reply)
    assert reply.answer == []
    assert rrsets_of(reply.authority) == [("sub.example.test.", "NS")]


def test_glue_itself_is_not_answered_authoritatively(engine):
    reply = ask(engine, "ns.sub.example.test.", "A")
    assert not is_aa(reply)
    assert reply.answer == []
    assert rrsets_of(reply.authority) == [("sub.example.test.", "NS")]


def test_ds_at_delegation_point_is_answered_by_the_parent(engine):
    reply = ask(engine, "sub.example.test.", "DS")
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert rrsets_of(reply.answer) == [("sub.example.test.", "DS")]
    assert reply.authority == []


def test_missing_ds_at_delegation_point_is_authoritative_nodata(engine):
    reply = ask(engine, "nods.example.test.", "DS")
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert reply.answer == []
    assert rrsets_of(reply.authority) == [("example.test.", "SOA")]


def test_ds_below_a_delegation_is_a_referral(engine):
    reply = ask(engine, "deeper.sub.example.test.", "DS")
    assert not is_aa(reply)
    assert rrsets_of(reply.authority) == [("sub.example.test.", "NS")]


def test_cname_is_followed_inside_the_zone(engine):
    reply = ask(engine, "alias.example.test.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert rrsets_of(reply.answer) == [("alias.example.test.", "CNAME"), ("www.example.test.", "A")]


def test_cname_chain_is_followed_link_by_link(engine):
    reply = ask(engine, "chain1.example.test.", "AAAA")
    assert rrsets_of(reply.answer) == [
        ("chain1.example.test.", "CNAME"),
        ("chain2.example.test.", "CNAME"),
        ("www.example.test.", "AAAA"),
    ]


def test_cname_query_returns_the_cname_without_following_it(engine):
    reply = ask(engine, "alias.example.test.", "CNAME")
    assert rrset_texts(reply.answer) == {"alias.example.test. 3600 IN CNAME www.example.test."}


def test_cname_to_out_of_zone_target_stops_there(engine):
    reply = ask(engine, "outside.example.test.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert rrset_texts(reply.answer) == {"outside.example.test. 3600 IN CNAME www.example.net."}
    assert reply.authority == []


def test_cname_loop_terminates_with_each_cname_once(engine):
    reply = ask(engine, "loop1.example.test.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert rrsets_of(reply.answer) == [
        ("loop1.example.test.", "CNAME"),
        ("loop2.example.test.", "CNAME"),
    ]


def test_cname_to_missing_name_is_nxdomain_with_the_cname_in_the_answer(engine):
    reply = ask(engine, "dangling.example.test.", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN  # RFC 6604: the rcode of the last link
    assert is_aa(reply)
    assert rrsets_of(reply.answer) == [("dangling.example.test.", "CNAME")]
    assert rrsets_of(reply.authority) == [("example.test.", "SOA")]


def test_cname_to_name_without_the_type_is_nodata_with_the_cname(engine):
    reply = ask(engine, "alias.example.test.", "MX")
    assert reply.rcode() == dns.rcode.NOERROR
    assert rrsets_of(reply.answer) == [("alias.example.test.", "CNAME")]
    assert rrsets_of(reply.authority) == [("example.test.", "SOA")]


def test_name_matching_ignores_case_and_echoes_the_question_as_asked(engine):
    asked = dns.message.make_query("WwW.ExAmPlE.TeSt.", "A")
    wire = asked.to_wire()
    reply_wire = engine.respond(wire, tcp=False)
    assert reply_wire is not None
    question_end = len(wire)  # the query is header + question only
    assert reply_wire[12:question_end] == wire[12:question_end]
    reply = dns.message.from_wire(reply_wire)
    assert reply.question[0].name.labels == (b"WwW", b"ExAmPlE", b"TeSt", b"")
    # Owner names may be compressed against the question, so compare them caselessly.
    assert {line.lower() for line in rrset_texts(reply.answer)} == {
        "www.example.test. 3600 in a 192.0.2.80",
        "www.example.test. 3600 in a 192.0.2.81",
    }


def test_uppercase_nxdomain_is_still_nxdomain_in_the_zone(engine):
    reply = ask(engine, "NOPE.EXAMPLE.TEST.", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert rrsets_of(reply.authority) == [("example.test.", "SOA")]


@pytest.mark.parametrize("qname", ["www.example.org.", "test.", ".", "example.test.org."])
def test_name_outside_served_zones_is_refused(engine, qname):
    reply = ask(engine, qname, "A")
    assert reply.rcode() == dns.rcode.REFUSED
    assert not is_aa(reply)
    assert reply.answer == reply.authority == []


def test_other_class_is_refused(engine):
    reply = ask(engine, "www.example.test.", "A", rdclass="CH")
    assert reply.rcode() == dns.rcode.REFUSED


@pytest.mark.parametrize(
    ("qname", "rdtype"),
    [
        ("www.example.test.", "A"),
        ("nope.example.test.", "A"),
        ("host.sub.example.test.", "A"),
        ("outside.example.test.", "A"),
        ("www.example.org.", "A"),
    ],
)
def test_server_never_offers_recursion(engine, qname, rdtype):
    reply = ask(engine, qname, rdtype)  # make_query sets RD
    assert reply.flags & dns.flags.RD
    assert not reply.flags & dns.flags.RA
    assert "www.example.net." not in {rrset.name.to_text() for rrset in reply.answer}


def test_any_is_answered_with_a_single_rrset(engine):
    reply = ask(engine, "www.example.test.", "ANY")
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert len(reply.answer) == 1
    assert reply.answer[0].name.to_text() == "www.example.test."


def test_any_at_the_apex_is_answered_with_a_single_rrset(engine):
    reply = ask(engine, "example.test.", "ANY")
    assert len(reply.answer) == 1


def test_any_for_a_missing_name_is_nxdomain(engine):
    assert ask(engine, "nope.example.test.", "ANY").rcode() == dns.rcode.NXDOMAIN


@pytest.mark.parametrize("qname", ["alias.example.test.", "chain1.example.test.",
                                   "outside.example.test."])
def test_any_at_a_cname_owner_is_the_cname_alone(engine, qname):
    """RFC 8482 practice, and what Knot answers: the chain is not followed for ANY."""
    reply = ask(engine, qname, "ANY")
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert rrsets_of(reply.answer) == [(qname, "CNAME")]
    assert reply.authority == []


@pytest.mark.parametrize("rdtype", ["RRSIG", "NSEC"])
@pytest.mark.parametrize("qname", ["alias.example.test.", "outside.example.test."])
def test_dnssec_records_at_a_cname_owner_are_nodata_without_the_cname(engine, qname, rdtype):
    """They would sit beside the CNAME (RFC 4035 2.5): the question is about the owner."""
    reply = ask(engine, qname, rdtype)
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert reply.answer == []
    assert rrsets_of(reply.authority) == [("example.test.", "SOA")]


@pytest.mark.parametrize("rdtype", ["MAILA", "MAILB", "OPT", "TSIG", "TKEY", "MD", "NULL"])
def test_meta_and_obsolete_types_get_nodata(engine, rdtype):
    """As Knot answers (BIND's NOTIMP for MAILA/MAILB rests on no RFC): none is stored."""
    reply = ask(engine, "www.example.test.", rdtype)
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert reply.answer == []
    assert rrsets_of(reply.authority) == [("example.test.", "SOA")]


@pytest.mark.parametrize("rdtype", ["AXFR", "IXFR"])
def test_zone_transfers_are_refused(engine, rdtype):
    assert ask(engine, "example.test.", rdtype).rcode() == dns.rcode.REFUSED
    assert ask(engine, "example.test.", rdtype, tcp=True).rcode() == dns.rcode.REFUSED


def test_mx_answer_carries_in_zone_exchange_addresses(engine):
    reply = ask(engine, "example.test.", "MX")
    assert rrset_texts(reply.additional) == {"mail.example.test. 3600 IN A 192.0.2.25"}


def test_srv_answer_carries_in_zone_target_addresses(engine):
    reply = ask(engine, "_sip._udp.example.test.", "SRV")
    assert rrsets_of(reply.answer) == [("_sip._udp.example.test.", "SRV")]
    assert rrset_texts(reply.additional) == {"sip.example.test. 3600 IN A 192.0.2.60"}


def test_ns_answer_carries_in_zone_name_server_addresses(engine):
    reply = ask(engine, "example.test.", "NS")
    assert is_aa(reply)
    assert rrset_texts(reply.additional) == {
        "ns1.example.test. 3600 IN A 192.0.2.53",
        "ns1.example.test. 3600 IN AAAA 2001:db8::53",
    }


def test_plain_address_answer_has_no_additional_data(engine):
    assert ask(engine, "www.example.test.", "A").additional == []


CHILD = """
$TTL 3600
@     SOA ns.sub.example.test. hostmaster.example.test. 1 7200 900 1209600 300
@     NS  ns
ns    A   192.0.2.99
host  A   192.0.2.100
"""


def test_ds_is_answered_by_the_parent_when_the_child_zone_is_served_too():
    engine = engine_for(
        zone_from_text("example.test.", EXAMPLE), zone_from_text("sub.example.test.", CHILD)
    )
    reply = ask(engine, "sub.example.test.", "DS")
    assert is_aa(reply)
    assert rrsets_of(reply.answer) == [("sub.example.test.", "DS")]
    # Everything else at and below the cut comes from the child.
    assert rrsets_of(ask(engine, "sub.example.test.", "NS").answer) == [("sub.example.test.", "NS")]
    assert is_aa(ask(engine, "host.sub.example.test.", "A"))
