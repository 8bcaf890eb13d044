"""A balancer that takes its [lb] table from the control plane (``lb.<region>``).

The follower itself is gtm's (gtm.control.sectionfollow, lent to this package as a
:class:`Follow`): last-known-good snapshot in the state directory, announcements, the
periodic reconcile, status reports. What this module adds is the region file: the
region's table of the version served, written atomically to the state directory,
``lb.<region>.json``. It is what the balancer loads at start and on every reload, so the
file-based machinery works unchanged: runtime overrides of the admin API live beside it
(``lb.<region>.json.runtime.json``) and are applied on top of each new version, and the
workers' drain shares beside it too.

Several workers: only worker 0 follows. On a new version it writes the file, then
SIGHUPs the supervisor, which forwards the signal to every worker (itself included), and
each reloads from the file: one reader of the store and one entry in `gtm status` per
balancer, and the same path a reload from the admin API takes, so the two cannot
disagree. Workers following on their own would each hold store and Redis connections
and could briefly serve different versions, and nothing would say which one the
overrides file was written against.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from gtm import log
from gtm.atomic import PRIVATE, write_atomic
from gtm.errors import ConfigError
from regional_lb.config import LbConfig
from regional_lb.sections import SECRET, SECTION, region_config, region_path

EntryApply = Callable[[int, Any], Awaitable[None]]


class Following(Protocol):
    version: int

    async def sync_now(self) -> None: ...

    async def stop(self) -> None: ...


class NodeEvents(Protocol):
    """gtm.control.events.EventLog, as this package uses it."""

    def publish(self, kind: str, subject: str, detail: dict[str, Any] | None = None,
                actor: str = "gtm") -> object: ...

    async def close(self) -> None: ...


class Follow(Protocol):
    """gtm.control.sectionfollow.SectionFollow, as this package uses it."""

    @property
    def state_dir(self) -> Path: ...

    @property
    def scale_store(self) -> tuple[str, str] | None: ...

    async def start(self, section: str, key: str, apply: EntryApply,
                    current: Any = None) -> Following: ...

    def events(self, following: Any) -> NodeEvents: ...


class RegionFile:
    """``STATE_DIR/lb.<region>.json``: ``{"version": n, "region": ..., "lb": {table}}``."""

    def __init__(self, state_dir: Path, region: str, admin_token: str | None = None):
        self.region = region
        self.path = state_dir / f"{SECTION}.{region}.json"
        # The admin API's token: this host's, never in the document (regional_lb.sections).
        self.admin_token = admin_token

    def read(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the followed configuration: {exc}",
                              str(self.path)) from exc
        if not (isinstance(data, dict) and isinstance(data.get(SECTION), dict)):
            raise ConfigError("is not a followed region's configuration (delete it: the "
                              "control plane's is written again)", str(self.path))
        return data

    def table(self) -> dict[str, Any] | None:
        data = self.read()
        return None if data is None else data[SECTION]

    def write(self, version: int, table: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Owner only, as the snapshot.
        write_atomic(self.path, json.dumps(
            {"version": version, "region": self.region, SECTION: table}, indent=1), PRIVATE)

    def load(self, path: Path | None = None) -> LbConfig:
        """The balancer's Loader: the table as the API compiled it (same paths in errors)."""
        data = self.read()
        if data is None:
            raise ConfigError("no configuration followed yet", str(self.path))
        return compile_table(self.region, data[SECTION], int(data.get("version", 0)),
                             self.admin_token)


def compile_table(region: str, table: Any, version: int,
                  admin_token: str | None = None) -> LbConfig:
    """The table as this balancer serves it: its files checked here, its token added."""
    # Not a file name: relative paths in the table resolve against the working directory.
    source = f"control plane version {version} ({region_path(region)})"
    if admin_token is not None and isinstance(table, dict):
        table = {**table, SECRET: admin_token}
    return region_config(region, table, source)


async def first_config(follow: Follow, region_file: RegionFile) -> None:
    """Before binding: make the region file hold the version to start from.

    From the snapshot when there is one (no store needed), else from the store; with a
    region file from an earlier run and nothing newer, that file. With none of them,
    wait until the control plane has ``lb.<region>``.
    """
    arrived = asyncio.Event()

    async def apply(version: int, table: Any) -> None:
        await _compile_then_write(region_file, version, table)
        arrived.set()

    follower = await follow.start(SECTION, region_file.region, apply, region_file.table())
    try:
        if region_file.table() is None:
            log.lb.warning("waiting for %s in the control plane's configuration",
                           region_path(region_file.region))
            await arrived.wait()
    finally:
        await follower.stop()


async def follow_region(follow: Follow, region_file: RegionFile,
                        reload: Callable[[], Awaitable[Any]]) -> Following:
    """Keep following: a version whose table changed is written, then ``reload`` runs."""
    async def apply(version: int, table: Any) -> None:
        await _compile_then_write(region_file, version, table)
        log.lb.info("%s changed in version %d: reloading", region_path(region_file.region),
                    version)
        await reload()

    return await follow.start(SECTION, region_file.region, apply, region_file.table())


async def _compile_then_write(region_file: RegionFile, version: int, table: Any) -> None:
    """Compiled here first: a table this machine cannot serve (a certificate directory
    missing here) raises, and the follower keeps the version served and reports why."""
    def build() -> None:
        compile_table(region_file.region, table, version, region_file.admin_token)
        region_file.write(version, table)

    await asyncio.get_running_loop().run_in_executor(None, build)


async def signal_supervisor() -> None:
    """Several workers: the supervisor forwards SIGHUP to each, and each reloads."""
    os.kill(os.getppid(), signal.SIGHUP)
