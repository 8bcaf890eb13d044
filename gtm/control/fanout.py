"""Redis, the fast path: "version N is live" on pub/sub, and node reports in a hash.

Redis only ever speeds things up. A lost announcement delays a change until the
followers' next reconcile; a lost report makes a node look stale in ``gtm status``
until its next one. So every failure here is logged, counted and swallowed, and
every call has a short timeout: Redis being down must never slow a commit.
"""

from __future__ import annotations

import json
import time
from typing import Any

from redis.exceptions import RedisError

from gtm import log, metrics
from gtm.control.store import NodeStatus
from gtm.redis_client import client

NODE_TTL = 24 * 3600  # forget nodes that have not reported for a day


def config_channel(namespace: str) -> str:
    return f"{namespace}:config"


def nodes_key(namespace: str) -> str:
    return f"{namespace}:nodes"


class RedisFanout:
    """The control plane's and the nodes' side of Redis, for one namespace."""

    def __init__(self, url: str, namespace: str):
        self.url = url
        self.namespace = namespace
        self.redis = client(url)
        self._last_error = 0.0

    async def close(self) -> None:
        await self.redis.aclose()

    async def announce(self, version: int) -> bool:
        try:
            await self.redis.publish(config_channel(self.namespace), str(version))
        except (RedisError, OSError) as exc:
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
