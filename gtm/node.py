"""Running a DNS node: load, bind, then serve in one process or in N workers."""

from __future__ import annotations

import signal
import socket
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from gtm import log
from gtm.config.settings import DnsSettings, Listen
from gtm.dns.answer import ZoneSet
from gtm.dns.cookies import new_secret
from gtm.dns.loader import LoadResult, load_directory
from gtm.errors import ZoneError
from gtm.geo.locate import DEFAULT_DATABASE, Locator
from gtm.metrics_export import WorkerFanIn, bind_metrics, start_node_metrics, url_of
from gtm.process import run_async, wait_for_stop
from gtm.serving.service import DnsService
from gtm.serving.sockets import WorkerSockets, bind_workers
from gtm.wording import counted
from gtm.workers import Supervisor

if TYPE_CHECKING:
    from gtm.control.events import EventLog
    from gtm.control.follower import ConfigFollower, FollowerSettings
    from gtm.health.service import HealthService, HealthSettings


@dataclass(frozen=True)
class NodeMetrics:
    """The node's metrics listener and, with several workers, the fan-in between them
    (both made before the workers fork)."""

    sock: socket.socket | None = None
    fanin: WorkerFanIn | None = None


def load_or_fail(settings: DnsSettings) -> LoadResult:
    """The first load must be clean: a node never starts with zones missing."""
    result = load_directory(settings.zones_dir)
    if result.errors:
        raise ZoneError(
            "refusing to start with invalid zones:\n  "
            + "\n  ".join(str(e) for e in result.errors)
        )
    return result


def open_locator(settings: DnsSettings) -> Locator | None:
    """The geo database for steering; the shipped one unless another is configured."""
    path = settings.geoip_database or DEFAULT_DATABASE
    if settings.geoip_database is None and not path.exists():
        log.dns.warning("no geo database at %s: steering by location uses defaults", path)
        return None
    # Special-purpose blocks (private, documentation, ...) are never located, whatever
    # the file says: registry data holds stray records for them. `networks` rules steer them.
    locator = Locator(path)
    log.dns.info("geo database %s", path)
    return locator


def serve(settings: DnsSettings, follow: FollowerSettings | None = None,
          health: HealthSettings | None = None, metrics_listen: Listen | None = None) -> int:
    """Serve the zone directory or, with ``follow``, the control plane's configuration;
    with ``health``, probe and merge health facts into the answers; with
    ``metrics_listen``, serve ``/metrics`` there (the whole node, every worker added up)."""
    # Until a handler is installed, SIGHUP (reload) must not end the process.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Following: the zones come from the snapshot or the store, swapped in before serving.
    initial = load_or_fail(settings) if follow is None else LoadResult(ZoneSet.of([]), (), ())
    if follow is not None:  # the zone directory is not what this node serves: no watching
        settings = replace(settings, watch_interval=0)
    locator = open_locator(settings)
    # Made before the workers fork, so each accepts the others' cookies (a client's next
    # query may reach another worker); a node following a control plane then uses the
    # deployment's secret.
    cookie_secret = new_secret()
    sockets = bind_workers(settings.listen, settings.workers)
    exported = _node_metrics(metrics_listen, settings.workers)
    announce(settings, sockets[0], initial)
    if settings.workers == 1:
        return run_worker(settings, sockets[0], initial, locator, follow, health=health,
                          cookie_secret=cookie_secret, exported=exported)

    def worker(index: int) -> int:
        for other, socks in enumerate(sockets):
            if other != index:
                socks.close()
        if index != 0 and exported.sock is not None:
            exported.sock.close()  # worker 0 serves the scrapes
        return run_worker(settings, sockets[index], initial, locator, follow, index,
                          _worker_health(health, index), cookie_secret, exported)

    try:
        return Supervisor(settings.workers, worker).run()
    finally:
        if exported.fanin is not None:
            exported.fanin.remove()


def _node_metrics(listen: Listen | None, workers: int) -> NodeMetrics:
    if listen is None:
        return NodeMetrics()
    sock = bind_metrics(listen)
    log.dns.info("metrics on %s (%s)", url_of(sock), counted(workers, "worker") + " added up")
    return NodeMetrics(sock, WorkerFanIn.create(workers) if workers > 1 else None)


def announce(settings: DnsSettings, sockets: WorkerSockets, initial: LoadResult) -> None:
    for sock in sockets.udp:
        host, port = sock.getsockname()[:2]
        log.dns.info("listening on %s port %d (UDP and TCP)", host, port)
    names = ", ".join(z.origin.to_text() for z in initial.zones.zones.values())
    log.dns.info("serving %s: %s (%s)", counted(len(initial.zones.zones), "zone"), names,
                 counted(settings.workers, "worker"))


def _worker_health(health: HealthSettings | None, index: int) -> HealthSettings | None:
    """Worker 0 probes; the others only listen (through Redis), so one process does not
    count as several observers toward the quorum."""
    if health is None or index == 0:
        return health
    return replace(health, probe=False, observer_id=f"{health.observer_id}/{index}")


def run_worker(
    settings: DnsSettings,
    sockets: WorkerSockets,
    initial: LoadResult,
    locator: Locator | None = None,
    follow: FollowerSettings | None = None,
    index: int = 0,
    health: HealthSettings | None = None,
    cookie_secret: bytes | None = None,
    exported: NodeMetrics | None = None,
) -> int:
    async def main() -> None:
        service = DnsService(settings, sockets, initial, locator, cookie_secret)
        stop_metrics = await start_node_metrics(
            exported.sock if exported else None, exported.fanin if exported else None, index)
        checker = None
        if health is not None:
            from gtm.health.service import HealthService

            checker = HealthService(health, service.feed)
            await checker.start()
        if follow is None:
            await service.start()
            await wait_for_stop(on_reload=service.reload)
        else:
            from gtm.control.dnsnode import follow_dns, report_also

            follower = await follow_dns(service, follow, index)
            node_events = None
            if checker is not None:
                summary = checker.summary
                report_also(follower, lambda: {"health": summary()})
                if index == 0:  # the one that probes: one event per flip, not one a worker
                    node_events = health_events(follower, checker, health)
            await service.start()
            await wait_for_stop(on_reload=follower.sync_now)
            if node_events is not None:
                await node_events.close()  # the last flips, within a bounded time
            await follower.stop()
        if checker is not None:
            await checker.stop()
        await stop_metrics()
        await service.stop()

    run_async(main)
    return 0


def health_events(follower: ConfigFollower, checker: HealthService,
                  health: HealthSettings | None) -> EventLog:
    """Health flips of a node following the control plane, as events in its store and
    Redis stream (the ones `gtm up` writes): through the follower's own store."""
    from gtm.control import events

    assert health is not None
    event_log = events.EventLog(follower.store, follower.settings.redis_url,
                                follower.namespace)
    events.install(event_log)  # and anything else in this process that publishes
    checker.on_change = events.health_flips(event_log.publish, health.observer_id)
    return event_log
