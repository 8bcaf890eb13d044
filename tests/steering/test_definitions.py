"""Validating steering definitions: every error names the file, the path inside it and
the reason, the way an operator reads it from `gtm zones check` or the server log."""

from __future__ import annotations

import json
from pathlib import Path

import dns.name
import pytest

from gtm.dns.loader import load_directory, load_zone
from gtm.errors import ConfigError, ZoneError
from gtm.steering.definitions import load_steering_file
from tests.integration.servers import EXAMPLE_ZONES

ORIGIN = dns.name.from_text("gslb.test.")

BASE = """
[regions.eu]
latitude = 53.35
longitude = -6.26

[regions.us]
latitude = 38.95
longitude = -77.45

[pools.web]
endpoints = [
  { name = "eu-1", region = "eu", ipv4 = "192.0.2.11", weight = 1 },
  { name = "us-1", region = "us", ipv4 = "192.0.2.21", ipv6 = "2001:db8::21" },
]

[pools.backup]
endpoints = [{ name = "backup-1", region = "us", ipv4 = "192.0.2.99" }]

[pools.cdn]
endpoints = [{ name = "cdn-eu", region = "eu", cname = "eu.cdn.example.net." }]

[names.www]
pool = "web"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gslb.test.steering.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_steering_file(path, ORIGIN)
    return caught.value


def replaced(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def test_the_base_definitions_and_the_shipped_example_are_valid(tmp_path):
    steering = load_steering_file(write(tmp_path, BASE), ORIGIN)
    assert set(steering.pools) == {"web", "backup", "cdn"}
    example = load_zone(EXAMPLE_ZONES / "gslb.example.test.zone")
    assert example.steering is not None
    assert len(example.steering.names) == 8


CASES = [
    pytest.param(
        replaced('region = "eu", ipv4', 'region = "mars", ipv4'),
        "pools.web.endpoints[0].region", "unknown region 'mars'", id="endpoint-unknown-region"),
    pytest.param(
        BASE + '[[names.www.filters]]\ntype = "geo"\ndefault = ["eu", "moon"]\n',
        "names.www.filters[0].default", "unknown region 'moon'", id="geo-unknown-region"),
    pytest.param(
        BASE + '[[names.www.filters]]\ntype = "geo"\ndefault = ["eu"]\n'
        'countries = { JP = ["moon"] }\n',
        "names.www.filters[0].countries.JP", "unknown region 'moon'", id="geo-country-region"),
    pytest.param(
        BASE + '[[names.www.filters]]\ntype = "proximity"\nbias_km = { moon = 5 }\n',
        "names.www.filters[0].bias_km.moon", "unknown region 'moon'", id="bias-unknown-region"),
    pytest.param(
        BASE + '[[names.www.filters]]\ntype = "failover"\ngroups = [["eu"], ["nowhere"]]\n',
        "names.www.filters[0].groups[1]", "'nowhere' is neither a region nor an endpoint",
        id="failover-unknown-member"),
    pytest.param(
        BASE + '[[names.www.filters]]\ntype = "latency"\n'
        'networks = { "20.0.0.0/8" = { moon = 5 } }\n',
        "names.www.filters[0].networks.20.0.0.0/8.moon", "unknown region 'moon'",
        id="latency-unknown-region"),
    pytest.param(
        replaced('[names.www]\npool = "web"', '[names.www]\npool = "nope"'),
        "names.www.pool", "unknown pool 'nope'", id="unknown-pool"),
    pytest.param(
        replaced('{ name = "us-1"', '{ name = "eu-1"'),
        "pools.web", "endpoint 'eu-1' appears twice", id="duplicate-endpoint-in-pool"),
    pytest.param(
        replaced('{ name = "backup-1"', '{ name = "us-1"'),
        "pools.backup", "endpoint name 'us-1' is also used in pool 'web'",
        id="duplicate-endpoint-across-pools"),
    pytest.param(
        replaced('"192.0.2.11"', '"192.0.2.300"'),
        "pools.web.endpoints[0].ipv4", "'192.0.2.300' is not an IP address", id="bad-ipv4"),
    pytest.param(
        replaced('"192.0.2.11"', '"2001:db8::11"'),
        "pools.web.endpoints[0].ipv4", "is not an IPv4 address", id="ipv6-as-ipv4"),
    pytest.param(
        replaced('ipv6 = "2001:db8::21"', 'ipv6 = "192.0.2.21"'),
        "pools.web.endpoints[1].ipv6", "is not an IPv6 address", id="ipv4-as-ipv6"),
    pytest.param(
        replaced('weight = 1 }', 'weight = 1, check_address = "10.0.0" }'),
        "pools.web.endpoints[0].check_address", "is not an IP address", id="bad-check-address"),
    pytest.param(
        BASE + 'fallback = { addresses = ["192.0.2.1", "not-an-ip"] }\n',
        "names.www.fallback.addresses[1]", "'not-an-ip' is not an IP address",
        id="bad-fallback-address"),
    pytest.param(
        BASE + '[[names.www.filters]]\ntype = "geo"\ndefault = ["eu"]\n'
        'networks = { "10.0.0.1/8" = ["us"] }\n',
        "names.www.filters[0].networks.10.0.0.1/8", "is not a network in CIDR form",
        id="bad-geo-network"),
    pytest.param(
        replaced('cname = "eu.cdn.example.net." }]',
                 'cname = "eu.cdn.example.net." }, '
                 '{ name = "cdn-us", region = "us", ipv4 = "192.0.2.80" }]'),
        "pools.cdn.endpoints", "mixes CNAME endpoints with address endpoints",
        id="mixed-cname-pool"),
    pytest.param(
        replaced('cname = "eu.cdn.example.net." }', 'cname = "eu.cdn.example.net" }'),
        "pools.cdn.endpoints[0].cname", "must be absolute", id="relative-cname"),
    pytest.param(
        replaced('cname = "eu.cdn.example.net." }',
                 'cname = "eu.cdn.example.net.", ipv4 = "192.0.2.80" }'),
        "pools.cdn.endpoints[0]", "a CNAME target or addresses, not both",
        id="cname-and-address"),
    pytest.param(
        BASE + '[names.cdn]\npool = "cdn"\nanswers = 2\n',
        "names.cdn.answers", "a CNAME pool answers with exactly one target",
        id="cname-answers-2"),
    pytest.param(
        BASE + '[[names.www.filters]]\ntype = "random"\n',
        "names.www.filters[0].type", "must be one of failover, geo, proximity, latency, capacity",
        id="bad-filter-type"),
    pytest.param(
        BASE + '[[names.www.filters]]\ndefault = ["eu"]\n',
        "names.www.filters[0].type", "is required", id="filter-without-type"),
    pytest.param(
        BASE + "[extras]\nx = 1\n", "extras", "unknown key", id="unknown-top-level-key"),
    pytest.param(
        replaced("longitude = -6.26", "longitude = -6.26\naltitude = 20"),
        "regions.eu.altitude", "unknown key", id="unknown-region-key"),
    pytest.param(
        replaced('weight = 1 }', 'weight = 1, port = 443 }'),
        "pools.web.endpoints[0].port", "unknown key", id="unknown-endpoint-key"),
    pytest.param(
        BASE + "priority = 3\n", "names.www.priority", "unknown key", id="unknown-name-key"),
    pytest.param(
        BASE + '[[names.www.filters]]\ntype = "geo"\ndefault = ["eu"]\ncountrys = {}\n',
        "names.www.filters[0].countrys", "unknown key", id="unknown-filter-key"),
    pytest.param(
        replaced("weight = 1 }", "weight = -1 }"),
        "pools.web.endpoints[0].weight", "must be from 0 to 1000000", id="negative-weight"),
    pytest.param(
        replaced("weight = 1 }", 'weight = "10" }'),
        "pools.web.endpoints[0].weight", "must be a whole number", id="string-weight"),
    pytest.param(
        replaced("weight = 1 }", "weight = 1.5 }"),
        "pools.web.endpoints[0].weight", "must be a whole number", id="fractional-weight"),
    pytest.param(
        replaced("weight = 1 }", "weight = true }"),
        "pools.web.endpoints[0].weight", "must be a whole number", id="boolean-weight"),
    pytest.param(
        BASE + 'fallback = { pool = "spare" }\n',
        "names.www.fallback.pool", "unknown pool 'spare'", id="unknown-fallback-pool"),
    pytest.param(
        BASE + 'fallback = "closed"\n',
        "names.www.fallback", "must be a table", id="bad-fallback"),
    pytest.param(
        BASE + '[names.cdn]\npool = "cdn"\nfallback = { addresses = ["192.0.2.1"] }\n',
        "names.cdn.fallback", "a CNAME pool cannot fall back to fixed addresses",
        id="cname-pool-fixed-address-fallback"),
    pytest.param(
        BASE + 'fallback = { pool = "cdn" }\n',
        "names.www.fallback.pool", "must both be CNAME pools or both address pools",
        id="fallback-pool-of-other-kind"),
    pytest.param(
        BASE + '[names.cdn]\npool = "cdn"\nfallback = { pool = "backup" }\n',
        "names.cdn.fallback.pool", "must both be CNAME pools or both address pools",
        id="cname-name-address-fallback-pool"),
    pytest.param(
        BASE + '[[names.www.filters]]\ntype = "latency"\ntable_file = "missing.json"\n',
        "names.www.filters[0].table_file", "cannot read latency table", id="missing-latency-file"),
    pytest.param(
        BASE + 'select = "random"\n',
        "names.www.select", "must be one of weighted, sticky, multivalue", id="bad-select"),
    pytest.param(
        replaced("latitude = 53.35", "latitude = 95"),
        "regions.eu.latitude", "must be from -90 to 90", id="bad-latitude"),
    pytest.param(
        replaced("latitude = 53.35\n", ""),
        "regions.eu.latitude", "is required", id="missing-latitude"),
    pytest.param(
        BASE + '[[names.www.filters]]\ntype = "capacity"\nspill_below = 0\n',
        "names.www.filters[0].spill_below", "must be above 0 and at most 1", id="bad-spill"),
    pytest.param(
        BASE + '[names."WWW.gslb.test."]\npool = "web"\n',
        "names.WWW.gslb.test.", "is defined twice", id="name-defined-twice"),
    pytest.param(
        BASE + 'fallback = { pool = "backup", addresses = [] , open = true }\n',
        "names.www.fallback.open", "unknown key", id="unknown-fallback-key"),
    pytest.param(
        BASE + '[names."www.other.test."]\npool = "web"\n',
        "names.www.other.test.", "outside the zone", id="name-outside-zone"),
]


@pytest.mark.parametrize(("text", "where", "reason"), CASES)
def test_error_names_file_path_and_reason(tmp_path, text, where, reason):
    error = load_error(tmp_path, text)
    path = str(tmp_path / "gslb.test.steering.toml")
    assert error.source == path
    assert error.where == where
    assert reason in error.reason
    assert str(error).startswith(f"{path}:{where}: ")


def test_latency_file_with_a_bad_row_names_the_file_entry(tmp_path):
    (tmp_path / "rtt.json").write_text(json.dumps({"20.0.0.0/8": {"eu": "fast"}}))
    error = load_error(tmp_path, BASE + '[[names.www.filters]]\ntype = "latency"\n'
                                        'table_file = "rtt.json"\n')
    assert error.where == "names.www.filters[0].table_file.20.0.0.0/8.eu"
    assert "must be a number" in error.reason


def test_toml_syntax_error_names_the_file(tmp_path):
    error = load_error(tmp_path, BASE + "[names.broken\n")
    assert error.source == str(tmp_path / "gslb.test.steering.toml")


# ---- steered names against the zone's static data ----

ZONE = """$TTL 300
@        SOA  ns1.gslb.test. hostmaster.gslb.test. 1 7200 1800 1209600 30
@        NS   ns1.gslb.test.
ns1      A    192.0.2.53
{extra}
"""


def zone_dir(tmp_path: Path, extra: str, names: str) -> Path:
    (tmp_path / "gslb.test.zone").write_text(ZONE.format(extra=extra))
    write(tmp_path, BASE.replace('[names.www]\npool = "web"\n', names))
    return tmp_path / "gslb.test.zone"


@pytest.mark.parametrize(("extra", "kind"), [
    ("www A 192.0.2.1", "A"),
    ("www AAAA 2001:db8::1", "AAAA"),
    ("www CNAME elsewhere.example.net.", "CNAME"),
])
def test_steered_name_clashing_with_static_address_or_cname_is_refused(tmp_path, extra, kind):
    zone = zone_dir(tmp_path, extra, '[names.www]\npool = "web"\n')
    with pytest.raises(ZoneError) as caught:
        load_zone(zone)
    error = caught.value
    assert error.source == str(tmp_path / "gslb.test.steering.toml")
    assert error.where == "names.www.gslb.test."
    assert f"clashes with static {kind} records" in error.reason
    # The directory loader reports it the same way and serves nothing broken.
    result = load_directory(tmp_path)
    assert [str(e) for e in result.errors] == [str(error)]


def test_steered_name_beside_other_static_types_is_accepted(tmp_path):
    zone = zone_dir(tmp_path, 'www TXT "steered"\nwww MX 10 mail.example.net.',
                    '[names.www]\npool = "web"\n')
    assert load_zone(zone).steering is not None


def test_steered_cname_name_clashes_with_any_static_data(tmp_path):
    zone = zone_dir(tmp_path, 'cdn TXT "x"', '[names.www]\npool = "web"\n'
                                            '[names.cdn]\npool = "cdn"\n')
    with pytest.raises(ZoneError) as caught:
        load_zone(zone)
    assert caught.value.where == "names.cdn.gslb.test."
    assert "clashes with static TXT records" in caught.value.reason


@pytest.mark.parametrize("name", ["sub", "www.sub"])
def test_steered_name_at_or_below_a_delegation_is_refused(tmp_path, name):
    zone = zone_dir(tmp_path, "sub NS ns.example.net.", f'[names."{name}"]\npool = "web"\n')
    with pytest.raises(ZoneError) as caught:
        load_zone(zone)
    assert caught.value.source == str(tmp_path / "gslb.test.steering.toml")
    assert caught.value.where == f"names.{name}.gslb.test."
    assert "at or below a delegation" in caught.value.reason


def test_cname_pool_at_the_apex_is_refused(tmp_path):
    zone = zone_dir(tmp_path, "", '[names."@"]\npool = "cdn"\n')
    with pytest.raises(ZoneError) as caught:
        load_zone(zone)
    assert caught.value.source == str(tmp_path / "gslb.test.steering.toml")
    assert "clashes" in caught.value.reason or "apex" in caught.value.reason


def test_a_broken_steering_file_in_a_zone_directory_is_named(tmp_path):
    # What `gtm up` reads into its configuration: the error names the file at fault.
    from gtm.config.document import document_from_zone_dir

    (tmp_path / "gslb.test.zone").write_text(
        "$TTL 60\n@ SOA ns1 h 1 7200 900 1209600 60\n@ NS ns1\nns1 A 192.0.2.53\n")
    steering = tmp_path / "gslb.test.steering.toml"
    steering.write_text("[regions.eu\nlatitude = 1\n")
    with pytest.raises(ConfigError) as caught:
        document_from_zone_dir(tmp_path)
    assert caught.value.source == str(steering)
    assert str(caught.value).startswith(f"{steering}: not valid TOML: ")
    state = tmp_path / "gslb.test.state.json"
    steering.write_text("")
    state.write_text("{nope")
    with pytest.raises(ConfigError) as caught:
        document_from_zone_dir(tmp_path)
    assert caught.value.source == str(state) and "not valid JSON" in str(caught.value)
