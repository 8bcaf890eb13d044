"""The region report: what the steering capacity policy reads about this region.

Contract (one JSON object, every ``report_interval`` seconds)::

    {"region": str, "worker": int, "time": unix seconds, "config_version": int,
     "backends": [{"address", "state" (admin), "health", "reason", "panic"}, ...],
     "healthy": bool,            # some backend can take requests and we are not stopping
     "capacity": int,            # in-flight requests the region takes (config, else sum of
                                 # max_connections of available backends)
     "in_flight": int, "headroom": float,   # 1 - in_flight / capacity, 0..1
     "requests_per_s": float, "p95_ms": float | null, "error_rate": float,  # last interval
     "backends_up": int, "backends_total": int,
     "scaling": {"growth": int, "pools_at_max": [pool, ...]}}  # auto-scaled pools only

With auto-scaled pools, ``capacity`` also counts what the pools may still grow into
(``max`` minus their serving backends, times the pool's max_connections) while their
scaler runs and is not paused: a region that can add backends is not full, one whose
pools are at ``max`` reports only what it has, so its headroom falls with its load and
the capacity filter spills new clients to the next region.

Published in-process (``REPORTS[region]``, and to ``SUBSCRIBERS``) and, when ``redis_url``
is set, to Redis: ``SET <ns>:lb:region:<region>:<worker>`` (expires after 3 intervals) and
``PUBLISH <ns>:lb:regions`` (``ns`` is ``redis_namespace``, "gtm"). With several workers
each publishes its own share (capacity and in-flight add up; gtm/health sums them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gtm import log

# The in-process channel is gtm's, so the GTM tier can read it without importing us.
from gtm.health.reports import publish
from gtm.process import cancel_and_wait
from regional_lb.balancing.state import LATENCY_BUCKETS
from regional_lb.health import health_view
from regional_lb.shares import INTERVAL as SHARE_INTERVAL
from regional_lb.shares import write_share

if TYPE_CHECKING:
    from regional_lb.worker import Worker



def percentile(buckets: list[int], share: float) -> float | None:
    """The upper bound of the bucket holding the given share of observations."""
    total = sum(buckets)
    if total == 0:
        return None
    running = 0
    for count, bound in zip(buckets, LATENCY_BUCKETS, strict=True):
        running += count
        if running >= share * total:
            return bound if bound != float("inf") else LATENCY_BUCKETS[-2]
    return None


class RegionReporter:
    def __init__(self, worker: Worker, index: int = 0, workers: int = 1,
                 shares: Path | None = None):
        self.worker = worker
        self.shares = shares  # supervised: where in-flight counts go for the other workers
        self.share_task: asyncio.Task[None] | None = None
        self.index = index
        self.workers = workers  # a configured region capacity is shared between them
        self.latest: dict[str, Any] = {}
        self.task: asyncio.Task[None] | None = None
        self.redis: Any = None
        self._last: tuple[float, int, int, list[int]] | None = None
        # Auto-scaling (regional_lb.autoscale): the in-flight requests the region's pools
        # may still grow into, and which pools are at max. None: no scaler.
        self.growth: Callable[[], tuple[int, list[str]]] | None = None

    async def start(self) -> None:
        url = self.worker.snapshot.config.redis_url
        if url:
            import redis.asyncio as aioredis

            self.redis = aioredis.from_url(url)
        self.publish_once()
        self.task = asyncio.get_running_loop().create_task(self._run())
        if self.shares is not None:
            self.share_task = asyncio.get_running_loop().create_task(self._share())

    async def stop(self) -> None:
        await cancel_and_wait(self.task, self.share_task)
        if self.shares is not None:
            with contextlib.suppress(OSError):
                (self.shares / f"worker-{self.index}.json").unlink()
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.worker.snapshot.config.report_interval)
            report = self.publish_once()
            if self.redis is not None:
                await self._to_redis(report)

    async def _share(self) -> None:
        assert self.shares is not None
        while True:
            try:
                write_share(self.shares, self.index, self.worker.snapshot)
            except OSError as exc:
                log.lb.warning("cannot write in-flight counts for the admin worker: %s", exc)
            await asyncio.sleep(SHARE_INTERVAL)

    async def _to_redis(self, report: dict[str, Any]) -> None:
        text = json.dumps(report)
        config = self.worker.snapshot.config
        namespace = config.redis_namespace
        try:
            await self.redis.set(f"{namespace}:lb:region:{report['region']}:{self.index}", text,
                                 px=int(3000 * config.report_interval))
            await self.redis.publish(f"{namespace}:lb:regions", text)
        except Exception as exc:  # Redis down: the data plane carries on regardless
            log.lb.warning("region report not published to Redis: %s", exc)

    def publish_once(self) -> dict[str, Any]:
        report = self.build()
        self.latest = report
        publish(report)
        return report

    def build(self) -> dict[str, Any]:
        worker = self.worker
        snapshot = worker.snapshot
        config = snapshot.config
        backends = list({id(b): b for b in snapshot.backends().values()}.values())
        up = [b for b in backends if b.available and b.healthy]  # not those of a panic
        in_flight = sum(b.active for b in backends)
        capacity = config.capacity // self.workers if config.capacity else \
            sum(b.max_connections for b in up)
        growth, at_max = self.growth() if self.growth is not None else (0, [])
        if not config.capacity:  # a pool below max can still take more: not full yet
            capacity += growth // self.workers
        now = time.monotonic()
        requests = sum(b.requests for b in backends)
        errors = sum(b.responses[5] for b in backends)
        buckets = [sum(col) for col in zip(*(b.latency_buckets for b in backends),
                                           strict=True)] if backends else []
        rate, p95, error_rate = 0.0, None, 0.0
        if self._last is not None:
            then, last_requests, last_errors, last_buckets = self._last
            elapsed = max(now - then, 1e-6)
            done = requests - last_requests
            rate = done / elapsed
            error_rate = (errors - last_errors) / done if done > 0 else 0.0
            # A pool that had no backend had no buckets: count from zero then.
            if len(last_buckets) != len(buckets):
                last_buckets = [0] * len(buckets)
            delta = [a - b for a, b in zip(buckets, last_buckets, strict=True)]
            p95 = percentile(delta, 0.95)
        self._last = (now, requests, errors, buckets)
        return {
            "region": config.region, "worker": self.index, "time": time.time(),
            "config_version": snapshot.version,
            "healthy": bool(up) and not worker.stopping,
            "capacity": capacity, "in_flight": in_flight,
            "headroom": max(0.0, 1.0 - in_flight / capacity) if capacity else 0.0,
            "requests_per_s": round(rate, 3),
            "p95_ms": round(p95 * 1000, 3) if p95 is not None else None,
            "error_rate": round(error_rate, 6),
            "backends_up": len(up), "backends_total": len(backends),
            "backends": [_backend_line(b) for b in backends],
            **({"scaling": {"growth": growth, "pools_at_max": at_max}}
               if self.growth is not None else {}),
        }


def _backend_line(backend: Any) -> dict[str, Any]:
    """One backend as `gtm health` lists it: address, admin state, health and why."""
    view = health_view(backend)
    return {"address": backend.key, "state": backend.admin, "health": view["health"],
            "reason": view["health_reason"], "panic": view["panic"]}
