"""Auto-scaling end to end: a balancer in this process, real backend processes started
and stopped by the process actuator, load over loopback, the scale store in Redis.

Settings are time-compressed (0.2 s ticks, windows and warm-up of a second or two).
Every wait is for a condition, with a deadline.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gtm.scalestore import ScaleStore, open_scale_store
from tests.control.conftest import REDIS_URL, _reachable
from tests.lb.conftest import Env, LoopThread, connect, read_response
from tests.lb.process import LoadLoop

BACKEND = str(Path(__file__).with_name("scale_backend.py"))
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url() -> str:
    if not _reachable(REDIS_URL, 6379):
        pytest.skip(f"Redis is not reachable at {REDIS_URL} (apt-get install redis-server)")
    return REDIS_URL


def wait_for(check: Callable[[], Any], timeout: float = 15.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or check}")


class Scaling:
    """The balancer's region in the store, as an operator's tools read it."""

    def __init__(self, loop: LoopThread, url: str, namespace: str, region: str):
        self.loop = loop
        self.region = region
        self.store = loop.run(_open(url, namespace))

    def status(self) -> dict[str, Any]:
        found: dict[str, Any] = self.loop.run(self.store.statuses()).get(self.region, {})
        return found

    def pool(self, name: str = "app") -> dict[str, Any]:
        pool: dict[str, Any] = self.status().get("pools", {}).get(name, {})
        return pool

    def events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.loop.run(self.store.events(self.region, 1000))
        return events

    def close(self) -> None:
        self.loop.run(self.store.close())


async def _open(url: str, namespace: str) -> ScaleStore:
    return open_scale_store(url, namespace)


def scaled_config(redis_url: str, namespace: str, ports: tuple[int, int], state: Path,
                  **policy: Any) -> dict[str, Any]:
    autoscale = {
        "min": 1, "max": 3, "metric": "in_flight_per_backend", "target": 2.0,
        "warmup": 0.5, "deregistration_delay": 10.0,
        "scale_out": {"window": 0, "backends": 4, "period": 1},
        "scale_in": {"window": 1.5, "backends": 2, "period": 0.5},
        "actuator": {"type": "process", "host": "127.0.0.1", "ports": f"{ports[0]}-{ports[1]}",
                     "command": [sys.executable, BACKEND, "--listen", "{address}",
                                 "--delay", "0.05"], "timeout": 20},
        **policy,
    }
    return {"region": f"r{namespace[-6:]}",
            "autoscale": {"store": redis_url, "namespace": namespace, "interval": 0.2,
                          "lease": 2.0, "state_dir": str(state)},
            "pools": [{"name": "app", "backends": [], "algorithm": "least_request",
                       "slow_start": 0.5, "retries": 0, "autoscale": autoscale}]}


def free_range(count: int) -> tuple[int, int]:
    """A run of ports free now (a race with other tests is possible, so the actuator also
    skips ports it cannot bind)."""
    import socket

    for _ in range(50):  # below the kernel's ephemeral range (32768-)
        base = 12000 + (uuid.uuid4().int % 800) * 10
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base, base + count - 1
    raise AssertionError("no free run of ports")


Scaled = tuple[Env, str, tuple[int, int], Path]


@pytest.fixture
def scaling(env: Env, redis_url: str, tmp_path: Path) -> Iterator[Scaled]:
    """The balancer's harness, a Redis namespace, a port range for the actuator and the
    state directory (the actuator's pid files: inside tmp_path, like everything)."""
    namespace = f"t{uuid.uuid4().hex[:10]}"
    ports = free_range(6)
    yield env, namespace, ports, tmp_path / "scale"
    # Whatever the test left running: the actuator's processes, by their pid files.
    if env.handle is not None and env.handle.scaler is not None:
        for actuator in env.handle.scaler.actuators.values():
            if hasattr(actuator, "stop_all_sync"):
                actuator.stop_all_sync()


def get_ok(address: tuple[str, int]) -> bool:
    with connect(address) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        return read_response(client)[0] == 200


def count(events: list[dict[str, Any]], kind: str) -> int:
    return sum(1 for e in events if e["type"] == kind)


def test_load_ramp_scales_out_then_in_without_a_failed_request(
        scaling: Scaled, redis_url: str) -> None:
    env, namespace, ports, state = scaling
    address = env.balancer(**scaled_config(redis_url, namespace, ports, state))
    assert env.handle is not None
    view = Scaling(env.loop, redis_url, namespace, env.handle.snapshot.config.region)
    try:
        # min = 1: the scaler starts the first backend itself.
        wait_for(lambda: view.pool().get("current") == 1, what="the first backend")
        wait_for(lambda: get_ok(address), what="serving")
        heavy = LoadLoop(address, clients=10)
        try:
            wait_for(lambda: view.pool().get("current") == 3, what="scale-out to max")
            pool = view.pool()
            assert pool["at_max"] is True
            # Every backend the scaler added serves requests (least_request spreads them).
            backends = {b.key for b in env.handle.snapshot.pools["app"].backends}
            assert len(backends) == 3
            wait_for(lambda: len(heavy.bodies) == 3, what=f"all three serving: {heavy.bodies} "
                     f"{backends} {heavy.failures[:3]}")
        finally:
            heavy.stop()
        light = LoadLoop(address, clients=1)
        try:
            wait_for(lambda: view.pool().get("current") == 1 and not view.pool()["draining"],
                     timeout=20, what="scale-in to 1")
            assert light.ok > 0
        finally:
            light.stop()
        assert heavy.failures == [] and light.failures == []
        events = view.events()
        assert count(events, "scale_in") >= 1 and count(events, "failed") == 0
        # The drained backends' processes are gone: the pool's one is the only one left.
        left = [b.key for b in env.handle.snapshot.pools["app"].backends]
        assert len(left) == 1
    finally:
        view.close()


def exec_actuator(tmp_path: Path, body: str, **spec: Any) -> dict[str, Any]:
    """An exec actuator: a script that logs each call (one line) and then runs ``body``."""
    script = tmp_path / "actuator.py"
    calls = tmp_path / "calls.log"
    script.write_text(f"import json, sys, time\nrequest = json.load(sys.stdin)\n"
                      f"open({str(calls)!r}, 'a').write(request['action'] + '\\n')\n{body}\n")
    return {"type": "exec", "argv": [sys.executable, str(script)], **spec}


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls.log"
    return path.read_text().split() if path.exists() else []


def test_a_failing_actuator_retries_with_backoff_and_the_pool_keeps_serving(
        scaling: Scaled, redis_url: str, tmp_path: Path) -> None:
    env, namespace, ports, state = scaling
    backend = env.recorder("static")
    config = scaled_config(redis_url, namespace, ports, state, min=2, actuator=exec_actuator(
        tmp_path, "print('boom', file=sys.stderr); sys.exit(3)", retries=2, timeout=5))
    config["pools"][0]["backends"] = [backend.address]
    address = env.balancer(**config)
    assert env.handle is not None
    view = Scaling(env.loop, redis_url, namespace, env.handle.snapshot.config.region)
    try:
        wait_for(lambda: count(view.events(), "failed") >= 2, what="two failed actions")
        events = view.events()
        failed = [e for e in events if e["type"] == "failed"]
        assert "exited with 3: boom" in failed[0]["error"]
        assert "failed 3 times" in failed[0]["error"]  # 1 try + 2 retries, then given up
        # No runaway: every action tried exactly 3 times; none ran while another did, and
        # the pool waits (backoff) before the next one.
        begun = count(view.events(), "scale_out.begin")
        assert len(calls(tmp_path)) <= 3 * begun
        assert view.pool()["backoff_until"] is not None
        assert [get_ok(address) for _ in range(20)] == [True] * 20
        assert [b.key for b in env.handle.snapshot.pools["app"].backends] == [backend.address]
    finally:
        view.close()


def test_a_slow_actuator_does_not_block_the_proxy(
        scaling: Scaled, redis_url: str, tmp_path: Path) -> None:
    env, namespace, ports, state = scaling
    backend = env.recorder("static")
    config = scaled_config(redis_url, namespace, ports, state, min=2, actuator=exec_actuator(
        tmp_path, "time.sleep(60)", retries=0, timeout=120))
    config["pools"][0]["backends"] = [backend.address]
    address = env.balancer(**config)
    assert env.handle is not None
    view = Scaling(env.loop, redis_url, namespace, env.handle.snapshot.config.region)
    try:
        wait_for(lambda: view.pool().get("acting") and calls(tmp_path), what="actuator call")
        # The actuator is still running (60 s): requests and the admin path go on.
        assert [get_ok(address) for _ in range(50)] == [True] * 50
        assert view.pool()["acting"] is True
        assert calls(tmp_path) == ["add"]
    finally:
        view.close()


def test_the_report_counts_room_to_grow_until_the_pool_is_at_max(
        scaling: Scaled, redis_url: str) -> None:
    """GTM interplay: a region below max is not full; at max its headroom is what it has,
    and falls with load (the capacity filter spills from there: tests/health)."""
    env, namespace, ports, state = scaling
    backend = env.recorder("static")
    config = scaled_config(redis_url, namespace, ports, state, min=1, max=3)
    config["pools"][0]["backends"] = [backend.address]
    config["pools"][0]["max_connections"] = 4
    env.balancer(**config)
    handle = env.handle
    assert handle is not None
    view = Scaling(env.loop, redis_url, namespace, handle.snapshot.config.region)
    try:
        wait_for(lambda: view.status().get("leader"), what="a leader")
        report = env.loop.call(handle.reporter.build)
        assert report["scaling"] == {"growth": 8, "pools_at_max": []}
        assert report["capacity"] == 12 and report["headroom"] == 1.0
        view.loop.run(view.store.set_settings(view.region, "app", {"max": 1}))
        wait_for(lambda: env.loop.call(handle.reporter.build)["scaling"]["pools_at_max"]
                 == ["app"], what="at max")
        report = env.loop.call(handle.reporter.build)
        assert report["capacity"] == 4 and report["scaling"]["growth"] == 0
        # Load at max: headroom falls to what is left of the one backend.
        pool = handle.snapshot.pools["app"]
        env.loop.call(lambda: setattr(pool.backends[0], "active", 3))
        assert env.loop.call(handle.reporter.build)["headroom"] == 0.25
        env.loop.call(lambda: setattr(pool.backends[0], "active", 0))
    finally:
        view.close()


def test_a_pool_that_had_no_backend_keeps_reporting_once_it_has_one(env: Env) -> None:
    """A bug found here: the region report compared latency buckets of an empty pool
    (none) with a pool's (14) and its task died, so reports stopped for good."""
    backend = env.recorder("b")
    env.balancer(backends=[])
    handle = env.handle
    assert handle is not None
    env.loop.call(handle.reporter.build)
    env.loop.run(handle.reload_with({"app": {backend.address: {"added": True}}}))
    report = env.loop.call(handle.reporter.build)
    assert report["backends_total"] == 1


class Receiver:
    """An HTTPS endpoint (a test CA's certificate) that checks every signature: the
    webhook actuator's side, and the notifications'."""

    def __init__(self, key: bytes, answer: Callable[[dict[str, Any]], dict[str, Any]]):
        self.key = key
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any], str | None]] = []  # path, body, key
        self.refused = 0
        self.runner: Any = None
        self.port = 0

    async def handle(self, request: Any) -> Any:
        from aiohttp import web

        from regional_lb.autoscale.actuators import verify

        body = await request.read()
        if not verify(self.key, body, request.headers.get("X-Gtm-Timestamp", ""),
                      request.headers.get("X-Gtm-Signature", "")):
            self.refused += 1
            return web.json_response({"error": "bad signature"}, status=401)
        data = json.loads(body)
        self.calls.append((request.path, data, request.headers.get("Idempotency-Key")))
        if request.path == "/notify":
            return web.json_response({})
        if sum(1 for c in self.calls if c[0] == "/scale") == 1:
            return web.json_response({"error": "try again"}, status=503)  # retried
        return web.json_response(self.answer(data))

    async def start(self, context: Any) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def test_webhook_actuator_and_notifications_are_signed_and_retried(
        scaling: Scaled, redis_url: str, tmp_path: Path) -> None:
    import ssl

    from regional_lb.autoscale.actuators import sign, verify
    from tests.tls.pki import CA

    env, namespace, ports, state = scaling
    static, added = env.recorder("static"), env.recorder("added")
    ca = CA()
    chain, key, _ = ca.issue(["127.0.0.1"])
    (tmp_path / "server.pem").write_bytes(chain + key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.pem")
    secret = b"0123456789abcdef-webhook-secret"
    (tmp_path / "hook.key").write_bytes(secret)
    receiver = Receiver(secret, lambda request: {"added": [added.address], "removed": []})
    env.loop.run(receiver.start(context))
    base = f"https://127.0.0.1:{receiver.port}"
    config = scaled_config(redis_url, namespace, ports, state, min=2, actuator={
        "type": "webhook", "url": f"{base}/scale", "secret_file": str(tmp_path / "hook.key"),
        "ca": str(ca.write(tmp_path / "ca.pem")), "retries": 2, "timeout": 5})
    config["pools"][0]["backends"] = [static.address]
    config["autoscale"]["notify"] = {"url": f"{base}/notify",
                                     "secret_file": str(tmp_path / "hook.key"),
                                     "ca": str(tmp_path / "ca.pem")}
    address = env.balancer(**config)
    try:
        wait_for(lambda: get_ok(address) and len(added.requests) > 0,
                 what="the webhook's backend serving")
        scale_calls = [c for c in receiver.calls if c[0] == "/scale"]
        assert len(scale_calls) == 2  # a 503, then the retry
        assert scale_calls[0][2] == scale_calls[1][2] is not None  # one idempotency key
        request = scale_calls[1][1]
        assert (request["action"], request["count"], request["pool"]) == ("add", 1, "app")
        assert request["current"] == [static.address] and request["desired"] == 2
        wait_for(lambda: {c[1]["type"] for c in receiver.calls if c[0] == "/notify"}
                 >= {"scale_out.begin", "scale_out"}, what="notifications")
        assert receiver.refused == 0
    finally:
        env.loop.run(receiver.runner.cleanup())
    # A replayed or forged request is refused by verify(): old timestamp, other key.
    body = b'{"x": 1}'
    old = int(time.time()) - 400
    assert not verify(secret, body, str(old), sign(secret, body, old))
    now = int(time.time())
    assert verify(secret, body, str(now), sign(secret, body, now))
    assert not verify(b"another key of 16+ bytes", body, str(now), sign(secret, body, now))
