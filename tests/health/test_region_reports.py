"""Region self-reports from the regional balancers (regional_lb/report.py contract):
a region whose balancer has no healthy backend is down even though its listener
still accepts connections; its headroom reaches the capacity filter."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import redis.asyncio as aioredis

from gtm.config.document import compile_document
from gtm.health import reports
from gtm.health.bus import region_channel, region_prefix
from gtm.health.overlay import ServingFeed
from gtm.health.service import HealthService, HealthSettings
from gtm.health.summary import render_summary
from tests.health.conftest import REDIS_URL
from tests.health.endpoint import Endpoint, free_port
from tests.health.helpers import ORIGIN, Served, check, compile_zones, wait_for, zone_of
from tests.health.helpers import document as hc_document


def region_report(region: str, healthy: bool, in_flight: int = 0) -> dict[str, Any]:
    return {"region": region, "worker": 0, "time": time.time(), "config_version": 1,
            "healthy": healthy, "capacity": 100, "in_flight": in_flight,
            "headroom": 1 - in_flight / 100, "requests_per_s": 0.0, "p95_ms": None,
            "error_rate": 0.0, "backends_up": 2 if healthy else 0, "backends_total": 2}


def eu_usable(served: Served) -> bool:
    zone = zone_of(served.current)
    assert zone.steering is not None
    endpoint = zone.steering.endpoint("eu-1")
    assert endpoint is not None
    return zone.state.healthy(endpoint)


async def test_in_process_report_with_no_healthy_backends_takes_the_region_out() -> None:
    port = free_port("127.0.1.1")
    listener = await Endpoint("127.0.1.1", port).start()  # accepts connections all along
    served = Served()
    feed = ServingFeed(served)
    service = HealthService(HealthSettings("r1", coalesce=0.05), feed)
    feed.serve(compile_zones({"type": "tcp", "port": port, "interval": 0.2, "timeout": 0.15,
                              "fastinter": 0.1}))
    await service.start()
    try:
        await wait_for(lambda: service.view.agreed.get("hc.test/eu-1") is not None, 2)
        assert eu_usable(served)
        # What a balancer worker does when it publishes (regional_lb/report.py).
        for report in (region_report("eu", False), region_report("us", True, in_flight=70)):
            reports.REPORTS[report["region"]] = report
            for subscriber in list(reports.SUBSCRIBERS):
                subscriber(report)
        await wait_for(lambda: not eu_usable(served), 1)
        state = zone_of(served.current).state
        assert "no healthy backends" in state.region_state("eu").reason
        assert abs(state.headroom("us") - 0.3) < 1e-9
        assert service.machines["hc.test/eu-1"].state == "up"  # the listener still answers
        recovered = region_report("eu", True)
        for subscriber in list(reports.SUBSCRIBERS):
            subscriber(recovered)
        await wait_for(lambda: eu_usable(served), 1)
    finally:
        await service.stop()
        feed.close()
        await listener.stop()
        reports.REPORTS.pop("eu", None)
        reports.REPORTS.pop("us", None)


async def test_report_through_redis_keys_and_channel(redis_namespace: str) -> None:
    served = Served()
    feed = ServingFeed(served)
    settings = HealthSettings("r2", coalesce=0.05, redis_url=REDIS_URL,
                              namespace=redis_namespace, in_process_reports=False)
    service = HealthService(settings, feed)
    feed.serve(compile_zones(check(free_port("127.0.1.1"))))
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        # Written before the node starts: it must read the key, not only the channel.
        await client.set(f"{region_prefix(redis_namespace)}eu:0",
                         json.dumps(region_report("eu", False)), px=5000)
        await service.start()
        await wait_for(lambda: "eu" in service.region_facts(), 3)
        await wait_for(lambda: zone_of(served.current).state.region_state("eu").health
                       == "down", 1)
        await client.publish(region_channel(redis_namespace),
                             json.dumps(region_report("eu", True)))
        await wait_for(lambda: service.region_facts()["eu"].healthy, 2)
        await wait_for(lambda: zone_of(served.current).state.region_state("eu").health
                       == "up", 1)
    finally:
        await service.stop()
        feed.close()
        await client.aclose()


async def test_flips_of_regions_and_backends_are_announced_once_each() -> None:
    port = free_port("127.0.1.1")
    listener = await Endpoint("127.0.1.1", port).start()
    served = Served()
    feed = ServingFeed(served)
    service = HealthService(HealthSettings("r1", coalesce=0.05), feed)
    flips: list[tuple[str, str, str]] = []
    service.on_change = lambda what, before, after, reason: flips.append((what, before, after))
    feed.serve(compile_zones({"type": "tcp", "port": port, "interval": 0.2, "timeout": 0.15,
                              "fastinter": 0.1}))
    await service.start()
    try:
        backend = {"address": "127.0.1.101:9001", "state": "enabled", "reason": "HTTP 200",
                   "panic": False}
        for healthy in (True, False, False, True):
            report = region_report("eu", healthy)
            report["backends"] = [{**backend, "health": "up" if healthy else "down"}]
            reports.publish(report)
        assert flips == [
            ("region eu", "up", "down"), ("backend eu/127.0.1.101:9001", "up", "down"),
            ("region eu", "down", "up"), ("backend eu/127.0.1.101:9001", "down", "up"),
        ]
    finally:
        await service.stop()
        feed.close()
        await listener.stop()
        reports.REPORTS.pop("eu", None)


async def test_gtm_health_shows_what_is_served_and_why() -> None:
    # eu set down by hand (`gtm steer region ... --health down`) while its balancer
    # reports it healthy; us-1 drained; no probes (listening only), so nothing else.
    document = hc_document(check(free_port("127.0.1.1")))
    document["state"] = {ORIGIN: {"regions": {"eu": {"health": "down", "reason": "drill"}},
                                  "endpoints": {"us-1": {"admin": "drain",
                                                         "reason": "upgrade"}}}}
    served = Served()
    feed = ServingFeed(served)
    service = HealthService(HealthSettings("r1", probe=False, coalesce=0.05), feed)
    feed.serve(compile_document(document, "test").zones)
    await service.start()
    try:
        reports.publish(region_report("eu", True))
        await wait_for(lambda: "eu" in service.summary()["served"][ORIGIN]["regions"]
                       and service.summary()["regions"].get("eu") is not None, 1)
        view = service.summary()["served"][ORIGIN]
        assert view["regions"]["eu"] == {"state": "down", "cause": "admin", "reason": "drill"}
        assert view["regions"]["us"] == {"state": "up", "cause": "none", "reason": ""}
        assert view["endpoints"]["eu-1"] == {
            "state": "down", "cause": "region", "reason": "region eu down (admin: drill)"}
        assert view["endpoints"]["us-1"] == {
            "state": "down", "cause": "admin", "reason": "drain (upgrade)"}
        listing = "\n".join(render_summary(service.summary()))
        # The region is shown as served (down, by hand), with the balancer's word beside.
        assert re.search(r"region eu: DOWN \(admin: drill\), balancer reports healthy "
                         r"\(2/2 backends up, 1 worker\), headroom 1\.00", listing), listing
        assert re.search(r"hc\.test/eu-1 +down .* region eu down \(admin: drill\)",
                         listing), listing
        assert re.search(r"hc\.test/us-1 +down .* admin: drain \(upgrade\)", listing), listing
        reports.publish(region_report("us", False))
        await wait_for(lambda: service.summary()["served"][ORIGIN]["regions"]["us"]["state"]
                       == "down", 1)
        listing = "\n".join(render_summary(service.summary()))
        assert "region us: DOWN (region report: balancer reports no healthy backends " \
               "(0/2 backends up, 1 worker)), headroom" in listing, listing
    finally:
        await service.stop()
        feed.close()
        reports.REPORTS.pop("eu", None)
        reports.REPORTS.pop("us", None)
