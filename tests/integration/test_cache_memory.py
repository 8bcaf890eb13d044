"""The ECS answer cache levels off: a server asked for a steered name from ever more
client /24s, each its own cache bucket, keeps its resident memory within a bound.

The geo database gives every /24 of the range its own network (alternating JP and DE),
so each query's answer holds for exactly its /24 and is a new bucket: the case that grew
by 146 MB over 180,000 subnets. The caches are given a small budget so that the steady
state is reached early; what is checked is that the resident set stops growing.
"""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dns.edns
import dns.message
import pytest

from gtm.geo import MmdbWriter
from tests.integration.servers import GtmServer, ServerFactory, rss_kib

pytestmark = pytest.mark.integration

SUBNETS = 9_000  # distinct client /24s, each a cache miss and a new bucket
CACHE_MEGABYTES = 0.5  # per cache; one (UDP ECS buckets) fills here
# Growth of the resident set allowed once the budget is full: the budget itself is
# already spent by then, so this is allocator slack, not cache (the unbounded cache
# grew by about 19 MB per 2,000 subnets here).
LEVEL_KIB = 2048
ORIGIN = "steered-cache-memory-test.example.test."
LABEL = "a-long-steered-name-so-every-answer-weighs-what-real-ones-do"
QNAME = f"{LABEL}.{ORIGIN}"
ZONE = """$TTL 300
@    SOA  ns1 hostmaster 1 7200 1800 1209600 60
@    NS   ns1
ns1  A    127.0.0.1
"""
STEERING = f"""
[regions.eu]
latitude = 50.11
longitude = 8.68
[regions.ap]
latitude = 35.68
longitude = 139.69

[pools.web]
endpoints = [
{"".join(f'  {{ name = "eu-{i}", region = "eu", ipv4 = "127.0.1.{i}" }},{chr(10)}'
         for i in range(1, 7))}
{"".join(f'  {{ name = "ap-{i}", region = "ap", ipv4 = "127.0.2.{i}" }},{chr(10)}'
         for i in range(1, 7))}
]

[names.{LABEL}]
pool = "web"
answers = 6
[[names.{LABEL}.filters]]
type = "geo"
default = ["eu"]
countries = {{ JP = ["ap"], DE = ["eu"] }}
"""


def subnet(index: int) -> bytes:
    """The three octets of the index-th /24 (from 20.0.0.0)."""
    return bytes((20 + (index >> 16), (index >> 8) & 255, index & 255))


def build_database(path: Path) -> Path:
    writer = MmdbWriter(ip_version=6, database_type="test-per-24")
    for index in range(SUBNETS):
        octets = subnet(index)
        writer.insert(f"{octets[0]}.{octets[1]}.{octets[2]}.0/24",
                      {"country_code": "JP" if index % 2 else "DE"})
    writer.write(path)
    return path


def ask_each_subnet(server: GtmServer, first: int, last: int) -> int:
    """Send one ECS query from each /24 in [first, last), a window of them in flight;
    return how many were answered (a lost datagram is not retried)."""
    template = dns.message.make_query(QNAME, "A", use_edns=0,
                                      options=[dns.edns.ECSOption("20.0.0.0", 24)]).to_wire()
    head = template[:-3]  # the ECS address is the query's last three octets
    window = 64
    answered = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(server.address)
        sock.settimeout(2.0)
        sent = first
        in_flight = 0
        while sent < last or in_flight:
            while sent < last and in_flight < window:
                sock.send(struct.pack("!H", sent & 0xFFFF) + head[2:] + subnet(sent))
                sent += 1
                in_flight += 1
            try:
                sock.recv(4096)
            except TimeoutError:
                in_flight = 0  # the rest of the window was lost: go on with new ones
                continue
            in_flight -= 1
            answered += 1
    return answered


def test_the_ecs_cache_levels_off_over_ever_more_client_subnets(tmp_path: Path) -> None:
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / f"{ORIGIN}zone").write_text(ZONE)
    (zones / f"{ORIGIN}steering.toml").write_text(STEERING)
    database = build_database(tmp_path / "per-24.mmdb")
    factory = ServerFactory(tmp_path)
    try:
        server = factory(zones, config={"watch_interval": 0, "cookies": False,
                                        "cache_entries": 10**7,
                                        "cache_megabytes": CACHE_MEGABYTES},
                         extra=["--geoip", str(database)])
        reply = server.query(QNAME, "A", use_edns=0, options=[dns.edns.ECSOption("20.0.1.0", 24)])
        (echo,) = [o for o in reply.options if isinstance(o, dns.edns.ECSOption)]
        assert echo.scopelen == 24, "each /24 must be its own bucket for this test to mean much"
        assert len(reply.answer[0]) == 6
        # Well past the budget (a few hundred buckets of this size), then twice as many.
        quarter = SUBNETS // 3
        assert ask_each_subnet(server, 0, quarter) > quarter * 0.9
        levelled = rss_kib(server.pid)
        assert ask_each_subnet(server, quarter, SUBNETS) > (SUBNETS - quarter) * 0.9
        grown = rss_kib(server.pid) - levelled
        assert grown <= LEVEL_KIB, (
            f"resident set grew by {grown} KiB over {SUBNETS - quarter} more subnets")
        assert server.query(QNAME, "A").rcode() == 0  # and it still answers
    finally:
        factory.stop_all()
