"""One DNS worker: its transports, its engine, and the reloads that swap its zones."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gtm import log, metrics
from gtm.config.settings import DnsSettings
from gtm.dns import udp_batch
from gtm.dns.answer import ZoneSet
from gtm.dns.cookies import Cookies, new_secret
from gtm.dns.engine import Engine
from gtm.dns.loader import LoadResult, Signature, load_directory, signature
from gtm.dns.render import ServerIdentity
from gtm.dns.rrl import ResponseLimiter
from gtm.dns.server import TcpProtocol, UdpProtocol
from gtm.health.overlay import ServingFeed
from gtm.process import cancel_and_wait
from gtm.serving.sockets import WorkerSockets
from gtm.sockopts import listen_backlog
from gtm.steering.chain import LocatorLike
from gtm.wording import counted


class DnsService:
    """Serves the zones of one directory on the given sockets until stopped."""

    def __init__(
        self,
        settings: DnsSettings,
        sockets: WorkerSockets,
        initial: LoadResult,
        locator: LocatorLike | None = None,
        cookie_secret: bytes | None = None,
    ):
        """``cookie_secret``: the node's until the control plane gives the deployment's
        (one made here when None: then only this worker accepts its cookies)."""
        identity = ServerIdentity(
            edns_udp_size=settings.edns_udp_size,
            nsid=settings.nsid.encode() if settings.nsid else None,
        )
        self.settings = settings
        self.sockets = sockets
        cookies = Cookies([cookie_secret or new_secret()]) if settings.cookies else None
        # Workers share nothing: each limits at its share of the node's rate (gtm.dns.rrl).
        limiter = ResponseLimiter(settings.rrl, settings.workers) \
            if settings.rrl.enabled else None
        self.engine = Engine(initial.zones, identity, settings.cache_entries, locator,
                             cookies, limiter, int(settings.cache_megabytes * 2**20))
        # Every change of what is served (reload, config version, health flip) goes
        # through the feed, so the health overlay survives config swaps.
        self.feed = ServingFeed(self.engine.swap)
        self.feed.base = initial.zones
        self.loaded_signature: Signature = initial.signature
        self.connections: set[TcpProtocol] = set()
        self.tcp_per_client: dict[str, int] = {}  # open TCP connections by client address
        self.transports: list[asyncio.BaseTransport] = []
        self.batched: list[udp_batch.BatchedUdp] = []
        self.servers: list[asyncio.base_events.Server] = []
        self.watcher: asyncio.Task[None] | None = None
        self.reload_lock = asyncio.Lock()

    def serve_zones(self, zones: ZoneSet) -> None:
        """Serve new base zones (health facts merged in) from the next packet on."""
        self.feed.serve(zones)

    @property
    def zones_dir(self) -> Path:
        return self.settings.zones_dir

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        metrics.dns_collector.sources.append(self.engine.stats)
        if self.engine.limiter is not None:
            metrics.dns_collector.limiters.append(self.engine.limiter.stats)
        for sock in self.sockets.udp:
            if self.settings.udp_batch and udp_batch.available():
                batched = udp_batch.BatchedUdp(sock, self.engine)
                batched.start(loop)
                self.batched.append(batched)
                continue
            transport, _ = await loop.create_datagram_endpoint(
                lambda: UdpProtocol(self.engine), sock=sock
            )
            self.transports.append(transport)
        for sock in self.sockets.tcp:
            server = await loop.create_server(
                lambda: TcpProtocol(self.engine, self.settings.tcp_idle_timeout, self.connections,
                                    self.settings.tcp_message_timeout, self.tcp_per_client,
                                    self.settings.tcp_connections_per_client),
                sock=sock, backlog=listen_backlog(),
            )
            self.servers.append(server)
        if self.settings.watch_interval > 0:
            self.watcher = asyncio.create_task(self._watch())

    async def reload(self) -> LoadResult:
        """Compile the zone directory off the event loop, then swap it in at once."""
        async with self.reload_lock:
            loop = asyncio.get_running_loop()
            previous = self.feed.base  # without the health overlay: that is merged anew
            started = time.perf_counter()
            result = await loop.run_in_executor(None, load_directory, self.zones_dir, previous)
            self.serve_zones(result.zones)
            metrics.dns_reload_seconds.labels("zonedir").observe(time.perf_counter() - started)
            self.loaded_signature = result.signature
            metrics.zone_reloads.labels("error" if result.errors else "ok").inc()
            for zone in result.zones.zones.values():
                metrics.zone_serial.labels(zone.origin.to_text()).set(zone.serial)
            log.zones.info("reloaded %s (%s)", counted(len(result.zones.zones), "zone"),
                           counted(len(result.errors), "error"))
            return result

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.settings.watch_interval)
            try:
                current = await asyncio.get_running_loop().run_in_executor(
                    None, signature, self.zones_dir
                )
                if current != self.loaded_signature:
                    await self.reload()
            except Exception:  # the watcher must outlive any one bad reload
                log.zones.exception("zone directory watch failed")

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting, let open TCP conversations end, then close everything."""
        self.feed.close()
        if self.engine.stats in metrics.dns_collector.sources:
            metrics.dns_collector.sources.remove(self.engine.stats)
        limiter = self.engine.limiter
        if limiter is not None and limiter.stats in metrics.dns_collector.limiters:
            metrics.dns_collector.limiters.remove(limiter.stats)
        await cancel_and_wait(self.watcher)
        for server in self.servers:
            server.close()
        for transport in self.transports:
            transport.close()
        for batched in self.batched:
            batched.close()
        # Between messages a connection has nothing in flight: close it now. One
        # holding part of a message gets the grace period to finish sending it.
        for connection in list(self.connections):
            if not connection.buffer:
                connection.close()
        deadline = asyncio.get_running_loop().time() + grace
        while self.connections and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
            for connection in list(self.connections):
                if not connection.buffer:  # its last message is answered
                    connection.close()
        for connection in list(self.connections):
            connection.close()
        for server in self.servers:
            await server.wait_closed()
