"""Running the balancer: in-process (``start_balancer``, for ``gtm up`` and tests) or as
``gtm lb serve`` with N forked workers sharing SO_REUSEPORT listeners.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from gtm import log, metrics
from gtm.errors import GtmError
from gtm.metrics_export import (
    MetricsServer,
    TextSource,
    WorkerFanIn,
    bind_metrics,
    local_text,
    url_of,
)
from gtm.workers import Supervisor
from regional_lb import overrides as ov
from regional_lb.acme import AcmeManager
from regional_lb.acme_store import ensure_placeholders
from regional_lb.autoscale.layer import Layer, apply_layer
from regional_lb.autoscale.start import start_scaler, with_scale_store
from regional_lb.client_limits import Limiter
from regional_lb.client_tables import ClientTables
from regional_lb.config import AcmeSettings, LbConfig, load_config
from regional_lb.follow import Follow, RegionFile, first_config, follow_region, signal_supervisor
from regional_lb.health import HealthManager
from regional_lb.report import RegionReporter
from regional_lb.shares import share_dir
from regional_lb.snapshot import Snapshot
from regional_lb.sockets import bind_workers
from regional_lb.tls import tickets
from regional_lb.worker import Worker

Loader = Callable[[Path], LbConfig]
# Admin API changes as events: publish(kind, subject, detail, actor). gtm lends one (gtm
# up: gtm.control.events.publish; `gtm lb serve --control`: the follower's event log).
EventSink = Callable[[str, str, dict[str, Any], str], object]


class BalancerHandle:
    """A running balancer inside the caller's event loop."""

    def __init__(self, worker: Worker, path: Path | None, reporter: RegionReporter,
                 admin: Any = None):
        self.demo: list[Any] = []  # demo backend runners, when the config asks for them
        self.worker = worker
        self.health: HealthManager | None = None  # checks, outliers, panic (regional_lb.health)
        self.path = path
        self.reporter = reporter
        self.admin = admin
        self.overrides: ov.Overrides = {}
        self.base: LbConfig = worker.snapshot.config  # before overrides
        self.loader: Loader = load_config  # how reload() reads the file
        self.acme: AcmeManager | None = None  # [lb.acme], in worker 0
        # /metrics: this process's registry, or every worker's added up (gtm lb serve).
        self.metrics_text: TextSource = local_text
        self.metrics_server: MetricsServer | None = None  # [lb] metrics, in worker 0
        self.fanin: WorkerFanIn | None = None
        self.events: EventSink | None = None  # where the admin API's changes are told
        self.layer: Layer = {}  # the auto-scaler's backends (regional_lb.autoscale.layer)
        self.scaler: Any = None  # regional_lb.autoscale.scaler.Scaler, when pools scale

    def compose(self, overrides: ov.Overrides | None = None) -> LbConfig:
        """What is served: the file, the scaler's layer, then the admin API's overrides."""
        return ov.apply_overrides(apply_layer(self.base, self.layer),
                                  self.overrides if overrides is None else overrides)

    async def apply_layer(self, layer: Layer) -> None:
        """A new scaler layer: compiled into a new snapshot with the rest (never an edit
        of the live one); beside admin changes, never interleaved with them."""
        async def swap() -> None:
            before, self.layer = self.layer, layer
            try:
                await self.worker.reload(self.compose())
            except BaseException:
                self.layer = before
                raise
        if self.admin is None:
            await swap()
            return
        async with self.admin.changing:
            await swap()

    @property
    def snapshot(self) -> Snapshot:
        return self.worker.snapshot

    def address(self, listener: str) -> tuple[str, int]:
        """Where a listener is bound (its port resolved when the config said 0)."""
        return self.worker.bound()[listener]

    def report(self) -> dict[str, Any]:
        """The latest region report (see regional_lb.report for the contract)."""
        return self.reporter.latest

    async def reload(self, config: LbConfig | None = None) -> Snapshot:
        """Swap in a new config (re-read from the file when none is given).

        An invalid config raises ConfigError and leaves the running one in place.
        """
        if config is None:
            if self.path is None:
                raise GtmError("no config file to reload from")
            loop = asyncio.get_running_loop()
            config = await loop.run_in_executor(None, self.loader, self.path)
            self.overrides = await loop.run_in_executor(
                None, ov.load_overrides, ov.overrides_path(self.path))
        self.base = _keep_resolved_ports(config, self.worker)
        snapshot = await self.worker.reload(self.compose())
        await self._follow_acme(config.acme)
        return snapshot

    async def _follow_acme(self, settings: AcmeSettings | None) -> None:
        """A changed [lb.acme] restarts the manager (its certificate files stay)."""
        current = self.acme.settings if self.acme is not None else None
        if settings == current or self.reporter.index != 0:
            return
        if self.acme is not None:
            await self.acme.stop()
            self.acme = None
        if settings is not None:
            ensure_placeholders(settings)
            self.acme = AcmeManager(settings, self.worker.tls.rescan)
            self.acme.start()

    async def reload_with(self, overrides: ov.Overrides) -> Snapshot:
        """Apply admin changes on top of the current file config (raises, changing nothing)."""

        snapshot = await self.worker.reload(self.compose(overrides))
        self.overrides = overrides
        return snapshot

    async def stop(self, grace: float | None = None, deadline: float | None = None) -> None:
        """Graceful: health fails, listeners close after the grace, in-flight finishes."""
        if self.scaler is not None:
            await self.scaler.stop()
        if self.acme is not None:
            await self.acme.stop()
        if self.worker.sample in metrics.lb_collector.sources:
            metrics.lb_collector.sources.remove(self.worker.sample)
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        if self.fanin is not None:
            await self.fanin.stop()
        stopping = [self.worker.stop(grace, deadline)]
        if self.admin is not None:
            stopping.append(self._stop_admin_after(grace))
        await asyncio.gather(*stopping)
        if self.health is not None:
            await self.health.stop()
        await self.reporter.stop()
        for runner in self.demo:
            await runner.cleanup()

    async def _stop_admin_after(self, grace: float | None) -> None:
        # The admin API answers /health (failing) during the grace period, then goes.
        await asyncio.sleep(self.worker.snapshot.timeouts.shutdown_grace if grace is None
                            else grace)
        await self.admin.stop()


def _keep_resolved_ports(config: LbConfig, worker: Worker) -> LbConfig:
    """A listener configured on port 0 keeps the port it got, across reloads."""
    bound = worker.bound()
    listeners = []
    for spec in config.listeners:
        if spec.bind.port == 0 and spec.name in bound:
            spec = replace(spec, bind=replace(spec.bind, port=bound[spec.name][1]))
        listeners.append(spec)
    return replace(config, listeners=tuple(listeners))


async def start_balancer(config: LbConfig | Path | str,
                         sockets: dict[str, socket.socket] | None = None,
                         admin: bool = True, index: int = 0,
                         path: Path | None = None, supervised: bool = False,
                         workers: int = 1, loader: Loader = load_config,
                         tables: ClientTables | None = None,
                         ticket_keys: bytes | None = None,
                         metrics_sock: socket.socket | None = None,
                         fanin: WorkerFanIn | None = None,
                         events: EventSink | None = None) -> BalancerHandle:
    """Start one balancer worker in the running loop; returns a handle with stop()/reload().

    ``config`` is a compiled LbConfig or the path of a TOML file (read by ``loader``, at
    start and on reloads). The admin API (when the config has ``admin``) runs in worker 0
    only. ``tables``: per-client state shared with the other workers (made before they
    forked); without it the worker has tables of its own. ``ticket_keys``: likewise, the
    TLS session ticket keys of a config without a key file. ``metrics_sock``: the
    ``[lb] metrics`` listener bound before the fork (else bound here, in worker 0);
    ``fanin``: how worker 0 adds up every worker's metrics. ``events``: where the admin
    API's changes go as events (none: they are only logged).
    """
    if not isinstance(config, LbConfig):
        path = Path(config)
        config = loader(path)
    overrides = ov.load_overrides(ov.overrides_path(path)) if path is not None else {}
    if sockets is None:  # bind here: ports of 0 resolve once, and reloads keep the socket
        config, bound = bind_workers(config, 1)
        sockets = bound[0]
    demo: list[Any] = []
    worker: Worker | None = None
    handle: BalancerHandle | None = None
    try:
        if config.acme is not None and index == 0:  # a TLS listener needs a pair to start
            ensure_placeholders(config.acme)
        if config.demo_backends and index == 0:
            from regional_lb.demo import start_demo_backends

            demo = await start_demo_backends(list(config.demo_backends))
        worker = Worker(ov.apply_overrides(config, overrides), sockets,
                        Limiter(tables, index) if tables is not None else None, ticket_keys)
        await worker.start()
        handle = BalancerHandle(worker, path, RegionReporter(
            worker, index, workers,
            share_dir(path) if supervised and path is not None else None))
        handle.demo = demo
        handle.loader = loader
        handle.events = events
        handle.health = HealthManager(worker)
        handle.health.start()
        handle.overrides, handle.base = overrides, _keep_resolved_ports(config, worker)
        if config.acme is not None and index == 0:
            handle.acme = AcmeManager(config.acme, worker.tls.rescan)
            handle.acme.start()
        await handle.reporter.start()
        await _start_metrics(handle, config, index, metrics_sock, fanin)
        handle.scaler = await start_scaler(handle, index)
        if admin and config.admin is not None and index == 0:
            from regional_lb.admin import AdminServer

            handle.admin = AdminServer(handle, supervised, workers)
            await handle.admin.start()
    except BaseException:  # nothing half started is left behind
        if handle is not None:
            if handle.acme is not None:
                await handle.acme.stop()
            if handle.health is not None:
                await handle.health.stop()
            if handle.scaler is not None:
                await handle.scaler.stop()
            if handle.admin is not None:
                await handle.admin.stop()
            if handle.metrics_server is not None:
                await handle.metrics_server.stop()
            if handle.fanin is not None:
                await handle.fanin.stop()
            await handle.reporter.stop()
        if worker is not None:
            await worker.stop(grace=0, deadline=0)
        for runner in demo:
            await runner.cleanup()
        for sock in sockets.values():
            sock.close()
        raise
    metrics.lb_collector.sources.append(worker.sample)
    return handle


async def _start_metrics(handle: BalancerHandle, config: LbConfig, index: int,
                         sock: socket.socket | None, fanin: WorkerFanIn | None) -> None:
    if fanin is not None:
        handle.fanin = fanin
        await fanin.serve(index)
        handle.metrics_text = fanin.text
    if index != 0 or config.metrics is None:
        return
    handle.metrics_server = MetricsServer(sock or bind_metrics(config.metrics),
                                          handle.metrics_text)
    await handle.metrics_server.start()
    if sock is None:  # gtm lb serve said where, before its workers forked
        log.lb.info("metrics on %s (no token)", handle.metrics_server.url)


async def start_regions(paths: list[Path], loader: Loader = load_config,
                        events: EventSink | None = None) -> list[BalancerHandle]:
    """One balancer per config file (a region each), all in the running loop (`gtm up`)."""
    handles: list[BalancerHandle] = []
    try:
        for path in paths:
            handles.append(await start_balancer(path, loader=loader, events=events))
    except BaseException:
        for handle in handles:
            await handle.stop(grace=0, deadline=1)
        raise
    return handles


def serve(path: Path, workers: int | None = None, loader: Loader = load_config,
          followed: tuple[Follow, RegionFile] | None = None) -> int:
    """``gtm lb serve``: bind, then run one worker here or N under the Supervisor.

    ``followed``: the control plane is the source (serve_followed); ``path`` is then
    the region file, which worker 0 rewrites on each new version (regional_lb.follow).
    """
    from gtm.process import run_async, wait_for_stop

    config = loader(path)
    count = workers or config.workers
    if config.acme is not None:  # before the workers fork: each needs the pair to start
        ensure_placeholders(config.acme)
    config, sockets = bind_workers(config, count)
    keys = tickets.new_keys()  # before the fork, so every worker resumes the others' tickets
    tables = ClientTables(config.limits.client_table, count)  # one per balancer, shared
    metrics_sock = bind_metrics(config.metrics) if config.metrics is not None else None
    if metrics_sock is not None:
        log.lb.info("metrics on %s (%d workers added up)", url_of(metrics_sock), count)
    # The admin API's /metrics and the metrics listener add every worker up.
    fanin = WorkerFanIn.create(count) if count > 1 else None
    for spec in config.listeners:
        log.lb.info("listener %s on %s (%s%s), %d workers", spec.name, spec.bind, spec.mode,
                    " + tls" if spec.tls is not None else "", count)

    def run(index: int) -> int:
        for other, socks in enumerate(sockets):
            if other != index:
                for sock in socks.values():
                    sock.close()
        if index != 0 and metrics_sock is not None:
            metrics_sock.close()  # worker 0 serves the scrapes

        async def main() -> None:
            # Followed, a worker (re)started after new versions starts from the latest.
            start_from: LbConfig | Path = config if followed is None else path
            handle = await start_balancer(start_from, sockets[index], index=index, path=path,
                                          supervised=count > 1, workers=count, tables=tables,
                                          loader=loader, ticket_keys=keys,
                                          metrics_sock=metrics_sock, fanin=fanin)
            following, node_events = None, None
            if followed is not None and index == 0:
                reload = (lambda: reload_beside_admin(handle)) if count == 1 \
                    else signal_supervisor
                following = await follow_region(*followed, reload)
                # Admin changes go to the control plane's event store and stream through
                # the store this follower already reports to (worker 0 has the admin API).
                node_events = followed[0].events(following)
                handle.events = node_events.publish
            # What exists now lives as long as the worker: keep the collector from walking
            # it again and again (full collections otherwise show up as tail latency).
            gc.freeze()

            async def on_sighup() -> None:
                await _reload_logged(handle)
                if following is not None:  # and ask the store now, as `gtm serve` does
                    await following.sync_now()

            await wait_for_stop(on_reload=on_sighup)
            if node_events is not None:
                await node_events.close()
            if following is not None:
                await following.stop()
            await handle.stop()

        run_async(main)
        return 0

    if count == 1:
        return run(0)
    try:
        return Supervisor(count, run).run()
    finally:
        if fanin is not None:
            fanin.remove()


def serve_followed(follow: Follow, region: str, workers: int | None = None,
                   admin_token: str | None = None) -> int:
    """``gtm lb serve --control``: the [lb] table is the control plane's ``lb.<region>``;
    ``admin_token``, this host's token for the admin API (the document holds none)."""
    from gtm.process import run_async

    region_file = RegionFile(follow.state_dir, region, admin_token)
    follow.state_dir.mkdir(parents=True, exist_ok=True)
    # Its own loop, ended before the workers fork: they must not inherit its connections.
    run_async(lambda: first_config(follow, region_file))
    scale_url, scale_namespace = follow.scale_store or (None, None)

    def load(path: Path) -> LbConfig:
        # Its scaler meets the region where the followed control plane reads it.
        return with_scale_store(region_file.load(path), scale_url, scale_namespace,
                                follow.state_dir)
    return serve(region_file.path, workers, load, (follow, region_file))


async def reload_beside_admin(handle: BalancerHandle) -> Snapshot:
    """A reload from the file (a new followed version), never interleaved with an admin
    API change: one reading the overrides file while the other rewrites it would swap
    in the overrides from before the change. Raises, keeping the running config."""
    if handle.admin is None:
        return await handle.reload()
    async with handle.admin.changing:
        return await handle.reload()


async def _reload_logged(handle: BalancerHandle) -> None:
    try:
        await handle.reload()
    except GtmError as exc:  # a bad file keeps the running config
        log.lb.error("reload failed, keeping configuration %d: %s",
                     handle.snapshot.version, exc)
