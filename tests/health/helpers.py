"""Zones with a checked pool, and small waiting helpers, for the health tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import dns.name

from gtm.config.document import compile_document
from gtm.dns.answer import ZoneSet
from gtm.dns.zone import Zone, name_key

ORIGIN = "hc.test."
ZONE = """$TTL 60
@    SOA  ns1 hostmaster 1 7200 1800 1209600 60
@    NS   ns1
ns1  A    127.0.0.1
"""


def check(port: int, **overrides: Any) -> dict[str, Any]:
    """A fast HTTP check: detection in well under a second, so tests stay short."""
    spec: dict[str, Any] = {"type": "http", "port": port, "path": "/healthz",
                            "interval": 0.2, "timeout": 0.15, "rise": 2, "fall": 2,
                            "fastinter": 0.1, "jitter": 0.0}
    spec.update(overrides)
    return spec


def steering(spec: dict[str, Any], eu: str = "127.0.1.1", us: str = "127.0.2.1",
             eu_check: str | None = None) -> dict[str, Any]:
    eu_endpoint = {"name": "eu-1", "region": "eu", "ipv4": eu}
    if eu_check is not None:
        eu_endpoint["check_address"] = eu_check
    return {
        "regions": {"eu": {"latitude": 53.3, "longitude": -6.3},
                    "us": {"latitude": 38.9, "longitude": -77.4}},
        "pools": {"web": {"endpoints": [eu_endpoint,
                                        {"name": "us-1", "region": "us", "ipv4": us}],
                          "check": spec}},
        "names": {"api": {"pool": "web", "ttl": 30, "filters": [
            {"type": "failover", "groups": [["eu"], ["us"]]}]}},
    }


def document(spec: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return {"zones": {ORIGIN: ZONE}, "steering": {ORIGIN: steering(spec, **kwargs)}}


def compile_zones(spec: dict[str, Any], **kwargs: Any) -> ZoneSet:
    return compile_document(document(spec, **kwargs), "test").zones


def zone_of(zones: ZoneSet) -> Zone:
    return zones.zones[name_key(dns.name.from_text(ORIGIN))]


def health_of(zones: ZoneSet, endpoint: str) -> str:
    return zone_of(zones).state.endpoint_state(endpoint).health


class Served:
    """What a ServingFeed swapped in, with the time of each swap (a real swap target)."""

    def __init__(self) -> None:
        self.swaps: list[tuple[float, ZoneSet]] = []

    def __call__(self, zones: ZoneSet) -> None:
        self.swaps.append((time.monotonic(), zones))

    @property
    def current(self) -> ZoneSet:
        return self.swaps[-1][1]


async def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.01) -> float:
    """Seconds until predicate() holds; AssertionError after timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - start
