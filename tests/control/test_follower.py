"""The follower in-process: announcements, reconcile, snapshot, bad versions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from gtm.config.document import CompiledConfig, canonical_json, digest
from gtm.control.fanout import RedisFanout
from gtm.control.follower import ConfigFollower, FollowerSettings
from gtm.control.service import ConfigService
from gtm.control.snapshot import read_snapshot, snapshot_path
from gtm.control.sqlite_store import SqliteStore
from gtm.control.store import NewVersion, NodeStatus, Store
from tests.control.conftest import POSTGRES_URL, example_document


class Served:
    """What an apply callback saw: (version, www address) in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, str]] = []

    async def __call__(self, version: int, compiled: CompiledConfig) -> None:
        [zone] = compiled.zones.zones.values()
        www = next(k for k in zone.nodes if k and k[0] == b"www")
        self.seen.append((version, zone.nodes[www][1][0].address))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not true after {timeout} s"
        await asyncio.sleep(0.01)


def settings(tmp_path: Path, **extra: object) -> FollowerSettings:
    values: dict[str, object] = {"node_id": "n1", "state_dir": tmp_path / "node",
                                 "reconcile_interval": 30.0, "first_sync_timeout": 2.0}
    values.update(extra)
    return FollowerSettings(**values)  # type: ignore[arg-type]


async def test_announced_versions_are_served_and_snapshotted(store: Store, tmp_path: Path,
                                                             store_kind: str) -> None:
    await store.open()
    service = ConfigService(store)
    await service.propose(example_document("192.0.2.1"), 0, "t", "one")
    served = Served()
    # SQLite: the same store object (in-process announcements); PostgreSQL: a store of
    # the follower's own, told by NOTIFY. Reconcile is 30 s, so only announcements work.
    if store_kind == "sqlite":
        follower = ConfigFollower(settings(tmp_path), served, store)
    else:
        ns = store.namespace  # type: ignore[attr-defined]
        follower = ConfigFollower(settings(tmp_path, store_url=POSTGRES_URL, namespace=ns),
                                  served)
    try:
        await follower.start()
        assert served.seen == [(1, "192.0.2.1")]
        await until(lambda: follower.store_subscribed)  # the first tick subscribes
        started = time.monotonic()
        await service.propose(example_document("192.0.2.2"), 1, "t", "two")
        await follower.wait_for_version(2, timeout=5)
        assert time.monotonic() - started < 2
        assert served.seen[-1] == (2, "192.0.2.2")
        snapshot = read_snapshot(tmp_path / "node")
        assert snapshot is not None and snapshot.version == 2
        [node] = await store.nodes()
        assert (node.node_id, node.version) == ("n1", 2)
    finally:
        await follower.stop()
        await store.close()


class SlowReports(SqliteStore):
    """A real SQLite store whose node reports take a while to land, like a busy
    PostgreSQL: the window in which `gtm status` could lag what the node serves."""

    async def report_node(self, status: NodeStatus) -> None:
        await asyncio.sleep(0.3)
        await super().report_node(status)


async def test_a_served_version_is_already_in_the_node_row(tmp_path: Path) -> None:
    # The node row is written as part of applying a version, before the follower says
    # it serves it: `gtm status` never shows a node a version behind what it answers.
    store = SlowReports(tmp_path / "gtm.db")
    await store.open()
    service = ConfigService(store)
    await service.propose(example_document("192.0.2.1"), 0, "t", "one")
    follower = ConfigFollower(settings(tmp_path), Served(), store)
    try:
        await follower.start()
        await follower.wait_for_version(1, timeout=5)
        await service.propose(example_document("192.0.2.2"), 1, "t", "two")
        await follower.wait_for_version(2, timeout=5)
        [node] = await store.nodes()
        assert (node.node_id, node.version) == ("n1", 2)
    finally:
        await follower.stop()
        await store.close()


async def test_redis_announcements_reach_a_follower_of_another_store(
    tmp_path: Path, redis_url: str, namespace: str
) -> None:
    # Two SqliteStore objects on one file: no in-process announcements between them,
    # and reconcile is 30 s, so only Redis can deliver the change quickly.
    path = tmp_path / "gtm.db"
    writer = SqliteStore(path)
    await writer.open()
    fanout = RedisFanout(redis_url, namespace)
    service = ConfigService(writer, fanout)
    await service.propose(example_document("192.0.2.1"), 0, "t", "one")
    served = Served()
    follower = ConfigFollower(
        settings(tmp_path, store_url=f"sqlite://{path}", redis_url=redis_url,
                 namespace=namespace), served)
    try:
        await follower.start()
        await until(lambda: follower.redis_subscribed)
        await service.propose(example_document("192.0.2.3"), 1, "t", "two")
        await follower.wait_for_version(2, timeout=3)
        assert served.seen[-1] == (2, "192.0.2.3")
        reported = {s.node_id: s.version for s in await fanout.nodes()}
        assert reported == {"n1": 2}
    finally:
        await follower.stop()
        await fanout.close()
        await writer.close()


async def test_reconcile_alone_converges(tmp_path: Path) -> None:
    path = tmp_path / "gtm.db"
    writer = SqliteStore(path)
    await writer.open()
    service = ConfigService(writer)
    served = Served()
    follower = ConfigFollower(
        settings(tmp_path, store_url=f"sqlite://{path}", reconcile_interval=0.2,
                 first_sync_timeout=0.5), served)
    try:
        await follower.start()  # empty store: starts serving nothing, keeps checking
        assert follower.version == 0
        await service.propose(example_document("192.0.2.4"), 0, "t", "one")
        await follower.wait_for_version(1, timeout=3)
        assert served.seen == [(1, "192.0.2.4")]
    finally:
        await follower.stop()
        await writer.close()


async def test_restart_from_snapshot_with_the_store_unreachable(tmp_path: Path) -> None:
    path = tmp_path / "gtm.db"
    writer = SqliteStore(path)
    await writer.open()
    await ConfigService(writer).propose(example_document("192.0.2.5"), 0, "t", "one")
    first = ConfigFollower(settings(tmp_path, store_url=f"sqlite://{path}"), Served())
    await first.start()
    await first.stop()
    await writer.close()
    assert snapshot_path(tmp_path / "node").exists()
    served = Served()
    # Nothing listens on port 9: the store is unreachable; the snapshot is served at once.
    offline = ConfigFollower(
        settings(tmp_path, store_url="postgresql://postgres@127.0.0.1:9/test"), served)
    started = time.monotonic()
    await offline.start()
    try:
        assert served.seen == [(1, "192.0.2.5")]
        assert time.monotonic() - started < 1
    finally:
        await offline.stop()


async def test_a_version_that_does_not_compile_keeps_the_old_one(tmp_path: Path) -> None:
    path = tmp_path / "gtm.db"
    writer = SqliteStore(path)
    await writer.open()
    await ConfigService(writer).propose(example_document("192.0.2.6"), 0, "t", "one")
    served = Served()
    follower = ConfigFollower(settings(tmp_path, store_url=f"sqlite://{path}",
                                       reconcile_interval=0.1), served)
    await follower.start()
    try:
        bad = {"zones": {"example.test.": "garbage"}}  # bypasses the API's validation
        await writer.commit(NewVersion(1, canonical_json(bad), "t", "bad", digest(bad), []))
        await asyncio.sleep(0.5)
        assert follower.version == 1 and follower.error and "version 2" in follower.error
        snapshot = read_snapshot(tmp_path / "node")
        assert snapshot is not None and snapshot.version == 1
    finally:
        await follower.stop()
        await writer.close()
