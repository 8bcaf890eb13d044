"""`gtm lb serve --control`: a real balancer process takes its [lb] table from the control
plane's ``lb.<region>`` and follows its versions (issue 12). Real PostgreSQL, Redis,
demo backends and HTTP traffic through the balancer."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gtm.config.settings import Listen
from gtm.control.plane import ControlSettings
from regional_lb.demo import start_demo_backends
from tests.control.apiclient import Api
from tests.control.conftest import POSTGRES_URL, example_document, running
from tests.control.harness import TcpRelay, free_port
from tests.control.test_cli import gtm

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

ADMIN_TOKEN = "lb-test-token"


class Balancer:
    """One `gtm lb serve --control ... --region eu` process, stopped by its PID."""

    def __init__(self, store_url: str, namespace: str, state_dir: Path, *, workers: int = 1,
                 redis_url: str | None = None):
        args = [sys.executable, "-m", "gtm.cli", "lb", "serve", "--control", store_url,
                "--namespace", namespace, "--region", "eu", "--state-dir", str(state_dir),
                "--node-id", "lb-eu", "--reconcile-interval", "0.5", "--workers", str(workers)]
        if redis_url:
            args += ["--redis", redis_url]
        # The admin token is the balancer host's: the document holds no secret.
        token_file = state_dir.parent / f"{state_dir.name}.admin-token"
        token_file.write_text(ADMIN_TOKEN + "\n")
        args += ["--admin-token-file", str(token_file)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.lines: list[str] = []
        self.process = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                        stdin=subprocess.DEVNULL, text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=10)


@pytest.fixture
def balancers() -> Iterator[list[Balancer]]:
    started: list[Balancer] = []
    try:
        yield started
    finally:
        for balancer in started:
            balancer.stop()


def lb_table(port: int, backends: list[Any], admin_port: int | None = None) -> dict[str, Any]:
    table: dict[str, Any] = {
        "listeners": [{"name": "web", "bind": f"127.0.0.1:{port}", "pool": "web"}],
        "pools": [{"name": "web", "backends": backends, "outlier": False}],
    }
    if admin_port is not None:
        table |= {"admin": f"127.0.0.1:{admin_port}"}
    return table


@contextlib.asynccontextmanager
async def demo_backends() -> AsyncIterator[list[str]]:
    """Three demo backends; each answers "hello from <its address>"."""
    addresses = [Listen("127.0.0.1", free_port()) for _ in range(3)]
    runners = await start_demo_backends(addresses)
    try:
        yield [str(address) for address in addresses]
    finally:
        for runner in runners:
            await runner.cleanup()


async def answered_by(port: int, requests: int = 12) -> list[str]:
    """Which backends answer ``requests`` requests through the balancer (new connections,
    so each worker gets some); [] while it does not answer."""
    seen = []
    async with aiohttp.ClientSession() as session:
        for _ in range(requests):
            try:
                async with session.get(f"http://127.0.0.1:{port}/", headers={
                        "Connection": "close"}, timeout=aiohttp.ClientTimeout(total=2)) as reply:
                    text = await reply.text()
            except (aiohttp.ClientError, TimeoutError):
                return []
            match = re.fullmatch(r"hello from (\S+)\n", text)
            seen.append(match.group(1) if match else f"{reply.status}")
    return seen


async def wait_for_backends(port: int, wanted: set[str], balancer: Balancer,
                            timeout: float = 15.0) -> None:
    """Until the traffic goes to exactly ``wanted``: each of them answers, no other does."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        seen = await answered_by(port)
        if set(seen) == wanted:
            return
        if balancer.process.poll() is not None:
            break
        await asyncio.sleep(0.1)
    raise AssertionError(f"traffic went to {seen}, not {sorted(wanted)}\n{balancer.log()}")


async def admin(port: int, method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as session, session.request(
            method, f"http://127.0.0.1:{port}{path}", json=body,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as reply:
        assert reply.status < 300, await reply.text()
        return await reply.json()


async def admin_backends(port: int) -> dict[str, str]:
    pools = await admin(port, "GET", "/pools")
    return {b["address"]: b["state"] for b in pools["pools"][0]["backends"]}


async def set_lb(api: Api, base: int, table: dict[str, Any]) -> int:
    status, body, _ = await api.call("PUT", "/v1/config/sections/lb", {"value": {"eu": table}},
                                     if_match=base)
    assert status == 201, body
    return int(body["version"]["version"])


async def node_version(api: Api, node_id: str) -> tuple[int, str]:
    status, body, _ = await api.call("GET", "/v1/nodes")
    assert status == 200, body
    for node in body["items"]:
        if node["node_id"] == node_id:
            return int(node["version"]), str(node["kind"])
    return 0, ""


async def wait_for_node(api: Api, node_id: str, version: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reported, kind = await node_version(api, node_id)
        if reported >= version:
            return kind
        await asyncio.sleep(0.05)
    raise AssertionError(f"{node_id} never reported version {version}")


async def until(condition: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.05)


async def test_a_pool_changed_through_the_api_reaches_the_running_balancer(
    tmp_path: Path, postgres_url: str, redis_url: str, namespace: str,
    balancers: list[Balancer],
) -> None:
    async with demo_backends() as backends:
        await pool_changes_reach_the_balancer(tmp_path, postgres_url, redis_url, namespace,
                                              backends, balancers)


async def pool_changes_reach_the_balancer(
    tmp_path: Path, postgres_url: str, redis_url: str, namespace: str, backends: list[str],
    balancers: list[Balancer],
) -> None:
    a, b, c = backends
    port, admin_port = free_port(), free_port()
    settings = ControlSettings(port=0, state_dir=tmp_path / "control", store_url=postgres_url,
                               redis_url=redis_url, namespace=namespace,
                               seed_document={**example_document(),
                                              "lb": {"eu": lb_table(port, [a], admin_port)}})
    async with running(settings) as (plane, api):
        # Two forked workers: worker 0 follows, and every worker reloads from the file.
        balancer = Balancer(postgres_url, namespace, tmp_path / "lb", workers=2,
                            redis_url=redis_url)
        balancers.append(balancer)
        await wait_for_backends(port, {a}, balancer)

        version = await set_lb(api, 1, lb_table(port, [a, b], admin_port))
        await wait_for_backends(port, {a, b}, balancer)

        # A drain through the balancer's own admin API stays on top of later versions.
        await admin(admin_port, "PATCH", f"/pools/web/backends/{b}", {"state": "drain"})
        await wait_for_backends(port, {a}, balancer)

        # ... and is an event of the control plane, written through the balancer's store.
        async def drain_is_an_event() -> bool:
            status, body, _ = await api.call("GET", "/v1/events?type=lb.backend.change")
            assert status == 200, body
            return [(e["subject"], e["detail"]["changes"], e["actor"]) for e in
                    body["items"]] == [(f"backend eu/web/{b}", {"state": "drain"},
                                        "lb-admin:eu")]
        await until(drain_is_an_event, "the drain in the control plane's events")
        version = await set_lb(api, version, lb_table(port, [a, b, c], admin_port))
        await wait_for_backends(port, {a, c}, balancer)

        async def worker0_has_c() -> bool:
            return c in await admin_backends(admin_port)
        await until(worker0_has_c, "worker 0 serves the version with backend c")
        assert (await admin_backends(admin_port))[b] == "drain"
        live = (await admin(admin_port, "GET", "/pools"))["config_version"]

        # A version that leaves lb.eu as it was is followed, and reloads nothing.
        status, body, _ = await api.call("PUT", "/v1/config/zones/example.test.",
                                         {"text": example_document("192.0.2.9", 3)["zones"][
                                             "example.test."]}, if_match=version)
        assert status == 201, body
        version = int(body["version"]["version"])
        assert await wait_for_node(api, "lb-eu", version) == "lb"
        version = await set_lb(api, version, lb_table(port, [a, c], admin_port))

        async def worker0_without_b() -> bool:
            return b not in await admin_backends(admin_port)
        await until(worker0_without_b, "worker 0 serves the version without backend b")
        # One reload since `live`: the zone-only version caused none.
        assert (await admin(admin_port, "GET", "/pools"))["config_version"] == live + 1
        assert balancer.log().count("lb.eu changed in version") == 3, balancer.log()

        code, out, err = await gtm("status", "--api", plane.url, token=api.token)
        assert code == 0, err
        assert re.search(rf"lb-eu\s+lb\s+\w+\s+{version}\b", out), out
        assert balancer.stop() == 0, balancer.log()
        assert "Traceback" not in balancer.log(), balancer.log()


@pytest.fixture
def relay(postgres_url: str) -> Iterator[TcpRelay]:
    from urllib.parse import urlparse

    parsed = urlparse(postgres_url)
    relay = TcpRelay((parsed.hostname or "127.0.0.1", parsed.port or 5432))
    try:
        yield relay
    finally:
        relay.close()


async def test_without_the_store_a_restarted_balancer_serves_its_last_known_good_version(
    tmp_path: Path, namespace: str, relay: TcpRelay, balancers: list[Balancer],
) -> None:
    async with demo_backends() as (a, b, _):
        await restart_from_the_snapshot(tmp_path, namespace, relay, balancers, a, b)


async def restart_from_the_snapshot(tmp_path: Path, namespace: str, relay: TcpRelay,
                                    balancers: list[Balancer], a: str, b: str) -> None:
    port = free_port()
    settings = ControlSettings(port=0, state_dir=tmp_path / "control", store_url=POSTGRES_URL,
                               namespace=namespace,
                               seed_document={**example_document(),
                                              "lb": {"eu": lb_table(port, [a])}})
    through_relay = relay.url(POSTGRES_URL)
    async with running(settings) as (_plane, api):
        first = Balancer(through_relay, namespace, tmp_path / "lb")
        balancers.append(first)
        await wait_for_backends(port, {a}, first)
        version = await set_lb(api, 1, lb_table(port, [b]))
        await wait_for_backends(port, {b}, first)
        await wait_for_node(api, "lb-eu", version)
    # The API is stopped and the store unreachable: the balancer restarts from its snapshot.
    relay.cut()
    assert first.stop() == 0, first.log()
    second = Balancer(through_relay, namespace, tmp_path / "lb")
    balancers.append(second)
    await wait_for_backends(port, {b}, second)
    assert f"serving version {version} (from snapshot)" in second.log(), second.log()


async def test_a_bad_lb_table_is_refused_by_the_api_and_nothing_is_stored(
    settings: ControlSettings,
) -> None:
    good = lb_table(8080, ["127.0.0.1:9001"])
    async with running(settings) as (_plane, api):
        version = await set_lb(api, 0, good)
        bad = lb_table(8080, ["127.0.0.1:9001", "127.0.0.1"])
        status, body, _ = await api.call("PUT", "/v1/config/sections/lb",
                                         {"value": {"eu": good, "us": bad}}, if_match=version)
        assert status == 422, body
        assert body["error"]["field"] == "lb.us.pools[0].backends[1].address", body
        assert "needs a port" in body["error"]["message"]
        # The whole document the same way, with a table for a region under another name.
        status, body, _ = await api.call("PUT", "/v1/config", {"document": {
            "lb": {"eu": {**good, "region": "us"}}}}, if_match=version)
        assert status == 422, body
        assert body["error"]["field"] == "lb.eu.region", body
        status, body, _ = await api.call("GET", "/v1/config")
        assert body["version"] == version
        assert body["document"]["lb"] == {"eu": good}
