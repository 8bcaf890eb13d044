"""Outages, with real node processes: Redis stopped, PostgreSQL cut off, a node killed.

The shared servers are never touched: Redis is our own redis-server, and
PostgreSQL is reached through a relay that the test cuts.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from gtm.control.liveness import Liveness
from gtm.control.plane import ControlSettings
from tests.control.apiclient import Api
from tests.control.conftest import POSTGRES_URL, example_document, running
from tests.control.harness import (
    HEARING_REDIS,
    FrozenServer,
    Nodes,
    OwnRedis,
    TcpRelay,
    wait_for_answer,
    wait_for_log,
    www,
)
from tests.control.test_cli import gtm

pytestmark = pytest.mark.integration


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    group = Nodes(tmp_path / "nodes")
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def relay(postgres_url: str) -> Iterator[TcpRelay]:
    from urllib.parse import urlparse

    parsed = urlparse(postgres_url)
    relay = TcpRelay((parsed.hostname or "127.0.0.1", parsed.port or 5432))
    try:
        yield relay
    finally:
        relay.close()


async def put(api: Api, base: int, www_address: str) -> tuple[int, dict]:
    status, body, _ = await api.call(
        "PUT", "/v1/config", {"document": example_document(www_address, serial=base + 1)},
        if_match=base)
    return status, body


async def test_redis_stopped_nodes_converge_through_reconcile(
    tmp_path: Path, nodes: Nodes, own_redis: OwnRedis, namespace: str
) -> None:
    # The nodes follow the SQLite file: no NOTIFY between processes, so with Redis
    # down only the reconcile loop (every 1.5 s) can bring them the change.
    db = tmp_path / "control" / "gtm.db"
    settings = ControlSettings(port=0, state_dir=tmp_path / "control",
                               redis_url=own_redis.url, namespace=namespace)
    async with running(settings) as (_plane, api):
        assert (await put(api, 0, "192.0.2.1"))[0] == 201
        group = [nodes.start(f"n{i}", f"sqlite://{db}", namespace, redis_url=own_redis.url,
                             reconcile=1.5) for i in range(2)]
        for node in group:
            await wait_for_answer(node.port, "192.0.2.1", 10)
        for node in group:
            await wait_for_log(node, HEARING_REDIS, 1)
        assert (await put(api, 1, "192.0.2.2"))[0] == 201
        for node in group:  # with Redis: well before the next reconcile
            assert await wait_for_answer(node.port, "192.0.2.2", 5) < 1.0
        own_redis.stop()
        assert (await put(api, 2, "192.0.2.3"))[0] == 201  # a commit never waits on Redis
        for node in group:
            await wait_for_answer(node.port, "192.0.2.3", 6)
        own_redis.start()
        for node in group:  # resubscribed (backoff is at most 5 s, usually 0.2-1.6)
            await wait_for_log(node, HEARING_REDIS, 2, timeout=10)
        assert (await put(api, 3, "192.0.2.4"))[0] == 201
        for node in group:
            await wait_for_answer(node.port, "192.0.2.4", 6)


async def test_postgres_unreachable_nodes_serve_writes_503_then_converge(
    tmp_path: Path, nodes: Nodes, relay: TcpRelay, redis_url: str, namespace: str
) -> None:
    store_url = relay.url(POSTGRES_URL)
    settings = ControlSettings(port=0, state_dir=tmp_path / "control", store_url=store_url,
                               redis_url=redis_url, namespace=namespace)
    async with running(settings) as (_plane, api):
        assert (await put(api, 0, "192.0.2.1"))[0] == 201
        group = [nodes.start(f"n{i}", store_url, namespace, redis_url=redis_url,
                             reconcile=0.5) for i in range(2)]
        for node in group:
            await wait_for_answer(node.port, "192.0.2.1", 10)
        relay.cut()
        status, body = await put(api, 1, "192.0.2.2")
        assert status == 503 and "unavailable" in body["error"]["message"]
        for _ in range(10):  # through the outage, every node keeps answering
            for node in group:
                assert await www(node.port) == "192.0.2.1"
            await asyncio.sleep(0.2)
        relay.restore()
        for _ in range(50):
            status, body = await put(api, 1, "192.0.2.2")
            if status != 503:
                break
            await asyncio.sleep(0.2)
        assert status == 201, body
        for node in group:
            await wait_for_answer(node.port, "192.0.2.2", 10)
        # Each node records version 2 in the store as part of applying it; the answer
        # changes in the same step, so the row may trail it by that write alone.
        reported: dict[str, int] = {}
        for _ in range(50):
            status, reply, _ = await api.call("GET", "/v1/nodes")
            reported = {n["node_id"]: n["version"] for n in reply["items"]}
            if reported == {"n0": 2, "n1": 2}:
                break
            await asyncio.sleep(0.1)
        assert reported == {"n0": 2, "n1": 2}


async def test_killed_node_restarts_from_snapshot_with_both_servers_down(
    tmp_path: Path, nodes: Nodes, relay: TcpRelay, own_redis: OwnRedis, namespace: str
) -> None:
    store_url = relay.url(POSTGRES_URL)
    settings = ControlSettings(port=0, state_dir=tmp_path / "control", store_url=store_url,
                               redis_url=own_redis.url, namespace=namespace)
    async with running(settings) as (_plane, api):
        assert (await put(api, 0, "192.0.2.1"))[0] == 201
        assert (await put(api, 1, "192.0.2.7"))[0] == 201
        node = nodes.start("n0", store_url, namespace, redis_url=own_redis.url)
        await wait_for_answer(node.port, "192.0.2.7", 10)
        nodes.kill(node)
        relay.cut()
        own_redis.stop()
        again = nodes.start("n0", store_url, namespace, redis_url=own_redis.url)
        assert await wait_for_answer(again.port, "192.0.2.7", 5) < 2
        assert "serving version 2 (from snapshot)" in again.log()
        relay.restore()
        own_redis.start()
        for _ in range(50):
            status, _body = await put(api, 2, "192.0.2.8")
            if status != 503:
                break
            await asyncio.sleep(0.2)
        assert status == 201
        await wait_for_answer(again.port, "192.0.2.8", 10)


async def test_a_hanging_postgres_gives_503_with_the_reason(
    tmp_path: Path, relay: TcpRelay, namespace: str
) -> None:
    # A server that accepts and never answers: connected sessions and new ones hang alike.
    settings = ControlSettings(port=0, state_dir=tmp_path / "control",
                               store_url=relay.url(POSTGRES_URL), namespace=namespace,
                               store_timeout=1.0)
    async with running(settings) as (_plane, api):
        assert (await put(api, 0, "192.0.2.1"))[0] == 201
        relay.freeze()
        status, body = await put(api, 1, "192.0.2.2")
        assert status == 503, body
        assert "PostgreSQL did not answer within 1 s" in body["error"]["message"], body
        status, body, _ = await api.call("GET", "/v1/versions")
        assert status == 503 and "did not answer within 1 s" in body["error"]["message"], body
        relay.thaw()
        for _ in range(50):
            status, body = await put(api, 1, "192.0.2.2")
            if status != 503:
                break
            await asyncio.sleep(0.2)
        assert status == 201, body


async def until(condition: Callable[[], object], timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not true after {timeout} s")
        await asyncio.sleep(0.02)


async def test_a_frozen_redis_never_holds_up_a_commit(tmp_path: Path, namespace: str) -> None:
    frozen = FrozenServer()
    # Redis calls may wait 60 s here, far longer than this test waits for anything: a
    # commit that waited on Redis could not return while Redis still sits on the call.
    settings = ControlSettings(port=0, state_dir=tmp_path / "control", namespace=namespace,
                               redis_url=frozen.url("redis"), redis_timeout=60.0)
    try:
        async with running(settings) as (_plane, api):
            commit = asyncio.create_task(put(api, 0, "192.0.2.1"))
            await until(frozen.holding, 10)  # the announcement reached Redis, which hangs
            status, body = await asyncio.wait_for(commit, 10)
            assert status == 201, body
            assert frozen.holding()  # still unanswered: the commit returned without it
            status, body = await put(api, 1, "192.0.2.2")
            assert status == 201, body
            _, config, _ = await api.call("GET", "/v1/config")
            assert config["version"] == 2 and frozen.holding()
    finally:
        frozen.close()


async def node_states(api: Api, query: str = "") -> dict[str, str]:
    _, reply, _ = await api.call("GET", f"/v1/nodes{query}")
    return {item["node_id"]: item.get("state", "?") for item in reply["items"]}


async def until_state(api: Api, node: str, expected: str | None, timeout: float,
                      query: str = "") -> None:
    """Until ``node`` is listed in ``expected`` state (None: not listed)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (state := (await node_states(api, query)).get(node)) != expected:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{node} is {state}, not {expected}, after {timeout} s")
        await asyncio.sleep(0.1)


async def test_a_stopped_node_turns_stale_then_gone(
    tmp_path: Path, nodes: Nodes, namespace: str
) -> None:
    db = tmp_path / "control" / "gtm.db"
    settings = ControlSettings(port=0, state_dir=tmp_path / "control", namespace=namespace,
                               liveness=Liveness(gone_after=300.0))
    async with running(settings) as (plane, api):
        assert (await put(api, 0, "192.0.2.1"))[0] == 201
        # Both report every 0.5 s; three missed reports make a node stale.
        kept, stopped = (nodes.start(name, f"sqlite://{db}", namespace, reconcile=0.5)
                         for name in ("kept", "stopped"))
        for name in ("kept", "stopped"):
            await until_state(api, name, "live", 10)
        nodes.kill(stopped)
        await until_state(api, "stopped", "stale", 10)
        await until_state(api, "kept", "live", 10)
        code, out, err = await gtm("status", token=api.token, api=plane.url)
        assert code == 0 and re.search(r"^stopped +dns +stale ", out, re.M), out + err
        assert re.search(r"^kept +dns +live ", out, re.M), out
        # Silent for longer than gone_after (its last report made an hour old): gone.
        [report] = [n for n in await plane.store.nodes() if n.node_id == "stopped"]
        await plane.store.report_node(replace(report, last_contact=time.time() - 3600))
        await until_state(api, "stopped", None, 10)
        await until_state(api, "stopped", "gone", 10, "?all=true")
        code, out, _ = await gtm("status", token=api.token, api=plane.url)
        assert "stopped" not in out and "1 gone node not shown" in out, out
        code, out, _ = await gtm("status", "--all", token=api.token, api=plane.url)
        assert re.search(r"^stopped +dns +gone ", out, re.M) and kept.process.poll() is None


async def test_a_commit_whose_connection_drops_after_commit_keeps_its_audit_and_answer(
    tmp_path: Path, relay: TcpRelay, namespace: str
) -> None:
    settings = ControlSettings(port=0, state_dir=tmp_path / "control",
                               store_url=relay.url(POSTGRES_URL), namespace=namespace)
    async with running(settings) as (plane, api):
        assert (await put(api, 0, "192.0.2.1"))[0] == 201
        document = {"document": example_document("192.0.2.2", serial=2), "message": "two"}
        # PostgreSQL commits version 2; the answer to COMMIT never gets back to the API.
        # (That COMMIT: on the connection that sent the document; the event log's
        # writer commits on its own.)
        relay.swallow_reply_to(b"COMMIT", after=b"192.0.2.2")
        status, body, _ = await api.call("PUT", "/v1/config", document, if_match=1,
                                         headers={"Idempotency-Key": "change-2"})
        assert relay.swallowed.is_set() and status == 503, body
        stored = await plane.store.get(2)
        assert stored is not None and stored.message == "two"
        audit = [(e.action, e.target, e.outcome) for e in await plane.store.audit(None, 50)]
        assert ("config.commit", "version 2", "ok") in audit
        # The client retries with the same key and learns what happened.
        status, body, headers = await api.call("PUT", "/v1/config", document, if_match=1,
                                                headers={"Idempotency-Key": "change-2"})
        assert status == 201 and body["version"]["version"] == 2, body
        assert headers["ETag"] == '"2"' and headers["Idempotent-Replayed"] == "true"
        assert await plane.store.head() == 2
