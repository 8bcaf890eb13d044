"""Backend health at the balancer: active checks, passive ejection, panic mode (issue 6).

Real backends on loopback that die (connections refused), return 500, hang, and come
back on the same port; a real balancer in the harness's event loop; bounded request
loops from plain blocking sockets. Timings are measured against interval x fall.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from gtm import metrics
from gtm.errors import ConfigError
from regional_lb.admin import backend_view
from regional_lb.balancing import BackendState
from regional_lb.config import build_config

from .conftest import Env, exchange, status_of

GET = b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n"
TOLERANCE = 0.6  # seconds on top of a computed bound: scheduling, jitter, the poll step


class Flaky:
    """A keep-alive HTTP backend whose behaviour can change: ok, 500, hang, dead."""

    def __init__(self, name: str):
        self.name = name
        self.mode = "ok"
        self.port = 0
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.hits = 0  # requests other than health checks
        self.checks = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def kill(self) -> None:
        """Dead: the listener goes and every open connection is reset."""
        if self.server is not None:
            self.server.close()
            self.server = None
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if head.startswith(b"GET /healthz"):
                    self.checks += 1
                else:
                    self.hits += 1
                if self.mode == "hang":
                    await asyncio.sleep(3600)
                if self.mode == "slow" and not head.startswith(b"GET /healthz"):
                    await asyncio.sleep(0.05)
                status = 500 if self.mode == "500" else 200
                body = self.name.encode()
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nX-Backend: %s\r\n\r\n%s"
                             % (status, len(body), body, body))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    async def stop(self) -> None:
        await self.kill()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def flaky(env: Env, count: int) -> list[Flaky]:
    backends = [Flaky(f"b{i}") for i in range(count)]
    for backend in backends:
        env.loop.run(backend.start())
        env.backends.append(backend)  # type: ignore[arg-type]  # Env.close() calls stop()
    return backends


def states(env: Env, pool: str = "app") -> tuple[BackendState, ...]:
    assert env.handle is not None
    return env.loop.call(lambda: env.handle.snapshot.pools[pool].backends)  # type: ignore[union-attr]


def wait_until(env: Env, condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until condition() (run in the balancer's loop) holds; fails after timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if env.loop.call(condition):
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"not within {timeout} s")


def ejections(backend: BackendState) -> int:
    assert backend.monitor is not None
    return backend.monitor.ejections


def ejection_seconds(backend: BackendState) -> float:
    """How long the backend's current (or last) ejection lasts."""
    monitor = backend.monitor
    assert monitor is not None and monitor.ejected_until is not None
    return monitor.ejected_until - monitor.ejected_at


def get(address: tuple[str, int]) -> tuple[int, str]:
    response = exchange(address, GET, timeout=3.0)
    return status_of(response), response.rpartition(b"\r\n\r\n")[2].decode()


CHECK: dict[str, Any] = {"type": "http", "path": "/healthz", "interval": 0.5, "timeout": 0.3,
                         "rise": 2, "fall": 2, "fastinter": 0.2}


# -- active checks ------------------------------------------------------------------------
def test_dead_backend_removed_within_interval_x_fall_and_back_through_slow_start(
        env: Env) -> None:
    backends = flaky(env, 3)
    address = env.balancer([b.address for b in backends],
                           pool={"check": CHECK, "algorithm": "weighted_round_robin",
                                 "slow_start": 2.0})
    dead = states(env)[0]
    wait_until(env, lambda: dead.monitor is not None and dead.monitor.machine is not None
               and backends[0].checks >= 1, 2.0)
    env.loop.run(backends[0].kill())
    died = time.monotonic()
    elapsed = wait_until(env, lambda: not dead.healthy, 5.0)
    bound = CHECK["interval"] * CHECK["fall"]
    assert elapsed <= bound + TOLERANCE, (elapsed, bound)
    reason = env.loop.call(lambda: backend_view(dead)["health_reason"])
    assert "refused" in reason or "connect" in reason, reason
    print(f"death -> removal {time.monotonic() - died:.3f} s (bound {bound} s)")
    # While it is out, every request is served by the other two.
    served = Counter(get(address)[1] for _ in range(30))
    assert set(served) == {"b1", "b2"}, served

    env.loop.run(backends[0].start())  # back on the same port
    elapsed = wait_until(env, lambda: dead.healthy, 5.0)
    # rise = 2 successes: the first at the next probe (fastinter while changing), then one more.
    assert elapsed <= CHECK["interval"] + CHECK["fastinter"] * 2 + TOLERANCE, elapsed
    ramp = env.loop.call(lambda: (dead.since is not None,
                                  dead.effective_weight(env.loop.loop.time(), 2.0)))
    assert ramp[0] and ramp[1] < 1.0, ramp  # recovered through slow start
    view = env.loop.call(lambda: backend_view(dead))
    assert view["health"] == "up" and view["check"]["state"] == "up"
    served = Counter(get(address)[1] for _ in range(60))
    assert served["b1"] > served["b0"] > 0, served  # ramping: some traffic, less than peers


@pytest.mark.parametrize("mode", ["500", "hang"])
def test_failing_or_hanging_backend_detected(env: Env, mode: str) -> None:
    backends = flaky(env, 3)
    env.balancer([b.address for b in backends], pool={"check": CHECK})
    bad = states(env)[1]
    wait_until(env, lambda: backends[1].checks >= 1, 2.0)
    backends[1].mode = mode
    elapsed = wait_until(env, lambda: not bad.healthy, 5.0)
    # A hang costs the probe its timeout on each of the fall probes.
    bound = CHECK["interval"] * CHECK["fall"] + (CHECK["timeout"] * 2 if mode == "hang" else 0)
    assert elapsed <= bound + TOLERANCE, (elapsed, bound)
    view = env.loop.call(lambda: backend_view(bad))
    assert view["health"] == "down"
    assert ("500" in view["health_reason"]) if mode == "500" else \
        ("timeout" in view["health_reason"]), view
    before = metrics.REGISTRY.get_sample_value(
        "gtm_lb_backend_health_transitions_total",
        {"pool": "app", "cause": "check", "state": "down"})
    assert before is not None and before >= 1


def test_reload_follows_the_check_and_dropping_it_restores_health(env: Env) -> None:
    backends = flaky(env, 3)
    env.balancer([b.address for b in backends], pool={"check": CHECK})
    pool = states(env)
    wait_until(env, lambda: backends[0].checks >= 1, 2.0)
    env.loop.run(backends[0].kill())
    wait_until(env, lambda: not pool[0].healthy, 3.0)
    assert env.handle is not None
    base = env.handle.base
    faster = build_config({"listeners": [{"name": "web", "bind": "127.0.0.1:0"}], "pools": [
        {"name": "app", "backends": [b.address for b in backends],
         "check": {**CHECK, "interval": 0.3, "timeout": 0.2}}]}, "test")
    env.loop.run(env.handle.reload(dataclasses.replace(faster, listeners=base.listeners)))
    # A changed check keeps the verdict: the dead backend does not come back for a moment.
    wait_until(env, lambda: pool[0].monitor is not None and pool[0].monitor.check is not None
               and pool[0].monitor.check.interval == 0.3, 1.0)
    assert env.loop.call(lambda: not pool[0].healthy)
    env.loop.run(backends[0].start())  # and the new check brings it back
    wait_until(env, lambda: pool[0].healthy, 0.3 * 1.1 + 0.2 * 2 + TOLERANCE)
    plain = build_config({"listeners": [{"name": "web", "bind": "127.0.0.1:0"}], "pools": [
        {"name": "app", "backends": [b.address for b in backends], "outlier": False}]}, "test")
    env.loop.run(env.handle.reload(dataclasses.replace(plain, listeners=base.listeners)))
    wait_until(env, lambda: pool[0].healthy and pool[0].monitor is None, 1.0)


# -- passive outlier detection ------------------------------------------------------------
def test_passive_ejection_bounded_by_max_ejection_percent_and_growing(env: Env) -> None:
    backends = flaky(env, 4)
    for backend in backends[:3]:
        backend.mode = "500"
    address = env.balancer(
        [b.address for b in backends],
        pool={"outlier": {"consecutive_5xx": 3, "base_ejection": 1.0, "max_ejection_percent": 50},
              "panic_below": 0.0})
    pool = states(env)
    held = metrics.REGISTRY.get_sample_value(
        "gtm_lb_outlier_ejections_total", {"pool": "app", "kind": "5xx", "result": "held"}) or 0
    most = 0
    for _ in range(60):  # a bounded loop of real requests
        get(address)
        out = env.loop.call(lambda: sum(1 for b in pool if not b.healthy))
        most = max(most, out)
    assert most == 2  # of 4 backends, 50 %: never the third bad one
    ejected = [b for b in pool if not b.healthy]
    assert all(b.port != backends[3].port for b in ejected)
    assert (metrics.REGISTRY.get_sample_value(
        "gtm_lb_outlier_ejections_total", {"pool": "app", "kind": "5xx", "result": "held"})
        or 0) > held
    view = env.loop.call(lambda: backend_view(ejected[0]))
    assert view["ejection"] is not None and "5xx" in view["ejection"]["reason"]

    first = ejected[0]
    assert first.monitor is not None
    assert env.loop.call(lambda: ejection_seconds(first)) == pytest.approx(1.0)
    # Its time is up: back through slow start; still failing, it is ejected for twice as long.
    wait_until(env, lambda: first.healthy, 2.0)
    for _ in range(40):
        get(address)
        if env.loop.call(lambda: ejections(first) >= 2 and not first.healthy):
            break
    second = env.loop.call(lambda: (ejections(first), ejection_seconds(first)))
    assert second[0] == 2 and second[1] == pytest.approx(2.0), second


def test_gateway_errors_eject_dead_and_hanging_backends(env: Env) -> None:
    backends = flaky(env, 4)
    address = env.balancer(
        [b.address for b in backends],
        pool={"outlier": {"consecutive_gateway": 2, "consecutive_5xx": 0,
                          "base_ejection": 5.0, "max_ejection_percent": 50}},
        timeouts={"backend_response": 0.3, "shutdown_grace": 0.0})
    pool = states(env)
    env.loop.run(backends[0].kill())
    backends[1].mode = "hang"
    statuses: Counter[int] = Counter()
    for _ in range(40):
        statuses[get(address)[0]] += 1
    assert env.loop.call(lambda: [b.healthy for b in pool]) == [False, False, True, True]
    reasons = env.loop.call(lambda: [backend_view(b)["health_reason"] for b in pool[:2]])
    assert all("gateway" in r for r in reasons), reasons
    # Once both are out every request succeeds; before, retries covered the refusals.
    tail = [get(address)[0] for _ in range(10)]
    assert tail == [200] * 10, (tail, statuses)


def test_latency_outlier_ejected(env: Env) -> None:
    backends = flaky(env, 4)
    backends[2].mode = "slow"  # 50 ms a response, the others answer at once
    address = env.balancer(
        [b.address for b in backends],
        pool={"outlier": {"latency_factor": 5.0, "latency_min_requests": 4,
                          "latency_window": 0.5, "base_ejection": 5.0}})
    pool = states(env)
    for _ in range(100):  # bounded; stops once the slow one is out
        get(address)
        if not env.loop.call(lambda: pool[2].healthy):
            break
    assert env.loop.call(lambda: [b.healthy for b in pool]) == [True, True, False, True]
    reason = env.loop.call(lambda: backend_view(pool[2])["health_reason"])
    assert "latency" in reason, reason


# -- panic ----------------------------------------------------------------------------------
def test_panic_mode_balances_over_all_when_too_few_are_healthy(env: Env) -> None:
    backends = flaky(env, 4)
    address = env.balancer([b.address for b in backends],
                           pool={"check": CHECK, "panic_below": 0.5})
    pool = states(env)
    entries = metrics.REGISTRY.get_sample_value(
        "gtm_lb_pool_panic_entries_total", {"pool": "app"}) or 0
    wait_until(env, lambda: all(b.checks >= 1 for b in backends), 2.0)
    backends[0].mode = "500"  # 3 of 4 healthy: no panic, b0 taken out
    wait_until(env, lambda: not pool[0].healthy, 3.0)
    served = Counter(get(address)[1] for _ in range(12))
    assert "b0" not in served and not env.loop.call(lambda: pool[0].panic)
    backends[1].mode = backends[2].mode = "500"  # 1 of 4 healthy: below half
    wait_until(env, lambda: sum(b.healthy for b in pool) == 1, 3.0)
    assert env.loop.call(lambda: all(b.panic and b.up for b in pool))
    served = Counter(get(address)[1] for _ in range(40))
    assert set(served) == {"b0", "b1", "b2", "b3"}, served  # all of them, as Envoy
    assert metrics.REGISTRY.get_sample_value(
        "gtm_lb_pool_panic_entries_total", {"pool": "app"}) == entries + 1  # once per entry
    assert metrics.REGISTRY.get_sample_value("gtm_lb_pool_panic", {"pool": "app"}) == 1
    report = env.loop.call(lambda: env.handle.reporter.build())  # type: ignore[union-attr]
    assert report["backends_up"] == 1  # the region report counts the healthy, not the panic
    for backend in backends[:3]:
        backend.mode = "ok"
    wait_until(env, lambda: not any(b.panic for b in pool), 4.0)
    assert metrics.REGISTRY.get_sample_value("gtm_lb_pool_panic", {"pool": "app"}) == 0


# -- config ---------------------------------------------------------------------------------
def _config(pool: dict[str, Any]) -> Any:
    return build_config({"listeners": [{"bind": "127.0.0.1:0"}],
                         "pools": [{"name": "app", "backends": ["127.0.0.1:9"], **pool}]},
                        "lb.toml")


def test_config_health_keys() -> None:
    config = _config({"check": {"type": "tcp"}, "outlier": {"consecutive_5xx": 4},
                      "panic_below": 0.25})
    pool = config.pools[0]
    assert pool.check is not None and pool.check.type == "tcp" and pool.check.port is None
    assert pool.outlier is not None and pool.outlier.consecutive_5xx == 4
    assert pool.outlier.max_ejection_percent == 50 and pool.panic_below == 0.25
    plain = _config({}).pools[0]
    assert plain.check is None and plain.panic_below == 0.5
    # Passive ejection on gateway errors is on by default, 5xx counting is not.
    assert plain.outlier is not None and plain.outlier.consecutive_gateway == 3
    assert plain.outlier.consecutive_5xx == 0
    assert _config({"outlier": False}).pools[0].outlier is None


@pytest.mark.parametrize(("pool", "where", "reason"), [
    ({"check": {"type": "dns"}}, "lb.pools[0].check.type", "tcp, http, https"),
    ({"check": {"type": "http", "fall": 0}}, "lb.pools[0].check.fall", "1"),
    ({"check": {"type": "http", "timeout": 3.0}}, "lb.pools[0].check.timeout", "interval"),
    ({"check": {"type": "http", "bogus": 1}}, "lb.pools[0].check.bogus", "unknown key"),
    ({"outlier": {"max_ejection_percent": 150}}, "lb.pools[0].outlier.max_ejection_percent",
     "0 to 100"),
    ({"outlier": {"surprise": 1}}, "lb.pools[0].outlier.surprise", "unknown key"),
    ({"outlier": {"base_ejection": 10.0, "max_ejection": 5.0}},
     "lb.pools[0].outlier.max_ejection", "base_ejection"),
    ({"panic_below": 2}, "lb.pools[0].panic_below", "fraction"),
    ({"outlier": {"latency_factor": 0.5}}, "lb.pools[0].outlier.latency_factor", "above 1"),
])
def test_config_health_errors_name_file_key_and_reason(pool: dict[str, Any], where: str,
                                                       reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(pool)
    error = caught.value
    assert error.source == "lb.toml" and error.where == where, (error.where, str(error))
    assert reason in str(error)
