"""Wildcards as RFC 4592 defines them, on the example zone of its section 2.2.1."""

from __future__ import annotations

import dns.rcode
import pytest

from gtm.dns.engine import Engine
from tests.dnsutil import ask, engine_for, is_aa, rrset_texts, rrsets_of, zone_from_text

# RFC 4592 section 2.2.1, with the SOA and SRV rdata it leaves out filled in.
RFC4592_ZONE = """
$ORIGIN example.
example.                 3600 IN  SOA   ns.example.com. hostmaster.example.com. (
                                        1 7200 900 1209600 600 )
example.                 3600     NS    ns.example.com.
example.                 3600     NS    ns.example.net.
*.example.               3600     TXT   "this is a wildcard"
*.example.               3600     MX    10 host1.example.
sub.*.example.           3600     TXT   "this is not a wildcard"
host1.example.           3600     A     192.0.2.1
_ssh._tcp.host1.example. 3600     SRV   0 0 22 host1.example.
_ssh._tcp.host2.example. 3600     SRV   0 0 22 host2.example.
subdel.example.          3600     NS    ns.example.com.
subdel.example.          3600     NS    ns.example.net.
"""

# Wildcards that RFC 4592 discusses beyond its example: one that is an empty
# non-terminal (section 4.9), one that owns a CNAME (section 4.3), and one below a cut.
EXTRA_ZONE = """
$ORIGIN extra.test.
@                 3600 SOA  ns.example.com. hostmaster.example.com. 1 7200 900 1209600 600
@                 3600 NS   ns.example.com.
x.*.ent           3600 TXT  "makes *.ent.extra.test. an empty non-terminal"
*.alias           3600 CNAME target
target            3600 A    192.0.2.7
*.outside         3600 CNAME www.example.net.
*.dangling        3600 CNAME missing.target
deleg             3600 NS   ns.example.com.
*                 3600 A    192.0.2.200
"""


@pytest.fixture(scope="module")
def engine() -> Engine:
    return engine_for(
        zone_from_text("example.", RFC4592_ZONE), zone_from_text("extra.test.", EXTRA_ZONE)
    )


def assert_nxdomain(reply):
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert is_aa(reply)
    assert reply.answer == []
    assert [t for _, t in rrsets_of(reply.authority)] == ["SOA"]


def assert_nodata(reply):
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert reply.answer == []
    assert [t for _, t in rrsets_of(reply.authority)] == ["SOA"]


# Section 2.2.2: responses synthesized from *.example.


def test_host3_mx_is_synthesized_from_the_wildcard(engine):
    reply = ask(engine, "host3.example.", "MX")
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert rrset_texts(reply.answer) == {"host3.example. 3600 IN MX 10 host1.example."}
    assert rrset_texts(reply.additional) == {"host1.example. 3600 IN A 192.0.2.1"}


def test_host3_a_is_nodata_because_the_wildcard_has_no_a(engine):
    assert_nodata(ask(engine, "host3.example.", "A"))


def test_wildcard_matches_more_than_one_label(engine):
    reply = ask(engine, "foo.bar.example.", "TXT")
    assert rrset_texts(reply.answer) == {'foo.bar.example. 3600 IN TXT "this is a wildcard"'}


# Section 2.2.2: queries the wildcard must not answer.


def test_existing_name_blocks_the_wildcard(engine):
    assert_nodata(ask(engine, "host1.example.", "MX"))


def test_name_under_the_asterisk_is_an_ordinary_name(engine):
    assert_nodata(ask(engine, "sub.*.example.", "MX"))
    reply = ask(engine, "sub.*.example.", "TXT")
    assert rrset_texts(reply.answer) == {'sub.*.example. 3600 IN TXT "this is not a wildcard"'}


def test_empty_non_terminal_blocks_the_wildcard(engine):
    # _tcp.host1.example. exists without data: it is the closest encloser, and
    # *._tcp.host1.example. does not exist.
    assert_nxdomain(ask(engine, "_telnet._tcp.host1.example.", "SRV"))


def test_empty_non_terminal_itself_is_nodata(engine):
    assert_nodata(ask(engine, "_tcp.host1.example.", "SRV"))
    assert_nodata(ask(engine, "host2.example.", "MX"))


def test_wildcard_does_not_reach_across_a_delegation(engine):
    reply = ask(engine, "host.subdel.example.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert not is_aa(reply)
    assert reply.answer == []
    assert rrsets_of(reply.authority) == [("subdel.example.", "NS")]


def test_ghost_under_the_asterisk_is_nxdomain(engine):
    # The closest encloser is *.example. itself; *.*.example. does not exist.
    assert_nxdomain(ask(engine, "ghost.*.example.", "MX"))


def test_asterisk_asked_for_directly_is_answered_from_its_own_data(engine):
    reply = ask(engine, "*.example.", "TXT")
    assert rrset_texts(reply.answer) == {'*.example. 3600 IN TXT "this is a wildcard"'}


def test_wildcard_match_is_case_insensitive(engine):
    reply = ask(engine, "HOST3.Example.", "TXT")
    assert [t for _, t in rrsets_of(reply.answer)] == ["TXT"]


# Beyond the example zone.


def test_wildcard_that_is_an_empty_non_terminal_gives_nodata(engine):
    assert_nodata(ask(engine, "anything.ent.extra.test.", "TXT"))
    assert_nodata(ask(engine, "anything.ent.extra.test.", "A"))


def test_wildcard_cname_is_synthesized_and_followed(engine):
    reply = ask(engine, "host.alias.extra.test.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert is_aa(reply)
    assert rrset_texts(reply.answer) == {
        "host.alias.extra.test. 3600 IN CNAME target.extra.test.",
        "target.extra.test. 3600 IN A 192.0.2.7",
    }


def test_wildcard_cname_to_out_of_zone_target_stops_there(engine):
    reply = ask(engine, "a.b.outside.extra.test.", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert rrset_texts(reply.answer) == {
        "a.b.outside.extra.test. 3600 IN CNAME www.example.net."
    }


def test_wildcard_cname_to_missing_name_is_nxdomain(engine):
    reply = ask(engine, "x.dangling.extra.test.", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert rrsets_of(reply.answer) == [("x.dangling.extra.test.", "CNAME")]


def test_apex_wildcard_does_not_answer_below_a_delegation(engine):
    reply = ask(engine, "www.deleg.extra.test.", "A")
    assert not is_aa(reply)
    assert rrsets_of(reply.authority) == [("deleg.extra.test.", "NS")]


def test_apex_wildcard_answers_unknown_names(engine):
    reply = ask(engine, "unknown.extra.test.", "A")
    assert rrset_texts(reply.answer) == {"unknown.extra.test. 3600 IN A 192.0.2.200"}
