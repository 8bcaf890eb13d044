"""Loading a directory of zones: a bad file never takes down the zones that are good."""

from __future__ import annotations

import dns.rcode

from gtm.dns.loader import load_directory
from tests.dnsutil import ask, engine_for, rrset_texts, zone_file


def zone_text(serial: int, address: str) -> str:
    return f"""$TTL 300
@   SOA ns.example.net. hostmaster.example.net. {serial} 7200 900 1209600 60
@   NS  ns.example.net.
www A   {address}
"""


BROKEN = "$TTL 300\n@ NS ns.example.net.\n"  # no SOA


def www(result, origin: str) -> set[str]:
    reply = ask(engine_for(*result.zones.zones.values()), f"www.{origin}")
    assert reply.rcode() == dns.rcode.NOERROR, origin
    return rrset_texts(reply.answer)


def test_every_zone_file_in_the_directory_is_loaded(tmp_path):
    zone_file(tmp_path, "a.test.", zone_text(1, "192.0.2.1"))
    zone_file(tmp_path, "b.test.", zone_text(1, "192.0.2.2"))
    (tmp_path / "notes.txt").write_text("not a zone")
    result = load_directory(tmp_path)
    assert result.errors == ()
    assert www(result, "a.test.") == {"www.a.test. 300 IN A 192.0.2.1"}
    assert www(result, "b.test.") == {"www.b.test. 300 IN A 192.0.2.2"}


def test_bad_zone_is_reported_and_the_good_ones_still_load(tmp_path):
    zone_file(tmp_path, "a.test.", zone_text(1, "192.0.2.1"))
    bad = zone_file(tmp_path, "b.test.", BROKEN)
    result = load_directory(tmp_path)
    assert [error.source for error in result.errors] == [str(bad)]
    assert www(result, "a.test.") == {"www.a.test. 300 IN A 192.0.2.1"}
    reply = ask(engine_for(*result.zones.zones.values()), "www.b.test.")
    assert reply.rcode() == dns.rcode.REFUSED


def test_reload_keeps_the_previous_version_of_a_zone_whose_new_file_is_bad(tmp_path):
    zone_file(tmp_path, "a.test.", zone_text(1, "192.0.2.1"))
    zone_file(tmp_path, "b.test.", zone_text(1, "192.0.2.2"))
    first = load_directory(tmp_path)

    zone_file(tmp_path, "a.test.", zone_text(2, "198.51.100.1"))
    bad = zone_file(tmp_path, "b.test.", zone_text(2, "192.0.2.999"))
    zone_file(tmp_path, "c.test.", zone_text(1, "192.0.2.3"))
    second = load_directory(tmp_path, previous=first.zones)

    assert [error.source for error in second.errors] == [str(bad)]
    assert second.errors[0].where == 4
    assert www(second, "a.test.") == {"www.a.test. 300 IN A 198.51.100.1"}
    assert www(second, "b.test.") == {"www.b.test. 300 IN A 192.0.2.2"}  # the old version
    assert www(second, "c.test.") == {"www.c.test. 300 IN A 192.0.2.3"}


def test_signature_changes_when_a_file_changes(tmp_path):
    path = zone_file(tmp_path, "a.test.", zone_text(1, "192.0.2.1"))
    before = load_directory(tmp_path).signature
    path.write_text(zone_text(2, "192.0.2.10"))
    assert load_directory(tmp_path).signature != before
