"""Health of a balancer's backends: active checks, outlier ejection and panic mode.

One :class:`HealthManager` per worker, in the worker's event loop (started and stopped
with the balancer by regional_lb.node). With several workers each one checks its own
backends: the workers share nothing but sockets, and a probe every ``interval`` per
worker is cheap, so no cross-process sharing is needed and no worker depends on another.

- **Active checks** (``check`` on a pool): one task per backend runs the probes of
  gtm.health.probes, judged by the rise/fall machine of gtm.health.state (fastinter while
  a change is under way). Ports default to the backend's own.
- **Passive outlier detection** (``outlier`` on a pool): the data plane reports outcomes
  to each backend's :class:`~regional_lb.outlier.BackendMonitor`; a backend past a
  threshold is ejected for base_ejection x (ejections in a row), capped at max_ejection,
  unless that would eject more than max_ejection_percent of the pool's enabled backends.
  It returns when its time is up. The count in a row decays by one per base_ejection of
  good behaviour. With ``latency_factor``, once per ``latency_window`` a backend whose
  mean response time (at least ``latency_min_requests`` responses) is above that factor
  times the median of its peers' means is ejected the same way.
- A backend is healthy when its check says up and it is not ejected; the manager sets
  that with ``BackendState.set_healthy`` (a recovered backend re-enters via slow start).
- **Panic** (``panic_below``, default 0.5): while fewer than that share of a pool's
  enabled backends are healthy, every backend of the pool is flagged ``panic`` and the
  pickers balance over all enabled backends regardless of health (as Envoy does).

Every change is logged on the ``gtm.lb`` logger and counted in gtm.metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import statistics
import time
from typing import TYPE_CHECKING, Any

from gtm import log, metrics
from gtm.health.probes import probe
from gtm.health.state import HealthMachine
from gtm.process import cancel_and_wait
from gtm.steering.model import HealthCheck
from regional_lb.balancing.state import BackendState, PoolState
from regional_lb.outlier import BackendMonitor

if TYPE_CHECKING:
    from regional_lb.worker import Worker

TICK = 0.05  # seconds between looks at ejections that are over and at reloads


class HealthManager:
    def __init__(self, worker: Worker, seed: int | None = None):
        self.worker = worker
        self.loop = worker.loop
        self.monitors: dict[tuple[str, str], BackendMonitor] = {}  # (pool, backend key)
        self.panic: dict[str, bool] = {}
        self.version = -1
        self.latency_due: dict[str, float] = {}  # pool -> loop time of its next latency look
        self.task: asyncio.Task[None] | None = None
        self.rng = random.Random(seed)

    # -- life ---------------------------------------------------------------------------
    def start(self) -> None:
        self.sync()
        self.task = self.loop.create_task(self._run())

    async def stop(self) -> None:
        tasks = [m.task for m in self.monitors.values() if m.task is not None]
        if self.task is not None:
            tasks.append(self.task)
        await cancel_and_wait(*tasks)
        self.task = None
        for monitor in self.monitors.values():
            monitor.task = None

    async def _run(self) -> None:
        while True:
            try:
                if self.worker.snapshot.version != self.version:
                    self.sync()
                self._expire(self.loop.time())
                self._latency(self.loop.time())
            except Exception:  # health bookkeeping never stops the balancer
                log.lb.exception("health bookkeeping failed")
            await asyncio.sleep(TICK)

    # -- following the snapshot ---------------------------------------------------------
    def sync(self) -> None:
        """Attach monitors to the live snapshot's backends; start, change or stop probes."""
        snapshot = self.worker.snapshot
        self.version = snapshot.version
        seen: set[tuple[str, str]] = set()
        for pool in snapshot.pools.values():
            spec = pool.spec
            for backend in pool.backends:
                key = (pool.name, backend.key)
                monitor = self.monitors.get(key)
                if spec.check is None and spec.outlier is None:
                    continue  # dropped below, health restored
                seen.add(key)
                if monitor is None or monitor.backend is not backend:
                    if monitor is not None:
                        self._drop(monitor)
                    monitor = BackendMonitor(backend, pool.name, self)
                    self.monitors[key] = monitor
                    backend.monitor = monitor
                monitor.outlier = spec.outlier
                if spec.outlier is None and monitor.ejected_until is not None:
                    monitor.ejected_until = None
                    monitor.ejections = 0
                check = _resolve(spec.check, backend)
                if check != monitor.check:
                    self._restart_probe(monitor, check)
        for key in [k for k in self.monitors if k not in seen]:
            self._drop(self.monitors.pop(key))
        for pool in snapshot.pools.values():
            for backend in pool.backends:
                healthy = backend.monitor.healthy if backend.monitor is not None else True
                if backend.healthy != healthy:
                    backend.set_healthy(healthy, self.loop.time())
            self._update_panic(pool)

    def _drop(self, monitor: BackendMonitor) -> None:
        if monitor.task is not None:
            monitor.task.cancel()
            monitor.task = None
        backend = monitor.backend
        if backend.monitor is monitor:
            backend.monitor = None
            backend.set_healthy(True, self.loop.time())
            backend.set_panic(False)

    def _restart_probe(self, monitor: BackendMonitor, check: HealthCheck | None) -> None:
        if monitor.task is not None:
            monitor.task.cancel()
            monitor.task = None
        monitor.check = check
        if check is None:
            monitor.machine = None
            monitor.check_reason = "no active check"
            return
        target = f"lb {monitor.pool}/{monitor.backend.key}"
        previous = monitor.machine
        monitor.machine = HealthMachine(target, check, random.Random(self.rng.random()))
        if previous is not None:  # a changed check keeps the verdict: no flap on reload
            machine = monitor.machine
            machine.state, machine.reason, machine.since = \
                previous.state, previous.reason, previous.since
        monitor.check_reason = monitor.machine.reason
        monitor.check_since = monitor.machine.since
        monitor.task = self.loop.create_task(self._probe_loop(monitor, monitor.machine, check))

    async def _probe_loop(self, monitor: BackendMonitor, machine: HealthMachine,
                          check: HealthCheck) -> None:
        await asyncio.sleep(self.rng.uniform(0, min(check.interval, check.fastinter)))
        while True:
            result = await probe(check, monitor.backend.host)
            if monitor.machine is not machine:
                return
            changed = machine.observe(result)
            monitor.check_reason = machine.reason
            if changed:
                monitor.check_since = machine.since
                metrics.lb_health_transitions.labels(monitor.pool, "check", machine.state).inc()
                level = logging.WARNING if machine.state == "down" else logging.INFO
                log.lb.log(level, "backend %s/%s: check %s -> %s (%s)", monitor.pool,
                           monitor.backend.key, "up" if machine.state == "down" else "down",
                           machine.state, machine.reason)
                self._apply(monitor)
            await asyncio.sleep(machine.next_delay())

    # -- outliers -----------------------------------------------------------------------
    def eject(self, monitor: BackendMonitor, reason: str) -> None:
        spec = monitor.outlier
        pool = self.worker.snapshot.pools.get(monitor.pool)
        monitor.consecutive_5xx = monitor.consecutive_gateway = 0
        if spec is None or pool is None:
            return
        enabled = _enabled(pool)
        ejected = sum(1 for b in enabled if b.monitor is not None and b.monitor.ejected)
        if (ejected + 1) * 100 > spec.max_ejection_percent * len(enabled):
            metrics.lb_outlier_ejections.labels(monitor.pool, _kind(reason), "held").inc()
            log.lb.info("backend %s/%s: not ejected (%s): %d of %d already out, "
                        "max_ejection_percent = %d", monitor.pool, monitor.backend.key, reason,
                        ejected, len(enabled), spec.max_ejection_percent)
            return
        now = self.loop.time()
        monitor.ejections += 1
        seconds = min(spec.base_ejection * monitor.ejections, spec.max_ejection)
        monitor.ejected_at = now
        monitor.ejected_until = now + seconds
        monitor.ejection_reason = reason
        metrics.lb_outlier_ejections.labels(monitor.pool, _kind(reason), "ejected").inc()
        metrics.lb_health_transitions.labels(monitor.pool, "outlier", "down").inc()
        log.lb.warning("backend %s/%s: ejected for %.3g s (%s; ejection %d in a row)",
                       monitor.pool, monitor.backend.key, seconds, reason, monitor.ejections)
        self._apply(monitor)

    def _expire(self, now: float) -> None:
        for monitor in self.monitors.values():
            until = monitor.ejected_until
            if until is not None:
                if now >= until:
                    monitor.ejected_until = None
                    monitor.returned_at = now
                    monitor.consecutive_5xx = monitor.consecutive_gateway = 0
                    metrics.lb_health_transitions.labels(monitor.pool, "outlier", "up").inc()
                    log.lb.info("backend %s/%s: ejection over after %.3g s, back via slow start",
                                monitor.pool, monitor.backend.key, now - monitor.ejected_at)
                    self._apply(monitor)
            elif monitor.ejections and monitor.outlier is not None \
                    and now - monitor.returned_at >= monitor.outlier.base_ejection:
                monitor.ejections -= 1
                monitor.returned_at = now

    def _latency(self, now: float) -> None:
        """Once per window and pool: eject backends far slower than their peers."""
        for pool in self.worker.snapshot.pools.values():
            spec = pool.spec.outlier
            if spec is None or not spec.latency_factor:
                continue
            due = self.latency_due.get(pool.name)
            if due is None or now >= due:
                self.latency_due[pool.name] = now + spec.latency_window
            if due is None or now < due:
                continue
            means: dict[BackendMonitor, float] = {}
            for backend in pool.backends:
                monitor = backend.monitor
                if monitor is None:
                    continue
                if monitor.latency_count >= spec.latency_min_requests \
                        and monitor.ejected_until is None:
                    means[monitor] = monitor.latency_sum / monitor.latency_count
                monitor.latency_sum, monitor.latency_count = 0.0, 0
            if len(means) < 2:
                continue
            for monitor, mean in means.items():
                baseline = statistics.median(v for m, v in means.items() if m is not monitor)
                if mean >= spec.latency_floor and mean > spec.latency_factor * baseline:
                    self.eject(monitor, f"latency: mean {mean * 1000:.1f} ms over the last "
                               f"{spec.latency_window:g} s, above {spec.latency_factor:g} x "
                               f"the peers' {baseline * 1000:.1f} ms")

    # -- applying -----------------------------------------------------------------------
    def _apply(self, monitor: BackendMonitor) -> None:
        backend = monitor.backend
        healthy = monitor.healthy
        if backend.healthy != healthy:
            backend.set_healthy(healthy, self.loop.time())
            if not healthy:
                _close_idle(backend)
        pool = self.worker.snapshot.pools.get(monitor.pool)
        if pool is not None:
            self._update_panic(pool)

    def _update_panic(self, pool: PoolState) -> None:
        enabled = _enabled(pool)
        healthy = sum(1 for b in enabled if b.healthy)
        panic = bool(enabled) and healthy < pool.spec.panic_below * len(enabled)
        for backend in pool.backends:
            if backend.panic != panic:
                backend.set_panic(panic)
        if panic == self.panic.get(pool.name, False):
            return
        self.panic[pool.name] = panic
        metrics.lb_pool_panic.labels(pool.name).set(1 if panic else 0)
        if panic:
            metrics.lb_pool_panic_entries.labels(pool.name).inc()
            log.lb.warning("pool %s: panic: %d of %d enabled backends healthy (below %g): "
                           "balancing over all of them", pool.name, healthy, len(enabled),
                           pool.spec.panic_below)
        else:
            log.lb.info("pool %s: out of panic: %d of %d enabled backends healthy", pool.name,
                        healthy, len(enabled))


def _resolve(check: HealthCheck | None, backend: BackendState) -> HealthCheck | None:
    if check is None or check.port is not None:
        return check
    return dataclasses.replace(check, port=backend.port)


def _enabled(pool: PoolState) -> list[BackendState]:
    return [b for b in pool.backends if b.admin == "enabled" and b.weight > 0]


def _kind(reason: str) -> str:
    if reason.startswith("latency"):
        return "latency"
    return "5xx" if "5xx" in reason else "gateway"


def _close_idle(backend: BackendState) -> None:
    """Pooled connections to a backend taken out are closed (they would fail anyway)."""
    for upstream in list(backend.idle):
        close = getattr(upstream, "close", None)
        if close is not None:
            close()
    backend.idle.clear()


def health_view(backend: BackendState) -> dict[str, Any]:
    """Health fields for the admin API's backend listing."""
    monitor = backend.monitor
    if monitor is None:
        return {"health": "up" if backend.healthy else "down", "health_reason": "not monitored",
                "check": None, "ejection": None, "panic": backend.panic}
    try:
        now = asyncio.get_running_loop().time()
    except RuntimeError:
        now = time.monotonic()
    return {**monitor.view(now), "panic": backend.panic}
