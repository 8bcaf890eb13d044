"""One decision maker per region: the lease with fencing tokens (Redis, PostgreSQL and
SQLite alike), leader failover between two `gtm lb serve` processes (through Redis, and
through a PostgreSQL control plane's store without Redis), and predictive scaling from
a stored week of history."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gtm.scalestore import (
    Fenced,
    PostgresScaleStore,
    RedisScaleStore,
    ScaleStore,
    SqliteScaleStore,
)
from regional_lb.autoscale.actuators import ProcessActuator
from regional_lb.config_autoscale import ActuatorSpec
from tests.control.conftest import POSTGRES_URL, _reachable, _require
from tests.lb.conftest import Env
from tests.lb.process import LbProcess, free_port
from tests.lb.test_autoscale import (
    BACKEND,
    Scaling,
    count,
    free_range,
    get_ok,
    redis_url,  # noqa: F401 - the fixture
    scaled_config,
    wait_for,
)
from tests.lb.test_autoscale_policy import week_with_a_daily_peak

pytestmark = pytest.mark.integration


@pytest.fixture
def schema() -> Iterator[str]:
    """A namespace of this test alone: its PostgreSQL schema is dropped afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    if _reachable(POSTGRES_URL, 5432):
        from gtm.control.postgres_store import PostgresStore

        asyncio.run(PostgresStore(POSTGRES_URL, name).drop_schema())


def store_url(kind: str, request: pytest.FixtureRequest) -> str:
    """The server's URL (PostgreSQL: skipped loudly when unreachable, failed under CI)."""
    if kind == "postgres":
        _require(POSTGRES_URL, 5432, "PostgreSQL")
        return POSTGRES_URL
    return str(request.getfixturevalue("redis_url"))


def open_store(kind: str, request: pytest.FixtureRequest, schema: str,
               tmp_path: Path) -> ScaleStore:
    if kind == "redis":
        return RedisScaleStore(store_url(kind, request), f"t{uuid.uuid4().hex[:10]}")
    if kind == "postgres":
        return PostgresScaleStore(store_url(kind, request), schema)
    return SqliteScaleStore(tmp_path / "scale.db")


@pytest.mark.parametrize("kind", ["redis", "postgres", "sqlite"])
def test_a_stale_leaders_write_is_refused(kind: str, request: pytest.FixtureRequest,
                                          schema: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        store = open_store(kind, request, schema, tmp_path)
        try:
            first = await store.acquire("r", "a", 0.3)
            assert first is not None
            assert await store.acquire("r", "b", 0.3) is None  # one leader at a time
            assert await store.acquire("r", "a", 0.3) == first  # renewed, same term
            await store.fenced("r", first, layer={"app": {"127.0.0.1:1": {"state": "enabled"}}},
                               event={"type": "scale_out"})
            second = None
            while second is None:  # a waits (a pause, a partition): its lease runs out
                await asyncio.sleep(0.05)
                second = await store.acquire("r", "b", 0.3)
            assert second > first
            with pytest.raises(Fenced):
                await store.fenced("r", first, layer={}, event={"type": "scale_in"})
            # Nothing of the refused write landed.
            assert await store.layer("r") == {"app": {"127.0.0.1:1": {"state": "enabled"}}}
            assert [e["type"] for e in await store.events("r")] == ["scale_out"]
            assert await store.acquire("r", "a", 0.3) is None
            assert await store.leader("r") == ("b", second)
        finally:
            await store.close()

    asyncio.run(scenario())


def region_file(path: Path, port: int, store: str, namespace: str, member: str,
                ports: tuple[int, int], state: Path, control_plane: bool = False,
                size: int = 2, start_delay: float = 0.0) -> Path:
    """Two balancers of region "fo". ``control_plane``: the store is named as the control
    plane's (``[lb.tls] control_store``), not the scaler's own: it is chosen all the same."""
    where = (f'[lb.tls]\ncontrol_store = "{store}"\ncontrol_namespace = "{namespace}"\n'
             "[lb.autoscale]") if control_plane else \
        f'[lb.autoscale]\nstore = "{store}"\nnamespace = "{namespace}"'
    path.write_text(f"""
[lb]
region = "fo"
[lb.timeouts]
shutdown_grace = 0.0
{where}
member = "{member}"
interval = 0.2
lease = 1.5
state_dir = "{state}"
[[lb.listeners]]
bind = "127.0.0.1:{port}"
[[lb.pools]]
name = "app"
backends = []
retries = 0
[lb.pools.autoscale]
min = {size}
max = {size}
metric = "in_flight_per_backend"
target = 5
warmup = 0
[lb.pools.autoscale.actuator]
type = "process"
host = "127.0.0.1"
ports = "{ports[0]}-{ports[1]}"
command = ["{sys.executable}", "{BACKEND}", "--listen", "{{address}}",
           "--start-delay", "{start_delay}"]
timeout = 20
""")
    return path


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_leader_failover_takes_over_without_a_double_action(
        kind: str, request: pytest.FixtureRequest, schema: str, tmp_path: Path,
        env: Env) -> None:
    url, namespace = store_url(kind, request), schema
    ports = free_range(6)
    state = tmp_path / "scale"
    listen = {"a": free_port(), "b": free_port()}
    procs = {name: LbProcess(region_file(tmp_path / f"{name}.toml", port, url, namespace,
                                         name, ports, state, kind == "postgres"))
             for name, port in listen.items()}
    view = Scaling(env.loop, url, namespace, "fo")
    try:
        for name, proc in procs.items():
            proc.wait_serving(("127.0.0.1", listen[name]))
        wait_for(lambda: view.pool().get("current") == 2, timeout=20, what="two backends")
        leader = view.status()["leader"].split("/")[0]
        other = "b" if leader == "a" else "a"
        for name in listen:  # both balancers serve the scaler's backends
            wait_for(lambda n=name: get_ok(("127.0.0.1", listen[n])), what=f"{name} serving")
        procs[leader].signal(signal.SIGKILL)
        procs[leader].proc.wait(10)
        wait_for(lambda: view.status().get("leader", "").startswith(other + "/"),
                 timeout=15, what="a new leader")
        taken_over = view.status()["at"]
        # The new leader has decided a few times since: it finds the pool at its size.
        wait_for(lambda: view.status()["at"] > taken_over + 1.0, what="decisions")
        events = view.events()
        assert count(events, "scale_out") == 1, events
        assert view.pool()["current"] == 2
        assert get_ok(("127.0.0.1", listen[other]))
        if kind == "postgres":  # the control plane on that store, without Redis, sees it
            assert_control_plane_sees(env, url, namespace, other, tmp_path)
    finally:
        view.close()
        for proc in procs.values():
            proc.stop()
        spec = ActuatorSpec("process", ("x",), host="127.0.0.1", ports=ports)
        ProcessActuator(spec, state).stop_all_sync()


def pid_files(state: Path) -> dict[str, int]:
    """The process actuator's pid files: backend address -> pid."""
    return {path.stem.replace("_", ":"): int(path.read_text().split()[0])
            for path in (state / "processes").glob("*.pid")}


def test_a_leader_killed_in_the_middle_of_an_add_leaves_no_orphan(
        redis_url: str, schema: str, tmp_path: Path, env: Env) -> None:  # noqa: F811
    """The leader records its intent, starts a backend that is slow to come up, and is
    SIGKILLed before it can record it. The next leader replays the intent: the actuator
    answers the backend already started, which is recorded; no second one is started."""
    ports = free_range(6)
    state = tmp_path / "scale"
    listen = {"a": free_port(), "b": free_port()}
    procs = {name: LbProcess(region_file(tmp_path / f"{name}.toml", port, redis_url, schema,
                                         name, ports, state, size=1, start_delay=2.0))
             for name, port in listen.items()}
    view = Scaling(env.loop, redis_url, schema, "fo")
    try:
        # The actuator has started the backend (its pid file): the leader waits for it.
        started = wait_for(lambda: pid_files(state), timeout=20, what="a backend started")
        assert count(view.events(), "scale_out.begin") == 1
        leader = env.loop.run(view.store.leader("fo"))[0].split("/")[0]
        procs[leader].signal(signal.SIGKILL)
        procs[leader].proc.wait(10)
        assert count(view.events(), "scale_out") == 0  # it died before the outcome
        other = "b" if leader == "a" else "a"
        wait_for(lambda: view.pool().get("current") == 1 and
                 view.status()["leader"].startswith(other + "/"), timeout=20,
                 what="the orphan recorded by the new leader")
        wait_for(lambda: get_ok(("127.0.0.1", listen[other])), what="serving")
        taken_over = view.status()["at"]
        wait_for(lambda: view.status()["at"] > taken_over + 1.0, what="decisions")
        # One backend was ever started, and it is the one recorded and served.
        assert pid_files(state) == started
        layer = env.loop.run(view.store.layer("fo"))
        assert list(layer["app"]) == list(started)
        events = view.events()
        assert count(events, "scale_out.begin") == 1
        outcome = next(e for e in events if e["type"] == "scale_out")
        assert outcome["replayed"] is True and outcome["added"] == list(started)
        assert outcome["intent"] == next(e for e in events
                                         if e["type"] == "scale_out.begin")["intent"]
    finally:
        view.close()
        for proc in procs.values():
            proc.stop()
        spec = ActuatorSpec("process", ("x",), host="127.0.0.1", ports=ports)
        ProcessActuator(spec, state).stop_all_sync()


def assert_control_plane_sees(env: Env, url: str, namespace: str, leader: str,
                              tmp_path: Path) -> None:
    from gtm.control.plane import ControlSettings, start_control_plane
    from tests.lb.test_autoscale_api import api_get

    plane = env.loop.run(start_control_plane(ControlSettings(
        port=0, state_dir=tmp_path / "control", store_url=url, namespace=namespace)))
    try:
        status = api_get(plane, "/v1/scale?region=fo")["regions"]["fo"]
        assert status["leader"].startswith(leader + "/")
        assert status["pools"]["app"]["current"] == 2
        events = api_get(plane, "/v1/scale/history?region=fo")["events"]
        assert count(events, "scale_out") == 1
    finally:
        env.loop.run(plane.stop())


def predictive_config(redis: str, namespace: str, ports: tuple[int, int], mode: str,
                      backend: str, state: Path) -> dict[str, Any]:
    config = scaled_config(redis, namespace, ports, state, min=1, max=5,
                           metric="requests_per_backend", target=10.0,
                           predictive={"mode": mode, "buffer": 900})
    config["pools"][0]["backends"] = [backend]
    return config


def seed_history(view: Scaling) -> None:
    history = week_with_a_daily_peak(time.time(), peak_in=10, base=5.0, peak=40.0)
    view.loop.run(view.store.add_history(view.region, "app", history))


def test_forecast_only_reports_and_acts_on_nothing(redis_url: str, env: Env,  # noqa: F811
                                                   tmp_path: Path) -> None:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    backend = env.recorder("static")
    config = predictive_config(redis_url, namespace, free_range(6), "forecast_only",
                               backend.address, tmp_path)
    view = Scaling(env.loop, redis_url, namespace, config["region"])
    try:
        seed_history(view)
        env.balancer(**config)
        assert env.handle is not None
        scaler = env.handle.scaler
        wait_for(lambda: (view.pool().get("forecast") or {}).get("backends") == 4,
                 what="the forecast")
        seen = scaler.ticks
        wait_for(lambda: scaler.ticks >= seen + 10, what="ten more decisions")
        pool = view.pool()
        assert pool["current"] == 1 and pool["forecast"]["mode"] == "forecast_only"
        assert max(v for _, v in pool["forecast"]["points"]) == pytest.approx(40.0, rel=0.1)
        assert view.events() == []
    finally:
        view.close()


def test_forecast_and_scale_adds_capacity_before_the_peak(redis_url: str, env: Env,  # noqa: F811
                                                          tmp_path: Path) -> None:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    backend = env.recorder("static")
    ports = free_range(6)
    config = predictive_config(redis_url, namespace, ports, "forecast_and_scale",
                               backend.address, tmp_path)
    view = Scaling(env.loop, redis_url, namespace, config["region"])
    try:
        seed_history(view)
        env.balancer(**config)
        assert env.handle is not None
        # No load at all now: the peak is 10 minutes away, inside the 15-minute buffer.
        wait_for(lambda: view.pool().get("current") == 4, timeout=20, what="4 backends")
        events = view.events()
        assert "forecast needs 4" in next(e for e in events if e["type"] == "scale_out")[
            "reason"]
    finally:
        view.close()
        spec = ActuatorSpec("process", ("x",), host="127.0.0.1", ports=ports)
        ProcessActuator(spec, tmp_path).stop_all_sync()
