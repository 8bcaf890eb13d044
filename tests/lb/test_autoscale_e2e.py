"""Auto-scaling end to end, with real sources and real processes: a load oscillating
around the target does not make the pool flap; a Prometheus server's answer and the
backends' own reported load each drive a scale-out; a region whose pool is at max
spills new clients to the next region through the real region report -> health ->
DNS answer path."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import dns.name
import dns.rdataclass
import dns.rdatatype
import pytest
from aiohttp import web

from gtm.config.document import compile_document
from gtm.dns.answer import ZoneSet, answer
from gtm.dns.steered import SteerInput
from gtm.health import reports
from gtm.health.overlay import ServingFeed
from gtm.health.service import HealthService, HealthSettings
from tests.health.helpers import ORIGIN, ZONE, Served, zone_of
from tests.lb.conftest import Env, connect, read_response
from tests.lb.process import LoadLoop
from tests.lb.test_autoscale import (
    BACKEND,
    Scaled,
    Scaling,
    count,
    get_ok,
    redis_url,  # noqa: F401 - the fixture
    scaled_config,
    scaling,  # noqa: F401 - the fixture
    wait_for,
)

pytestmark = pytest.mark.integration


def test_a_load_oscillating_around_the_target_does_not_make_the_pool_flap(
        scaling: Scaled, redis_url: str) -> None:  # noqa: F811
    env, namespace, ports, state = scaling
    target = 2.0
    config = scaled_config(redis_url, namespace, ports, state, min=2, max=4, target=target,
                           scale_in={"window": 4, "backends": 2, "period": 0.5})
    address = env.balancer(**config)
    assert env.handle is not None
    view = Scaling(env.loop, redis_url, namespace, env.handle.snapshot.config.region)
    base = None
    try:
        wait_for(lambda: view.pool().get("current") == 2, timeout=20, what="min backends")
        wait_for(lambda: len(env.handle.snapshot.pools["app"].backends) == 2  # type: ignore[union-attr]
                 and get_ok(address), what="both serving")
        base = LoadLoop(address, clients=3)  # 1.5 in flight per backend of two: below target
        actions_before = len(view.events())
        values: list[float] = []
        # Two more clients every other second: 2.5 per backend of two, above the target.
        for _ in range(4):
            burst = LoadLoop(address, clients=2)
            values += sample_values(view, 1.0)
            burst.stop()
            values += sample_values(view, 1.0)
        burst_failures = burst.failures
        actions = [e for e in view.events()[: len(view.events()) - actions_before]
                   if e["type"] in ("scale_out", "drain")]
        # The load went above the target (seen, or the pool grew for it) and below it.
        assert any(v > target for v in values) or count(actions, "scale_out") >= 1, values
        assert any(v < 0.9 * target for v in values), values
        # One scale-out at most for the peaks; the scale-in window outlasts every trough.
        assert len(actions) <= 2, actions
        assert count(actions, "drain") == 0, actions
        assert base.failures == [] and burst_failures == []
    finally:
        if base is not None:
            base.stop()
        view.close()


def sample_values(view: Scaling, seconds: float) -> list[float]:
    """The pool's metric as the leader saw it, sampled for a while."""
    found = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        value = view.pool().get("value")
        if value is not None:
            found.append(float(value))
        time.sleep(0.1)
    return found


class Prometheus:
    """Prometheus's HTTP API as a scaler reads it: GET /api/v1/query?query=..., the
    instant vector's JSON (https://prometheus.io/docs/prometheus/latest/querying/api/)."""

    def __init__(self, value: float):
        self.value = value
        self.queries: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def query(self, request: web.Request) -> web.Response:
        self.queries.append(request.query.get("query", ""))
        return web.json_response({"status": "success", "data": {
            "resultType": "vector",
            "result": [{"metric": {"job": "app", "instance": "a"},
                        "value": [time.time(), str(self.value / 2)]},
                       {"metric": {"job": "app", "instance": "b"},
                        "value": [time.time(), str(self.value / 2)]}]}})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/api/v1/query", self.query)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]


def test_a_prometheus_query_drives_a_scale_out(scaling: Scaled,  # noqa: F811
                                                redis_url: str) -> None:  # noqa: F811
    env, namespace, ports, state = scaling
    prometheus = Prometheus(value=5.0)  # per backend, of one: half the target
    env.loop.run(prometheus.start())
    query = 'sum(app_busy_workers{job="app"})'
    config = scaled_config(redis_url, namespace, ports, state, min=1, max=3, target=10.0,
                           metric="prometheus", prometheus={
                               "url": f"http://127.0.0.1:{prometheus.port}", "query": query})
    env.balancer(**config)
    assert env.handle is not None
    scaler = env.handle.scaler
    view = Scaling(env.loop, redis_url, namespace, env.handle.snapshot.config.region)
    try:
        wait_for(lambda: view.pool().get("current") == 1, what="the first backend")
        seen = scaler.ticks
        wait_for(lambda: scaler.ticks >= seen + 5, what="five decisions")
        assert view.pool()["current"] == 1 and view.pool()["value"] == pytest.approx(5.0)
        prometheus.value = 25.0  # the vector's sum: 25 per backend of one, 2.5 x target
        wait_for(lambda: view.pool().get("current") == 3, what="scale-out to 3")
        scale_out = next(e for e in view.events() if e["type"] == "scale_out"
                         and e["to"] == 3)
        assert "prometheus" in scale_out["reason"] and "25" in scale_out["reason"]
        assert set(prometheus.queries) == {query}
    finally:
        view.close()
        env.loop.run(prometheus.runner.cleanup())  # type: ignore[union-attr]


def test_a_load_the_backends_report_in_a_header_drives_a_scale_out(
        scaling: Scaled, redis_url: str) -> None:  # noqa: F811
    env, namespace, ports, state = scaling
    backend = [sys.executable, BACKEND, "--listen", "{address}", "--load", "30",
               "--load-header", "X-Load"]
    config = scaled_config(redis_url, namespace, ports, state, min=1, max=2, target=10.0,
                           metric="backend_reported",
                           reported={"path": "/agent", "header": "X-Load"},
                           actuator={"type": "process", "host": "127.0.0.1",
                                     "ports": f"{ports[0]}-{ports[1]}", "command": backend,
                                     "timeout": 20})
    address = env.balancer(**config)
    assert env.handle is not None
    view = Scaling(env.loop, redis_url, namespace, env.handle.snapshot.config.region)
    try:
        wait_for(lambda: view.pool().get("current") == 2, what="scale-out to 2")
        wait_for(lambda: view.pool().get("value") == pytest.approx(30.0),
                 what="the header's figure")
        scale_out = next(e for e in view.events() if e["type"] == "scale_out"
                         and e["to"] == 2)
        assert "backend_reported" in scale_out["reason"]
        # The header is what the backends send to clients too (the balancer passes it).
        with connect(address) as client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, _ = read_response(client)
        assert status == 200 and headers["x-load"] == "30.0"
    finally:
        view.close()


def spill_document() -> dict[str, Any]:
    """Clients go to eu first; the capacity filter spills them to us as eu fills."""
    return {"zones": {ORIGIN: ZONE}, "steering": {ORIGIN: {
        "regions": {"eu": {"latitude": 53.3, "longitude": -6.3},
                    "us": {"latitude": 38.9, "longitude": -77.4}},
        "pools": {"web": {"endpoints": [{"name": "eu-1", "region": "eu", "ipv4": "192.0.2.1"},
                                        {"name": "us-1", "region": "us",
                                         "ipv4": "198.51.100.1"}]}},
        "names": {"api": {"pool": "web", "ttl": 30, "filters": [
            {"type": "geo", "default": ["eu", "us"], "keep": 2},
            {"type": "capacity", "spill_below": 0.5}]}},
    }}}


class Held:
    """A backend that holds every request until released: a steady load in flight."""

    def __init__(self, env: Env):
        self.release = asyncio.Event()
        self.backend = env.recorder("held")
        self.backend.handler = self.handle

    async def handle(self, request: web.Request, body: bytes) -> web.StreamResponse:
        await self.release.wait()
        return web.Response(text="held\n")


def test_a_region_at_max_spills_new_clients_to_the_next_region(
        scaling: Scaled, redis_url: str) -> None:  # noqa: F811
    env, namespace, ports, state = scaling
    held = Held(env)
    config = scaled_config(redis_url, namespace, ports, state, min=1, max=3, target=100.0)
    config["region"] = "eu"
    config["report_interval"] = 0.1
    config["pools"][0]["backends"] = [held.backend.address]
    config["pools"][0]["max_connections"] = 4
    served = Served()
    feed = ServingFeed(served)
    health = HealthService(HealthSettings("spill", probe=False, coalesce=0.05), feed)
    feed.serve(compile_document(spill_document(), "test").zones)
    env.loop.run(health.start())
    clients: list[threading.Thread] = []
    view = None
    try:
        address = env.balancer(**config)
        assert env.handle is not None
        view = Scaling(env.loop, redis_url, namespace, "eu")
        wait_for(lambda: view.status().get("leader"), what="a leader")  # type: ignore[union-attr]
        # Three requests in flight on the one backend of max_connections 4.
        for _ in range(3):
            clients.append(threading.Thread(target=get_ok, args=(address,), daemon=True))
            clients[-1].start()
        wait_for(lambda: sum(b.active for b in env.handle.snapshot.pools["app"].backends)
                 == 3, what="three in flight")  # type: ignore[union-attr]
        # Below max the pool may grow: 3 of 4 + 8 more is not full; eu takes everyone.
        wait_for(lambda: headroom(served) == pytest.approx(0.75), what="eu's headroom")
        assert answered(served) == {"192.0.2.1"}
        # At max (an operator's bound): the region has what it has, 3 of 4 in flight.
        view.loop.run(view.store.set_settings("eu", "app", {"max": 1}))
        wait_for(lambda: headroom(served) == pytest.approx(0.25), what="eu at max")
        report = reports.REPORTS["eu"]
        assert report["scaling"]["pools_at_max"] == ["app"] and report["capacity"] == 4
        # 0.25 is half of spill_below: half the answers go to us now.
        variants = rotation_of(served.current, "api")
        assert answered(served) == {"192.0.2.1", "198.51.100.1"}
        share = sum("198.51.100.1" in v for v in variants) / len(variants)
        assert share == pytest.approx(0.5, abs=0.1), variants
    finally:
        env.loop.call(held.release.set)
        for client in clients:
            client.join(5)
        if view is not None:
            view.close()
        env.loop.run(health.stop())
        feed.close()
        reports.REPORTS.pop("eu", None)


def headroom(served: Served) -> float | None:
    """eu's headroom as the zones being served hold it (from its region report)."""
    if not served.swaps:
        return None
    return zone_of(served.current).state.region_state("eu").headroom


def rotation_of(zones: ZoneSet, name: str) -> list[frozenset[str]]:
    """Every answer the DNS server rotates through for ``name`` A."""
    result = answer(dns.name.from_text(name, dns.name.from_text(ORIGIN)), dns.rdatatype.A,
                    dns.rdataclass.IN, zones, SteerInput())
    return [frozenset(rd.to_text() for rrset in section for rd in rrset
                      if rrset.rdtype == dns.rdatatype.A)
            for section in result.variants or (result.answer,)]


def answered(served: Served) -> set[str]:
    return set().union(*rotation_of(served.current, "api"))
