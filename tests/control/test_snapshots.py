"""A node's snapshot is sealed: edited or damaged, it is refused and the node resyncs from
the store; a node that serves a version the store has not reached resyncs to the store."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from gtm.control.follower import ConfigFollower
from gtm.control.service import ConfigService
from gtm.control.snapshot import read_snapshot, snapshot_path, write_snapshot
from gtm.control.sqlite_store import SqliteStore
from tests.control.conftest import example_document
from tests.control.test_follower import Served, settings

EDITS: dict[str, Callable[[str], str]] = {
    "address": lambda text: text.replace("192.0.2.1", "192.0.2.66"),
    "version": lambda text: text.replace('"version":1}', '"version":1001}'),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
async def test_an_edited_snapshot_is_refused_and_the_node_resyncs(
    tmp_path: Path, edit: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gtm.db"
    writer = SqliteStore(path)
    await writer.open()
    await ConfigService(writer).propose(example_document("192.0.2.1"), 0, "t", "one")
    node_settings = settings(tmp_path, store_url=f"sqlite://{path}")
    first = ConfigFollower(node_settings, Served())
    await first.start()
    await first.stop()
    snapshot = snapshot_path(tmp_path / "node")
    edited = EDITS[edit](snapshot.read_text())
    assert edited != snapshot.read_text()
    snapshot.write_text(edited)
    served = Served()
    follower = ConfigFollower(node_settings, served)
    caplog.set_level(logging.INFO, "gtm.control.follower")
    try:
        await follower.start()
        assert served.seen == [(1, "192.0.2.1")]  # the store's version 1, never the edit
        refusals = [r for r in caplog.records if "REFUSING the snapshot" in r.getMessage()]
        assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
        assert "does not match its seal" in refusals[0].getMessage()
        assert snapshot.with_suffix(".bad").read_text() == edited
        resealed = read_snapshot(tmp_path / "node")
        assert resealed is not None and resealed.version == 1
        assert resealed.document == example_document("192.0.2.1")
    finally:
        await follower.stop()
        await writer.close()


async def test_a_node_ahead_of_the_store_resyncs_and_serves_new_commits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gtm.db"
    writer = SqliteStore(path)
    await writer.open()
    service = ConfigService(writer)
    await service.propose(example_document("192.0.2.1"), 0, "t", "one")
    # A well-sealed snapshot of a version the store never reached (a store restored from
    # a backup, or a state directory copied from another deployment).
    write_snapshot(tmp_path / "node", 1001, example_document("192.0.2.77"))
    served = Served()
    follower = ConfigFollower(
        settings(tmp_path, store_url=f"sqlite://{path}", reconcile_interval=0.1), served)
    caplog.set_level(logging.INFO, "gtm.control.follower")
    try:
        await follower.start()
        assert served.seen[0] == (1001, "192.0.2.77")  # what it had, until the store answers
        await wait_until(lambda: follower.version == 1)
        assert served.seen[-1] == (1, "192.0.2.1")
        assert any("store's latest is 1" in r.getMessage() and "resyncing to 1" in
                   r.getMessage() for r in caplog.records)
        await service.propose(example_document("192.0.2.2", serial=2), 1, "t", "two")
        await follower.wait_for_version(2, timeout=5)
        assert served.seen[-1] == (2, "192.0.2.2")
        stored = read_snapshot(tmp_path / "node")
        assert stored is not None and stored.version == 2
    finally:
        await follower.stop()
        await writer.close()


async def test_an_unsealed_snapshot_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "node"
    state.mkdir()
    snapshot_path(state).write_text(
        '{"document":{},"format":1,"version":3}')  # what nodes wrote before sealing
    assert read_snapshot(state) is None
    assert snapshot_path(state).with_suffix(".bad").exists()


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)
