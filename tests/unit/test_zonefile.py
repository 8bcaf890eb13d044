"""Reading master files and validating zones: every error names its file, line and reason."""

from __future__ import annotations

from pathlib import Path

import dns.name
import dns.rcode
import pytest

from gtm.dns.loader import load_zone
from gtm.dns.zone import Zone
from gtm.errors import ZoneError
from tests.dnsutil import ask, engine_for, load, rrset_texts, zone_file

HEAD = """$TTL 300
@    SOA ns1 hostmaster 1 7200 900 1209600 60
@    NS  ns1
ns1  A   192.0.2.53
"""
HEAD_LINES = 4


def texts(zone: Zone, owner: str, rdtype: str = "A") -> set[str]:
    engine = engine_for(zone)
    return rrset_texts(ask(engine, owner, rdtype, tcp=True).answer)


def ttl_of(zone: Zone, owner: str, rdtype: str = "A") -> int:
    return ask(engine_for(zone), owner, rdtype, tcp=True).answer[0].ttl


def load_error(path: Path) -> ZoneError:
    with pytest.raises(ZoneError) as caught:
        load_zone(path)
    return caught.value


def assert_names(error: ZoneError, path: Path, line: int, *words: str) -> None:
    """The error names the file, the line and (in words the user would recognise) why."""
    assert error.source == str(path)
    assert error.where == line
    assert str(error).startswith(f"{path}:{line}: ")
    for word in words:
        assert word.lower() in error.reason.lower(), (word, error.reason)


# The grammar


def test_owner_is_inherited_from_the_previous_line(tmp_path):
    zone = load(tmp_path, "example.test.", HEAD + "www A 192.0.2.1\n    A 192.0.2.2\n\tTXT \"t\"\n")
    assert texts(zone, "www.example.test.") == {
        "www.example.test. 300 IN A 192.0.2.1",
        "www.example.test. 300 IN A 192.0.2.2",
    }
    assert texts(zone, "www.example.test.", "TXT") == {'www.example.test. 300 IN TXT "t"'}


def test_ttl_directive_sets_the_default_ttl(tmp_path):
    zone = load(tmp_path, "example.test.", HEAD + "$TTL 1h\nwww A 192.0.2.1\n")
    assert ttl_of(zone, "www.example.test.") == 3600


def test_ttl_and_class_may_come_in_either_order(tmp_path):
    text = HEAD + "a 60 IN A 192.0.2.1\nb IN 70 A 192.0.2.2\nc 80 A 192.0.2.3\nd IN A 192.0.2.4\n"
    zone = load(tmp_path, "example.test.", text)
    assert [ttl_of(zone, f"{n}.example.test.") for n in "abcd"] == [60, 70, 80, 300]


def test_missing_ttl_takes_the_last_stated_ttl_without_ttl_directive(tmp_path):
    text = "@ 600 SOA ns1 hostmaster 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n"
    zone = load(tmp_path, "example.test.", text)
    assert ttl_of(zone, "ns1.example.test.") == 600


def test_origin_directive_changes_how_relative_names_read(tmp_path):
    text = HEAD + "$ORIGIN east.example.test.\nwww A 192.0.2.1\n$ORIGIN west\nwww A 192.0.2.2\n"
    zone = load(tmp_path, "example.test.", text)
    assert texts(zone, "www.east.example.test.") == {"www.east.example.test. 300 IN A 192.0.2.1"}
    assert texts(zone, "www.west.east.example.test.") == {
        "www.west.east.example.test. 300 IN A 192.0.2.2"
    }


def test_parentheses_continue_a_record_over_several_lines(tmp_path):
    text = """$TTL 300
@ IN SOA ns1.example.test. hostmaster.example.test. (
        2024060101 ; serial
        7200       ; refresh
        900        ; retry
        1209600    ; expire
        60 )       ; minimum
  NS ns1
ns1 A 192.0.2.53
txt TXT ( "one"
          "two" )
"""
    zone = load(tmp_path, "example.test.", text)
    assert texts(zone, "example.test.", "SOA") == {
        "example.test. 300 IN SOA ns1.example.test. hostmaster.example.test. "
        "2024060101 7200 900 1209600 60"
    }
    assert texts(zone, "txt.example.test.", "TXT") == {'txt.example.test. 300 IN TXT "one" "two"'}
    assert texts(zone, "example.test.", "NS") == {"example.test. 300 IN NS ns1.example.test."}


def test_include_without_origin_reads_relative_to_the_current_origin(tmp_path):
    (tmp_path / "hosts.inc").write_text("www A 192.0.2.1\n")
    zone = load(tmp_path, "example.test.", HEAD + "$INCLUDE hosts.inc\n")
    assert texts(zone, "www.example.test.") == {"www.example.test. 300 IN A 192.0.2.1"}


def test_include_with_origin_reads_relative_to_that_origin(tmp_path):
    (tmp_path / "hosts.inc").write_text("www A 192.0.2.1\n")
    text = HEAD + "$INCLUDE hosts.inc lab.example.test.\nafter A 192.0.2.2\n"
    zone = load(tmp_path, "example.test.", text)
    assert texts(zone, "www.lab.example.test.") == {"www.lab.example.test. 300 IN A 192.0.2.1"}
    # The including file's origin is back in force after the $INCLUDE.
    assert texts(zone, "after.example.test.") == {"after.example.test. 300 IN A 192.0.2.2"}


def test_include_with_relative_origin(tmp_path):
    (tmp_path / "hosts.inc").write_text("www A 192.0.2.1\n")
    zone = load(tmp_path, "example.test.", HEAD + "$INCLUDE hosts.inc lab\n")
    assert texts(zone, "www.lab.example.test.") == {"www.lab.example.test. 300 IN A 192.0.2.1"}


def test_include_path_is_relative_to_the_including_file(tmp_path, monkeypatch):
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "hosts.inc").write_text("$INCLUDE more.inc\n")
    (tmp_path / "parts" / "more.inc").write_text("www A 192.0.2.1\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    zone = load(tmp_path, "example.test.", HEAD + "$INCLUDE parts/hosts.inc\n")
    assert texts(zone, "www.example.test.") == {"www.example.test. 300 IN A 192.0.2.1"}


def test_owner_after_include_is_the_including_files_own(tmp_path):
    (tmp_path / "hosts.inc").write_text("other A 192.0.2.9\n")
    text = HEAD + "www A 192.0.2.1\n$INCLUDE hosts.inc\n    TXT \"mine\"\n"
    zone = load(tmp_path, "example.test.", text)
    assert texts(zone, "www.example.test.", "TXT") == {'www.example.test. 300 IN TXT "mine"'}


def test_names_are_case_insensitive_within_a_zone(tmp_path):
    zone = load(tmp_path, "example.test.", HEAD + "WWW A 192.0.2.1\nwww A 192.0.2.2\n")
    assert len(ask(engine_for(zone), "wWw.example.test.", "A").answer[0]) == 2


# Errors, each naming file, line and reason


def bad_zone(tmp_path: Path, body: str, head: str = HEAD) -> tuple[Path, int]:
    """Write HEAD + body; return the path and the line number of body's first line."""
    return zone_file(tmp_path, "example.test.", head + body), head.count("\n") + 1


def test_missing_soa_is_an_error(tmp_path):
    path = zone_file(tmp_path, "example.test.", "$TTL 300\n@ NS ns1\nns1 A 192.0.2.53\n")
    assert_names(load_error(path), path, 2, "no SOA")


def test_two_soa_records_are_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "@ SOA ns1 hostmaster 2 7200 900 1209600 60\n")
    assert_names(load_error(path), path, line, "more than one SOA")


def test_two_identical_soa_records_are_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "@ SOA ns1 hostmaster 1 7200 900 1209600 60\n")
    assert_names(load_error(path), path, line, "more than one SOA")


def test_soa_below_the_apex_is_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "sub SOA ns1 hostmaster 1 7200 900 1209600 60\n")
    assert_names(load_error(path), path, line, "SOA", "not the zone apex")


def test_missing_apex_ns_is_an_error(tmp_path):
    path = zone_file(
        tmp_path, "example.test.", "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n"
    )
    assert_names(load_error(path), path, 2, "no NS")


def test_in_zone_apex_name_server_without_address_is_an_error(tmp_path):
    head = "$TTL 300\n@ SOA ns1 hostmaster 1 7200 900 1209600 60\n"
    path, line = bad_zone(tmp_path, "@ NS ns1\n", head=head)
    assert_names(load_error(path), path, line, "ns1.example.test.", "address")


def test_delegation_without_glue_is_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "sub NS ns.sub\n")
    assert_names(load_error(path), path, line, "ns.sub.example.test.", "glue")


def test_delegation_to_out_of_zone_server_needs_no_glue(tmp_path):
    path, _ = bad_zone(tmp_path, "sub NS ns.example.net.\n")
    reply = ask(engine_for(load_zone(path)), "www.sub.example.test.")
    assert rrset_texts(reply.authority) == {"sub.example.test. 300 IN NS ns.example.net."}
    assert reply.additional == []


def test_cname_next_to_other_data_is_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "www CNAME ns1\nwww TXT \"x\"\n")
    assert_names(load_error(path), path, line, "CNAME", "other data", "TXT")


def test_cname_next_to_other_data_in_either_order_is_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "www TXT \"x\"\nwww CNAME ns1\n")
    assert_names(load_error(path), path, line + 1, "CNAME", "other data")


def test_two_cnames_are_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "www CNAME ns1\nwww CNAME host.example.net.\n")
    assert_names(load_error(path), path, line + 1, "more than one CNAME")


def test_name_outside_the_zone_is_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "www.example.org. A 192.0.2.1\n")
    assert_names(load_error(path), path, line, "www.example.org.", "outside")


def test_data_below_a_delegation_that_is_not_glue_is_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "sub NS ns.example.net.\nwww.sub TXT \"hidden\"\n")
    assert_names(load_error(path), path, line + 1, "below the delegation", "sub.example.test.")


def test_address_below_a_delegation_that_no_name_server_uses_is_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "sub NS ns.sub\nns.sub A 192.0.2.9\nwww.sub A 192.0.2.1\n")
    assert_names(load_error(path), path, line + 2, "below the delegation", "glue")


def test_glue_for_a_sibling_delegation_is_accepted(tmp_path):
    path, _ = bad_zone(tmp_path, "a NS ns.b\nb NS ns.b\nns.b A 192.0.2.9\n")
    reply = ask(engine_for(load_zone(path)), "www.a.example.test.")
    assert rrset_texts(reply.additional) == {"ns.b.example.test. 300 IN A 192.0.2.9"}


def test_non_glue_data_at_a_delegation_point_is_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "sub NS ns.example.net.\nsub MX 10 ns1\n")
    assert_names(load_error(path), path, line + 1, "delegation point")


def test_unknown_record_type_is_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "www BOGUS 1\n")
    assert_names(load_error(path), path, line, "unknown record type", "BOGUS")


# Each reason says what was expected, not only dnspython's "Text input is malformed."
@pytest.mark.parametrize(("body", "reason"), [
    ("www A 192.0.2\n", "not an IPv4 address: 192.0.2"),
    ("www A 127.0.10.300\n", "not an IPv4 address: 127.0.10.300"),
    ("www A\n", "not an IPv4 address: nothing"),
    ("www AAAA 2001:db8::zz\n", "not an IPv6 address: 2001:db8::zz"),
    ("www MX mail 10\n", "bad MX record: expecting an integer (expected: preference exchange)"),
    ("www TXT \"open\n", "bad TXT record: newline in quoted string (expected: strings)"),
    ("www SRV 1 2 x y\n", "(expected: priority weight port target)"),
])
def test_bad_rdata_is_an_error_saying_what_was_expected(tmp_path, body, reason):
    path, line = bad_zone(tmp_path, body)
    error = load_error(path)
    assert_names(error, path, line)
    assert reason in error.reason
    assert "malformed" not in error.reason


def test_unsupported_directive_is_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "$GENERATE 1-9 host$ A 192.0.2.$\n")
    assert_names(load_error(path), path, line, "unsupported directive", "$GENERATE")


def test_record_without_ttl_and_no_ttl_directive_is_an_error(tmp_path):
    head = ""
    path, line = bad_zone(tmp_path, "www A 192.0.2.1\n", head=head)
    assert_names(load_error(path), path, line, "TTL")


def test_other_class_is_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "www CH TXT \"x\"\n")
    assert_names(load_error(path), path, line, "class")


def test_include_loop_is_an_error_naming_the_include_line(tmp_path):
    (tmp_path / "a.inc").write_text("www A 192.0.2.1\n$INCLUDE b.inc\n")
    (tmp_path / "b.inc").write_text("$INCLUDE a.inc\n")
    path, _ = bad_zone(tmp_path, "$INCLUDE a.inc\n")
    assert_names(load_error(path), tmp_path / "b.inc", 1, "loop")


def test_zone_including_itself_is_an_error(tmp_path):
    path, line = bad_zone(tmp_path, "$INCLUDE example.test.zone\n")
    assert_names(load_error(path), path, line, "loop")


def test_missing_include_file_is_an_error_naming_the_include_line(tmp_path):
    path, line = bad_zone(tmp_path, "$INCLUDE nowhere.inc\n")
    assert_names(load_error(path), path, line, "nowhere.inc")


def test_parse_error_in_an_included_file_names_the_included_file(tmp_path):
    included = tmp_path / "hosts.inc"
    included.write_text("ok A 192.0.2.1\n\nbad A 300.0.0.1\n")
    path, _ = bad_zone(tmp_path, "$INCLUDE hosts.inc\n")
    assert_names(load_error(path), included, 3)


def test_validation_error_in_an_included_file_names_the_included_file(tmp_path):
    included = tmp_path / "hosts.inc"
    included.write_text("; conflicting data\nwww CNAME ns1\n")
    path, _ = bad_zone(tmp_path, "www A 192.0.2.1\n$INCLUDE hosts.inc\n")
    assert_names(load_error(path), included, 2, "CNAME")


def test_multi_line_record_error_names_its_first_line(tmp_path):
    path, line = bad_zone(tmp_path, "www MX (\n  10\n  )\n")
    assert_names(load_error(path), path, line)


def test_served_zone_answers_from_the_file_that_loaded(tmp_path):
    zone = load(tmp_path, "example.test.", HEAD + "www A 192.0.2.1\n")
    assert ask(engine_for(zone), "www.example.test.").rcode() == dns.rcode.NOERROR
