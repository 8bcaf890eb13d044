"""From query packet to response packet: the slow path and the response cache.

The transports look a packet up in the cache themselves (the fast path: one dict
lookup keyed on everything after the message ID) and call :meth:`Engine.respond`
only on a miss. Everything a response depends on is in those bytes and in the
snapshot, so a snapshot swap simply starts new caches.
"""

from __future__ import annotations

import dns.rcode

from gtm import log
from gtm.dns.answer import ZoneSet, answer
from gtm.dns.render import TCP_LIMIT, ServerIdentity, badvers, render, udp_limit
from gtm.dns.wire import Drop, FormErr, NotImp, error_reply, parse_query


class Stats:
    """Plain counters: cheap on the hot path, read by the metrics collector."""

    __slots__ = ("answered", "cache_hits", "dropped", "formerr", "notimp", "servfail")

    def __init__(self) -> None:
        self.answered = 0
        self.cache_hits = 0
        self.dropped = 0
        self.formerr = 0
        self.notimp = 0
        self.servfail = 0


class Engine:
    def __init__(self, zones: ZoneSet, server: ServerIdentity, cache_entries: int = 100_000):
        self.server = server
        self.cache_entries = cache_entries
        self.stats = Stats()
        self.zones = zones
        self.udp_cache: dict[bytes, bytes] = {}
        self.tcp_cache: dict[bytes, bytes] = {}

    def swap(self, zones: ZoneSet) -> None:
        """Serve new zones from the next packet on; old cached answers go with the old zones."""
        self.zones = zones
        self.udp_cache = {}
        self.tcp_cache = {}

    def respond(self, data: bytes, tcp: bool) -> bytes | None:
        """The response to one packet, or None when it must get none."""
        cache = self.tcp_cache if tcp else self.udp_cache
        cached = cache.get(data[2:])
        if cached is not None:
            self.stats.cache_hits += 1
            return data[:2] + cached
        try:
            reply = self._answer(data, tcp)
        except Drop:
            self.stats.dropped += 1
            return None
        except NotImp:
            self.stats.notimp += 1
            return error_reply(data, dns.rcode.NOTIMP)
        except FormErr:
            self.stats.formerr += 1
            return error_reply(data, dns.rcode.FORMERR)
        except Exception:  # the error boundary: one bad packet never stops the server
            self.stats.servfail += 1
            log.dns.exception("internal error answering a query")
            return error_reply(data, dns.rcode.SERVFAIL)
        if len(cache) >= self.cache_entries:
            cache.clear()
        cache[data[2:]] = reply[2:]
        self.stats.answered += 1
        return reply

    def _answer(self, data: bytes, tcp: bool) -> bytes:
        query = parse_query(data)
        if query.edns is not None and query.edns.version > 0:
            return badvers(query, self.server)
        result = answer(query.qname, query.qtype, query.qclass, self.zones)
        limit = TCP_LIMIT if tcp else udp_limit(query, self.server)
        return render(query, result, self.server, limit)
