"""Steered names over real sockets: `gtm serve` on a copy of the example zones, with an
exact fixture GeoIP database, answering ECS and plain queries on loopback."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.servers import (
    QUERY_TIMEOUT,
    GtmServer,
    ServerFactory,
    copy_example_zones,
    gtm_command,
    rdata_texts,
    subprocess_env,
    wait_until,
)
from tests.steering.geofixture import EXAMPLE_REGION_ADDRESSES as REGION
from tests.steering.geofixture import build_fixture_mmdb

pytestmark = pytest.mark.integration

ZONE = "gslb.example.test"
WWW = f"www.{ZONE}."
# A plain weighted name over the whole web pool, added to the copy of the example.
SPREAD = """
# spread: no filter, weighted over the whole pool (added by the socket tests).
[names.spread]
pool = "web"
"""
WEB_WEIGHTS = {"127.0.1.1": 10, "127.0.1.2": 10, "127.0.2.1": 20, "127.0.2.2": 10,
               "127.0.3.1": 10, "127.0.4.1": 10}


@dataclass
class Steered:
    server: GtmServer
    zones: Path
    mmdb: Path


def start(directory: Path, factory: ServerFactory) -> Steered:
    zones = copy_example_zones(directory / "zones")
    with (zones / f"{ZONE}.steering.toml").open("a", encoding="utf-8") as handle:
        handle.write(SPREAD)
    # The operator's own database, placing private and documentation blocks in Japan.
    mmdb = build_fixture_mmdb(directory / "geo", traps=True)
    server = factory(zones, config={"watch_interval": 0.2}, extra=["--geoip", str(mmdb)])
    return Steered(server, zones, mmdb)


@pytest.fixture(scope="module")
def steered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Steered]:
    """One server for the read-only tests of this module."""
    directory = tmp_path_factory.mktemp("steering-sockets")
    factory = ServerFactory(directory)
    try:
        yield start(directory, factory)
    finally:
        factory.stop_all()


@pytest.fixture
def own_steered(tmp_path: Path, gtm_server: ServerFactory) -> Steered:
    """A server of its own, for a test that changes endpoint or region state."""
    return start(tmp_path, gtm_server)


def ecs_query(server: GtmServer, qname: str, subnet: str | None, rdtype: str = "A",
              tcp: bool = False) -> dns.message.Message:
    options: list[dns.edns.Option] = []
    if subnet is not None:
        address, prefix = subnet.split("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    request = dns.message.make_query(qname, rdtype, use_edns=0, options=options)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(request, server.host, port=server.port, timeout=QUERY_TIMEOUT)


def echoed_ecs(response: dns.message.Message) -> dns.edns.ECSOption | None:
    found = [o for o in response.options if isinstance(o, dns.edns.ECSOption)]
    assert len(found) <= 1
    return found[0] if found else None


def addresses(response: dns.message.Message, rdtype: str = "A") -> set[str]:
    assert response.rcode() == dns.rcode.NOERROR
    return rdata_texts(response, "", rdtype)


def steer(zones: Path, *args: str) -> None:
    done = subprocess.run(
        gtm_command("steer", *args, "--zones", str(zones)),
        cwd=zones.parent, env=subprocess_env(), capture_output=True, text=True, timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr


# (subnet sent as ECS, country it is in, the region www must answer from, expected scope)
ECS_CASES = [
    ("20.1.2.0/24", "JP", "ap-northeast", 8),  # country rule
    ("21.1.2.0/24", "BR", "sa-east", 8),  # country rule
    ("28.9.0.0/24", "AR", "sa-east", 8),  # continent SA
    ("27.9.0.0/24", "IN", "ap-northeast", 8),  # continent AS
    ("25.9.0.0/24", "AU", "ap-northeast", 8),  # continent OC
    ("24.9.0.0/24", "DE", "eu-west", 8),  # continent EU
    ("29.9.0.0/24", "IE", "eu-west", 8),  # continent EU
    ("26.9.0.0/24", "ZA", "eu-west", 8),  # continent AF
    ("33.9.0.0/24", "KE", "eu-west", 8),  # continent AF
    ("31.9.0.0/24", "CA", "us-east", 8),  # continent NA
    ("30.9.0.0/24", "MX", "us-east", 8),  # continent NA
    # The database splits 22.0.0.0/8 (GB) around 22.1.2.0/24 (FR), and 23.0.0.0/8
    # (US-VA) at 23.128.0.0/9 (US-CA): the scope is the network that answered.
    ("22.200.0.0/24", "GB", "eu-west", 9),
    ("22.1.2.0/24", "FR", "eu-west", 24),
    ("23.1.0.0/24", "US", "us-east", 9),
    ("23.200.0.0/24", "US", "us-east", 9),
    ("40.1.2.0/24", "unknown", "us-east", 5),  # in no database network: default
    ("10.1.2.0/24", "private", "eu-west", 8),  # the example's CIDR rule 10.0.0.0/8
    # Special-purpose blocks (RFC 6890) the database places in Japan: located nowhere,
    # so the default; the scope is the whole block.
    ("192.168.7.0/24", "special", "us-east", 16),
    ("172.20.1.0/24", "special", "us-east", 12),
    ("100.64.9.0/24", "special", "us-east", 10),
    ("198.18.3.0/24", "special", "us-east", 15),
    ("203.0.113.0/24", "special", "us-east", 24),
    ("240.1.2.0/24", "special", "us-east", 4),
    ("2001:db8:1::/48", "special", "us-east", 32),
    ("fd00:9::/48", "special", "us-east", 7),
    ("fe80::/64", "special", "us-east", 10),
    ("64:ff9b::/120", "special", "us-east", 96),
    ("2400:1:2::/48", "JP", "ap-northeast", 12),
    ("2a00:1:2::/48", "GB", "eu-west", 12),
    ("20.0.0.0/6", "JP", "ap-northeast", 6),  # never longer than the source prefix
]


@pytest.mark.parametrize(("subnet", "country", "region", "scope"), ECS_CASES,
                         ids=[f"{c[1]}-{c[0]}" for c in ECS_CASES])
def test_ecs_client_gets_its_regions_addresses_and_the_scope(steered, subnet, country, region,
                                                            scope):
    seen: set[str] = set()
    for _ in range(3):  # the rotation within the region: every answer from it
        response = ecs_query(steered.server, WWW, subnet)
        seen |= addresses(response)
        option = echoed_ecs(response)
        assert option is not None, "the ECS option must be echoed"
        assert (f"{option.address}/{option.srclen}", option.scopelen) == (subnet, scope)
    assert seen and seen <= REGION[region], (country, seen)


def test_ecs_over_tcp_is_steered_the_same(steered):
    response = ecs_query(steered.server, WWW, "21.1.2.0/24", tcp=True)
    assert addresses(response) == REGION["sa-east"]
    option = echoed_ecs(response)
    assert option is not None and option.scopelen == 8


def test_aaaa_for_a_region_without_ipv6_comes_from_the_next_listed_region(steered):
    # JP lists ap-northeast then us-east; ap-northeast-1 has no IPv6 address.
    response = ecs_query(steered.server, WWW, "20.1.2.0/24", rdtype="AAAA")
    assert addresses(response, "AAAA") <= {"fd00:0:0:2::1", "fd00:0:0:2::2"}
    assert addresses(response, "AAAA")


def test_without_ecs_the_resolver_address_decides(steered):
    # 127.0.0.1 is located nowhere: www takes its default, us-east.
    for _ in range(3):
        response = ecs_query(steered.server, WWW, None)
        assert addresses(response) <= REGION["us-east"]
        assert echoed_ecs(response) is None
    # fast steers by the latency table, whose row 127.0.0.0/8 says eu-west.
    for _ in range(3):
        assert addresses(ecs_query(steered.server, f"fast.{ZONE}.", None)) <= REGION["eu-west"]


@pytest.mark.parametrize(("subnet", "region"), [
    ("192.0.2.0/24", "us-east"), ("198.51.100.0/24", "ap-northeast"),
])
def test_latency_table_rows_by_client_subnet(steered, subnet, region):
    response = ecs_query(steered.server, f"fast.{ZONE}.", subnet)
    assert addresses(response) <= REGION[region]
    option = echoed_ecs(response)
    assert option is not None and option.scopelen == 24


def test_weighted_answers_follow_the_weights(steered):
    queries = 600
    counts: Counter[str] = Counter()
    for _ in range(queries):
        (address,) = addresses(ecs_query(steered.server, f"spread.{ZONE}.", None))
        counts[address] += 1
    total = sum(WEB_WEIGHTS.values())
    for address, weight in WEB_WEIGHTS.items():
        # Generous: 5 percentage points around each share (1/7 or 2/7).
        assert abs(counts[address] / queries - weight / total) < 0.05, counts


def test_region_down_and_drained_endpoint_leave_the_next_answers(own_steered):
    server, zones = own_steered.server, own_steered.zones
    japan = "20.1.2.0/24"

    def answers(count: int = 6) -> set[str]:
        found: set[str] = set()
        for _ in range(count):
            found |= addresses(ecs_query(server, WWW, japan))
        return found

    assert answers() == REGION["ap-northeast"]

    steer(zones, "region", ZONE, "ap-northeast", "--health", "down", "--reason", "test")
    wait_until(lambda: True if answers(1) <= REGION["us-east"] else None, 5.0,
               "ap-northeast to leave the answers", server.log)
    # JP's next listed region answers, in rotation over both of its endpoints.
    assert answers() == REGION["us-east"]

    steer(zones, "endpoint", ZONE, "us-east-1", "--admin", "drain")
    wait_until(lambda: True if answers() == {"127.0.2.2"} else None, 5.0,
               "us-east-1 to leave the answers", server.log)
    assert answers(9) == {"127.0.2.2"}

    steer(zones, "region", ZONE, "ap-northeast", "--health", "up")
    wait_until(lambda: True if answers(1) == REGION["ap-northeast"] else None, 5.0,
               "ap-northeast to come back", server.log)
