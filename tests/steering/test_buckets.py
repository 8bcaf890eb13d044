"""The location-bucket cache for ECS queries: hits are byte-exact with the full path."""

from __future__ import annotations

from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import pytest

from gtm.dns.buckets import ecs_shape
from gtm.dns.engine import Engine
from gtm.dns.loader import load_directory
from gtm.dns.render import ServerIdentity
from gtm.geo.locate import Locator

REPO_ZONES = Path(__file__).resolve().parents[2] / "zones"


@pytest.fixture
def engine(locator: Locator) -> Engine:
    zones = load_directory(REPO_ZONES).zones
    return Engine(zones, ServerIdentity(), locator=locator)


def ecs_query(name: str, subnet: str, prefix: int, qid: int = 7, **extra: object) -> bytes:
    option = dns.edns.ECSOption(subnet, prefix)
    message = dns.message.make_query(name, "A", use_edns=0, options=[option], **extra)
    message.id = qid
    return message.to_wire()


def reply(engine: Engine, wire: bytes) -> dns.message.Message:
    data = engine.respond(wire, tcp=False, peer="127.0.0.1")
    assert data is not None
    return dns.message.from_wire(data)


def echoed(message: dns.message.Message) -> tuple[str, int, int]:
    [option] = [o for o in message.options if isinstance(o, dns.edns.ECSOption)]
    return option.address, option.srclen, option.scopelen


def test_a_second_client_in_the_same_bucket_is_served_from_the_bucket(engine: Engine) -> None:
    first = reply(engine, ecs_query("www.gslb.example.test.", "22.9.1.0", 24, qid=1))
    assert engine.buckets_udp.size == 1
    hits = engine.stats.cache_hits
    # 22.1.2.0/24 is carved out of the GB /8, so 22.9.1.0 sits in the database
    # network 22.8.0.0/13: that is the bucket, and the scope.
    assert echoed(first) == ("22.9.1.0", 24, 13)
    second = reply(engine, ecs_query("www.gslb.example.test.", "22.12.7.0", 24, qid=2))
    assert engine.stats.cache_hits == hits + 1  # no full path for the second client
    assert second.id == 2
    assert echoed(second) == ("22.12.7.0", 24, 13)  # its own address, the bucket's scope
    assert {r.to_text() for r in second.answer[0]} <= {"127.0.1.1", "127.0.1.2"}
    assert first.answer[0].name == second.answer[0].name


def test_a_bucket_hit_is_byte_for_byte_what_the_full_path_gives(
    engine: Engine, locator: Locator
) -> None:
    wire = ecs_query("www.gslb.example.test.", "23.1.2.0", 24, qid=9)
    reply(engine, ecs_query("www.gslb.example.test.", "23.3.3.0", 24))  # fills the bucket
    from_bucket = engine.respond(wire, tcp=False, peer="127.0.0.1")
    fresh = Engine(engine.zones, ServerIdentity(), locator=locator)
    full = fresh.respond(wire, tcp=False, peer="127.0.0.1")
    assert from_bucket is not None and full is not None
    # Same bytes up to which weighted variant each rotation is at.
    assert len(from_bucket) == len(full)
    assert from_bucket[:12] == full[:12] and from_bucket[-8:] == full[-8:]


def test_clients_across_a_more_specific_network_are_kept_apart(engine: Engine) -> None:
    # 22.1.2.0/24 is FR inside the GB /8 of the fixture: both get eu-west, but their
    # scopes differ, and a GB client's bucket must not answer for the FR network.
    gb = reply(engine, ecs_query("near.gslb.example.test.", "22.5.0.0", 16))
    fr = reply(engine, ecs_query("near.gslb.example.test.", "22.1.2.0", 24))
    assert echoed(fr)[2] == 24
    assert echoed(gb)[2] < 24


def test_queries_of_other_shapes_take_the_full_path(engine: Engine) -> None:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"12345678")
    ecs = dns.edns.ECSOption("22.9.1.0", 24)
    message = dns.message.make_query("www.gslb.example.test.", "A", use_edns=0,
                                     options=[ecs, cookie])
    assert ecs_shape(message.to_wire()) is None
    answered = reply(engine, message.to_wire())
    assert answered.rcode() == dns.rcode.NOERROR
    assert echoed(answered) == ("22.9.1.0", 24, 13)


def test_an_invalid_subnet_is_never_served_from_a_bucket(engine: Engine) -> None:
    reply(engine, ecs_query("www.gslb.example.test.", "22.9.1.0", 24))
    wire = bytearray(ecs_query("www.gslb.example.test.", "22.9.1.0", 23))
    wire[-1] |= 0x01  # a bit past the /23 prefix: FORMERR (RFC 7871 section 6)
    assert ecs_shape(bytes(wire)) is None
    assert reply(engine, bytes(wire)).rcode() == dns.rcode.FORMERR


def test_weighted_rotation_continues_across_clients_of_one_bucket(engine: Engine) -> None:
    # us-east is 20:10 between its two endpoints; a scope-0-free name (www) from the
    # US keeps rotating through the variants whichever client of the bucket asks.
    seen = [
        reply(engine, ecs_query("www.gslb.example.test.", f"23.1.{i}.0", 24, qid=i))
        .answer[0][0].to_text()
        for i in range(30)
    ]
    assert seen.count("127.0.2.1") == 20 and seen.count("127.0.2.2") == 10


def test_a_swap_empties_the_buckets(engine: Engine) -> None:
    reply(engine, ecs_query("www.gslb.example.test.", "22.9.1.0", 24))
    engine.swap(engine.zones)
    assert engine.buckets_udp.size == 0
