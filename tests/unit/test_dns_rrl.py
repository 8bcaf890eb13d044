"""The response rate limiter on rendered replies, with the clock in the test's hands."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import dns.flags
import dns.message

from gtm.config.settings import RrlSettings
from gtm.dns.rrl import ResponseLimiter
from tests.dnsutil import ask, engine_for, zone_from_text

ZONE = zone_from_text("example.test.", """$TTL 300
@    SOA  ns1 hostmaster 1 7200 1800 1209600 60
@    NS   ns1
ns1  A    127.0.0.1
www  A    192.0.2.1
""")
ENGINE = engine_for(ZONE)
WWW = ask(ENGINE, "www.example.test.").to_wire()
SETTINGS = RrlSettings(enabled=True, responses_per_second=10, slip=2)


def packed(address: str) -> bytes:
    return ipaddress.ip_address(address).packed


def flood(limiter: ResponseLimiter, address: str, reply: bytes, count: int,
          now: float = 100.0) -> tuple[int, int, int]:
    """(full, truncated, dropped) of ``count`` replies at one instant."""
    full = slipped = dropped = 0
    for _ in range(count):
        out = limiter.limit(packed(address), reply, now)
        if out is None:
            dropped += 1
        elif out == reply:
            full += 1
        else:
            message = dns.message.from_wire(out)
            assert message.flags & dns.flags.TC and not message.answer
            assert message.question == dns.message.from_wire(reply).question
            slipped += 1
    return full, slipped, dropped


def test_a_flood_from_one_prefix_is_limited_and_slipped_another_is_served() -> None:
    limiter = ResponseLimiter(SETTINGS)
    full, slipped, dropped = flood(limiter, "198.51.100.7", WWW, 2000)
    # One second's worth for the prefix, then one for the name once the prefix is over
    # the rate (its bucket starts then: see the README on where we differ).
    assert full == 20
    assert slipped == 990 and dropped == 990  # slip 2: every other limited one
    # The same /24 shares the bucket; another /24 is served in full.
    full, slipped, dropped = flood(limiter, "198.51.100.200", WWW, 5)
    assert full == 0 and slipped + dropped == 5
    assert flood(limiter, "198.51.101.7", WWW, 20) == (20, 0, 0)
    # A second later the bucket has refilled at the rate.
    assert flood(limiter, "198.51.100.7", WWW, 20, now=101.0)[0] == 10
    assert limiter.stats.limited == 1980 + 5 + 10
    assert limiter.stats.by_class[0] == limiter.stats.limited  # all answers


def test_slip_zero_drops_all_and_slip_one_truncates_all() -> None:
    assert flood(ResponseLimiter(replace(SETTINGS, slip=0)), "192.0.2.1", WWW, 100) == \
        (20, 0, 80)
    assert flood(ResponseLimiter(replace(SETTINGS, slip=1)), "192.0.2.1", WWW, 100) == \
        (20, 80, 0)


def test_ipv6_clients_are_counted_per_56() -> None:
    limiter = ResponseLimiter(SETTINGS)
    assert flood(limiter, "2001:db8:0:1::1", WWW, 30)[0] == 20
    assert flood(limiter, "2001:db8:0:ff::2", WWW, 10)[0] == 0   # same /56
    assert flood(limiter, "2001:db8:0:100::1", WWW, 30)[0] == 20  # the next /56


def test_the_whitelist_is_never_limited() -> None:
    whitelist = (ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("192.0.2.53/32"))
    limiter = ResponseLimiter(replace(SETTINGS, whitelist=whitelist))
    assert flood(limiter, "198.51.100.7", WWW, 500) == (500, 0, 0)
    assert flood(limiter, "192.0.2.53", WWW, 500) == (500, 0, 0)
    assert flood(limiter, "192.0.2.54", WWW, 500)[0] == 20  # same /24, not listed


def test_log_only_limits_nothing_but_counts() -> None:
    limiter = ResponseLimiter(replace(SETTINGS, log_only=True))
    assert flood(limiter, "198.51.100.7", WWW, 200) == (200, 0, 0)
    assert limiter.stats.limited == 180
    assert limiter.stats.slipped == limiter.stats.dropped == 0


def test_names_classes_and_zones_have_their_own_buckets() -> None:
    limiter = ResponseLimiter(SETTINGS)
    ns1 = ask(ENGINE, "ns1.example.test.").to_wire()
    nodata = ask(ENGINE, "www.example.test.", "AAAA").to_wire()
    assert flood(limiter, "203.0.113.1", WWW, 10)[0] == 10
    # Over the rate in total now, but each (class, name) has its own bucket.
    assert flood(limiter, "203.0.113.1", ns1, 10)[0] == 10
    assert flood(limiter, "203.0.113.1", nodata, 10)[0] == 10
    assert flood(limiter, "203.0.113.1", WWW, 20)[0] == 10  # its own bucket, from now
    # NXDOMAIN counts against the zone: random names share one bucket.
    random_names = [ask(ENGINE, f"r{n}.example.test.").to_wire() for n in range(30)]
    passed = sum(limiter.limit(packed("203.0.113.1"), reply, 100.0) == reply
                 for reply in random_names)
    assert passed == 10
    assert limiter.stats.by_class[2] == 20  # nxdomain


def test_workers_each_limit_their_share() -> None:
    limiter = ResponseLimiter(replace(SETTINGS, responses_per_second=40), share=4)
    assert flood(limiter, "198.51.100.7", WWW, 100)[0] == 20


def test_the_table_is_bounded() -> None:
    limiter = ResponseLimiter(replace(SETTINGS, table_size=1000))
    for n in range(5000):
        limiter.limit((n << 8).to_bytes(4, "big"), WWW, 100.0)
    assert len(limiter.prefixes4) == 1000


def test_tokens_taken_ahead_for_a_batch_are_the_same_tokens() -> None:
    """A batch of datagrams takes a client's tokens ahead once (reserve) and gives back
    what it did not use (refund): the prefix is charged exactly the replies it got, so
    what follows is the same as when every reply asked the limiter."""
    batched, plain = ResponseLimiter(SETTINGS), ResponseLimiter(SETTINGS)
    client = packed("198.51.100.7")
    assert batched.limit(client, WWW, 100.0) == WWW   # 10 tokens: 9 left
    assert batched.reserve(client, 5) == 5            # 4 left in the bucket
    batched.refund(client, 2)                         # the batch used 3 of its 5
    assert flood(plain, "198.51.100.7", WWW, 4) == (4, 0, 0)  # the same 4 replies
    for limiter in (batched, plain):                  # from here on, alike
        assert flood(limiter, "198.51.100.7", WWW, 40) == (16, 12, 12)
    assert batched.reserve(client, 5) == 0            # spent: nothing to take ahead
    batched.refund(client, 100)                       # never above the burst
    assert flood(batched, "198.51.100.7", WWW, 20, now=100.0)[0] == 10
    assert batched.reserve(packed("203.0.113.1"), 5) == 0  # no bucket yet
    whitelisted = ResponseLimiter(replace(SETTINGS, whitelist=(
        ipaddress.ip_network("192.0.2.0/24"),)))
    assert whitelisted.limit(packed("192.0.2.9"), WWW, 100.0) == WWW
    assert whitelisted.reserve(packed("192.0.2.9"), 5) == 0  # never charged: none taken
