"""Response rate limiting (RRL) for UDP: a spoofed flood must not make us an amplifier.

Responses are counted in token buckets per (client prefix, response class, name), as
BIND, Knot (mod-rrl) and NSD do: the prefix is the client's /24 (IPv4) or /56 (IPv6);
the classes are answers, NODATA, NXDOMAIN, referrals and errors; the name is the
question's (lower-cased), except that NXDOMAIN counts against the zone (random names
under one zone are one flood) and errors against the prefix alone. A bucket refills at
``rate`` tokens a second up to one second's worth; a response finding no token is
*limited*: every ``slip``-th one is sent truncated (TC=1, question only, so a real
client retries over TCP), the others are dropped.

Cheap when nobody is over the limit: each prefix first has an aggregate bucket at the
same rate. A prefix whose whole traffic is within the rate cannot have one name over
it, so such a response costs one dictionary lookup and a little arithmetic; only a
prefix over the rate in total has its responses classified and counted per name.

TCP is never limited (a TCP client is no spoofer), nor are clients returning a valid
server cookie; the transports skip the limiter for them. Everything here reads the
response bytes only, so cached and uncached responses are treated alike. Counters are
plain integers read by gtm.metrics at scrape time.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from typing import TYPE_CHECKING

from gtm import log
from gtm.dns.wire import FormErr, read_name, skip_records

if TYPE_CHECKING:  # a type only: gtm.config imports gtm.dns, never the other way
    from gtm.config.settings import RrlSettings

ANSWER, NODATA, NXDOMAIN, REFERRAL, ERROR = range(5)
CLASS_NAMES = ("answer", "nodata", "nxdomain", "referral", "error")
_CLASS_BYTES = tuple(bytes((c,)) for c in range(5))
_NOT_EXEMPT, _EXEMPT, _SOME_EXEMPT = 0, 1, 2


class _Bucket:
    __slots__ = ("exempt", "limited", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float, exempt: int = _NOT_EXEMPT):
        self.tokens = tokens
        self.stamp = stamp
        self.exempt = exempt
        self.limited = False  # over the limit now: logged once when it starts


class RrlStats:
    """Plain counters, read by gtm.metrics at scrape time."""

    __slots__ = ("by_class", "dropped", "limited", "slipped")

    def __init__(self) -> None:
        self.limited = 0   # responses over the limit (log_only: would have been)
        self.slipped = 0   # of those, sent truncated
        self.dropped = 0   # of those, not sent
        self.by_class = [0] * len(CLASS_NAMES)


class ResponseLimiter:
    """One worker's limiter; ``share`` is how many workers split the node's rate."""

    def __init__(self, settings: RrlSettings, share: int = 1):
        self.settings = settings
        self.rate = settings.responses_per_second / max(share, 1)
        self.burst = max(self.rate, 1.0)
        self.slip = settings.slip
        self.log_only = settings.log_only
        self.table_size = settings.table_size
        self.whitelist = settings.whitelist
        self.v4 = _PrefixCut(settings.ipv4_prefix)
        self.v6 = _PrefixCut(settings.ipv6_prefix)
        # Per family, so an IPv4 and an IPv6 prefix of the same length never meet.
        self.prefixes4: dict[bytes, _Bucket] = {}
        self.prefixes6: dict[bytes, _Bucket] = {}
        self.names: dict[bytes, _Bucket] = {}
        self.stats = RrlStats()
        self.turn = 0
        self.logged_at = -1.0

    def limit_text(self, address: str, reply: bytes, now: float) -> bytes | None:
        """As limit, for an address as text (the plain asyncio transport)."""
        try:
            packed = socket.inet_pton(socket.AF_INET6 if ":" in address else socket.AF_INET,
                                      address.split("%", 1)[0])
        except OSError:
            return reply
        return self.limit(packed, reply, now)

    def limit(self, packed: bytes, reply: bytes, now: float) -> bytes | None:
        """The reply to send to ``packed`` (4 or 16 octets): ``reply`` itself, a truncated
        copy (slipped), or None (dropped). ``now``: time.monotonic()."""
        if len(packed) == 4:
            prefix, prefixes = self.v4.cut(packed), self.prefixes4
        else:
            prefix, prefixes = self.v6.cut(packed), self.prefixes6
        bucket = prefixes.get(prefix)
        if bucket is None:
            bucket = self._new_prefix(prefixes, prefix, packed, now)
        if bucket.exempt and (bucket.exempt == _EXEMPT or self._whitelisted(packed)):
            return reply
        tokens = bucket.tokens + (now - bucket.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket.stamp = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return reply
        # The prefix as a whole is over the rate: its debt is bounded, so it is back on
        # the cheap path within two seconds of the flood ending.
        bucket.tokens = tokens - 1.0 if tokens > -self.burst else -self.burst
        return self._per_name(prefix, len(packed) == 4, reply, now)

    def reserve(self, packed: bytes, most: int) -> int:
        """Take up to ``most`` whole tokens of ``packed``'s prefix ahead, right after
        :meth:`limit` let one of its replies through: a batch of datagrams then answers
        that client's next ones without asking again (the limiter's cost, paid once per
        client and batch). What a batch does not use goes back with :meth:`refund`."""
        if len(packed) == 4:
            bucket = self.prefixes4.get(self.v4.cut(packed))
        else:
            bucket = self.prefixes6.get(self.v6.cut(packed))
        if bucket is None or bucket.exempt:
            return 0  # whitelisted prefixes take the plain path: nothing to reserve
        whole = int(bucket.tokens)
        if whole <= 0:
            return 0
        taken = whole if whole < most else most
        bucket.tokens -= taken
        return taken

    def refund(self, packed: bytes, count: int) -> None:
        """Give back tokens :meth:`reserve` took and a batch did not use."""
        if len(packed) == 4:
            bucket = self.prefixes4.get(self.v4.cut(packed))
        else:
            bucket = self.prefixes6.get(self.v6.cut(packed))
        if bucket is not None:
            tokens = bucket.tokens + count
            bucket.tokens = tokens if tokens < self.burst else self.burst

    def _per_name(self, prefix: bytes, v4: bool, reply: bytes, now: float) -> bytes | None:
        kind, name = classify(reply)
        key = (b"4" if v4 else b"6") + prefix + _CLASS_BYTES[kind] + name
        bucket = self.names.get(key)
        if bucket is None:
            bucket = self._put(self.names, key, _Bucket(self.burst, now))
        tokens = bucket.tokens + (now - bucket.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        bucket.stamp = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            bucket.limited = False
            return reply
        bucket.tokens = tokens
        return self._limited(bucket, prefix, v4, kind, name, reply)

    def _limited(self, bucket: _Bucket, prefix: bytes, v4: bool, kind: int, name: bytes,
                 reply: bytes) -> bytes | None:
        stats = self.stats
        stats.limited += 1
        stats.by_class[kind] += 1
        if not bucket.limited:
            bucket.limited = True
            # One line a second at most: a spoofer cycling prefixes must not flood the log.
            now = time.monotonic()
            if now - self.logged_at < 1.0:
                return self._act(reply)
            self.logged_at = now
            log.dns.warning("rate limiting %s responses to %s for %s%s", CLASS_NAMES[kind],
                            self._describe(prefix, v4), _name_text(name) or "any name",
                            " (log only: still answered)" if self.log_only else "")
        return self._act(reply)

    def _act(self, reply: bytes) -> bytes | None:
        stats = self.stats
        if self.log_only:
            return reply
        self.turn += 1
        if self.slip and self.turn % self.slip == 0:
            stats.slipped += 1
            return truncated(reply)
        stats.dropped += 1
        return None

    def _new_prefix(self, prefixes: dict[bytes, _Bucket], prefix: bytes, packed: bytes,
                    now: float) -> _Bucket:
        exempt = _NOT_EXEMPT
        if self.whitelist:
            network = ipaddress.ip_network(
                (prefix + bytes(len(packed) - len(prefix)),
                 self.v4.bits if len(packed) == 4 else self.v6.bits), strict=False)
            if any(network.version == w.version and network.subnet_of(w)  # type: ignore[arg-type]
                   for w in self.whitelist):
                exempt = _EXEMPT
            elif any(network.version == w.version and network.overlaps(w)
                     for w in self.whitelist):
                exempt = _SOME_EXEMPT
        return self._put(prefixes, prefix, _Bucket(self.burst, now, exempt))

    def _whitelisted(self, packed: bytes) -> bool:
        address = ipaddress.ip_address(packed)
        return any(address in network for network in self.whitelist)

    def _put(self, table: dict[bytes, _Bucket], key: bytes, bucket: _Bucket) -> _Bucket:
        # Bounded whatever a spoofer sends: the oldest bucket goes first, one at a time.
        if len(table) >= self.table_size:
            del table[next(iter(table))]
        table[key] = bucket
        return bucket

    def _describe(self, prefix: bytes, v4: bool) -> str:
        width, bits = (4, self.v4.bits) if v4 else (16, self.v6.bits)
        return f"{ipaddress.ip_address(prefix + bytes(width - len(prefix)))}/{bits}"


class _PrefixCut:
    """The first ``bits`` of a packed address, as bytes (the bucket key of a prefix)."""

    __slots__ = ("bits", "mask", "octets", "whole")

    def __init__(self, bits: int):
        self.bits = bits
        self.whole = bits // 8
        self.octets = (bits + 7) // 8
        self.mask = (0xFF << (8 - bits % 8)) & 0xFF if bits % 8 else 0

    def cut(self, packed: bytes) -> bytes:
        if not self.mask:
            return packed[: self.whole]
        return packed[: self.whole] + bytes((packed[self.whole] & self.mask,))


def question_end(reply: bytes) -> int:
    """The offset after the question's QTYPE and QCLASS (12 when there is none)."""
    if reply[4] == 0 and reply[5] == 0:
        return 12
    position = 12
    while (length := reply[position]) != 0:
        position += length + 1
    return position + 5


def classify(reply: bytes) -> tuple[int, bytes]:
    """(response class, the name its bucket is counted under) of a rendered reply."""
    rcode = reply[3] & 0x0F
    if rcode == 3:
        return NXDOMAIN, _zone_of_nxdomain(reply)
    if rcode != 0 or len(reply) < 17:
        return ERROR, b""
    name = reply[12 : question_end(reply) - 4].lower()
    if reply[6] or reply[7]:
        return ANSWER, name
    if reply[2] & 0x04:  # AA: our own empty answer
        return NODATA, name
    return REFERRAL, name


def _zone_of_nxdomain(reply: bytes) -> bytes:
    """The owner of the SOA in the authority section (the zone), as wire labels."""
    try:
        end = question_end(reply)
        ancount = (reply[6] << 8) | reply[7]
        authority = skip_records(reply, end, ancount)
        labels, _ = read_name(reply, authority)
    except (FormErr, IndexError):
        return b""
    return b"".join(bytes((len(label),)) + label for label in labels).lower()


def truncated(reply: bytes) -> bytes:
    """The slipped form of a reply: its header with TC set, its question, nothing else."""
    end = question_end(reply)
    counts = reply[4:6] + bytes(6)
    return reply[:2] + bytes((reply[2] | 0x02, reply[3])) + counts + reply[12:end]


def _name_text(wire: bytes) -> str:
    labels = []
    position = 0
    while position < len(wire) and wire[position]:
        length = wire[position]
        labels.append(wire[position + 1 : position + 1 + length].decode("ascii", "replace"))
        position += length + 1
    return ".".join(labels) + "." if wire else ""
