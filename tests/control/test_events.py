"""The event stream (issue 17): what becomes an event, both sinks, the API's pages and long
poll, a Redis that hangs, and `gtm events` as a consumer group across a restart."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from gtm import metrics
from gtm.config.document import document_from_zone_dir
from gtm.control import events, postgres_store, sqlite_store
from gtm.control.events import EventLog, event_from_fields, new_event, stream_key
from gtm.control.plane import ControlSettings
from gtm.control.store import Store
from tests.control.conftest import REDIS_URL, running
from tests.control.harness import TcpRelay

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
STEERED = "gslb.example.test."


def region_down(reason: str) -> dict[str, Any]:
    """The document's state section with eu-west set down by hand (what `gtm steer` writes)."""
    return {STEERED: {"endpoints": {}, "regions": {
        "eu-west": {"health": "down", "headroom": None, "reason": reason}}}}


async def test_the_store_keeps_events_in_order_pages_filters_and_bounds_them(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_store, "EVENTS_KEPT", 4)
    monkeypatch.setattr(postgres_store, "EVENTS_KEPT", 4)
    await store.open()
    try:
        made = [new_event("health.flip" if i % 2 else "config.version", f"thing {i}",
                          {"n": i}, "tester", now=1000.0 + i) for i in range(6)]
        await store.add_events(made[:3])
        await store.add_events(made[3:])
        kept = await store.events(0, 100)
        # The newest 4 are kept, oldest first, exactly as made.
        assert [s.event for s in kept] == made[2:]
        first, second = await store.events(0, 2), await store.events(kept[1].cursor, 2)
        assert [s.event.id for s in first + second] == [e.id for e in made[2:]]
        flips = await store.events(0, 100, ("health.flip",))
        assert [s.event.subject for s in flips] == ["thing 3", "thing 5"]
        assert [s.event.subject for s in await store.events(0, 100, since=1004.0)] == \
            ["thing 4", "thing 5"]
        assert [s.event.subject for s in await store.last_events(2)] == ["thing 4", "thing 5"]
        assert [s.event.subject for s in await store.last_events(1, ("config.version",))] == \
            ["thing 4"]
    finally:
        await store.close()


@pytest.fixture
def with_redis(store_kind: str, tmp_path: Path, redis_url: str, namespace: str,
               request: pytest.FixtureRequest) -> ControlSettings:
    """A control plane with Redis, on SQLite and on PostgreSQL (store_kind's two runs)."""
    store_url = request.getfixturevalue("postgres_url") if store_kind == "postgres" else None
    return ControlSettings(port=0, state_dir=tmp_path / "control", redis_url=redis_url,
                           namespace=namespace, store_url=store_url)


async def stream_events(namespace: str) -> list[events.Event]:
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        entries = await client.xrange(stream_key(namespace))
    finally:
        await client.aclose()
    return [event_from_fields(fields) for _, fields in entries]


async def test_versions_hand_set_state_and_tokens_are_events_in_both_sinks(
        with_redis: ControlSettings) -> None:
    async with running(with_redis) as (plane, api):
        status, _, _ = await api.call("PUT", "/v1/config", {
            "document": document_from_zone_dir(REPO / "zones"), "message": "zones"}, if_match=0)
        assert status == 201
        status, _, _ = await api.call("PUT", "/v1/config/sections/state", {
            "value": region_down("drill"), "message": "eu-west out"}, if_match=1)
        assert status == 201
        status, made, _ = await api.call("POST", "/v1/tokens", {"name": "ops", "role": "viewer"})
        assert status == 201
        assert await plane.service.events.flush()

        status, body, _ = await api.call("GET", "/v1/events?tail=10")
        assert status == 200, body
        items = body["items"]
        assert [(e["type"], e["subject"]) for e in items] == [
            ("config.version", "version 1"), ("config.version", "version 2"),
            ("steer.region", "region gslb.example.test/eu-west"),
            ("token.create", f"token {made['id']}")]
        steer = items[2]
        assert steer["detail"]["before"] is None
        assert steer["detail"]["after"]["health"] == "down"
        assert steer["detail"]["version"] == 2 and steer["actor"].startswith("bootstrap-admin#")
        assert items[1]["detail"]["message"] == "eu-west out"
        assert set(items[0]) == {"id", "time", "type", "subject", "detail", "actor"}
        # The Redis stream holds the very same events, ids included.
        assert [e.public() for e in await stream_events(with_redis.namespace)] == items

        # Cursor pages go forward from where the last one ended, and filters apply.
        status, page, _ = await api.call("GET", "/v1/events?limit=2")
        status, rest, _ = await api.call("GET", f"/v1/events?after={page['next_cursor']}")
        assert [e["id"] for e in page["items"] + rest["items"]] == [e["id"] for e in items]
        status, only, _ = await api.call("GET", "/v1/events?type=steer.region&type=token.create")
        assert [e["type"] for e in only["items"]] == ["steer.region", "token.create"]


BALANCER = """[lb]
region = "eu-west"
admin = "127.0.0.1:0"
admin_token = "events-test-token"
[[lb.listeners]]
name = "web"
bind = "127.0.0.1:0"
pool = "web"
[[lb.pools]]
name = "web"
backends = ["127.0.0.1:1", "127.0.0.1:2"]
"""


async def test_a_balancer_beside_the_control_plane_publishes_its_admin_changes(
        with_redis: ControlSettings, tmp_path: Path) -> None:
    """`gtm up`'s wiring: the balancer gets gtm.control.events.publish from its caller."""
    from regional_lb.node import start_balancer

    config = tmp_path / "eu-west.toml"
    config.write_text(BALANCER)
    async with running(with_redis) as (plane, api):
        handle = await start_balancer(config, path=config, events=events.publish)
        try:
            admin = f"http://127.0.0.1:{handle.admin.port}"
            headers = {"Authorization": "Bearer events-test-token"}
            async with aiohttp.ClientSession(headers=headers) as session:
                for method, path, body in (
                        ("PATCH", "/pools/web/backends/127.0.0.1:1", {"weight": 5}),
                        ("POST", "/pools/web/backends/127.0.0.1:2/drain", None),
                        ("DELETE", "/pools/web/backends/127.0.0.1:2", None),
                        ("POST", "/pools/web/backends", {"address": "127.0.0.1:3"}),
                        ("POST", "/reload", None)):
                    async with session.request(method, admin + path, json=body) as reply:
                        assert reply.status < 300, await reply.text()
                # A refused change is no event.
                async with session.patch(admin + "/pools/web/backends/127.0.0.1:1",
                                         json={"weight": -1}) as reply:
                    assert reply.status == 400
        finally:
            await handle.stop(grace=0, deadline=1)
        assert await plane.service.events.flush()
        status, body, _ = await api.call(
            "GET", "/v1/events?" + "&".join(f"type=lb.{kind}" for kind in (
                "backend.change", "backend.drain", "backend.remove", "backend.add", "reload")))
        assert status == 200, body
        assert [(e["type"], e["subject"]) for e in body["items"]] == [
            ("lb.backend.change", "backend eu-west/web/127.0.0.1:1"),
            ("lb.backend.drain", "backend eu-west/web/127.0.0.1:2"),
            ("lb.backend.remove", "backend eu-west/web/127.0.0.1:2"),
            ("lb.backend.add", "backend eu-west/web/127.0.0.1:3"),
            ("lb.reload", "balancer eu-west")]
        change = body["items"][0]
        assert change["detail"] == {"region": "eu-west", "pool": "web",
                                    "address": "127.0.0.1:1", "changes": {"weight": 5}}
        assert change["actor"] == "lb-admin:eu-west"
        # And in the Redis stream, the same events.
        streamed = [e.public() for e in await stream_events(with_redis.namespace)]
        assert all(e in streamed for e in body["items"])


async def test_a_long_poll_returns_the_event_that_arrives_while_it_waits(
        with_redis: ControlSettings) -> None:
    async with running(with_redis) as (_plane, api):
        _, empty, _ = await api.call("GET", "/v1/events?wait=1")
        assert empty["items"] == [] and empty["next_cursor"] == "0"
        waiting = asyncio.create_task(api.call("GET", "/v1/events?after=0&wait=20"))
        await asyncio.sleep(0.2)  # let it be held (the answer is the same either way)
        status, _, _ = await api.call("PUT", "/v1/config/sections/lb", {"value": {}},
                                      if_match=0)
        assert status == 201
        status, body, _ = await asyncio.wait_for(waiting, 15)
        assert status == 200
        assert [e["type"] for e in body["items"]] == ["config.version"]
        assert body["next_cursor"] != "0"


@pytest.mark.parametrize(("query", "field"), [
    ("type=Bad!", "type"), ("after=-1", "after"), ("tail=5&after=1", "tail"),
    ("since=nan", "since"), ("wait=26", "wait"), ("limit=0", "limit"), ("tail=501", "tail"),
])
async def test_bad_event_queries_are_refused_naming_the_parameter(
        settings: ControlSettings, query: str, field: str) -> None:
    async with running(settings) as (_, api):
        status, body, _ = await api.call("GET", f"/v1/events?{query}")
        assert (status, body["error"]["field"]) == (400, field), body


async def test_a_hung_redis_holds_no_commit_and_the_store_still_gets_the_event(
        with_redis: ControlSettings) -> None:
    host_port = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    relay = TcpRelay((host, int(port)))
    failed = metrics.events_published.labels("redis", "failed")
    before = failed._value.get()
    try:
        settings = replace(with_redis, redis_url=relay.url(REDIS_URL))
        async with running(settings) as (plane, api):
            relay.freeze()  # accepts, never answers: every Redis call must time out
            status, _, _ = await api.call("PUT", "/v1/config/sections/lb", {"value": {}},
                                          if_match=0)
            assert status == 201  # the commit did not wait for the stream
            assert await plane.service.events.flush()
            _, body, _ = await api.call("GET", "/v1/events")
            assert [e["subject"] for e in body["items"]] == ["version 1"]
            assert failed._value.get() > before
            relay.thaw()
    finally:
        relay.close()


def consumer(namespace: str, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    with out.open("ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "gtm.cli", "events", "--group", "audit-tool", "--consumer",
             "c1", "--redis", REDIS_URL, "--namespace", namespace, "--json", *extra],
            stdout=sink, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_for_lines(path: Path, count: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while len(lines_of(path)) < count:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, f"{len(lines_of(path))} of {count} lines"
        time.sleep(0.05)


async def publish(log: EventLog, *subjects: str) -> list[str]:
    made = [log.publish("drill.step", subject, {"step": subject}, "tester") for subject in subjects]
    assert await log.flush()
    return [event.id for event in made if event is not None]


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    assert process.wait(10) == 0, process.communicate()[1]


async def test_a_consumer_group_reader_stopped_and_restarted_gets_every_event_once(
        redis_url: str, namespace: str, tmp_path: Path) -> None:
    log = EventLog(None, redis_url, namespace)
    out = tmp_path / "consumer.out"
    try:
        first = consumer(namespace, out)
        try:
            # The group exists once the reader is up: wait for it, then publish.
            client = aioredis.Redis.from_url(redis_url, decode_responses=True)
            deadline = time.monotonic() + 15
            while not await client.exists(stream_key(namespace)) or \
                    not await client.xinfo_groups(stream_key(namespace)):
                assert time.monotonic() < deadline and first.poll() is None
                await asyncio.sleep(0.05)
            ids = await publish(log, "a", "b", "c")
            await asyncio.to_thread(wait_for_lines, out, 3, first)
        finally:
            stop(first)
        ids += await publish(log, "d", "e")  # while no reader runs
        # One more is handed to c1 and never acked (a reader that died before printing).
        ids += await publish(log, "f")
        await client.xreadgroup("audit-tool", "c1", {stream_key(namespace): ">"}, count=1)
        ids += await publish(log, "g")
        second = consumer(namespace, out)
        try:
            await asyncio.to_thread(wait_for_lines, out, 7, second)
        finally:
            stop(second)
        printed = [line["id"] for line in lines_of(out)]
        assert printed == ids  # every event, once, in order
        pending = await client.xpending(stream_key(namespace), "audit-tool")
        assert pending["pending"] == 0  # all acked
        await client.aclose()
    finally:
        await log.close()
