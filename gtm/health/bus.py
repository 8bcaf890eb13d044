"""How observations travel between nodes: in-process (``gtm up``, tests) or Redis.

Redis layout, under the control plane's namespace (key prefix) ``ns``:

* ``SET ns:health:obs:<target>:<observer> <json> PX expiry`` after every probe, and
  ``PUBLISH ns:health:obs <json>``: subscribers hear it at once; a node that missed
  messages reads the keys back every ``resync`` seconds (keys expire on their own, so
  a dead observer disappears).
* ``SET ns:health:node:<observer> <summary json>``: what `gtm health --redis` lists.
* Region reports of the regional balancers (regional_lb/report.py):
  ``ns:lb:region:<region>:<worker>`` keys and the ``ns:lb:regions`` channel.

Every Redis failure is logged (rate-limited) and swallowed: a node that cannot
reach Redis keeps serving; its view of the others simply ages, and the quorum
rule then makes it hold its last agreed state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from gtm import log, redis_client
from gtm.health.quorum import Observation

ObservationSink = Callable[[Observation], None]
ReportSink = Callable[[dict[str, Any]], None]


def obs_channel(namespace: str) -> str:
    return f"{namespace}:health:obs"


def obs_key(namespace: str, target: str, observer: str) -> str:
    return f"{namespace}:health:obs:{target}:{observer}"


def node_key(namespace: str, observer: str) -> str:
    return f"{namespace}:health:node:{observer}"


def region_prefix(namespace: str) -> str:
    return f"{namespace}:lb:region:"


def region_channel(namespace: str) -> str:
    return f"{namespace}:lb:regions"


class LocalHub:
    """In-process fan-out: every node attached hears every observation at once."""

    def __init__(self) -> None:
        self.sinks: list[ObservationSink] = []

    def attach(self, sink: ObservationSink) -> None:
        self.sinks.append(sink)

    def detach(self, sink: ObservationSink) -> None:
        with contextlib.suppress(ValueError):
            self.sinks.remove(sink)

    async def publish(self, observation: Observation) -> None:
        for sink in list(self.sinks):
            sink(observation)


class RedisBus:
    """One node's link to Redis for observations and region reports."""

    def __init__(self, url: str, namespace: str, expiry: float, resync: float = 2.0):
        self.url = url
        self.namespace = namespace
        self.expiry = expiry
        self.resync = resync
        self.redis = redis_client.client(url)
        self._warned = 0.0

    async def publish(self, observation: Observation) -> None:
        text = observation.to_json()
        key = obs_key(self.namespace, observation.target, observation.observer)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(key, text, px=int(self.expiry * 1000))
                pipe.publish(obs_channel(self.namespace), text)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._warn("observation not published to Redis: %s", exc)

    async def publish_summary(self, observer: str, summary: dict[str, Any]) -> None:
        try:
            await self.redis.set(node_key(self.namespace, observer), json.dumps(summary),
                                 px=int(max(self.expiry * 3, 30) * 1000))
        except (RedisError, OSError) as exc:
            self._warn("health summary not published to Redis: %s", exc)

    async def listen(self, on_observation: ObservationSink, on_report: ReportSink) -> None:
        """Until cancelled: the channels for news, the keys as a backstop."""
        resync = asyncio.create_task(self._resync_loop(on_observation, on_report))
        try:
            await self._subscribe_loop(on_observation, on_report)
        finally:
            resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await resync

    async def _subscribe_loop(self, on_observation: ObservationSink,
                              on_report: ReportSink) -> None:
        delay = 0.2
        obs, regions = obs_channel(self.namespace), region_channel(self.namespace)
        while True:
            client = redis_client.subscriber(self.url)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(obs, regions)
                delay = 0.2
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    _deliver(message["channel"] == obs, message["data"], on_observation,
                             on_report)
            except (RedisError, OSError) as exc:
                self._warn("Redis health subscription lost (%s); retrying", exc)
            finally:
                # Bounded: closing must not hang a node's shutdown on a dead connection.
                with contextlib.suppress(RedisError, OSError, TimeoutError):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)
                    await asyncio.wait_for(client.aclose(), 1.0)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _resync_loop(self, on_observation: ObservationSink, on_report: ReportSink) -> None:
        while True:
            try:
                await self.read_all(on_observation, on_report)
            except (RedisError, OSError) as exc:
                self._warn("cannot read health keys from Redis: %s", exc)
            await asyncio.sleep(self.resync)

    async def read_all(self, on_observation: ObservationSink, on_report: ReportSink) -> None:
        for pattern, is_obs in ((obs_key(self.namespace, "*", "*"), True),
                                (region_prefix(self.namespace) + "*", False)):
            keys = [k async for k in self.redis.scan_iter(match=pattern, count=500)]
            if not keys:
                continue
            for value in await self.redis.mget(keys):
                if value is not None:
                    _deliver(is_obs, value, on_observation, on_report)

    async def summaries(self) -> list[dict[str, Any]]:
        keys = [k async for k in self.redis.scan_iter(
            match=node_key(self.namespace, "*"), count=500)]
        values = await self.redis.mget(keys) if keys else []
        out = []
        for value in values:
            if value is not None:
                with contextlib.suppress(ValueError, TypeError):
                    out.append(json.loads(value))
        return out

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await asyncio.wait_for(self.redis.aclose(), 1.0)

    def _warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._warned > 30:  # an outage fails every probe the same way
            self._warned = now
            log.health.warning(message, *args)


def _deliver(is_obs: bool, data: Any, on_observation: ObservationSink,
             on_report: ReportSink) -> None:
    try:
        if is_obs:
            on_observation(Observation.from_json(data))
        else:
            report = json.loads(data)
            if isinstance(report, dict) and "region" in report:
                on_report(report)
    except (ValueError, KeyError, TypeError) as exc:
        log.health.debug("ignoring a malformed health message: %s", exc)
