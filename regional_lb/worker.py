"""One balancer worker: its listeners, its snapshot, its timers, reload and graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import sys
from collections.abc import Callable, Coroutine, Mapping
from functools import lru_cache
from typing import Any, Protocol

from gtm import log
from gtm.metrics import LbBackendSample, LbQueueSample, LbSample
from gtm.process import cancel_and_wait
from gtm.sockopts import listen_backlog
from regional_lb import heap
from regional_lb.balancing.state import LATENCY_BUCKETS
from regional_lb.client_limits import Limiter
from regional_lb.client_tables import ClientTables
from regional_lb.config import LbConfig, ListenerSpec
from regional_lb.l4 import TcpSession
from regional_lb.l7.http2 import Http2Connection, Http2Stats
from regional_lb.l7.proxy import ClientProtocol
from regional_lb.l7.upstream import UpstreamProtocol
from regional_lb.pool_queue import RESULTS
from regional_lb.snapshot import Listener, Snapshot, compile_snapshot
from regional_lb.sockets import address_key, bind_listener, listener_key
from regional_lb.tls.listener import (
    ADMIN_TLS,
    ListenerTls,
    TlsPlan,
    TlsRegistry,
    TlsSpec,
    stop_task,
)


def _tls_specs(config: LbConfig) -> list[tuple[str, TlsSpec | None]]:
    """Every TLS endpoint of a config by name: the listeners and the admin API."""
    return [*((spec.name, spec.tls) for spec in config.listeners), (ADMIN_TLS, config.admin_tls)]


# Connections that must have closed (and at least half of the most seen) before the
# worker gives their memory back: smaller ebbs are left to be reused.
CROWD = 1024


class Timed(Protocol):
    deadline: float

    def on_timeout(self, now: float) -> None: ...


class Stats:
    """Plain counters for the hot path, read by the metrics collector and the report."""

    __slots__ = ("rejected", "reloads", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.rejected = 0
        self.reloads = 0


@lru_cache(maxsize=4096)
def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


class Worker:
    def __init__(self, config: LbConfig, sockets: dict[str, socket.socket] | None = None,
                 limiter: Limiter | None = None, ticket_keys: bytes | None = None):
        """``ticket_keys``: TLS session ticket keys for configs without a key file, made
        before the balancer's workers forked (None: this worker makes its own)."""
        self.loop = asyncio.get_running_loop()
        self.tls = TlsRegistry(ticket_keys)
        # Everything a request reads, in one object (regional_lb.snapshot).
        self.snapshot: Snapshot
        tls = self.tls.prepare(_tls_specs(config), self.tls.ticket_keys(config.tls.ticket_key_file))
        self._swap(compile_snapshot(config, None, tls=tls.listeners), tls)
        self.tls_watcher: asyncio.Task[None] | None = None
        self.connections: set[Any] = set()
        self.crowd = 0  # the most connections seen since memory was last given back
        self.last_count = 0  # connections at the previous sweep
        # Per-client state: shared with the other workers when they were forked with it.
        self.limiter = limiter or Limiter(ClientTables(config.limits.client_table))
        self.stopping = False
        self.stats = Stats()
        self.http2 = Http2Stats()
        # The protocol an HTTP/2 connection is handed to: it builds on the HTTP/1.1 one,
        # so the HTTP/1.1 protocol finds it here rather than importing it (no cycle).
        self.http2_connection = Http2Connection
        self.sockets = dict(sockets or {})
        self.servers: dict[str, asyncio.base_events.Server] = {}
        self.names: dict[str, str] = {}  # listener key -> listener name in the live snapshot
        self.tasks: set[asyncio.Task[Any]] = set()
        self.sweeper: asyncio.Task[None] | None = None
        self.request_prefix = os.urandom(6).hex().encode() + b"-"
        self.request_count = 0
        self.reload_lock = asyncio.Lock()

    # -- small services for the protocols ----------------------------------------------
    def request_id(self) -> bytes:
        self.request_count += 1
        return self.request_prefix + b"%x" % self.request_count

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def trusted(self, listener: Listener, host: str) -> bool:
        address = _address(host)
        return address is not None and any(
            address in network for network in listener.spec.trusted_networks)

    def sample(self) -> LbSample:
        """Counters for the metrics collector, read at scrape time."""
        rows = [
            LbBackendSample(pool.name, b.key, b.requests, b.failures, b.active, b.connections,
                            list(b.responses), list(zip(LATENCY_BUCKETS, b.latency_buckets,
                                                        strict=True)), b.latency_sum)
            for pool in self.snapshot.pools.values() for b in pool.backends
        ]
        handshakes, expiry, refusals = self.tls.sample()
        sample = LbSample(rows, self.stats.rejected, self.stats.reloads, handshakes, expiry,
                          refusals, self.http2.sample())
        self._sample_limits(sample)
        return sample

    def _sample_limits(self, sample: LbSample) -> None:
        limiter = self.limiter
        sample.limited = [(listener, reason, count)
                          for listener, counts in limiter.refused.items()
                          for reason, count in vars(counts).items()]
        sample.table_overflows = {"evicted": limiter.tables.rate.evictions,
                                  "uncounted": limiter.tables.counts.full}
        for pool in self.snapshot.pools.values():
            queue = pool.queue
            if queue is None:
                continue
            for klass, stats in zip(queue.names, queue.stats, strict=True):
                sample.queues.append(LbQueueSample(
                    pool.name, klass, stats.depth, dict(zip(RESULTS, stats.results, strict=True)),
                    list(zip(LATENCY_BUCKETS, stats.wait_buckets, strict=True)), stats.wait_sum))

    # -- start, reload ------------------------------------------------------------------
    async def start(self) -> None:
        await self._sync_listeners()
        self.sweeper = self.loop.create_task(self._sweep())
        self._restart_tls_watcher()

    def _restart_tls_watcher(self) -> None:
        """One poller per worker over its certificate directories (none without TLS)."""
        if self.tls_watcher is not None:
            self.tls_watcher.cancel()
            self.tls_watcher = None
        settings = self.snapshot.config.tls
        if self.tls.stores and settings.watch_interval > 0:
            self.tls_watcher = self.loop.create_task(
                self.tls.watch(settings.watch_interval, settings.expiry_warning_days))

    def bound(self) -> dict[str, tuple[str, int]]:
        """Listener name -> the address it is actually bound to (ports of 0 resolved)."""
        result = {}
        for key, server in self.servers.items():
            name = self.names.get(key)
            if name is not None and server.sockets:
                host, port = server.sockets[0].getsockname()[:2]
                result[name] = (host, port)
        return result

    async def reload(self, config: LbConfig) -> Snapshot:
        """Compile in a thread, then swap in one step; requests in flight keep theirs."""
        async with self.reload_lock:
            previous = self.snapshot
            specs = _tls_specs(config)
            await self.tls.preload(specs)  # raises for an unusable directory
            keys = await self.loop.run_in_executor(None, self.tls.ticket_keys,
                                                   config.tls.ticket_key_file)
            tls = self.tls.prepare(specs, keys)
            # Pure: it reads the live snapshot's records (what only a swap changes, and
            # swaps wait for this lock) and changes nothing live, so a compile that
            # raises leaves the running snapshot as it was.
            snapshot = await self.loop.run_in_executor(None, self._compile, config, previous,
                                                       tls.listeners)
            self._swap(snapshot, tls)
            self.stats.reloads += 1
            await self._sync_listeners()
            await self.tls.rescan()  # a reload also picks up changed certificates
            self._restart_tls_watcher()
            self._close_orphaned_upstreams(previous, snapshot)
            log.lb.info("configuration %d is live (%d pools, %d listeners)", snapshot.version,
                        len(snapshot.pools), len(snapshot.listeners))
            return snapshot

    @staticmethod
    def _compile(config: LbConfig, previous: Snapshot,
                 tls: Mapping[str, ListenerTls]) -> Snapshot:
        return compile_snapshot(config, previous, tls=tls)

    def _swap(self, snapshot: Snapshot, tls: TlsPlan) -> None:
        """The config's settings into the runtime records, its TLS state (stores, ticket
        keys) into the registry, and the snapshot in: one synchronous step (no await), so
        no request sees one without the others, and a failed compile changed none."""
        self.tls.commit(tls)
        snapshot.go_live(self.loop.time())
        self.snapshot = snapshot

    async def _sync_listeners(self) -> None:
        wanted: dict[str, ListenerSpec] = {
            listener_key(spec): spec for spec in self.snapshot.config.listeners}
        retiring = [key for key in self.servers if key not in wanted]
        # New servers first, old ones after. A listener whose TLS settings changed gets a
        # new server on the old one's socket (a duplicate of it: the same accept queue),
        # so it never stops accepting and nothing queued on the old server is reset when
        # that closes; a new address gets a socket of its own.
        for key, spec in wanted.items():
            self.names[key] = spec.name
            if key not in self.servers:
                sock = self.sockets.pop(key, None) or self._same_address(retiring, spec) \
                    or bind_listener(spec.bind, spec.backlog)
                self.servers[key] = await self._serve(key, spec, sock)
        if retiring:
            # One loop turn first, so connections already queued on a socket that goes
            # away (a listener removed) are accepted rather than reset when it closes.
            await asyncio.sleep(0)
        for key in retiring:
            self.servers.pop(key).close()
            self.names.pop(key, None)
        for spec in wanted.values():
            log.lb.debug("listener %s on %s (%s)", spec.name, spec.bind, spec.mode)

    def _same_address(self, retiring: list[str], spec: ListenerSpec) -> socket.socket | None:
        """A duplicate of the socket of a retiring server on ``spec``'s address and mode."""
        wanted = address_key(spec)
        for key in retiring:
            if key == wanted or key.startswith(wanted + ":tls:"):
                for sock in self.servers[key].sockets:
                    return socket.fromfd(sock.fileno(), sock.family, sock.type)
        return None

    async def _serve(self, key: str, spec: ListenerSpec,
                     sock: socket.socket) -> asyncio.base_events.Server:
        listener = self.snapshot.listeners[spec.name]
        backlog = listen_backlog(spec.backlog)
        if listener.tls is None:
            return await self.loop.create_server(self._factory(key, spec.mode), sock=sock,
                                                 backlog=backlog)
        return await self.loop.create_server(
            self._factory(key, spec.mode), sock=sock, ssl=listener.tls.front,
            ssl_handshake_timeout=self.snapshot.timeouts.header_read, backlog=backlog)

    def _factory(self, key: str, mode: str) -> Callable[[], asyncio.Protocol]:
        if mode == "tcp":
            return lambda: TcpSession(self, self.names.get(key, ""))
        return lambda: ClientProtocol(self, self.names.get(key, ""))

    def _close_orphaned_upstreams(self, previous: Snapshot, current: Snapshot) -> None:
        live = {id(b) for b in current.backends().values()}
        for backend in previous.backends().values():
            if id(backend) not in live:
                self._close_idle(backend.idle)
        for backend in current.backends().values():
            if backend.admin == "maintenance":
                self._close_idle(backend.idle)

    @staticmethod
    def _close_idle(idle: list[object]) -> None:
        for upstream in list(idle):
            if isinstance(upstream, UpstreamProtocol):
                upstream.close()
        idle.clear()

    # -- timers -------------------------------------------------------------------------
    def tick(self) -> float:
        t = self.snapshot.timeouts
        shortest = min(t.header_read, t.idle_keepalive, t.backend_response, t.tcp_idle)
        return max(0.01, min(0.25, shortest / 5))

    async def _sweep(self) -> None:
        """One timer for every connection: cheaper than a timer handle per request."""
        while True:
            await asyncio.sleep(self.tick())
            now = self.loop.time()
            for connection in list(self.connections):
                deadline = connection.deadline
                if deadline and deadline < now:
                    try:
                        connection.on_timeout(now)
                    except Exception:  # one bad connection never stops the timers
                        log.lb.exception("timeout handling failed")
            self._pump_queues(now)
            self._after_crowd(len(self.connections))

    def _after_crowd(self, count: int) -> None:
        """Once a crowd of connections has gone, give back the memory it left behind.

        Gone: CROWD or more fewer than the most seen, at most half of it, and no longer
        falling (so the last of them, and uvloop's handles, are freed first).
        """
        previous, self.last_count = self.last_count, count
        if count > self.crowd:
            self.crowd = count
        elif self.crowd - count >= CROWD and count <= self.crowd // 2 \
                and previous - count < CROWD // 8:
            self.crowd = count
            self._compact()

    def _compact(self) -> None:
        """Rebuild the connection set for what it holds now (sets never shrink) and have
        the C heap return its free pages (see regional_lb.heap)."""
        peak_bytes = sys.getsizeof(self.connections)
        self.connections = set(self.connections)
        trimmed = heap.release_free_pages()
        log.lb.debug("%d connections left: their table went from %d to %d bytes%s",
                     len(self.connections), peak_bytes, sys.getsizeof(self.connections),
                     ", free heap pages returned" if trimmed else "")

    def _pump_queues(self, now: float) -> None:
        """Slots that freed without a request ending (a backend back to health, a reload
        that raised max_connections) go to queued requests here."""
        for pool in self.snapshot.pools.values():
            queue = pool.queue
            if queue is not None and queue.size:
                queue.pump(now)

    # -- stop ---------------------------------------------------------------------------
    async def stop(self, grace: float | None = None, deadline: float | None = None) -> None:
        """Fail health, keep accepting for the grace period, then finish what is in flight."""
        timeouts = self.snapshot.timeouts
        self.stopping = True
        await asyncio.sleep(timeouts.shutdown_grace if grace is None else grace)
        for server in self.servers.values():
            server.close()
        end = self.loop.time() + (timeouts.shutdown_deadline if deadline is None else deadline)
        while self.connections and self.loop.time() < end:
            for connection in list(self.connections):
                if isinstance(connection, ClientProtocol) and connection.idle:
                    connection.close()
                elif isinstance(connection, Http2Connection):
                    connection.drain()  # GOAWAY once; closed when its streams are done
            await asyncio.sleep(0.02)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        for pool in self.snapshot.pools.values():
            for backend in pool.backends:
                self._close_idle(backend.idle)
        await cancel_and_wait(self.sweeper)
        await stop_task(self.tls_watcher)
        await self.tls.close()  # control-plane certificate feeds hold store connections
        for task in list(self.tasks):
            task.cancel()
        for server in self.servers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
