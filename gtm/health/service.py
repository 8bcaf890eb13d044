"""A node's health machinery: probe the endpoints its zones check, share observations,
agree by quorum, combine the regional balancers' reports, and feed the DNS engine.

Runs in the DNS worker's event loop; probes are small coroutines bounded by their
timeouts, so they never hold up answering. Nothing here blocks the data plane: the
engine only ever sees a finished snapshot through ServingFeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gtm import log, metrics
from gtm.dns.answer import ZoneSet
from gtm.health import reports
from gtm.health.bus import LocalHub, RedisBus
from gtm.health.overlay import ServingFeed, served_states
from gtm.health.probes import ProbeResult, probe
from gtm.health.quorum import (
    Agreed,
    HealthFacts,
    Observation,
    QuorumView,
    RegionFact,
    region_fact,
    target_id,
)
from gtm.health.state import HealthMachine
from gtm.steering.model import HealthCheck

LAST_RESULTS = 5


@dataclass(frozen=True)
class HealthSettings:
    observer_id: str
    probe: bool = True  # False: only listen to other observers (and region reports)
    quorum: int = 1
    expiry: float = 6.0  # observations older than this do not count
    coalesce: float = 0.5  # at most one snapshot rebuild per this many seconds
    doubt_ttl: int | None = 5  # cap on steered TTLs while a pool's health is in doubt
    report_expiry: float = 5.0  # region reports older than this do not count
    redis_url: str | None = None
    namespace: str = "gtm"
    in_process_reports: bool = True  # read regional_lb.report in this process
    sweep_interval: float = 0.25
    summary_interval: float = 2.0


@dataclass(frozen=True)
class Target:
    id: str
    zone: str
    endpoint: str
    region: str
    address: str  # check_address when set, else the served address
    check: HealthCheck


def targets_of(zones: ZoneSet) -> dict[str, Target]:
    out: dict[str, Target] = {}
    for zone in zones.zones.values():
        if zone.steering is None:
            continue
        origin = zone.origin.to_text()
        for pool in zone.steering.pools.values():
            if pool.check is None:
                continue
            for endpoint in pool.endpoints:
                address = endpoint.check_address or endpoint.ipv4 or endpoint.ipv6
                if address is None and pool.check.type != "exec":
                    continue
                tid = target_id(origin, endpoint.name)
                out[tid] = Target(tid, origin, endpoint.name, endpoint.region, address or "",
                                  pool.check)
    return out


class HealthService:
    def __init__(self, settings: HealthSettings, feed: ServingFeed, hub: LocalHub | None = None):
        self.settings = settings
        self.feed = feed
        self.hub = hub
        self.view = QuorumView(settings.quorum, settings.expiry)
        self.bus = (RedisBus(settings.redis_url, settings.namespace, settings.expiry)
                    if settings.redis_url else None)
        self.targets: dict[str, Target] = {}
        self.machines: dict[str, HealthMachine] = {}
        self.results: dict[str, deque[ProbeResult]] = {}
        self.probers: dict[str, asyncio.Task[None]] = {}
        self.reports: dict[tuple[str, int], dict[str, Any]] = {}
        self._region_signature: dict[str, tuple[bool, float]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._carried: dict[str, HealthMachine] = {}
        self._rng = random.Random()
        # Called with (what, before, after, reason) when an agreed state flips; gtm up
        # writes these to the control plane's audit log.
        self.on_change: Callable[[str, str, str, str], None] | None = None
        self._announced: dict[str, str] = {}
        feed.facts = self.facts
        feed.doubt_ttl = settings.doubt_ttl
        feed.coalesce = settings.coalesce
        feed.on_base.append(self.track)

    # ---- lifecycle ----

    async def start(self) -> None:
        self._started = True
        if self.hub is not None:
            self.hub.attach(self.hear)
        if self.bus is not None:
            self._tasks.append(asyncio.create_task(self.bus.listen(self.hear, self.report)))
        if self.settings.in_process_reports:
            self._attach_reports()
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="health-sweep"))
        self.track(self.feed.base)
        metrics.health_collector.sources.append(self.metrics_sample)

    async def stop(self) -> None:
        if self.metrics_sample in metrics.health_collector.sources:
            metrics.health_collector.sources.remove(self.metrics_sample)
        if self.hub is not None:
            self.hub.detach(self.hear)
        self._detach_reports()
        tasks = [*self._tasks, *self.probers.values()]
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a probe stuck in a subprocess or socket must not hold us up
            await asyncio.wait(tasks, timeout=2.0)
        self._tasks.clear()
        self.probers.clear()
        if self.bus is not None:
            await self.bus.close()

    def track(self, zones: ZoneSet) -> None:
        """Probe what these zones check: start new targets, stop gone or changed ones."""
        wanted = targets_of(zones)
        for tid in [t for t in self.targets if wanted.get(t) != self.targets[t]]:
            self._stop_prober(tid)
            self.targets.pop(tid)
            machine = self.machines.pop(tid, None)
            if machine is not None and tid in wanted:
                # A changed check keeps the state it had: an endpoint that is down must
                # not be handed out again just because its check was edited.
                self._carried[tid] = machine
        self.view.forget({t for t in self.view.observations if t not in wanted})
        for tid, target in wanted.items():
            if tid not in self.targets:
                self.targets[tid] = target
        if self._started and self.settings.probe:
            for tid, target in self.targets.items():
                if tid not in self.probers:
                    self.probers[tid] = asyncio.create_task(self._probe_loop(target),
                                                            name=f"probe {tid}")

    def _stop_prober(self, tid: str) -> None:
        task = self.probers.pop(tid, None)
        if task is not None:
            task.cancel()

    # ---- probing ----

    async def _probe_loop(self, target: Target) -> None:
        machine = HealthMachine(target.id, target.check, self._rng)
        previous = self._carried.pop(target.id, None)
        if previous is not None:
            machine.state, machine.reason, machine.since = (
                previous.state, previous.reason, previous.since)
        self.machines[target.id] = machine
        results = self.results.setdefault(target.id, deque(maxlen=LAST_RESULTS))
        # Spread the first probes so many targets do not all fire in the same instant.
        await asyncio.sleep(self._rng.uniform(0, min(target.check.interval, 0.2)))
        while True:
            result = await probe(target.check, target.address)
            results.append(result)
            machine.observe(result)
            if result.warning:
                log.health.warning("%s: %s", target.id, result.warning)
            await self.publish(Observation(
                self.settings.observer_id, target.id, machine.state == "up", result.time,
                machine.reason, result.latency, machine.changing))
            await asyncio.sleep(machine.next_delay())

    async def publish(self, observation: Observation) -> None:
        if self.hub is not None:
            await self.hub.publish(observation)  # the hub delivers it to us too
        else:
            self.hear(observation)
        if self.bus is not None:
            await self.bus.publish(observation)

    def hear(self, observation: Observation) -> None:
        if observation.target in self.targets and self.view.add(observation):
            self.feed.request()
            self._announce_changes()

    # ---- region reports ----

    def report(self, report: dict[str, Any]) -> None:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            key = (str(report["region"]), int(report.get("worker", 0)))
            self.reports[key] = report
            self._check_regions()
            self._announce_changes()

    def _attach_reports(self) -> None:
        for existing in list(reports.REPORTS.values()):
            self.report(existing)
        reports.SUBSCRIBERS.append(self.report)

    def _detach_reports(self) -> None:
        with contextlib.suppress(ValueError):
            reports.SUBSCRIBERS.remove(self.report)

    def region_facts(self, now: float | None = None) -> dict[str, RegionFact]:
        moment = time.time() if now is None else now
        by_region: dict[str, list[dict[str, Any]]] = {}
        for (region, _), report in self.reports.items():
            by_region.setdefault(region, []).append(report)
        facts = {}
        for region, region_reports in by_region.items():
            fact = region_fact(region_reports, moment, self.settings.report_expiry)
            if fact is not None:
                facts[region] = fact
        return facts

    def _check_regions(self) -> None:
        # Headroom moves a little with every report; only a real move is worth a rebuild.
        signature = {r: (f.healthy, round(f.headroom or 0.0, 1))
                     for r, f in self.region_facts().items()}
        if signature != self._region_signature:
            self._region_signature = signature
            self.feed.request()
            self._announce_changes()

    def _announce_changes(self) -> None:
        """Tell on_change about every agreed flip since the last call (endpoints and
        regions start as up, as they are served before anything is known)."""
        if self.on_change is None:
            return
        current: dict[str, tuple[str, str]] = {
            f"endpoint {t}": (a.state, a.reason) for t, a in self.view.agreed.items()
            if t in self.targets
        }
        for region, fact in self.region_facts().items():
            current[f"region {region}"] = ("up" if fact.healthy else "down", fact.detail)
            for backend in self._backends_of(region):  # the balancer's own checks
                current[f"backend {region}/{backend.get('address')}"] = (
                    str(backend.get("health")), str(backend.get("reason")))
        for what, (state, reason) in current.items():
            before = self._announced.get(what, "up")
            if state != before:
                self.on_change(what, before, state, reason)
            self._announced[what] = state

    # ---- facts ----

    def facts(self) -> HealthFacts:
        endpoints = {t: a for t, a in self.view.agreed.items() if t in self.targets}
        return HealthFacts(endpoints, self.region_facts())

    async def _sweep_loop(self) -> None:
        last_summary = 0.0
        while True:
            await asyncio.sleep(self.settings.sweep_interval)
            try:
                if self.view.sweep():
                    self.feed.request()
                    self._announce_changes()
                self._check_regions()
                now = time.monotonic()
                if self.bus is not None and now - last_summary >= self.settings.summary_interval:
                    last_summary = now
                    await self.bus.publish_summary(self.settings.observer_id, self.summary())
            except Exception:  # the sweep must outlive any one bad round
                log.health.exception("health sweep failed")

    def summary(self) -> dict[str, Any]:
        """What `gtm health`, `gtm status` and `gtm explain` show (JSON-ready)."""
        now = time.time()
        return {
            "observer": self.settings.observer_id, "time": now, "quorum": self.view.quorum,
            "expiry": self.view.expiry, "isolated": self.view.isolated(),
            "probing": self.settings.probe,
            "endpoints": {tid: self._endpoint_summary(tid, now) for tid in sorted(self.targets)},
            "regions": {r: {"healthy": f.healthy, "headroom": f.headroom, "time": f.time,
                            "detail": f.detail, "backends": self._backends_of(r),
                            **self._traffic_of(r, now)}
                        for r, f in self.region_facts(now).items()},
            # What is handed out, with its cause: probes, region reports and hand-set
            # state together, as the answers see them (the rest above is the evidence).
            "served": served_states(self.feed.served, self.feed.base, self.feed.served_facts),
        }

    def _traffic_of(self, region: str, now: float) -> dict[str, Any]:
        """A region's request rate (its workers' fresh reports added up) and p95 (the worst
        worker's), for the status page."""
        fresh = [r for (name, _), r in self.reports.items() if name == region
                 and now - float(r.get("time", 0)) <= self.settings.report_expiry]
        p95s = [float(r["p95_ms"]) for r in fresh if r.get("p95_ms") is not None]
        return {"requests_per_s": round(sum(float(r.get("requests_per_s") or 0)
                                            for r in fresh), 3),
                "p95_ms": max(p95s) if p95s else None}

    def metrics_sample(self) -> metrics.HealthSample:
        """This view for a scrape: agreed states, every fresh observation, region facts."""
        now = time.time()
        sample = metrics.HealthSample(self.view.quorum)
        for tid, target in sorted(self.targets.items()):
            agreed = self.view.agreed.get(tid)
            fresh = self.view.fresh(tid, now)
            sample.endpoints.append((target.zone, target.endpoint, target.region,
                                     agreed is None or agreed.state == "up", len(fresh)))
            for seen in fresh:
                sample.observations.append((target.zone, target.endpoint, seen.observer,
                                            seen.ok, seen.latency))
        for region, fact in sorted(self.region_facts(now).items()):
            sample.regions.append((region, fact.healthy, fact.headroom))
        return sample

    def _backends_of(self, region: str) -> list[dict[str, Any]]:
        """The backends a region's balancer reported, from its lowest worker's report."""
        workers = sorted(w for r, w in self.reports if r == region)
        if not workers:
            return []
        backends = self.reports[(region, workers[0])].get("backends") or []
        return [b for b in backends if isinstance(b, dict)]

    def _endpoint_summary(self, tid: str, now: float) -> dict[str, Any]:
        target = self.targets[tid]
        agreed = self.view.agreed.get(tid)
        machine = self.machines.get(tid)
        return {
            "zone": target.zone, "endpoint": target.endpoint, "region": target.region,
            "address": target.address, "check": target.check.type,
            "state": agreed.state if agreed else "up",
            "reason": agreed.reason if agreed else "no observations yet",
            "since": agreed.since if agreed else None,
            "doubt": agreed.doubt if agreed else True,
            "isolated": agreed.isolated if agreed else False,
            "observations": [
                {"observer": o.observer, "ok": o.ok, "reason": o.reason, "time": o.time,
                 "age": round(now - o.time, 2), "latency": round(o.latency, 4),
                 "fresh": now - o.time <= self.view.expiry}
                for o in sorted(self.view.observations.get(tid, {}).values(),
                                key=lambda o: o.observer)],
            "local": None if machine is None else {
                "state": machine.state, "reason": machine.reason, "since": machine.since,
                "last": [{"ok": r.ok, "reason": r.reason, "latency": round(r.latency, 4),
                          "time": r.time} for r in self.results.get(tid, ())]},
        }


def facts_from_summary(summary: Mapping[str, Any]) -> HealthFacts:
    """A node's published summary back into facts (for `gtm explain`)."""
    endpoints = {}
    for tid, item in (summary.get("endpoints") or {}).items():
        endpoints[tid] = Agreed(item["state"], item["reason"], item.get("since") or 0.0,
                                len([o for o in item.get("observations", []) if o["fresh"]]),
                                bool(item.get("doubt")), bool(item.get("isolated")))
    regions = {r: RegionFact(bool(f["healthy"]), f.get("headroom"), float(f["time"]),
                             str(f.get("detail", "")))
               for r, f in (summary.get("regions") or {}).items()}
    return HealthFacts(endpoints, regions)
