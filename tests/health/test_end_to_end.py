"""End to end: a real `gtm serve --probe` process and endpoint processes killed by PID.

The steered name ``api`` prefers eu (127.0.1.1) and fails over to us (127.0.2.1).
Kill eu's server and the DNS answers must move within interval x fall + the
coalescing interval (+ tolerance for the probe itself and a loaded machine); bring
it back and they return after rise successes. TTLs do not enter: the test asks the
authoritative server itself, with no resolver cache in between.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.health.endpoint import EndpointProcess, free_port
from tests.health.helpers import ORIGIN, ZONE
from tests.integration.servers import GtmServer, ServerFactory

INTERVAL, FALL, RISE, COALESCE = 0.5, 2, 2, 0.2
TOLERANCE = 0.5


@pytest.fixture
def gtm_server(tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


def write_zones(directory: Path, port: int) -> Path:
    directory.mkdir()
    (directory / f"{ORIGIN.rstrip('.')}.zone").write_text(ZONE)
    check = (f'type = "http"\nport = {port}\npath = "/healthz"\ninterval = {INTERVAL}\n'
             f'timeout = 0.3\nrise = {RISE}\nfall = {FALL}\nfastinter = 0.25\n')
    steering = f"""
[regions.eu]
latitude = 53.3
longitude = -6.3
[regions.us]
latitude = 38.9
longitude = -77.4

[pools.web]
endpoints = [
  {{ name = "eu-1", region = "eu", ipv4 = "127.0.1.1" }},
  {{ name = "us-1", region = "us", ipv4 = "127.0.2.1" }},
]
[pools.web.check]
{check}
[names.api]
pool = "web"
[[names.api.filters]]
type = "failover"
groups = [["eu"], ["us"]]
"""
    (directory / f"{ORIGIN.rstrip('.')}.steering.toml").write_text(steering)
    return directory


def answer(server: GtmServer) -> set[str]:
    return server.addresses(f"api.{ORIGIN}")


def wait_answer(server: GtmServer, expected: str, timeout: float) -> float:
    start = time.monotonic()
    while answer(server) != {expected}:
        if time.monotonic() - start > timeout:
            raise AssertionError(f"answers still {answer(server)} after {timeout} s\n"
                                 f"{server.log()[-3000:]}")
        time.sleep(0.02)
    return time.monotonic() - start


def test_answers_move_when_the_endpoint_dies_and_return_when_it_is_back(
        gtm_server: ServerFactory, tmp_path: Path) -> None:
    port = free_port("127.0.1.1")
    eu = EndpointProcess("127.0.1.1", port).start()
    us = EndpointProcess("127.0.2.1", port).start()
    try:
        server = gtm_server(write_zones(tmp_path / "zones", port), extra=[
            "--probe", "--observer-id", "e2e", "--coalesce", str(COALESCE)])
        wait_answer(server, "127.0.1.1", 5)
        eu.kill()
        moved = wait_answer(server, "127.0.2.1", 5)
        assert moved <= INTERVAL * FALL + COALESCE + TOLERANCE, moved
        eu.start()
        back = wait_answer(server, "127.0.1.1", 5)
        assert back <= INTERVAL * RISE + COALESCE + TOLERANCE, back
        for _ in range(20):  # and it stays back: no flapping
            assert answer(server) == {"127.0.1.1"}
            time.sleep(0.05)
        assert "e2e" in server.log() or "eu-1" in server.log()
        assert "hc.test/eu-1: up -> down" in server.log()
    finally:
        eu.kill()
        us.kill()


def test_gtm_health_reads_the_summary_from_redis(
        gtm_server: ServerFactory, tmp_path: Path, redis_namespace: str) -> None:
    import subprocess
    import sys

    from tests.health.conftest import REDIS_URL

    port = free_port("127.0.1.1")
    us = EndpointProcess("127.0.2.1", port).start()  # eu has nothing: it goes down
    try:
        server = gtm_server(write_zones(tmp_path / "zones", port), extra=[
            "--probe", "--observer-id", "node-x", "--redis", REDIS_URL,
            "--namespace", redis_namespace])
        wait_answer(server, "127.0.2.1", 5)
        deadline = time.monotonic() + 8
        output = ""
        while time.monotonic() < deadline:
            run = subprocess.run([sys.executable, "-m", "gtm.cli", "health", "--redis",
                                  REDIS_URL, "--namespace", redis_namespace],
                                 capture_output=True, text=True, timeout=20)
            output = run.stdout
            if "connection refused" in output:
                break
            time.sleep(0.5)
        assert "node node-x" in output, output
        assert "hc.test/eu-1" in output and "down" in output and "connection refused" in output
        assert "seen by node-x" in output
    finally:
        us.kill()


def test_a_probing_node_following_the_control_plane_publishes_its_flips(
        gtm_server: ServerFactory, tmp_path: Path, redis_namespace: str) -> None:
    """`gtm serve --control ... --probe`, no `gtm up`: its flips reach the control plane's
    event store and the Redis stream, as `gtm up`'s do."""
    import asyncio

    import redis

    from gtm.config.document import document_from_zone_dir
    from gtm.control.events import event_from_fields, stream_key
    from gtm.control.plane import ControlSettings, start_control_plane
    from gtm.control.stores import store_from_url
    from tests.health.conftest import REDIS_URL

    port = free_port("127.0.1.1")
    settings = ControlSettings(port=0, state_dir=tmp_path / "control", namespace=redis_namespace,
                               seed_document=document_from_zone_dir(
                                   write_zones(tmp_path / "zones", port)))

    async def seed() -> None:  # the store's first version, then the API goes
        await (await start_control_plane(settings)).stop()

    asyncio.run(seed())
    store_url = settings.resolved_store_url()
    us = EndpointProcess("127.0.2.1", port).start()  # eu has nothing: it goes down
    try:
        server = gtm_server(None, extra=[
            "--control", store_url, "--state-dir", str(tmp_path / "node"),
            "--namespace", redis_namespace, "--redis", REDIS_URL,
            "--probe", "--observer-id", "node-x", "--coalesce", str(COALESCE)])
        wait_answer(server, "127.0.2.1", 5)

        async def stored_flips() -> list[dict[str, object]]:
            store = store_from_url(store_url, redis_namespace)
            await store.open()
            try:
                return [s.event.public() for s in await store.events(0, 100, ("health.flip",))]
            finally:
                await store.close()

        deadline = time.monotonic() + 10
        flips = asyncio.run(stored_flips())
        while not flips and time.monotonic() < deadline:
            time.sleep(0.1)
            flips = asyncio.run(stored_flips())
        assert flips, server.log()
        assert flips[0]["subject"] == "endpoint hc.test/eu-1"
        assert flips[0]["actor"] == "health:node-x"
        assert flips[0]["detail"]["to"] == "down"  # type: ignore[index]
        client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        streamed = [event_from_fields(fields).public()
                    for _, fields in client.xrange(stream_key(redis_namespace))]
        client.close()
        assert flips[0] in streamed
    finally:
        us.kill()
