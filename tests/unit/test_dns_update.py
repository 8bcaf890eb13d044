"""RFC 2136 prerequisites, grants and changes on a zone's records (pure)."""

from __future__ import annotations

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from gtm.config.tsig import Grant
from gtm.dns.update import UpdateRefused, apply_update, rrsets_of, zone_text
from gtm.dns.zonefile import read_master_text

ORIGIN = dns.name.from_text("example.test.")
ZONE = """$TTL 300
@ SOA ns1 hostmaster 7 7200 1800 1209600 30
@ NS ns1
ns1 A 192.0.2.1
www A 192.0.2.10
"""
ACME = Grant("acme", ("_acme-challenge.example.test.", "_acme-challenge.*.example.test."),
             (dns.rdatatype.TXT,))


def records() -> dict:  # type: ignore[type-arg]
    return rrsets_of(read_master_text(ZONE, ORIGIN, "test"))


def rr(name: str, rdtype: str, *values: str, ttl: int = 60,
       deleting: int | None = None) -> dns.rrset.RRset:
    rrset = dns.rrset.from_text_list(name, ttl, "IN", rdtype, list(values)) if values else \
        dns.rrset.RRset(dns.name.from_text(name), dns.rdataclass.IN,
                        dns.rdatatype.from_text(rdtype))
    rrset.deleting = deleting
    return rrset


def allowed(name: dns.name.Name, rdtype: int) -> bool:
    return ACME.covers("acme", name, rdtype)


def test_an_allowed_txt_is_added_and_the_serial_moves() -> None:
    applied = apply_update(records(), ORIGIN, [], [
        rr("_acme-challenge.www.example.test.", "TXT", '"t1"')], allowed)
    assert applied.changes == 1 and applied.serial == 8
    text = zone_text(applied.rrsets, ORIGIN, "note")
    again = rrsets_of(read_master_text(text, ORIGIN, "again"))
    assert again == applied.rrsets


@pytest.mark.parametrize(("prerequisite", "rcode"), [
    (rr("nothing.example.test.", "ANY", deleting=dns.rdataclass.ANY, ttl=0),
     dns.rcode.NXDOMAIN),
    (rr("www.example.test.", "ANY", deleting=dns.rdataclass.NONE, ttl=0), dns.rcode.YXDOMAIN),
    (rr("www.example.test.", "TXT", deleting=dns.rdataclass.ANY, ttl=0), dns.rcode.NXRRSET),
    (rr("www.example.test.", "A", deleting=dns.rdataclass.NONE, ttl=0), dns.rcode.YXRRSET),
    (rr("www.example.test.", "A", "192.0.2.99", ttl=0), dns.rcode.NXRRSET),
    (rr("www.other.test.", "A", deleting=dns.rdataclass.ANY, ttl=0), dns.rcode.NOTZONE),
])
def test_prerequisites_that_fail_say_which_rcode(prerequisite: dns.rrset.RRset,
                                                 rcode: int) -> None:
    with pytest.raises(UpdateRefused) as refused:
        apply_update(records(), ORIGIN, [prerequisite], [
            rr("_acme-challenge.example.test.", "TXT", '"x"')], allowed)
    assert refused.value.rcode == rcode


def test_a_change_outside_the_grant_is_refused_and_changes_nothing() -> None:
    before = records()
    with pytest.raises(UpdateRefused) as refused:
        apply_update(before, ORIGIN, [], [rr("www.example.test.", "A", "192.0.2.11")],
                     allowed)
    assert refused.value.rcode == dns.rcode.REFUSED
    assert "www.example.test. A" in refused.value.reason
    assert before == records()


def test_deletions_keep_the_apex_soa_and_ns() -> None:
    def everything(name: dns.name.Name, rdtype: int) -> bool:
        return True

    applied = apply_update(records(), ORIGIN, [], [
        rr("example.test.", "ANY", deleting=dns.rdataclass.ANY, ttl=0),
        rr("www.example.test.", "A", deleting=dns.rdataclass.ANY, ttl=0)], everything)
    assert (ORIGIN, dns.rdatatype.SOA) in applied.rrsets
    assert (ORIGIN, dns.rdatatype.NS) in applied.rrsets
    assert (dns.name.from_text("www.example.test."), dns.rdatatype.A) not in applied.rrsets
    assert applied.changes == 1


def test_nothing_to_change_stores_nothing() -> None:
    applied = apply_update(records(), ORIGIN, [], [
        rr("_acme-challenge.example.test.", "TXT", deleting=dns.rdataclass.ANY, ttl=0)],
        allowed)
    assert applied.changes == 0 and applied.serial == 7
