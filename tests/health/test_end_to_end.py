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
