"""`gtm up`: everything that exists, on one machine, in one process, with no servers.

The control plane keeps the configuration (SQLite in ``var/`` by default, or
PostgreSQL and Redis when given) and the DNS node follows it. The zone directory
stays a way to change it (gtm.control.zonedir): files that change while gtm runs, or
while it was down, become new versions zone by zone, and an entry changed through the
control plane is not overwritten by its file until it is taken back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gtm import log
from gtm.config.settings import DnsSettings, Listen
from gtm.control.embedded import NODE_STATE, Embedded, start_embedded
from gtm.control.sealing import SECRET_KEY_FILE, ensure_key, key_file
from gtm.control.snapshot import snapshot_path
from gtm.control.stores import DEFAULT_SQLITE_NAME
from gtm.control.zonedir import RECORD_FILE, ZoneDirSync, zone_of_file
from gtm.dns.loader import LoadResult, load_directory
from gtm.errors import ZoneError
from gtm.health.service import HealthService, HealthSettings
from gtm.node import open_locator
from gtm.process import cancel_and_wait, run_async, wait_for_stop
from gtm.serving.service import DnsService
from gtm.serving.sockets import bind_workers

Stopper = Callable[[], Awaitable[None]]
STOP_GRACE = 2.0  # seconds open TCP conversations get to finish at SIGTERM


@dataclass(frozen=True)
class UpSettings:
    dns: DnsSettings
    state_dir: Path = Path("var")
    api: Listen = field(default_factory=lambda: Listen("127.0.0.1", 8080))
    postgres: str | None = None
    redis: str | None = None
    # Probe the endpoints whose pools define a check; None: no health checking.
    health: HealthSettings | None = None
    # One regional load balancer per file (a region each): the example regions.
    regions: tuple[Path, ...] = ()
    api_tls: tuple[Path, Path] | None = None  # HTTPS for the API: certificate chain, key


def up(settings: UpSettings) -> int:
    run_async(lambda: _main(settings))
    return 0


async def _main(settings: UpSettings) -> None:
    dns = settings.dns
    initial = _initial_zones(settings)
    sockets = bind_workers(dns.listen, 1)[0]
    # The node follows the store; the zone directory reaches it through ZoneDirSync.
    service = DnsService(replace(dns, watch_interval=0), sockets, initial, open_locator(dns))
    await service.start()
    stoppers: list[tuple[str, Stopper]] = [
        (f"the DNS service (open TCP conversations get {STOP_GRACE:g} s)",
         lambda: service.stop(STOP_GRACE))]
    try:
        stoppers += await _start_regions(settings.regions, *_control_for_regions(settings))
        checker = None
        if settings.health is not None:
            # Started first: the first config version then starts its probes at once.
            checker = HealthService(replace(settings.health, redis_url=settings.redis),
                                    service.feed)
            await checker.start()
            stoppers.append(("health checks", checker.stop))
        embedded = await start_embedded(
            service, dns.zones_dir, settings.state_dir, host=settings.api.host,
            port=settings.api.port, store_url=settings.postgres, redis_url=settings.redis,
            tls=settings.api_tls, drill_dns=tuple(str(item) for item in dns.listen),
        )
        stoppers.append(("the config follower and the control plane API", embedded.stop))
        if checker is not None:
            summary = checker.summary
            embedded.follower.status_extra = lambda: {"health": summary()}
            checker.on_change = _auditor(embedded, checker.settings.observer_id)
        sync = ZoneDirSync(embedded.plane.service, dns.zones_dir,
                           settings.state_dir / RECORD_FILE)
        await sync.run_once()
        stoppers.append(("the zone directory watcher", await _watch(sync, dns.watch_interval)))
        _announce(settings, sockets.udp, embedded)
        received = await wait_for_stop(on_reload=lambda: sync.run_once(force=True))
        log.cli.info("%s received: shutting down", received)
    finally:
        await _stop_all(stoppers)


async def _stop_all(stoppers: list[tuple[str, Stopper]]) -> None:
    """Newest first, each step in the log; one that fails does not keep the rest up."""
    for what, stop in reversed(stoppers):
        log.cli.info("stopping %s", what)
        try:
            await stop()
        except Exception:
            log.cli.exception("stopping %s failed", what)
    log.cli.info("stopped")


def _initial_zones(settings: UpSettings) -> LoadResult:
    """The zone directory, checked. With a bad zone, a node that served before starts
    anyway (loudly): its follower serves the last-known-good snapshot at once, and the
    watcher keeps refusing the bad file until it is fixed. Only a first start, with no
    snapshot to fall back on, refuses."""
    result = load_directory(settings.dns.zones_dir)  # logs each bad file: file, line, why
    if not result.errors:
        return result
    snapshot = snapshot_path(settings.state_dir / NODE_STATE)
    if not snapshot.exists():
        raise ZoneError("refusing to start with invalid zones (and no last-known-good "
                        f"snapshot in {snapshot.parent} to start from):\n  "
                        + "\n  ".join(str(e) for e in result.errors))
    bad = ", ".join(sorted({zone_of_file(Path(str(e.source))) for e in result.errors}))
    log.cli.error("BAD ZONE FILES for %s: starting from the last-known-good snapshot %s; "
                  "those zones keep the version served before until their files are fixed",
                  bad, snapshot)
    return LoadResult(result.zones, (), result.signature)


def _auditor(embedded: Embedded, observer: str) -> Callable[[str, str, str, str], None]:
    """Health flips into the control plane's audit log, beside who changed what."""
    pending: set[asyncio.Task[None]] = set()

    def record(what: str, before: str, after: str, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(embedded.plane.service.audit(
            f"health:{observer}", "health.change", what, after,
            {"from": before, "reason": reason},
        ))
        pending.add(task)
        task.add_done_callback(pending.discard)

    return record


def _control_for_regions(settings: UpSettings) -> tuple[str, Path]:
    """The store and secret key balancers with ``tls.control = true`` use when their file
    names none: this control plane's. The key is made here when missing (before the
    balancers start, so they can open what the control plane will seal)."""
    control_dir = settings.state_dir / "control"
    path = key_file(None, control_dir / SECRET_KEY_FILE)
    assert path is not None
    key, created = ensure_key(path)
    if created:
        log.cli.info("created the secret key %s (id %s): it seals certificates' private keys",
                     path, key.id)
    store = settings.postgres or f"sqlite://{(control_dir / DEFAULT_SQLITE_NAME).resolve()}"
    return store, path.resolve()


async def _start_regions(paths: tuple[Path, ...], store_url: str, key_path: Path
                         ) -> list[tuple[str, Stopper]]:
    """The regional balancers, in this loop. Imported here: `gtm up` composes both
    tiers, while the gtm package itself never depends on regional_lb."""
    if not paths:
        return []
    from regional_lb.config import LbConfig, load_config, with_control_store
    from regional_lb.node import start_regions

    def load(path: Path) -> LbConfig:  # at start and on every reload
        return with_control_store(load_config(path), store_url, key_path)

    handles = await start_regions(list(paths), loader=load)
    for path, handle in zip(paths, handles, strict=True):
        log.cli.info("region %s: balancer from %s", handle.snapshot.config.region, path)
    names = ", ".join(handle.snapshot.config.region for handle in handles)

    async def stop_together() -> None:
        # Side by side: each spends its shutdown grace failing health while it drains,
        # and one after another that was N graces (4 s for the example regions).
        results = await asyncio.gather(*(handle.stop() for handle in handles),
                                       return_exceptions=True)
        for handle, result in zip(handles, results, strict=True):
            if isinstance(result, Exception):
                log.cli.error("stopping the balancer of region %s failed: %s",
                              handle.snapshot.config.region, result)
    return [(f"the balancers of regions {names}", stop_together)]


async def _watch(sync: ZoneDirSync, interval: float) -> Stopper:
    async def loop() -> None:
        while interval > 0:
            await asyncio.sleep(interval)
            await sync.run_once()

    task = asyncio.create_task(loop())

    async def stop() -> None:
        await cancel_and_wait(task)

    return stop


def _announce(settings: UpSettings, udp: Any, embedded: Embedded) -> None:
    for sock in udp:
        host, port = sock.getsockname()[:2]
        log.dns.info("listening on %s port %d (UDP and TCP)", host, port)
    token = settings.state_dir / "control" / "admin.token"
    log.cli.info("API: %s (admin token in %s)", embedded.plane.url, token)
    log.cli.info("certificates: gtm certs upload NAME --chain FILE --key FILE (served by "
                 "listeners with tls.control = true; keys sealed with %s)",
                 embedded.plane.settings.resolved_key_file())
    log.cli.info("zones: %s (edits become new versions)", settings.dns.zones_dir)
