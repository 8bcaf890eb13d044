"""The health keys of a balancer pool: ``check``, ``outlier`` and ``panic_below``.

A leaf module (no import of regional_lb.config) so the config parser can use it::

    [[lb.pools]]
    name = "app"
    check = { type = "http", path = "/healthz", interval = 2.0, timeout = 1.0,
              rise = 2, fall = 2, fastinter = 0.5 }   # tcp | http | https; port: the backend's
    outlier = { consecutive_5xx = 5, consecutive_gateway = 3, base_ejection = 10.0,
                max_ejection = 300.0, max_ejection_percent = 50 }
    panic_below = 0.5   # fewer healthy backends than this share: balance over all enabled

The check table takes the keys of a GTM pool check (gtm.steering.definitions) for the
types tcp, http and https; it is validated by the same code, so the two tiers agree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from gtm.config_reader import Place, Reader
from gtm.steering.model import HealthCheck

LB_CHECK_TYPES = ("tcp", "http", "https")


@dataclass(frozen=True)
class OutlierSpec:
    """Passive outlier detection on live traffic (``outlier = {...}`` on a pool)."""

    consecutive_5xx: int = 5           # 5xx responses in a row; 0: not counted
    consecutive_gateway: int = 3       # connect refused/reset/timeouts, 504s in a row; 0: off
    base_ejection: float = 10.0        # seconds; the n-th ejection in a row lasts n x this
    max_ejection: float = 300.0        # ... capped at this
    max_ejection_percent: int = 50     # never more of a pool's enabled backends ejected
    # Latency outliers: a backend whose mean response time over a window is above
    # latency_factor x the median of its peers' means (each with at least
    # latency_min_requests responses in the window, and at least latency_floor s).
    latency_factor: float = 0.0        # 0: off
    latency_min_requests: int = 20
    latency_window: float = 10.0       # seconds
    latency_floor: float = 0.005       # seconds: no ejection for being slow below this


def parse_check(place: Place, raw: Any) -> HealthCheck:
    """A pool's active check; the port defaults to each backend's own (port None)."""
    from gtm.steering.definitions import parse_health_check  # the GTM's validation

    table = dict(place.table(raw).table)
    if table.get("type") not in LB_CHECK_TYPES:
        raise place.key("type").fail(f"must be one of {', '.join(LB_CHECK_TYPES)}")
    placeholder = "port" not in table
    if placeholder:  # the GTM requires a port for tcp; here the backend's is the default
        table["port"] = 1
    check = parse_health_check(place.table(table))
    return dataclasses.replace(check, port=None) if placeholder else check


_OUTLIER_INTS = {"consecutive_5xx": 1000, "consecutive_gateway": 1000, "max_ejection_percent": 100,
                 "latency_min_requests": 10**6}
_OUTLIER_FLOATS = {"base_ejection": 86400.0, "max_ejection": 86400.0, "latency_window": 3600.0,
                   "latency_floor": 60.0}
OUTLIER_KEYS = (*_OUTLIER_INTS, *_OUTLIER_FLOATS, "latency_factor")


def parse_outlier(reader: Reader) -> OutlierSpec:
    """A pool's ``outlier`` table (its keys checked by the caller: OUTLIER_KEYS)."""
    values: dict[str, Any] = {}
    for key, high in _OUTLIER_INTS.items():
        if key in reader:
            values[key] = reader.integer(key, low=0, high=high, what="a whole number")
    for key, ceiling in _OUTLIER_FLOATS.items():
        if key in reader:
            values[key] = reader.number(key, low=0.01, high=ceiling,
                                        what="a number of seconds")
    if "latency_factor" in reader:
        factor = reader.number("latency_factor")
        if not (factor == 0 or 1.0 < factor <= 1000):
            raise reader.fail("latency_factor", "must be 0 (off) or a factor above 1 "
                              "(up to 1000)")
        values["latency_factor"] = factor
    spec = OutlierSpec(**values)
    if spec.max_ejection < spec.base_ejection:
        raise reader.fail("max_ejection", "must not be shorter than base_ejection")
    return spec


def parse_panic_below(pool: Reader) -> float:
    """A pool's ``panic_below``: the share of healthy backends below which it panics."""
    return pool.number("panic_below", 0.5, low=0, high=1,
                       what="a fraction (0: never panic)")
