"""Per-client limits and queueing in the ``[lb]`` table: what the config file may say.

The keys (described in the ``[lb]`` reference, the docstring of regional_lb/config.py):
a listener's ``limits`` table, a route's ``limits`` (a rate limit of its own), the
listener's and route's ``priority``, ``priority_header`` and ``priority_values``, a pool's
``queue_size`` and ``queue_timeout``, ``[lb] priority_classes`` and
``[lb.limits] client_table``. Every error names its key path.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from gtm.config_reader import Reader

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_CLASSES = ("high", "normal", "low")
MAX_RATE = 1e6     # requests per second per key: above this a limit means nothing
MAX_BURST = 10**6
RATE_KEYS = ("rate", "burst", "key")
LISTENER_LIMIT_KEYS = (*RATE_KEYS, "ipv4_prefix", "ipv6_prefix", "max_connections",
                       "max_requests", "allow")


@dataclass(frozen=True)
class RateLimitSpec:
    """A token bucket per key: ``rate`` tokens a second, at most ``burst`` at once."""

    rate: float
    burst: int
    key: str = "client_ip"           # client_ip | header:NAME | cookie:NAME


@dataclass(frozen=True)
class ClientLimitsSpec:
    """A listener's ``limits``: by client network (address prefix) unless ``key`` says."""

    rate: RateLimitSpec | None = None
    ipv4_prefix: int = 32
    ipv6_prefix: int = 128
    max_connections: int = 0         # open connections per client network; 0: no cap
    max_requests: int = 0            # requests in flight per client network; 0: no cap
    allow: tuple[IpNetwork, ...] = ()  # client networks never limited


@dataclass(frozen=True)
class PrioritySpec:
    """How a listener picks a request's priority class (an index: 0 is the highest)."""

    default: int = 1
    header: bytes | None = None      # lower-case header name
    values: tuple[tuple[bytes, int], ...] = ()  # header value -> class


def priority_classes(top: Reader) -> tuple[str, ...]:
    """``[lb] priority_classes``: names, highest first (default high, normal, low)."""
    place = top.at("priority_classes")
    items = list(place.items(top.value("priority_classes", list(DEFAULT_CLASSES))))
    if not items or len(items) > 16:
        raise place.fail("must name 1 to 16 classes")
    names: list[str] = []
    for item_place, name in items:
        if not isinstance(name, str) or not name.isidentifier() or not name.isascii():
            raise item_place.fail("must be a name (letters, digits, _)")
        if name in names:
            raise item_place.fail(f"{name!r} is listed twice")
        names.append(name)
    return tuple(names)


def class_index(reader: Reader, key: str, classes: tuple[str, ...]) -> int | None:
    name = reader.text(key, None)
    if name is None:
        return None
    if name not in classes:
        raise reader.fail(key, f"names no priority class ({', '.join(classes)})")
    return classes.index(name)


def listener_priority(reader: Reader, classes: tuple[str, ...]) -> PrioritySpec:
    """A listener's ``priority``, ``priority_header`` and ``priority_values``."""
    default = class_index(reader, "priority", classes)
    if default is None:  # "normal" when there is one, else the lowest class
        default = classes.index("normal") if "normal" in classes else len(classes) - 1
    header = reader.text("priority_header", None)
    if header is not None and (not header or not _token(header)):
        raise reader.fail("priority_header", "must be a header name")
    if "priority_values" in reader and header is None:
        raise reader.fail("priority_values", "needs priority_header")
    values: dict[bytes, int] = {}
    if header is not None:
        values = {name.encode(): index for index, name in enumerate(classes)}
    table = reader.child("priority_values")
    for value, name in table.table.items():
        if not isinstance(name, str) or name not in classes:
            raise table.fail(value, f"names no priority class ({', '.join(classes)})")
        if not value or not value.isascii() or not value.isprintable():
            raise table.fail(value, "must be a visible ASCII value")
        values[value.encode()] = classes.index(name)
    return PrioritySpec(default, header.lower().encode() if header else None,
                        tuple(values.items()))


def _token(text: str) -> bool:
    return all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in text)


def rate_limit(reader: Reader) -> RateLimitSpec | None:
    """``rate``, ``burst`` and ``key`` of a limits table (None without a rate)."""
    rate = reader.number("rate", 0.0, low=0.0, high=MAX_RATE)
    if rate == 0.0:
        for key in ("burst", "key"):
            if key in reader:
                raise reader.fail(key, "needs a rate")
        return None
    burst = reader.integer("burst", max(1, round(rate)), low=1, high=MAX_BURST)
    key = reader.text("key", "client_ip")
    if key != "client_ip":
        kind, _, name = key.partition(":")
        if kind not in ("header", "cookie") or not name or not _token(name):
            raise reader.fail("key", "must be client_ip, header:NAME or cookie:NAME")
        key = f"{kind}:{name.lower() if kind == 'header' else name}"
    return RateLimitSpec(rate, burst, key)


def listener_limits(reader: Reader) -> ClientLimitsSpec:
    """A listener's ``limits`` (its keys checked by the caller: LISTENER_LIMIT_KEYS)."""
    spec = ClientLimitsSpec(
        rate=rate_limit(reader),
        ipv4_prefix=reader.integer("ipv4_prefix", 32, low=1, high=32),
        ipv6_prefix=reader.integer("ipv6_prefix", 128, low=1, high=128),
        max_connections=reader.integer("max_connections", 0, low=0, high=10**7),
        max_requests=reader.integer("max_requests", 0, low=0, high=10**7),
        allow=reader.networks("allow", strict=False),
    )
    if spec.rate is None and not spec.max_connections and not spec.max_requests:
        raise reader.fail("", "sets no limit (rate, max_connections or max_requests)")
    return spec


def route_limits(reader: Reader) -> RateLimitSpec:
    """A route's ``limits`` (its keys checked by the caller: RATE_KEYS)."""
    spec = rate_limit(reader)
    if spec is None:
        raise reader.fail("rate", "is required (requests per second)")
    return spec


def queue_settings(reader: Reader) -> tuple[int, float]:
    """A pool's ``queue_size`` (0: no queue, 503 at once) and ``queue_timeout``."""
    size = reader.integer("queue_size", 0, low=0, high=10**6)
    timeout = reader.number("queue_timeout", 5.0, low=0.001, high=3600)
    if "queue_timeout" in reader and size == 0:
        raise reader.fail("queue_timeout", "needs queue_size above 0")
    return size, timeout
