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
from typing import TYPE_CHECKING, Any

from gtm import log
from gtm.config.settings import DnsSettings, Listen
from gtm.control.dnsnode import report_also
from gtm.control.embedded import NODE_STATE, Embedded, start_embedded
from gtm.control.events import health_flips, publish
from gtm.control.follower import FollowerSettings
from gtm.control.sectionfollow import SectionFollow
from gtm.control.snapshot import snapshot_path
from gtm.control.stores import DEFAULT_SQLITE_NAME
from gtm.control.zonedir import RECORD_FILE, ZoneDirSync, zone_of_file
from gtm.dns.loader import LoadResult, load_directory
from gtm.errors import ConfigError, StoreUnavailable, VersionConflict, ZoneError
from gtm.health.service import HealthService, HealthSettings
from gtm.metrics_export import MetricsServer, bind_metrics
from gtm.node import open_locator
from gtm.process import cancel_and_wait, run_async, wait_for_stop
from gtm.sealing import SECRET_KEY_FILE, ensure_key, key_file
from gtm.serving.service import DnsService
from gtm.serving.sockets import bind_workers
from gtm.toml_input import read_toml

if TYPE_CHECKING:
    from regional_lb.follow import RegionFile
    from regional_lb.node import BalancerHandle

Stopper = Callable[[], Awaitable[None]]
STOP_GRACE = 2.0  # seconds open TCP conversations get to finish at SIGTERM
LB_STATE = "lb"  # below the state directory: a directory per region (snapshot, region file)


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
    metrics: Listen | None = None  # a /metrics listener without a token (gtm up --metrics)


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
        urls: list[str] = []  # every /metrics of this process, announced at the end
        listener: str | None = None  # gtm up --metrics: the one to scrape
        regions = await _start_regions(settings.regions, settings.state_dir / LB_STATE,
                                       *_control_for_regions(settings), metrics_urls=urls,
                                       scale_url=_scale_store_for_regions(settings))
        stoppers += regions.stoppers
        if settings.metrics is not None:
            exporter = MetricsServer(bind_metrics(settings.metrics))
            await exporter.start()
            stoppers.append(("the metrics listener", exporter.stop))
            listener = exporter.url
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
            tls=settings.api_tls, seed_sections=regions.seed(),
            drill_dns=tuple(str(item) for item in dns.listen),
        )
        stoppers.append(("the config follower and the control plane API", embedded.stop))
        if checker is not None:
            summary = checker.summary
            report_also(embedded.follower, lambda: {"health": summary()})
            checker.on_change = _auditor(embedded, checker.settings.observer_id)
        # After the DNS follower's status is complete: its first report is made meanwhile.
        stoppers += await regions.follow(embedded, settings.redis)
        sync = ZoneDirSync(embedded.plane.service, dns.zones_dir,
                           settings.state_dir / RECORD_FILE)
        await sync.run_once()
        stoppers.append(("the zone directory watcher", await _watch(sync, dns.watch_interval)))
        _announce(settings, sockets.udp, embedded)
        announce_metrics(embedded.plane.url, listener, urls)
        announce_drills(embedded.plane.url, dns.listen)
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
    """Health flips into the control plane's audit log, beside who changed what, and into
    the event stream (health.flip)."""
    pending: set[asyncio.Task[None]] = set()
    flipped = health_flips(embedded.plane.service.events.publish, observer)

    def record(what: str, before: str, after: str, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(embedded.plane.service.audit(
            f"health:{observer}", "health.change", what, after,
            {"from": before, "reason": reason},
        ))
        flipped(what, before, after, reason)
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


def _scale_store_for_regions(settings: UpSettings) -> str | None:
    """Where the balancers' scalers meet, as the control API reads it (/v1/scale): Redis
    when given, else the control plane's store (PostgreSQL, or its SQLite file)."""
    return settings.redis or settings.postgres or \
        f"sqlite://{(settings.state_dir / 'control' / DEFAULT_SQLITE_NAME).resolve()}"


@dataclass
class Regions:
    """The regional balancers: started from their region files at once (as fast as from
    their TOML files), then following ``lb.<region>`` of the embedded control plane."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # from the TOML files
    files: list[RegionFile] = field(default_factory=list)
    handles: list[BalancerHandle] = field(default_factory=list)
    stoppers: list[tuple[str, Stopper]] = field(default_factory=list)

    def seed(self) -> dict[str, Any]:
        """A store's first version holds the regions' tables, as the zones' files."""
        return {"lb": dict(self.tables)} if self.tables else {}

    async def follow(self, embedded: Embedded, redis_url: str | None
                     ) -> list[tuple[str, Stopper]]:
        """One follower per region (one node each in `gtm status`), over the control
        plane's own store object: a commit reaches them in-process, at once."""
        if not self.handles:
            return []
        from regional_lb.follow import follow_region
        from regional_lb.node import reload_beside_admin

        await _publish_missing(embedded, self.tables)

        async def start(region_file: RegionFile, handle: BalancerHandle) -> Any:
            follow = SectionFollow(FollowerSettings(
                node_id=f"lb-{region_file.region}", state_dir=region_file.path.parent,
                redis_url=redis_url, kind="lb"), store=embedded.plane.store)
            return await follow_region(follow, region_file,
                                       lambda: reload_beside_admin(handle))

        started = await asyncio.gather(*map(start, self.files, self.handles),
                                       return_exceptions=True)
        followers = [f for f in started if not isinstance(f, BaseException)]
        failed = [f for f in started if isinstance(f, BaseException)]
        if failed:  # nothing half started is left behind
            await asyncio.gather(*(follower.stop() for follower in followers))
            raise failed[0]

        async def stop() -> None:
            await asyncio.gather(*(follower.stop() for follower in followers))
        return [("the balancers' config followers", stop)]


async def _publish_missing(embedded: Embedded, tables: dict[str, dict[str, Any]]) -> None:
    """A store made before the balancers followed it (or by another gtm up) lacks some
    regions: their files' tables become one new version. A region already there keeps
    the stored table: changes made through the API outlive a restart."""
    service = embedded.plane.service
    try:
        head = await service.store.head()
        stored = (await service.document_at(head)).get("lb", {})
        missing = {name: table for name, table in tables.items() if name not in stored}
        if not missing:
            return

        def add(document: dict[str, Any]) -> dict[str, Any]:
            document.setdefault("lb", {}).update(missing)
            return document

        await service.edit(head, "gtm-up", f"lb: regions {', '.join(sorted(missing))} from "
                           "their files", add)
    except (ConfigError, StoreUnavailable, VersionConflict) as exc:
        log.cli.error("could not store the regions' tables (%s): those balancers keep "
                      "serving their files until lb.<region> is set through the API", exc)


async def _start_regions(paths: tuple[Path, ...], state_dir: Path, store_url: str,
                         key_path: Path, metrics_urls: list[str],
                         scale_url: str | None = None) -> Regions:
    """The regional balancers, in this loop. Imported here: `gtm up` composes both
    tiers, while the gtm package itself never depends on regional_lb.

    Each starts from its region file (``STATE/lb/<region>/lb.<region>.json``, the table
    it last followed), made from its TOML file the first time."""
    regions = Regions()
    if not paths:
        return regions
    from regional_lb.autoscale.start import stop_local_backends, with_scale_store
    from regional_lb.config import LbConfig, with_control_store
    from regional_lb.follow import RegionFile
    from regional_lb.node import start_regions
    from regional_lb.sections import SECRET, anchored

    by_path: dict[Path, RegionFile] = {}
    for path in paths:
        table = read_toml(path).get("lb")
        if not isinstance(table, dict):
            raise ConfigError("needs an [lb] table", str(path))
        table = anchored(table, path)  # its paths keep meaning what they did in the file
        region = str(table.get("region", "local"))
        if region in regions.tables:  # one entry lb.<region>, one region file
            raise ConfigError(f"region {region!r} is also another file's", str(path),
                              "lb.region")
        # The admin token stays on this host: the shared document holds no secret.
        token = table.pop(SECRET, None)
        if token is not None and not isinstance(token, str):
            raise ConfigError("must be a string", str(path), f"lb.{SECRET}")
        region_file = RegionFile(state_dir / region, region, token)
        if region_file.table() is None:
            region_file.write(0, table)
        regions.tables[region] = table
        regions.files.append(region_file)
        by_path[region_file.path] = region_file

    def load(path: Path) -> LbConfig:  # at start and on every reload
        config = with_control_store(by_path[path].load(), store_url, key_path)
        return with_scale_store(config, scale_url, directory=by_path[path].path.parent)

    # Admin API changes (drain, weight, backends, reload) become events of this process.
    handles = await start_regions([file.path for file in regions.files], loader=load,
                                  events=publish)
    regions.handles = handles
    for path, handle in zip(paths, handles, strict=True):
        log.cli.info("region %s: balancer from %s, then lb.%s of the control plane",
                     handle.snapshot.config.region, path, handle.snapshot.config.region)
        metrics_urls.extend(balancer_metrics_urls(handle))
    names = ", ".join(handle.snapshot.config.region for handle in handles)

    async def stop_together() -> None:
        # Side by side: each spends its shutdown grace failing health while it drains,
        # and one after another that was N graces (4 s for the example regions).
        results = await asyncio.gather(*(handle.stop() for handle in handles),
                                       return_exceptions=True)
        for handle in handles:  # the demo pools' scaled backends, started by the balancers
            stop_local_backends(handle)
        for handle, result in zip(handles, results, strict=True):
            if isinstance(result, Exception):
                log.cli.error("stopping the balancer of region %s failed: %s",
                              handle.snapshot.config.region, result)
    regions.stoppers.append((f"the balancers of regions {names}", stop_together))
    return regions


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
    log.cli.info("status page: %s/status (log in with a token, e.g. that one)",
                 embedded.plane.url)
    log.cli.info("certificates: gtm certs upload NAME --chain FILE --key FILE (served by "
                 "listeners with tls.control = true; keys sealed with %s)",
                 embedded.plane.settings.resolved_key_file())
    log.cli.info("zones: %s (edits become new versions)", settings.dns.zones_dir)


def balancer_metrics_urls(handle: Any) -> list[str]:
    """A balancer's /metrics: its admin API's (token) and its own listener's (none)."""
    config = handle.snapshot.config
    urls = []
    if handle.admin is not None and config.admin is not None:
        scheme = "https" if config.admin_tls is not None else "http"
        urls.append(f"{scheme}://{config.admin.host}:{handle.admin.port}/metrics "
                    f"(region {config.region}'s admin token)")
    if handle.metrics_server is not None:
        urls.append(f"{handle.metrics_server.url} (region {config.region}, no token)")
    return urls


def announce_drills(api_url: str, listen: Any) -> None:
    from gtm.drill.hints import up_hints

    for line in up_hints(api_url, str(listen[0]) if listen else "127.0.0.1:6053"):
        log.cli.info("%s", line)


def announce_metrics(api_url: str, listener: str | None, others: list[str]) -> None:
    """The one /metrics to scrape, then the other doors to the same registry.

    Everything here is one process with one registry (DNS, health, control plane and the
    balancers), and every /metrics of it serves all of it: scraping two of them would
    count every counter twice. So exactly one URL is announced to scrape (role ``up``,
    deploy/prometheus/gtm-up.yml): the tokenless listener when there is one, else the
    API's; the others are named as the same data, not as more targets."""
    api = f"{api_url}/metrics (a viewer token: gtm token create prometheus --role viewer)"
    scrape = f"{listener} (no token)" if listener is not None else api
    log.cli.info("metrics to scrape (the whole process, one target): %s", scrape)
    for url in [api, *others] if listener is not None else others:
        log.cli.info("metrics: also %s: the same process, not another target (scraping "
                     "both would count everything twice)", url)
