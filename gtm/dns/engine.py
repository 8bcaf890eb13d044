"""From query packet to response packet: the slow path and the response cache.

Every transport answers from the cache through :meth:`Engine.cache_hit` (the fast
path: one dict lookup keyed on everything after the message ID, one counter
increment, one concatenation) and calls :meth:`Engine.respond_uncached` only on a
miss. Everything a response depends on is in those bytes and in the
snapshot, so a snapshot swap simply starts new caches.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import time
from dataclasses import replace

import dns.rcode

from gtm import log
from gtm.dns import cache as caches
from gtm.dns.answer import Answer, ZoneSet, answer
from gtm.dns.buckets import LocationBuckets
from gtm.dns.cookies import (
    BADCOOKIE,
    CLIENT_COOKIE_LEN,
    Cookies,
    find_cookie,
    option_wire,
    valid_length,
    with_option,
    without_cookie,
)
from gtm.dns.operations import Operations
from gtm.dns.render import (
    CLASSIC_UDP_LIMIT,
    TCP_LIMIT,
    ServerIdentity,
    badvers,
    render,
    udp_limit,
)
from gtm.dns.rrl import ResponseLimiter
from gtm.dns.stats import Stats, Tally
from gtm.dns.steered import SteerInput
from gtm.dns.wire import Drop, FormErr, NotImp, Query, error_reply, parse_query
from gtm.steering.chain import Client, LocatorLike

NO_CONFIG_YET = Answer(dns.rcode.SERVFAIL)
BADVERS = 16
TC = 0x02  # in the flags' first byte
__all__ = ["Engine", "Rotation", "Stats", "client_of", "rotation_size"]  # Stats: its home was here


class Engine:
    def __init__(
        self,
        zones: ZoneSet,
        server: ServerIdentity,
        cache_entries: int = 100_000,
        locator: LocatorLike | None = None,
        cookies: Cookies | None = None,
        limiter: ResponseLimiter | None = None,
        cache_bytes: int = caches.DEFAULT_CACHE_BYTES,
    ):
        """``cache_entries`` and ``cache_bytes`` (estimated) bound each cache."""
        self.server = server
        self.cookies = cookies
        # UDP response rate limiting; the transports call it (never for TCP).
        self.limiter = limiter
        # Set by respond_uncached: the last query returned a valid server cookie, so the
        # transport does not rate-limit its reply (RFC 7873 section 5.2.5).
        self.verified_cookie = False
        self.cache_entries = cache_entries
        self.locator = locator
        self.stats = Stats()
        self.zones = zones
        self.udp_cache: dict[bytes, bytes] = {}
        self.tcp_cache: dict[bytes, bytes] = {}
        # Steered answers depend on the client: keyed on the packet and the peer.
        self.steered_udp: dict[tuple[bytes, str | None], Rotation] = {}
        self.steered_tcp: dict[tuple[bytes, str | None], Rotation] = {}
        # Steered answers to ECS queries: per client location bucket (buckets.py).
        self.buckets_udp = LocationBuckets(cache_entries, cache_bytes)
        self.buckets_tcp = LocationBuckets(cache_entries, cache_bytes)
        # The limits of each dict cache and what it holds, by estimate (gtm.dns.cache).
        self.udp_budget = caches.Budget(cache_entries, cache_bytes)
        self.tcp_budget = caches.Budget(cache_entries, cache_bytes)
        self.steered_udp_budget = caches.Budget(cache_entries, cache_bytes)
        self.steered_tcp_budget = caches.Budget(cache_entries, cache_bytes)
        # A node following the control plane that has nothing to serve yet (no snapshot,
        # no store): SERVFAIL sends resolvers to another server and they retry, where
        # REFUSED would tell them the names are not ours at all.
        self.awaiting_config = False
        # Transfers and dynamic updates (gtm.dns.operations); None: answered as queries.
        self.operations: Operations | None = None

    def swap(self, zones: ZoneSet) -> None:
        """Serve new zones from the next packet on; old cached answers go with the old zones.

        Caches are cleared in place (transports hold them); this runs on the event
        loop between two packets, so no packet sees new zones with old answers.
        """
        self.zones = zones
        caches.clear(self.udp_cache, self.udp_budget)
        caches.clear(self.tcp_cache, self.tcp_budget)
        caches.clear(self.steered_udp, self.steered_udp_budget)
        caches.clear(self.steered_tcp, self.steered_tcp_budget)
        self.buckets_udp.clear()
        self.buckets_tcp.clear()

    def cache_hit(self, cache: dict[bytes, bytes], data: bytes) -> bytes | None:
        """The fast path of every transport: the cached response to ``data`` (its ID put
        back), or None on a miss. ``cache`` is ``udp_cache`` or ``tcp_cache``."""
        cached = cache.get(data[2:])
        if cached is None:
            return None
        self.stats.cache_hits += 1
        return data[:2] + cached

    def respond(self, data: bytes, tcp: bool, peer: str | None = None) -> bytes | None:
        """The response to one packet from peer (an IP address), or None for no reply."""
        if tcp:  # UDP's fast path does not come here (the transports call cache_hit)
            self.stats.tcp_queries += 1
        reply = self.cache_hit(self.tcp_cache if tcp else self.udp_cache, data)
        if reply is not None:
            return reply
        return self.respond_uncached(data, tcp, peer)

    def respond_uncached(
        self, data: bytes, tcp: bool, peer: str | None, buckets_checked: bool = False
    ) -> bytes | None:
        """As respond, for a packet the caller already missed in the static cache (and,
        with buckets_checked, in the location buckets too). Timed: the answer-time
        histogram is of this path (a cache hit takes about a microsecond, and timing it
        would cost a good part of that)."""
        started = time.perf_counter_ns()
        reply = self._respond_uncached(data, tcp, peer, buckets_checked)
        self.stats.observe_ns(time.perf_counter_ns() - started)
        return reply

    def _respond_uncached(
        self, data: bytes, tcp: bool, peer: str | None, buckets_checked: bool
    ) -> bytes | None:
        self.verified_cookie = False
        if self.cookies is not None and peer is not None:
            found = find_cookie(data)
            if found is not None:
                return self._with_cookie(data, found, tcp, peer)
        cache = self.tcp_cache if tcp else self.udp_cache
        # Buckets first: ECS queries are never in the per-peer cache, and the many
        # clients behind one resolver are the case to make cheap.
        buckets = self.buckets_tcp if tcp else self.buckets_udp
        if not buckets_checked:
            bucketed = self.bucket_hit(buckets, data)
            if bucketed is not None:
                return bucketed
        steered = self.steered_tcp if tcp else self.steered_udp
        rotation = steered.get((data[2:], peer))
        if rotation is not None:
            self.stats.cache_hits += 1
            return data[:2] + rotation.next()
        try:
            reply = self._answer(data, tcp, peer)
        except Drop:
            self.stats.dropped += 1
            return None
        except NotImp:
            self.stats.notimp += 1
            return error_reply(data, dns.rcode.NOTIMP, self.server.edns_udp_size)
        except FormErr:
            self.stats.formerr += 1
            return error_reply(data, dns.rcode.FORMERR, self.server.edns_udp_size)
        except Exception:  # the error boundary: one bad packet never stops the server
            self.stats.servfail += 1
            log.dns.exception("internal error answering a query")
            return error_reply(data, dns.rcode.SERVFAIL, self.server.edns_udp_size)
        self.stats.answered += 1
        if isinstance(reply, Rotation):
            first = reply.next()
            stored = reply.ecs_scope is not None and buckets.store(
                data, reply.ecs_scope, reply.replies, reply.turn, reply.tallies)
            if not stored:
                budget = self.steered_tcp_budget if tcp else self.steered_udp_budget
                caches.put(steered, (data[2:], peer), reply, budget, rotation_size)
            return data[:2] + first
        caches.put(cache, data[2:], reply[2:], self.tcp_budget if tcp else self.udp_budget,
                   caches.static_size)
        return reply

    def _with_cookie(self, data: bytes, found: tuple[int, int, int], tcp: bool,
                     peer: str) -> bytes | None:
        """A query with a COOKIE option: answered as the same query without it (from the
        caches when there), with our cookie added to the reply's OPT record."""
        assert self.cookies is not None
        rdlength_at, start, end = found
        value = data[start + 4 : end]
        address = _packed(peer)
        if not valid_length(len(value)):
            self.stats.formerr += 1
            return error_reply(data, dns.rcode.FORMERR, self.server.edns_udp_size)
        stripped = without_cookie(data, rdlength_at, start, end)
        if address is None:
            return self._answered_without_cookie(stripped, tcp, None)
        client, server = value[:CLIENT_COOKIE_LEN], value[CLIENT_COOKIE_LEN:]
        valid, fresh = self.cookies.exchange(client, server, address)
        stats = self.stats
        if not server:
            stats.cookie_new += 1
        elif valid:
            stats.cookie_valid += 1
        else:
            stats.cookie_invalid += 1
            if not tcp:  # RFC 7873 5.2.3: over TCP a normal answer, with a fresh cookie
                stats.badcookie += 1
                return self._badcookie(data, client + fresh)
        reply = self._answered_without_cookie(stripped, tcp, peer)
        self.verified_cookie = valid
        if reply is None or not (reply[10] or reply[11]):
            return reply  # dropped, or a bare error reply with no OPT to carry a cookie
        option = option_wire(client + fresh)
        udp_size = (data[rdlength_at - 6] << 8) | data[rdlength_at - 5]
        limit = TCP_LIMIT if tcp else max(CLASSIC_UDP_LIMIT,
                                          min(udp_size, self.server.edns_udp_size))
        if len(reply) + len(option) <= limit:
            patched = with_option(reply, option)
            if patched is not None:
                return patched
        # No room left for the cookie: rendered again with room for it (uncached).
        try:
            full = self._answer(data, tcp, peer, client + fresh)
        except Exception:  # the reply without a cookie was good: better than none
            return reply
        return data[:2] + full.next() if isinstance(full, Rotation) else full

    def _answered_without_cookie(self, stripped: bytes, tcp: bool,
                                 peer: str | None) -> bytes | None:
        """The caches, then the slow path, for a query whose cookie was taken out (not
        counted again as a query: its transport counted it)."""
        reply = self.cache_hit(self.tcp_cache if tcp else self.udp_cache, stripped)
        if reply is not None:
            return reply
        return self._respond_uncached(stripped, tcp, peer, False)

    def _badcookie(self, data: bytes, cookie: bytes) -> bytes:
        try:
            query = parse_query(data)
        except (Drop, NotImp, FormErr):
            self.stats.formerr += 1
            return error_reply(data, dns.rcode.FORMERR, self.server.edns_udp_size)
        return render(query, Answer(BADCOOKIE), self.server, udp_limit(query, self.server),
                      cookie)

    def bucket_hit(self, buckets: LocationBuckets, data: bytes) -> bytes | None:
        bucketed = buckets.lookup(data)
        if bucketed is not None:
            self.stats.cache_hits += 1
            self.stats.bucket_hits += 1
        return bucketed

    def _answer(self, data: bytes, tcp: bool, peer: str | None,
                cookie: bytes | None = None) -> bytes | Rotation:
        query = parse_query(data)
        if query.edns is not None and query.edns.version > 0:
            self.stats.count_answer(query.qtype, BADVERS, False)
            return badvers(query, self.server, cookie)
        limit = TCP_LIMIT if tcp else udp_limit(query, self.server)
        if self.awaiting_config:
            return self._rendered(query, NO_CONFIG_YET, limit, cookie)
        inputs = SteerInput(client_of(query, peer), self.locator)
        result = answer(query.qname, query.qtype, query.qclass, self.zones, inputs)
        if not result.variants:
            return self._rendered(query, result, limit, cookie)
        client = inputs.client
        rendered: dict[tuple[int, ...], bytes] = {}
        replies = []
        for section in result.variants:
            key = tuple(map(id, section))  # equal variants share their RRset objects
            if key not in rendered:
                rendered[key] = render(query, replace(result, answer=section), self.server,
                                       limit, cookie)[2:]
            replies.append(rendered[key])
        self.stats.count_answer(query.qtype, result.rcode, bool(replies[0][0] & TC))
        stats = self.stats
        return Rotation(
            tuple(replies),
            result.scope_prefix if client is not None and client.from_ecs else None,
            tuple(stats.tally(*key) for key in result.tallies) or None,
        )

    def _rendered(self, query: Query, result: Answer, limit: int,
                  cookie: bytes | None = None) -> bytes:
        reply = render(query, result, self.server, limit, cookie)
        # The rcode sent: render answers SERVFAIL for what no message can carry.
        self.stats.count_answer(query.qtype, reply[3] & 0xF, bool(reply[2] & TC))
        return reply


class Rotation:
    """Pre-rendered steered replies (without their ID), handed out in turn; each hand-out
    counts on the tally of its variant (name, region, decision: the traffic split)."""

    __slots__ = ("ecs_scope", "replies", "tallies", "turn")

    def __init__(self, replies: tuple[bytes, ...], ecs_scope: int | None = None,
                 tallies: tuple[Tally, ...] | None = None):
        self.replies = replies
        self.ecs_scope = ecs_scope  # set when the answer came from an ECS subnet
        self.tallies = tallies  # parallel to replies; None: nothing to count
        # A random start: clients whose every query misses the cache (a fresh EDNS
        # cookie each time) must not all get the first variant.
        self.turn = random.randrange(len(replies))

    def next(self) -> bytes:
        turn = self.turn
        self.turn = (turn + 1) % len(self.replies)
        if self.tallies is not None:
            self.tallies[turn].count += 1
        return self.replies[turn]


def client_of(query: Query, peer: str | None) -> Client | None:
    """The ECS subnet when the resolver sent one (and did not opt out with /0), else the
    resolver's own address."""
    subnet = query.edns.client_subnet if query.edns is not None else None
    if subnet is not None and subnet.source_prefix > 0:
        network = subnet.network
        return Client(network.network_address, subnet.source_prefix, from_ecs=True)
    if peer is None:
        return None
    try:
        address = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return None
    return Client(address, address.max_prefixlen)


def _packed(peer: str) -> bytes | None:
    """A peer address as 4 or 16 octets (what a server cookie is computed over)."""
    try:
        if ":" in peer:
            return socket.inet_pton(socket.AF_INET6, peer.split("%", 1)[0])
        return socket.inet_pton(socket.AF_INET, peer)
    except OSError:
        return None


def rotation_size(key: tuple[bytes, str | None], rotation: Rotation) -> int:
    """A steered entry's estimated bytes: its key (packet and peer text) and replies."""
    packet, peer = key
    return (len(packet) + (len(peer) if peer is not None else 0) + caches.ROTATION_OVERHEAD
            + sum(len(reply) + caches.REPLY_OVERHEAD for reply in rotation.replies))
