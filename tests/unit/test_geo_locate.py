"""The Locator: the shipped NRO database, GeoLite2/DB-IP layouts, special addresses."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from gtm.config.settings import DnsSettings
from gtm.errors import ConfigError
from gtm.geo import DEFAULT_DATABASE, Location, Locator, MmdbWriter
from gtm.geo.countries import CENTROID_BY_COUNTRY
from gtm.node import open_locator


@pytest.fixture(scope="module")
def shipped() -> Locator:
    return Locator(DEFAULT_DATABASE)


@pytest.mark.parametrize(
    ("ip", "country"),
    [
        ("8.8.8.8", "US"),
        ("1.1.1.1", "AU"),
        ("81.2.69.142", "GB"),
        ("133.1.1.1", "JP"),
        ("41.0.0.1", "ZA"),
        ("2001:4860:4860::8888", "US"),
    ],
)
def test_shipped_database_spot_checks(shipped: Locator, ip: str, country: str) -> None:
    assert shipped.locate(ip).country == country


def test_shipped_database_fills_continent_and_centroid(shipped: Locator) -> None:
    where = shipped.locate(ipaddress.ip_address("8.8.8.8"))
    lat, lon = CENTROID_BY_COUNTRY["US"]
    assert (where.country, where.continent, where.latitude, where.longitude) == (
        "US",
        "NA",
        lat,
        lon,
    )
    assert where.subdivision is None
    assert 0 < where.prefix_len <= 32, "IPv4 prefix, not the IPv6 tree depth"


def test_ipv4_mapped_address_is_located_as_ipv4(shipped: Locator) -> None:
    plain = shipped.locate("8.8.8.8")
    mapped = shipped.locate("::ffff:8.8.8.8")
    assert mapped.country == "US"
    assert mapped.prefix_len == plain.prefix_len + 96


@pytest.mark.parametrize(
    ("ip", "prefix_len"),
    [
        ("10.1.2.3", 8),
        ("127.0.0.1", 8),
        ("192.168.1.1", 16),  # the NRO data says AU here: registry noise, ignored
        ("172.16.5.5", 12),
        ("169.254.1.1", 16),
        ("100.64.0.1", 10),
        ("224.0.0.251", 4),
        ("255.255.255.255", 4),
        ("0.0.0.0", 8),
        ("::1", 128),
        ("::", 128),
        ("fe80::1", 10),
        ("fd12:3456::1", 7),
        ("2001:db8::1", 32),  # also "JP" in the NRO data
        ("ff02::1", 8),
        ("::ffff:10.0.0.1", 104),
        ("192.0.0.9", 24),
        ("192.0.2.7", 24),
        ("198.18.0.1", 15),
        ("198.51.100.7", 24),
        ("203.0.113.9", 24),
        ("240.0.0.1", 4),
        ("64:ff9b::c000:201", 96),  # NAT64: the IPv4 address inside says nothing either
        ("2001:2::1", 23),  # benchmarking, inside the IETF protocol block
        ("3fff::1", 20),  # documentation (RFC 9637)
    ],
)
def test_special_addresses_are_unknown(shipped: Locator, ip: str, prefix_len: int) -> None:
    assert shipped.locate(ip) == Location(prefix_len=prefix_len)


def test_the_node_never_locates_special_addresses_even_when_the_file_is_named() -> None:
    """Naming the shipped file (or any other) with geoip_database used to trust its
    records for private and documentation blocks (192.168.0.0/16 was in AU)."""
    locator = open_locator(DnsSettings(geoip_database=DEFAULT_DATABASE))
    assert locator is not None
    with locator:
        assert locator.locate("192.168.1.1") == Location(prefix_len=16)
        assert locator.locate("2001:db8::1") == Location(prefix_len=32)
        assert locator.locate("8.8.8.8").country == "US"


def test_trust_private_uses_the_database_records() -> None:
    with Locator(DEFAULT_DATABASE, trust_private=True) as trusting:
        assert trusting.locate("192.168.1.1").country == "AU"
        assert trusting.locate("10.1.2.3") == Location(prefix_len=8)  # no record: unknown


def test_public_neighbours_of_special_blocks_are_located(shipped: Locator) -> None:
    assert shipped.locate("11.0.0.1").country is not None
    assert shipped.locate("172.32.0.1").country is not None


def _database(tmp_path: Path, records: dict[str, Any], ip_version: int = 6) -> Locator:
    writer = MmdbWriter(ip_version=ip_version, database_type="GeoLite2-City")
    for network, record in records.items():
        writer.insert(network, record)
    path = tmp_path / "db.mmdb"
    writer.write(path)
    return Locator(path)


GEOLITE2_CITY = {
    "city": {"geoname_id": 2950159, "names": {"en": "Berlin"}},
    "continent": {"code": "EU", "geoname_id": 6255148, "names": {"en": "Europe"}},
    "country": {"geoname_id": 2921044, "iso_code": "DE", "names": {"en": "Germany"}},
    "location": {"accuracy_radius": 20, "latitude": 52.52, "longitude": 13.405},
    "registered_country": {"geoname_id": 2921044, "iso_code": "DE"},
    "subdivisions": [{"geoname_id": 2950157, "iso_code": "BE", "names": {"en": "Land Berlin"}}],
}


def test_geolite2_city_layout(tmp_path: Path) -> None:
    locator = _database(tmp_path, {"5.1.0.0/16": GEOLITE2_CITY})
    assert locator.locate("5.1.2.3") == Location("DE", "EU", "DE-BE", 52.52, 13.405, 16)


def test_geolite2_country_layout_and_registered_country_fallback(tmp_path: Path) -> None:
    records = {
        "5.1.0.0/16": {"continent": {"code": "EU"}, "country": {"iso_code": "SE"}},
        # GeoLite2 has networks (satellite, anycast) with only a registered country.
        "5.2.0.0/16": {"registered_country": {"iso_code": "NO"}},
    }
    locator = _database(tmp_path, records)
    assert locator.locate("5.1.0.1") == Location("SE", "EU", None, *CENTROID_BY_COUNTRY["SE"], 16)
    assert locator.locate("5.2.0.1") == Location("NO", "EU", None, *CENTROID_BY_COUNTRY["NO"], 16)


def test_dbip_lite_layout_with_named_subdivisions(tmp_path: Path) -> None:
    record = {
        "city": {"names": {"en": "Sydney"}},
        "continent": {"code": "OC", "geoname_id": 6255151},
        "country": {"iso_code": "AU", "is_in_european_union": False},
        "location": {"latitude": -33.8688, "longitude": 151.209},
        "subdivisions": [{"names": {"en": "New South Wales"}}],
    }
    locator = _database(tmp_path, {"2400:a800::/32": record})
    assert locator.locate("2400:a800::1") == Location("AU", "OC", None, -33.8688, 151.209, 32)


def test_flat_layouts(tmp_path: Path) -> None:
    records = {
        "5.1.0.0/16": {"country_code": "br"},
        "5.2.0.0/16": {"country_code": "TR", "continent_code": "EU", "latitude": 41.0,
                       "longitude": 29.0},
    }
    locator = _database(tmp_path, records)
    assert locator.locate("5.1.0.1") == Location("BR", "SA", None, *CENTROID_BY_COUNTRY["BR"], 16)
    assert locator.locate("5.2.0.1") == Location("TR", "EU", None, 41.0, 29.0, 16)


def test_odd_records_degrade_to_what_is_known(tmp_path: Path) -> None:
    records = {
        "5.1.0.0/16": {"country": {"iso_code": "ZZ"}},  # a code no table knows
        "5.2.0.0/16": {"country": {"iso_code": "FR"}, "continent": {"code": "XX"}},
        "5.3.0.0/16": {"location": {"latitude": 10.0, "longitude": 20.0}},
        "5.4.0.0/16": {"country": "FR", "subdivisions": "nope"},
        "5.5.0.0/16": "not a map",
    }
    locator = _database(tmp_path, records)
    assert locator.locate("5.1.0.1") == Location(country="ZZ", prefix_len=16)
    assert locator.locate("5.2.0.1").continent == "EU"
    assert locator.locate("5.3.0.1") == Location(latitude=10.0, longitude=20.0, prefix_len=16)
    assert locator.locate("5.4.0.1") == Location(prefix_len=16)
    assert locator.locate("5.5.0.1") == Location(prefix_len=16)


def test_ipv6_in_an_ipv4_database_is_unknown_everywhere(tmp_path: Path) -> None:
    locator = _database(tmp_path, {"5.1.0.0/16": {"country_code": "US"}}, ip_version=4)
    assert locator.locate("5.1.0.1").country == "US"
    assert locator.locate("2a00::1") == Location(prefix_len=0)


def test_address_objects_and_text_agree(shipped: Locator) -> None:
    for text in ("81.2.69.142", "2001:4860:4860::8888"):
        assert shipped.locate(ipaddress.ip_address(text)) == shipped.locate(text)
    assert shipped.locate(" 8.8.8.8 ") == shipped.locate("8.8.8.8")
    assert shipped.locate("fe80::1%eth0").prefix_len == 10


def test_bad_address_text(shipped: Locator) -> None:
    with pytest.raises(ConfigError, match=r"'8\.8\.8' is not an IP address"):
        shipped.locate("8.8.8")


def test_unopenable_databases(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot open GeoIP database") as caught:
        Locator(tmp_path / "missing.mmdb")
    assert caught.value.source == str(tmp_path / "missing.mmdb")
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"this is not a MaxMind DB file" * 10)
    with pytest.raises(ConfigError, match="cannot open GeoIP database"):
        Locator(junk)


def test_metadata_is_exposed(shipped: Locator) -> None:
    assert shipped.database_type == "country ipvAll"
    assert shipped.build_epoch > 1_700_000_000


def test_location_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Location().country = "US"  # type: ignore[misc]
