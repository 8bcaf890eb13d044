"""A node's side of the control plane: follow the stored config and serve its versions.

A DNS node or a regional balancer runs one ConfigFollower in its event loop:

1. ``start()`` serves the last-known-good snapshot from the state directory at
   once, without asking anyone (static stability); with no snapshot it waits a
   little for the store.
2. It hears of new versions from Redis pub/sub and from the store (PostgreSQL
   NOTIFY, or in-process for SQLite), and every ``reconcile_interval`` it asks the
   store for the head anyway, so a lost message only delays a change.
3. A new version is fetched, compiled in a worker thread (never on the event
   loop), written to disk as the new snapshot, then handed to ``apply``.
4. It reports (node id, version served, last contact) to the store and to Redis,
   which is what ``gtm status`` shows; a new version is reported as part of applying
   it, before the node counts it as served.

Nothing here ever stops the node from serving: every failure is logged, counted
and retried on the next tick, and the node keeps what it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from gtm import log, metrics, redis_client
from gtm.config.document import CompiledConfig, compile_document
from gtm.control import fanout
from gtm.control.snapshot import read_snapshot, write_snapshot
from gtm.control.store import NodeStatus, Store
from gtm.control.stores import store_from_url
from gtm.errors import ConfigError, StoreUnavailable
from gtm.process import cancel_and_wait
from gtm.store_access import validate_namespace

ApplyCallback = Callable[[int, CompiledConfig], Awaitable[None]]


@dataclass(frozen=True)
class FollowerSettings:
    node_id: str
    state_dir: Path
    store_url: str | None = None  # postgresql://... or sqlite:///path
    redis_url: str | None = None
    namespace: str = "gtm"
    kind: str = "dns"
    reconcile_interval: float = 2.0
    # With no snapshot on disk, how long start() waits for a first version.
    first_sync_timeout: float = 5.0
    # Hear of versions from the store itself (PostgreSQL NOTIFY). Off only to measure
    # the other paths alone (bench/propagation.py).
    store_notify: bool = True
    # A copy of the control plane's secret key (DNS nodes open the cookie secrets with
    # it); None: $GTM_SECRET_KEY_FILE, if set.
    secret_key_file: Path | None = None


class ConfigFollower:
    def __init__(self, settings: FollowerSettings, apply: ApplyCallback,
                 store: Store | None = None):
        """Follow ``store`` (shared, in-process) or one opened from settings.store_url."""
        self.settings = settings
        self.namespace = validate_namespace(settings.namespace)
        self.apply = apply
        self.owns_store = store is None
        if store is None:
            if settings.store_url is None:
                raise ConfigError("a follower needs a store or a store URL", "follower",
                                  "store_url")
            store = store_from_url(settings.store_url, self.namespace)
        self.store = store
        self.version = 0
        self.served: CompiledConfig | None = None
        self.last_contact: float | None = None  # last successful call to the store
        self.error: str | None = None
        self._failed_version = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._redis = fanout.RedisFanout(settings.redis_url, self.namespace) \
            if settings.redis_url else None
        self._warned_at = 0.0
        self._warned_ahead = False
        # Whether announcements can reach this node now (store NOTIFY, Redis pub/sub).
        self.store_subscribed = False
        self.redis_subscribed = False
        # More to report (e.g. {"health": ...} from gtm.health), merged into the info.
        self.status_extra: Callable[[], dict[str, Any]] | None = None
        # What stops with the follower (a DNS node's transfers and notices), first.
        self.closers: list[Callable[[], Awaitable[None]]] = []

    async def start(self) -> None:
        if not await self._serve_snapshot():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._first_sync(), self.settings.first_sync_timeout)
        self._tasks.append(asyncio.create_task(self._run(), name="config-follower"))
        if self.settings.redis_url:
            self._tasks.append(asyncio.create_task(self._listen_redis(), name="config-redis"))

    async def stop(self) -> None:
        for close in self.closers:
            try:
                await close()
            except Exception:  # stopping goes on whatever one part does
                log.follower.exception("stopping a part of the node failed")
        await cancel_and_wait(*self._tasks)
        self._tasks.clear()
        if self._redis is not None:
            await self._redis.close()
        if self.owns_store:
            await self.store.close()

    async def wait_for_version(self, version: int, timeout: float) -> None:
        """Until this node serves ``version`` or later (for tests and tools)."""
        deadline = time.monotonic() + timeout
        while self.version < version:
            if time.monotonic() > deadline:
                raise TimeoutError(f"still serving {self.version}, waited for {version}")
            await asyncio.sleep(0.01)

    async def sync_now(self) -> None:
        """Check the store now (SIGHUP) rather than at the next tick."""
        self._wake.set()

    def heard(self, version: int) -> None:
        """An announcement of ``version``: sync now rather than at the next tick."""
        if version > self.version:
            self._wake.set()

    async def _serve_snapshot(self) -> bool:
        loop = asyncio.get_running_loop()
        snapshot = await loop.run_in_executor(None, read_snapshot, self.settings.state_dir)
        if snapshot is None:
            log.follower.info("no snapshot in %s; waiting for the store",
                              self.settings.state_dir)
            return False
        try:
            compiled = await loop.run_in_executor(
                None, compile_document, snapshot.document, "snapshot")
        except ConfigError as exc:
            log.follower.error("the snapshot of version %d no longer compiles: %s",
                               snapshot.version, exc)
            return False
        await self._apply(snapshot.version, compiled, "snapshot")
        return True

    async def _first_sync(self) -> None:
        while True:
            try:
                await self.store.open()
                await self._sync_once()
                return
            except StoreUnavailable as exc:
                self._warn("store unavailable at start: %s", exc)
            await asyncio.sleep(0.5)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._tick()
            except Exception:  # the loop must outlive any one bad tick
                log.follower.exception("config follower tick failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.reconcile_interval)

    async def _tick(self) -> None:
        try:
            # Opening is idempotent too; a node that started from its snapshot has not
            # opened the store yet (SQLite needs it; PostgreSQL connects lazily anyway).
            await self.store.open()
            # Re-subscribing is idempotent and cheap while the subscription is live,
            # and makes a new one after the store's connection was lost.
            if self.settings.store_notify:
                self.store_subscribed = await self.store.subscribe(self.heard)
            await self._sync_once()
        except StoreUnavailable as exc:
            self.store_subscribed = False
            self._warn("store unavailable; serving version %d: %s", self.version, exc)
        await self._report()

    async def _sync_once(self) -> None:
        head = await self.store.head()
        self.last_contact = time.time()
        if head == self.version or (head and head == self._failed_version):
            return
        if head < self.version and not self._ahead_of(head):
            return
        record = await self.store.get(head)
        if record is None or record.document is None:
            return
        await self._adopt(record.number, record.document)

    def _ahead_of(self, head: int) -> bool:
        """This node serves a version the store has not reached: a store restored from a
        backup, or a snapshot from another deployment. The store is the truth: True when
        its head can be adopted (it has one); new commits are adopted as they come."""
        if head == 0:
            if not self._warned_ahead:
                self._warned_ahead = True
                log.follower.error("serving version %d but the store has no version at all; "
                                   "keeping it until the store has one", self.version)
            return False
        log.follower.warning("serving version %d but the store's latest is %d (a restored "
                             "store, or a snapshot from elsewhere): resyncing to %d",
                             self.version, head, head)
        return True

    async def _adopt(self, version: int, document: dict[str, Any]) -> None:
        """Compile and snapshot off the loop; then serve. A failure keeps the old version."""
        def build() -> CompiledConfig:
            compiled = compile_document(document, f"version {version}")
            write_snapshot(self.settings.state_dir, version, document)
            return compiled

        started = time.perf_counter()
        try:
            compiled = await asyncio.get_running_loop().run_in_executor(None, build)
        except (ConfigError, OSError) as exc:
            self._failed_version = version
            self.error = f"version {version}: {exc}"
            metrics.config_follower_applies.labels("error", "store").inc()
            log.follower.error("cannot serve version %d, still serving %d: %s",
                               version, self.version, exc)
            return
        await self._apply(version, compiled, "store")
        # Compile, snapshot to disk and swap: what a new version costs this node.
        metrics.dns_reload_seconds.labels("control").observe(time.perf_counter() - started)

    async def _apply(self, version: int, compiled: CompiledConfig, origin: str) -> None:
        try:
            await self.apply(version, compiled)
        except Exception as exc:
            self._failed_version = version
            self.error = f"version {version}: apply failed: {exc}"
            metrics.config_follower_applies.labels("error", origin).inc()
            log.follower.exception("applying version %d failed", version)
            return
        if origin == "store":
            # Recorded before this node says it serves the version (self.version, the
            # log, the metric): `gtm status` never shows it behind what it reports.
            await self._report(self.status(serving=version))
        self.version, self.served, self.error = version, compiled, None
        metrics.config_follower_applies.labels("ok", origin).inc()
        metrics.config_follower_version.set(version)
        log.follower.info("serving version %d (from %s)", version, origin)

    def status(self, serving: int | None = None) -> NodeStatus:
        """What this node reports; ``serving``: a version just applied (no error left)."""
        info: dict[str, Any] = {
            "pid": os.getpid(), "host": socket.gethostname(),
            "store_contact": self.last_contact,
            "error": self.error if serving is None else None,
            # How often this node reports: `gtm status` calls it stale after a few misses.
            "heartbeat_seconds": self.settings.reconcile_interval,
        }
        if self.status_extra is not None:
            try:
                info.update(self.status_extra())
            except Exception:  # a report must never stop the follower
                log.follower.exception("extra status failed")
        version = self.version if serving is None else serving
        return NodeStatus(self.settings.node_id, self.settings.kind, version, time.time(), info)

    async def _report(self, status: NodeStatus | None = None) -> None:
        status = status or self.status()
        if self._redis is not None:
            await self._redis.report(status)
        with contextlib.suppress(StoreUnavailable):
            await self.store.report_node(status)

    async def _listen_redis(self) -> None:
        url = self.settings.redis_url
        assert url is not None
        delay = 0.2
        while True:
            client = redis_client.subscriber(url)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(fanout.config_channel(self.namespace))
                self.redis_subscribed = True
                log.follower.info("hearing announcements through Redis")
                delay = 0.2
                self._wake.set()  # whatever was announced while unsubscribed
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        self.heard(int(message["data"]))
            except (RedisError, OSError, ValueError) as exc:
                self._warn("Redis subscription lost (%s); retrying", exc)
            finally:
                self.redis_subscribed = False
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _warn(self, message: str, *args: object) -> None:
        # During an outage every tick fails the same way: say so every 30 s, not 2.
        now = time.monotonic()
        if now - self._warned_at > 30:
            self._warned_at = now
            log.follower.warning(message, *args)
