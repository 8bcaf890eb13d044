"""The DNS engine's counters: plain integers, incremented on the packet path and read by
the metrics collector (gtm.metrics.DnsCollector) at scrape time.

The cache-hit fast path does one increment (``cache_hits``) and nothing else. Everything
finer (query type, rcode, truncation, latency) is counted on the path that computes an
answer, which already parses and renders; a steered answer, cached or not, adds one to
the ``Tally`` of its name, region and decision (the traffic split). No dict or tuple is
made per packet: the tables are lists indexed by small integers and tallies are found
once, when an answer is computed.
"""

from __future__ import annotations

from bisect import bisect_left

import dns.rcode
import dns.rdatatype

# Query types counted by name; anything else is "other" (a bounded label set).
QTYPES = ("A", "AAAA", "CNAME", "MX", "NS", "SOA", "TXT", "SRV", "PTR", "CAA", "DS",
          "DNSKEY", "HTTPS", "SVCB", "NAPTR", "ANY", "AXFR", "IXFR")
QTYPE_INDEX = {int(dns.rdatatype.from_text(name)): index for index, name in enumerate(QTYPES)}
OTHER_QTYPE = len(QTYPES)
QTYPE_LABELS: tuple[str, ...] = (*QTYPES, "other")
# rcodes 0..23 (BADVERS and the other extended ones included); the label is their name.
RCODE_COUNT = 24
RCODE_LABELS = tuple(dns.rcode.Rcode(code).name if code in set(dns.rcode.Rcode) else str(code)
                     for code in range(RCODE_COUNT))
# Upper bounds of the answer-time histogram, in nanoseconds (50 us .. 100 ms).
LATENCY_BOUNDS_NS: tuple[int, ...] = (
    50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
    25_000_000, 100_000_000)


class Tally:
    """Steered answers handed out for one (name, region, decision); shared by every
    cached rotation that hands that answer out, so a cache swap loses no count."""

    __slots__ = ("count", "decision", "name", "region")

    def __init__(self, name: str, region: str, decision: str):
        self.name, self.region, self.decision = name, region, decision
        self.count = 0


class Stats:
    """Plain counters: cheap on the hot path, read by the metrics collector."""

    __slots__ = ("answered", "answers", "badcookie", "bucket_hits", "cache_hits",
                 "cookie_invalid", "cookie_new", "cookie_valid", "dropped", "formerr",
                 "latency_buckets", "latency_ns", "notimp", "servfail", "tallies",
                 "tcp_queries", "truncated")
    # The collector's label tables (gtm.metrics.DnsCounts).
    qtype_labels = QTYPE_LABELS
    rcode_labels = RCODE_LABELS
    latency_bounds_ns = LATENCY_BOUNDS_NS

    def __init__(self) -> None:
        self.answered = 0
        self.cache_hits = 0
        self.dropped = 0
        self.formerr = 0
        self.notimp = 0
        self.servfail = 0
        self.badcookie = 0       # BADCOOKIE sent (a wrong or stale server cookie, UDP)
        self.cookie_new = 0      # a client cookie alone: a server cookie issued
        self.cookie_valid = 0    # a server cookie of ours (or a sibling node's) sent back
        self.cookie_invalid = 0  # a server cookie wrong, stale or from another secret
        self.tcp_queries = 0     # every query over TCP (the rest came over UDP)
        self.bucket_hits = 0     # ECS answers from a location bucket (in cache_hits too)
        self.truncated = 0       # computed answers with TC set
        # Computed answers by query type and rcode: row qtype index, column rcode.
        self.answers = [0] * (len(QTYPE_LABELS) * RCODE_COUNT)
        self.latency_buckets = [0] * (len(LATENCY_BOUNDS_NS) + 1)  # the last: +Inf
        self.latency_ns = 0
        self.tallies: dict[tuple[str, str, str], Tally] = {}

    @property
    def queries(self) -> int:
        """Every query received: each ends in exactly one of these outcomes."""
        return (self.answered + self.cache_hits + self.dropped + self.formerr + self.notimp
                + self.servfail + self.badcookie)

    def count_answer(self, qtype: int, rcode: int, truncated: bool) -> None:
        column = rcode if 0 <= rcode < RCODE_COUNT else 0
        self.answers[QTYPE_INDEX.get(qtype, OTHER_QTYPE) * RCODE_COUNT + column] += 1
        if truncated:
            self.truncated += 1

    def observe_ns(self, elapsed: int) -> None:
        self.latency_buckets[bisect_left(LATENCY_BOUNDS_NS, elapsed)] += 1
        self.latency_ns += elapsed

    def tally(self, name: str, region: str, decision: str) -> Tally:
        key = (name, region, decision)
        found = self.tallies.get(key)
        if found is None:
            found = self.tallies[key] = Tally(name, region, decision)
        return found
