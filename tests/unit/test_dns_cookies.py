"""DNS cookies through the engine: issued, accepted back, BADCOOKIE for a forged or stale
one, FORMERR for bad lengths, rotation with an overlap, two nodes sharing a secret, and
cached replies carrying each client's own cookie."""

from __future__ import annotations

import struct

import dns.edns
import dns.message
import dns.rcode
import pytest

from gtm.dns.answer import ZoneSet
from gtm.dns.cookies import Cookies, server_cookie
from gtm.dns.engine import Engine
from gtm.dns.render import ServerIdentity
from tests.dnsutil import zone_from_text

ZONE = zone_from_text("example.test.", """$TTL 300
@    SOA  ns1 hostmaster 1 7200 1800 1209600 60
@    NS   ns1
ns1  A    127.0.0.1
www  A    192.0.2.1
""")
SECRET_A = bytes(range(16))
SECRET_B = bytes(range(16, 32))
SECRET_C = bytes(range(32, 48))
CLIENT = bytes.fromhex("2464c4abcf10c957")
PEER = "198.51.100.100"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def engine(*secrets: bytes, clock: Clock | None = None) -> Engine:
    cookies = Cookies(list(secrets or [SECRET_A]), clock or Clock())
    return Engine(ZoneSet.of([ZONE]), ServerIdentity(), cookies=cookies)


def ask(server: Engine, value: bytes, peer: str = PEER, tcp: bool = False,
        qname: str = "www.example.test.") -> dns.message.Message:
    query = dns.message.make_query(qname, "A", use_edns=0,
                                   options=[dns.edns.GenericOption(10, value)])
    wire = query.to_wire()
    cache = server.tcp_cache if tcp else server.udp_cache
    reply = server.cache_hit(cache, wire) or server.respond_uncached(wire, tcp, peer)
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.id == query.id
    return message


def cookie_of(reply: dns.message.Message) -> bytes:
    options = [o for o in reply.options if o.otype == dns.edns.OptionType.COOKIE]
    assert len(options) == 1, reply
    return options[0].to_wire()


def test_siphash_server_cookies_match_the_rfc_9018_examples() -> None:
    # RFC 9018 appendix A.1 and A.2: secret, client cookie, address, timestamp.
    secret = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
    address = bytes((198, 51, 100, 100))
    assert server_cookie(secret, CLIENT, address, 1559731985).hex() == \
        "010000005cf79f111f8130c3eee29480"
    assert server_cookie(secret, CLIENT, address, 1559734385).hex() == \
        "010000005cf7a871d4a564a1442aca77"


def test_a_server_cookie_is_issued_then_accepted_back() -> None:
    server = engine()
    first = ask(server, CLIENT)
    assert first.rcode() == dns.rcode.NOERROR and first.answer
    value = cookie_of(first)
    assert value[:8] == CLIENT and len(value) == 24 and value[8] == 1
    assert not server.verified_cookie
    again = ask(server, value)
    assert again.rcode() == dns.rcode.NOERROR and again.answer
    assert cookie_of(again) == value
    assert server.verified_cookie
    assert (server.stats.cookie_new, server.stats.cookie_valid) == (1, 1)


@pytest.mark.parametrize("forged", [
    bytes.fromhex("01000000") + bytes(12),           # our shape, wrong hash
    bytes(16),                                         # version 0
    bytes(8),                                          # 8 octets: a valid length, not ours
])
def test_a_forged_server_cookie_gets_badcookie_with_a_fresh_one(forged: bytes) -> None:
    server = engine()
    reply = ask(server, CLIENT + forged)
    assert reply.rcode() == 23  # BADCOOKIE (extended rcode)
    assert not reply.answer
    fresh = cookie_of(reply)
    assert fresh[:8] == CLIENT and fresh[8:] != forged
    assert ask(server, fresh).rcode() == dns.rcode.NOERROR  # the retry works
    assert server.stats.badcookie == 1 and server.stats.cookie_invalid == 1


def test_over_tcp_a_bad_server_cookie_gets_a_normal_answer_and_a_fresh_cookie() -> None:
    server = engine()
    reply = ask(server, CLIENT + bytes.fromhex("01000000") + bytes(12), tcp=True)
    assert reply.rcode() == dns.rcode.NOERROR and reply.answer
    assert ask(server, cookie_of(reply)).rcode() == dns.rcode.NOERROR


@pytest.mark.parametrize("length", [0, 7, 9, 15, 41])
def test_malformed_cookie_lengths_get_formerr(length: int) -> None:
    query = dns.message.make_query("www.example.test.", "A", use_edns=0)
    wire = bytearray(query.to_wire())
    option = struct.pack("!HH", 10, length) + bytes(length)
    wire[-2:] = struct.pack("!H", len(option))  # the OPT's RDLENGTH: it was empty
    reply = engine().respond_uncached(bytes(wire) + option, False, PEER)
    assert reply is not None
    assert dns.message.from_wire(reply).rcode() == dns.rcode.FORMERR


def test_stale_and_future_cookies_are_refused() -> None:
    clock = Clock()
    server = engine(clock=clock)
    value = cookie_of(ask(server, CLIENT))
    clock.now += 3600 + 1  # more than an hour old (RFC 9018 4.3)
    assert ask(server, value).rcode() == 23
    ahead = server_cookie(SECRET_A, CLIENT, bytes((198, 51, 100, 100)), int(clock.now) + 301)
    assert ask(server, CLIENT + ahead).rcode() == 23
    near = server_cookie(SECRET_A, CLIENT, bytes((198, 51, 100, 100)), int(clock.now) + 60)
    assert ask(server, CLIENT + near).rcode() == dns.rcode.NOERROR


def test_an_old_cookie_is_renewed_after_half_an_hour() -> None:
    clock = Clock()
    server = engine(clock=clock)
    value = cookie_of(ask(server, CLIENT))
    clock.now += 1801
    renewed = cookie_of(ask(server, value))
    assert renewed != value and renewed[:8] == CLIENT
    assert ask(server, renewed).rcode() == dns.rcode.NOERROR


def test_rotated_secrets_keep_working_through_the_overlap() -> None:
    server = engine(SECRET_A)
    old = cookie_of(ask(server, CLIENT))
    assert server.cookies is not None
    server.cookies.use([SECRET_B, SECRET_A])  # rotated: B issues, A still accepted
    assert ask(server, old).rcode() == dns.rcode.NOERROR
    other = bytes.fromhex("fc93fc62807ddb86")
    new = cookie_of(ask(server, other))
    assert new[8:] == server_cookie(SECRET_B, other, bytes((198, 51, 100, 100)),
                                    int.from_bytes(new[12:16], "big"))
    server.cookies.use([SECRET_C, SECRET_B])  # rotated again: A is gone
    assert ask(server, old).rcode() == 23
    assert ask(server, new).rcode() == dns.rcode.NOERROR


def test_two_nodes_with_the_same_secret_accept_each_others_cookies() -> None:
    clock = Clock()
    one, two = engine(SECRET_B, SECRET_A, clock=clock), engine(SECRET_B, SECRET_A, clock=clock)
    value = cookie_of(ask(one, CLIENT))
    reply = ask(two, value)
    assert reply.rcode() == dns.rcode.NOERROR and two.verified_cookie
    assert cookie_of(reply) == value  # kept going, not replaced
    stranger = engine(SECRET_C, clock=clock)
    assert ask(stranger, value).rcode() == 23


def test_cached_replies_carry_each_clients_own_cookie() -> None:
    server = engine()
    clients = [bytes([n]) * 8 for n in range(1, 4)]
    peers = ["192.0.2.10", "192.0.2.11", "2001:db8::1"]
    replies = [ask(server, client, peer) for client, peer in zip(clients, peers, strict=True)]
    # One full answer, then the cache: the cookie is not part of the cache key.
    assert (server.stats.answered, server.stats.cache_hits) == (1, 2)
    for client, peer, reply in zip(clients, peers, replies, strict=True):
        value = cookie_of(reply)
        assert value[:8] == client
        assert ask(server, value, peer).rcode() == dns.rcode.NOERROR  # its own, valid
        assert {r.to_text() for rrset in reply.answer for r in rrset} == {"192.0.2.1"}
    # A cookie is bound to the address it was issued to.
    assert ask(server, cookie_of(replies[0]), peers[1]).rcode() == 23


def test_without_cookies_the_option_is_ignored() -> None:
    server = Engine(ZoneSet.of([ZONE]), ServerIdentity())
    query = dns.message.make_query("www.example.test.", "A", use_edns=0,
                                   options=[dns.edns.GenericOption(10, CLIENT)])
    reply = server.respond_uncached(query.to_wire(), False, PEER)
    assert reply is not None
    message = dns.message.from_wire(reply)
    assert message.answer and not message.options
