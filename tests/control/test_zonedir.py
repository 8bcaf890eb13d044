"""`gtm up`'s zone directory: who owns an entry, and bad files said once.

A real control plane (SQLite) seeded from a copy of the example zones, the files edited
on disk, and ZoneDirSync run tick by tick as `gtm up`'s watcher runs it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from gtm.config.document import document_from_zone_dir
from gtm.control.plane import ControlPlane, ControlSettings, start_control_plane
from gtm.control.zonedir import RECORD_FILE, ZoneDirSync

REPO_ZONES = Path(__file__).resolve().parents[2] / "zones"
GSLB = "gslb.example.test."
STEERING_FILE = "gslb.example.test.steering.toml"


@asynccontextmanager
async def up_like(tmp_path: Path) -> AsyncIterator[tuple[ControlPlane, Path]]:
    """What `gtm up` starts: a control plane seeded from its zone directory."""
    zones = tmp_path / "zones"
    if not zones.exists():
        shutil.copytree(REPO_ZONES, zones)
    plane = await start_control_plane(ControlSettings(
        port=0, state_dir=tmp_path / "var" / "control",
        seed_document=document_from_zone_dir(zones)))
    try:
        yield plane, zones
    finally:
        await plane.stop()


def new_sync(plane: ControlPlane, zones: Path, tmp_path: Path) -> ZoneDirSync:
    return ZoneDirSync(plane.service, zones, tmp_path / "var" / RECORD_FILE)


async def live(plane: ControlPlane) -> tuple[int, dict[str, Any]]:
    head = await plane.store.head()
    return head, await plane.service.document_at(head)


async def www_ttl(plane: ControlPlane) -> int:
    return int((await live(plane))[1]["steering"][GSLB]["names"]["www"]["ttl"])


async def set_ttl_through_the_api(plane: ControlPlane, ttl: int) -> None:
    head, document = await live(plane)
    document["steering"][GSLB]["names"]["www"]["ttl"] = ttl
    await plane.service.propose(document, head, "ops", f"www ttl {ttl}")


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    stat = path.stat()  # a new mtime even within the file system's clock resolution
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def zone_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gtm.zones"]


async def refusals(plane: ControlPlane) -> list[tuple[str, str]]:
    entries = await plane.store.audit(None, 200)
    return [(e.target, e.outcome) for e in entries
            if e.actor == "zones-dir" and e.outcome in ("invalid", "conflict")]


async def settle() -> None:
    """Let the audit writes ZoneDirSync started finish."""
    for _ in range(20):
        await asyncio.sleep(0.01)


async def test_a_file_edit_does_not_undo_a_change_made_through_the_api(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gtm.zones")
    async with up_like(tmp_path) as (plane, zones):
        sync = new_sync(plane, zones, tmp_path)
        await sync.run_once()
        await set_ttl_through_the_api(plane, 99)  # `gtm config apply`
        steering = zones / STEERING_FILE
        edit(steering, "ttl = 30", "ttl = 31")  # an unrelated-looking edit of the file
        edit(zones / "example.org.zone", "@     A    127.0.30.1", "@     A    127.0.30.2")
        head_before = await plane.store.head()
        await sync.run_once()
        assert await www_ttl(plane) == 99  # not undone
        head, document = await live(plane)
        assert head == head_before + 1  # the other zone's edit still went through
        assert "127.0.30.2" in document["zones"]["example.org."]
        [warning] = [m for m in zone_messages(caplog) if "no longer comes from it" in m]
        assert str(steering) in warning and "not applied" in warning
        assert f"gtm zones apply gslb.example.test --zones {zones}" in warning
        await settle()
        assert await refusals(plane) == [(f"zone {GSLB}", "conflict")]

        # Taking the file back, as the warning says, through the API.
        token = plane.admin_token_path.read_text().strip()
        command = [sys.executable, "-m", "gtm.cli", "zones", "apply", "gslb.example.test",
                   "--zones", str(zones), "--api", plane.url, "--token", token]
        refused = await asyncio.to_thread(subprocess.run, command, capture_output=True,
                                          text=True, timeout=30, stdin=subprocess.DEVNULL)
        assert refused.returncode == 2 and "add --yes" in refused.stderr
        taken = await asyncio.to_thread(subprocess.run, [*command, "--yes"],
                                        capture_output=True, text=True, timeout=30)
        assert taken.returncode == 0, taken.stderr
        assert "follows its files again" in taken.stdout
        assert await www_ttl(plane) == 31
        await sync.run_once()
        assert f"{steering}: the file and the live configuration agree again" in \
            zone_messages(caplog)
        edit(steering, "ttl = 31", "ttl = 32")  # the file owns the entry again
        await sync.run_once()
        assert await www_ttl(plane) == 32


async def test_a_bad_file_is_said_once_until_it_changes_or_is_fixed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gtm.zones")
    async with up_like(tmp_path) as (plane, zones):
        sync = new_sync(plane, zones, tmp_path)
        await sync.run_once()
        head = await plane.store.head()
        zone_file = zones / "example.org.zone"
        edit(zone_file, "@     A    127.0.30.1", "@     A    127.0.30.300")
        for _ in range(5):  # five watcher ticks with nothing changed in between
            await sync.run_once()
        errors = [m for m in zone_messages(caplog) if "127.0.30.300" in m]
        # The file and its line, with what was expected, as `gtm zones check` says it.
        assert errors == [f"{zone_file}:5: not an IPv4 address: 127.0.30.300; "
                          "the live version of example.org. stays"]
        await settle()
        assert await refusals(plane) == [("zone example.org.", "invalid")]
        assert await plane.store.head() == head

        steering = zones / STEERING_FILE
        edit(steering, "[names.www]", "[names.www")  # broken TOML
        edit(zone_file, "127.0.30.300", "127.0.30.301")  # another error in the same file
        for _ in range(3):
            await sync.run_once()
        messages = zone_messages(caplog)
        assert [m for m in messages if "127.0.30.301" in m] == [
            f"{zone_file}:5: not an IPv4 address: 127.0.30.301; "
            "the live version of example.org. stays"]
        [toml] = [m for m in messages if "not valid TOML" in m]
        assert toml.startswith(f"{steering}: not valid TOML: ")
        await settle()
        assert len(await refusals(plane)) == 3

        edit(zone_file, "127.0.30.301", "127.0.30.3")  # fixed
        edit(steering, "[names.www", "[names.www]")
        await sync.run_once()
        await sync.run_once()
        messages = zone_messages(caplog)
        assert "example.org.: fixed" in messages and f"{GSLB}: fixed" in messages
        head, document = await live(plane)
        assert "127.0.30.3\n" in document["zones"]["example.org."]
        await settle()
        assert len(await refusals(plane)) == 3


async def test_ownership_holds_across_a_restart(tmp_path: Path) -> None:
    async with up_like(tmp_path) as (plane, zones):
        await new_sync(plane, zones, tmp_path).run_once()  # the record is written
    # While gtm is down: the steering file is edited, and example.test is changed
    # through the control plane (a `gtm config apply` against another node, a rollback).
    edit(zones / STEERING_FILE, "ttl = 30", "ttl = 45")
    async with up_like(tmp_path) as (plane, zones):
        head, document = await live(plane)
        document["zones"]["example.test."] += "byhand  A  127.0.10.9\n"
        await plane.service.propose(document, head, "ops", "an address by hand")
    async with up_like(tmp_path) as (plane, zones):
        sync = new_sync(plane, zones, tmp_path)
        await sync.run_once()
        assert await www_ttl(plane) == 45  # edited while down: applied at start
        assert "byhand  A  127.0.10.9" in (await live(plane))[1]["zones"]["example.test."]
        edit(zones / "example.test.zone", "www", "www")  # touched, content unchanged
        await sync.run_once()
        assert "byhand  A  127.0.10.9" in (await live(plane))[1]["zones"]["example.test."]
        assert sync.problems == {}


async def test_without_a_record_what_differs_is_left_to_the_control_plane(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A state directory from before the record existed: which side changed is unknown,
    # so nothing live is overwritten, and the difference is said with the way out.
    caplog.set_level(logging.INFO, logger="gtm.zones")
    async with up_like(tmp_path) as (plane, zones):
        await set_ttl_through_the_api(plane, 77)
        sync = ZoneDirSync(plane.service, zones, None)
        await sync.run_once()
        assert await www_ttl(plane) == 77
        assert any("gtm zones apply gslb.example.test" in m for m in zone_messages(caplog))
