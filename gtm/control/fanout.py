"""Redis, the fast path: "version N is live" on pub/sub, and node reports in a hash.

Redis only ever speeds things up. A lost announcement delays a change until the
followers' next reconcile; a lost report makes a node look stale in ``gtm status``
until its next one. So every failure here is logged, counted and swallowed, and
every call has a short timeout. A commit does not even wait for that: announcements
go out from a background task, so a Redis that is down or hung never slows a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from redis.exceptions import RedisError

from gtm import log, metrics
from gtm.control.store import NodeStatus
from gtm.redis_client import client

TIMEOUT = 0.5  # the longest any one Redis call may take, connecting included
NODE_TTL = 24 * 3600  # forget nodes that have not reported for a day


def config_channel(namespace: str) -> str:
    return f"{namespace}:config"


def nodes_key(namespace: str) -> str:
    return f"{namespace}:nodes"


class RedisFanout:
    """The control plane's and the nodes' side of Redis, for one namespace."""

    def __init__(self, url: str, namespace: str, timeout: float = TIMEOUT):
        self.url = url
        self.namespace = namespace
        self.timeout = timeout
        self.redis = client(url, timeout)
        self._last_error = 0.0
        self._unannounced = 0  # the newest committed version not yet handed to Redis
        self._publisher: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        await self.redis.aclose()

    def announce_soon(self, version: int) -> None:
        """Announce ``version`` from a background task; the caller (a commit) never waits.

        Followers fetch the head whatever the message says, so only the newest version
        matters: while one publish is in flight, later versions replace the one waiting
        rather than queue up behind a hung server."""
        self._unannounced = max(self._unannounced, version)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.get_running_loop().create_task(
                self._announce_unannounced(), name="config-announce")

    async def _announce_unannounced(self) -> None:
        while self._unannounced:
            version, self._unannounced = self._unannounced, 0
            await self.announce(version)

    async def announce(self, version: int) -> bool:
        try:
            # The socket timeouts bound each read and write; this bounds the whole call,
            # connection handshake included.
            async with asyncio.timeout(self.timeout):
                await self.redis.publish(config_channel(self.namespace), str(version))
        except (RedisError, OSError, TimeoutError) as exc:
            metrics.config_announce_failures.labels("redis").inc()
            self._warn("cannot announce version %d on Redis: %s", version, exc)
            return False
        return True

    async def report(self, status: NodeStatus) -> bool:
        try:
            await self.redis.hset(nodes_key(self.namespace), status.node_id,
                                  json.dumps(status.public()))
        except (RedisError, OSError) as exc:
            self._warn("cannot report to Redis: %s", exc)
            return False
        return True

    async def nodes(self) -> list[NodeStatus]:
        try:
            raw: dict[Any, Any] = await self.redis.hgetall(nodes_key(self.namespace))
        except (RedisError, OSError) as exc:
            self._warn("cannot read node reports from Redis: %s", exc)
            return []
        now = time.time()
        out = []
        for text in raw.values():
            try:
                data = json.loads(text)
                status = NodeStatus(str(data["node_id"]), str(data["kind"]), int(data["version"]),
                                    float(data["last_contact"]), dict(data.get("info", {})))
            except (ValueError, KeyError, TypeError):
                continue
            if now - status.last_contact < NODE_TTL:
                out.append(status)
        return out

    def _warn(self, message: str, *args: object) -> None:
        # An outage would otherwise log on every commit and report: once a minute is enough.
        now = time.monotonic()
        if now - self._last_error > 60:
            self._last_error = now
            log.control.warning(message, *args)
