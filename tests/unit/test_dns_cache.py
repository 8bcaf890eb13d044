"""The response caches: bounded by entries and by estimated bytes, trimmed a slice at a
time (the newest answers stay), and an estimate that covers what Python really holds."""

from __future__ import annotations

import gc
import tracemalloc

import dns.edns
import dns.message
import pytest

from gtm.dns import cache as caches
from gtm.dns.answer import ZoneSet
from gtm.dns.buckets import LocationBuckets
from gtm.dns.engine import Engine, Rotation, rotation_size
from gtm.dns.render import ServerIdentity
from tests.dnsutil import zone_from_text

ZONE = zone_from_text("example.test.", """$TTL 300
@    SOA  ns1 hostmaster 1 7200 1800 1209600 60
@    NS   ns1
ns1  A    127.0.0.1
www  A    192.0.2.1
""")


def ecs_query(index: int, qname: str = "www.example.test.") -> bytes:
    """A query from its own /24 (distinct packets, so distinct cache entries)."""
    subnet = f"{20 + (index >> 16)}.{(index >> 8) & 255}.{index & 255}.0"
    return dns.message.make_query(qname, "A", use_edns=0,
                                  options=[dns.edns.ECSOption(subnet, 24)]).to_wire()


def engine(entries: int, max_bytes: int) -> Engine:
    return Engine(ZoneSet.of([ZONE]), ServerIdentity(), entries, cache_bytes=max_bytes)


def test_a_full_cache_drops_its_oldest_slice_and_keeps_the_newest_answers() -> None:
    server = engine(400, 1 << 30)
    queries = [ecs_query(i) for i in range(500)]
    for query in queries:
        assert server.respond(query, tcp=False, peer="127.0.0.1") is not None
    # A clear-all would leave at most 500 - 400 entries; a trim keeps seven eighths.
    assert 350 <= len(server.udp_cache) <= 400
    assert server.udp_cache.get(queries[-1][2:]) is not None  # the newest stay
    assert server.udp_cache.get(queries[-2][2:]) is not None
    assert server.udp_cache.get(queries[0][2:]) is None  # the oldest went first


def test_the_byte_budget_bounds_a_cache_of_distinct_queries() -> None:
    budget_bytes = 64 << 10
    server = engine(10**6, budget_bytes)
    for index in range(1500):
        server.respond(ecs_query(index), tcp=False, peer="127.0.0.1")
    assert server.udp_budget.used <= budget_bytes
    assert server.udp_budget.used == sum(caches.static_size(k, v)
                                         for k, v in server.udp_cache.items())
    assert 100 < len(server.udp_cache) < 1500


def test_the_estimate_covers_what_a_static_entry_really_takes() -> None:
    server = engine(10**6, 1 << 30)
    queries = [ecs_query(i) for i in range(1000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for query in queries:
            server.respond(query, tcp=False, peer="127.0.0.1")
        gc.collect()  # rendering leaves cyclic garbage behind; it is not the cache's
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= server.udp_budget.used, (held, server.udp_budget.used)


def test_location_buckets_are_trimmed_gradually_and_the_estimate_covers_them() -> None:
    budget_bytes = 8 << 20
    buckets = LocationBuckets(10**6, budget_bytes)
    reply_head = b"\x81\x80" + bytes(60)

    def replies_for(index: int, query: bytes) -> tuple[bytes, ...]:
        """Rotations of 1 to 32 variants, as weighted answers make them."""
        return tuple(reply_head + bytes((k,)) + query[-3:] for k in range(1 + index % 32))
    queries = [ecs_query(i) for i in range(8000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        peak_used = 0
        for index, query in enumerate(queries[:2000]):  # below the budget: the estimate
            assert buckets.store(query, 24, replies_for(index, query), 0)  # against reality
        held = tracemalloc.get_traced_memory()[0] - before
        estimated = buckets.used
    finally:
        tracemalloc.stop()
    assert buckets.size == 2000  # nothing trimmed yet
    assert held <= estimated, (held, estimated)
    for index, query in enumerate(queries[2000:], 2000):
        assert buckets.store(query, 24, replies_for(index, query), 0)
        peak_used = max(peak_used, buckets.used)
    assert peak_used <= budget_bytes
    assert buckets.lookup(queries[-1]) is not None  # the newest stay
    assert buckets.lookup(queries[0]) is None  # the oldest went first
    assert buckets.size > 1000  # never emptied at once


@pytest.mark.parametrize("tcp", [False, True])
def test_swapping_zones_empties_the_caches_and_their_accounts(tcp: bool) -> None:
    server = engine(1000, 1 << 20)
    for index in range(50):
        server.respond(ecs_query(index), tcp=tcp, peer="127.0.0.1")
    budget = server.tcp_budget if tcp else server.udp_budget
    assert budget.used > 0
    server.swap(ZoneSet.of([ZONE]))
    assert budget.used == 0
    assert not (server.tcp_cache if tcp else server.udp_cache)


def test_the_estimate_covers_what_a_steered_rotation_really_takes() -> None:
    replies = [bytes(90 + i % 7) + b"x" * 3 for i in range(6)]
    cache: dict[tuple[bytes, str | None], Rotation] = {}
    keys = [(ecs_query(i)[2:], f"198.51.100.{i % 250}") for i in range(3000)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index, key in enumerate(keys):
            # Fresh reply objects, as each render makes them.
            cache[key] = Rotation(tuple(bytes(r) + bytes((index & 255,))
                                        for r in replies[: 1 + index % 6]))
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    estimated = sum(rotation_size(key, rotation) for key, rotation in cache.items())
    assert held <= estimated, (held, estimated)
