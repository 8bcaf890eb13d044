"""The CSV builder: exact fixture databases, and errors that name the line."""

from __future__ import annotations

from pathlib import Path

import maxminddb
import pytest

from gtm.cli import main
from gtm.errors import ConfigError
from gtm.geo import Location, Locator, build_mmdb
from gtm.geo.countries import CENTROID_BY_COUNTRY

FIXTURE = """\
network,country,continent,subdivision,latitude,longitude
81.2.0.0/16,GB,EU,ENG,51.5,-0.13
# the narrower network wins for its addresses, whatever the order of the rows
81.2.69.0/24,FR,,,,
2.0.0.0/8,US,NA,US-CA,37.4,-122.1

2a02:ff00::/24,jp,AS,,35.7,139.7
2a02:ff00:1::/48
"""


def build(tmp_path: Path, text: str, name: str = "nets.csv") -> Path:
    source = tmp_path / name
    source.write_text(text)
    out = tmp_path / "out.mmdb"
    build_mmdb(source, out)
    return out


@pytest.fixture
def locator(tmp_path: Path) -> Locator:
    return Locator(build(tmp_path, FIXTURE))


def test_full_row_gives_every_field(locator: Locator) -> None:
    assert locator.locate("2.1.2.3") == Location("US", "NA", "US-CA", 37.4, -122.1, 8)


def test_nested_network_wins_and_missing_fields_are_derived(locator: Locator) -> None:
    lat, lon = CENTROID_BY_COUNTRY["FR"]
    assert locator.locate("81.2.69.142") == Location("FR", "EU", None, lat, lon, 24)


def test_prefix_len_is_the_tree_network_around_the_address(locator: Locator) -> None:
    # 81.2.1.1 is in 81.2.0.0/16, but the /24 inside splits it: only 81.2.0.0/18 holds
    # the same answer, and that is the scope a resolver may cache it for.
    assert locator.locate("81.2.1.1") == Location("GB", "EU", "GB-ENG", 51.5, -0.13, 18)
    assert locator.locate("81.2.200.1").prefix_len == 17


def test_ipv6_rows(locator: Locator) -> None:
    assert locator.locate("2a02:ff80::1") == Location("JP", "AS", None, 35.7, 139.7, 25)
    # A row with only a network is a known network with nothing known about it.
    assert locator.locate("2a02:ff00:1::5") == Location(prefix_len=48)


def test_addresses_outside_every_network(locator: Locator) -> None:
    assert locator.locate("3.0.0.1") == Location(prefix_len=8)
    assert not locator.locate("2c00::1").known


def test_ipv4_mapped_ipv6_client_gets_ipv4_answer_in_ipv6_bits(locator: Locator) -> None:
    assert locator.locate("::ffff:81.2.69.142") == Location(
        "FR", "EU", None, *CENTROID_BY_COUNTRY["FR"], 120
    )


def test_output_uses_the_geolite2_city_layout(tmp_path: Path) -> None:
    out = build(tmp_path, FIXTURE)
    reader = maxminddb.open_database(str(out))
    assert reader.get("2.1.2.3") == {
        "country": {"iso_code": "US"},
        "continent": {"code": "NA"},
        "subdivisions": [{"iso_code": "CA"}],
        "location": {"latitude": 37.4, "longitude": -122.1},
    }
    assert reader.metadata().database_type == "GTM-City"
    assert reader.metadata().ip_version == 6


def test_range_variant_is_split_into_networks(tmp_path: Path) -> None:
    out = build(tmp_path, "start,end,country\n5.0.0.0,5.0.2.255,NL\n2a03::,2a03::ff,SE\n")
    locator = Locator(out)
    assert locator.locate("5.0.1.9") == Location("NL", "EU", None, 52.1, 5.3, 23)
    assert locator.locate("5.0.2.9").prefix_len == 24
    assert locator.locate("5.0.3.0").country is None
    assert locator.locate("2a03::80").country == "SE"


def test_network_and_range_columns_may_mix(tmp_path: Path) -> None:
    text = "network,start,end,country\n5.0.0.0/24,,,NL\n,6.0.0.0,6.0.0.127,BE\n"
    locator = Locator(build(tmp_path, text))
    assert (locator.locate("5.0.0.1").country, locator.locate("6.0.0.1").country) == ("NL", "BE")


def test_header_only_gives_an_empty_database(tmp_path: Path) -> None:
    assert Locator(build(tmp_path, "network,country\n")).locate("8.8.8.8") == Location(
        prefix_len=0
    )


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("network,country\n10.0.0.0/8,US\nnot-a-net,US\n", 3, "bad network 'not-a-net'"),
        ("network\n\n# comment\n10.0.0.1/8\n", 4, "has host bits set"),
        ("network,country\n1.0.0.0/8,UK\n", 2, "unknown country code 'UK'"),
        ("network,country,continent\n1.0.0.0/8,US,EA\n", 2, "unknown continent 'EA'"),
        ("network,latitude\n1.0.0.0/8,10\n", 2, "give both or neither"),
        ("network,latitude,longitude\n1.0.0.0/8,91,0\n", 2, "outside -90..90"),
        ("network,latitude,longitude\n1.0.0.0/8,1,west\n", 2, "'west' is not a number"),
        ("network,latitude,longitude\n1.0.0.0/8,nan,0\n", 2, "outside -90..90"),
        ("network,subdivision\n1.0.0.0/8,CA\n", 2, "needs a country"),
        ("network,country,subdivision\n1.0.0.0/8,US,CALIF\n", 2, "bad subdivision"),
        ("network,country\n1.0.0.0/8,US\n2.0.0.0/8,US\n1.0.0.0/8,CA\n", 4, "already on line 2"),
        ("network,country\n1.0.0.0/8,US\n::100:0/104,US\n", 3, "already on line 2"),
        ("network,country\n1.0.0.0/8,US,extra\n", 2, "3 fields but the header names 2"),
        ("network,lattitude\n", 1, "unknown column 'lattitude'"),
        ("country\n", 1, "needs a network column"),
        ("network,country,country\n", 1, "named twice"),
        ("start,end\n1.0.0.9,1.0.0.1\n", 2, "start must not follow end"),
        ("start,end\n1.0.0.0,::1\n", 2, "bad range"),
        ("start,end\n1.0.0.0,\n", 2, "no network"),
        ("start,end\n1.0.0.0,1.0.0.x\n", 2, "bad address '1.0.0.x'"),
    ],
)
def test_errors_name_the_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    source = tmp_path / "bad.csv"
    source.write_text(text)
    out = tmp_path / "out.mmdb"
    with pytest.raises(ConfigError) as caught:
        build_mmdb(source, out)
    assert (caught.value.source, caught.value.where) == (str(source), line)
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"{source}:{line}: ")
    assert not out.exists(), "nothing is written when the CSV is bad"


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty file"):
        build_mmdb(empty, tmp_path / "out.mmdb")
    with pytest.raises(ConfigError, match="cannot read"):
        build_mmdb(tmp_path / "missing.csv", tmp_path / "out.mmdb")


def test_unwritable_output(tmp_path: Path) -> None:
    source = tmp_path / "nets.csv"
    source.write_text("network\n1.0.0.0/8\n")
    with pytest.raises(ConfigError, match="cannot write") as caught:
        build_mmdb(source, tmp_path / "no-such-dir" / "out.mmdb")
    assert caught.value.source == str(tmp_path / "no-such-dir" / "out.mmdb")


def test_undecodable_csv(tmp_path: Path) -> None:
    source = tmp_path / "latin1.csv"
    source.write_bytes(b"network,country\n1.0.0.0/8,US\n\xff\xfe\n")
    with pytest.raises(ConfigError, match="not a readable CSV"):
        build_mmdb(source, tmp_path / "out.mmdb")


def test_cli_build_and_lookup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "nets.csv"
    source.write_text(FIXTURE)
    out = tmp_path / "cli.mmdb"
    assert main(["geo", "build", str(source), str(out)]) == 0
    assert "wrote 5 networks" in capsys.readouterr().out
    assert main(["geo", "lookup", "--db", str(out), "2.1.2.3"]) == 0
    printed = capsys.readouterr().out
    assert "country      US" in printed and "subdivision  US-CA" in printed
    assert "prefix_len   8" in printed


def test_cli_counts_one_network_in_the_singular(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "one.csv"
    source.write_text("network,country\n1.0.0.0/8,US\n")
    assert main(["geo", "build", str(source), str(tmp_path / "one.mmdb")]) == 0
    assert "wrote 1 network to" in capsys.readouterr().out


def test_cli_reports_the_bad_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "bad.csv"
    source.write_text("network,country\n1.0.0.0/8,ZZ\n")
    assert main(["geo", "build", str(source), str(tmp_path / "o.mmdb")]) == 2
    assert f"{source}:2: unknown country code 'ZZ'" in capsys.readouterr().err


def test_shipped_example_builds(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "geodata" / "example-networks.csv"
    out = tmp_path / "example.mmdb"
    assert build_mmdb(example, out) == 6
    assert Locator(out, trust_private=True).locate("10.20.1.1").subdivision == "US-VA"
