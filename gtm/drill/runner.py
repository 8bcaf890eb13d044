"""Running a drill: look both ways, ramp the TTLs down, inject, watch, restore, report.

The runner is a client of the control plane: the drill's record, every override (with
its expiry) and the outcome live there, so a runner that dies leaves nothing behind
that the control plane will not undo (gtm.control.drills).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gtm.config.drills import Plan
from gtm.config_reader import Listen
from gtm.control.client import Client
from gtm.drill import report as rep
from gtm.drill.faults import DrillContext, Fault, make_fault, zone_endpoints, zone_state
from gtm.drill.observe import Observation, VantagePoint
from gtm.drill.safety import Facts, Refusal, RegionFacts, check
from gtm.errors import GtmError

POLL = 0.1            # seconds between looks at the abort conditions
STATUS_POLL = 0.5     # seconds between looks at the drill's record (operator abort)
WARMUP_ROUNDS = 3     # observations per vantage point before anything is changed


class DrillRefused(GtmError):
    def __init__(self, refusals: list[Refusal], drill_id: str):
        self.refusals = refusals
        self.drill_id = drill_id
        super().__init__("; ".join(str(r) for r in refusals)
                         + " (--force --reason TEXT overrides, audited)")


class Aborted(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class RunOptions:
    dns: tuple[Listen, ...] = ()
    force: bool = False
    reason: str = ""
    plan_dir: Path = Path(".")
    scheduled: str | None = None
    say: Callable[[str], None] = lambda _line: None


@dataclass
class Timeline:
    started: float = field(default_factory=time.time)
    injected: float | None = None
    restored: float | None = None
    events: list[dict[str, Any]] = field(default_factory=list)

    def note(self, what: str, **detail: Any) -> None:
        self.events.append({"t": time.time(), "event": what, **detail})


def region_of_addresses(document: dict[str, Any], zone: str) -> dict[str, str]:
    return {address: e["region"] for e in zone_endpoints(document, zone)
            for address in (e.get("ipv4"), e.get("ipv6")) if address and e.get("region")}


def gather_facts(document: dict[str, Any], nodes: list[dict[str, Any]], plan: Plan,
                 now: dt.datetime) -> Facts:
    """The regions of the plan's zone as the control plane and its nodes see them."""
    endpoints = zone_endpoints(document, plan.zone)
    state = zone_state(document, plan.zone)
    regions: dict[str, RegionFacts] = {}
    for region in sorted({e["region"] for e in endpoints if e.get("region")}):
        set_by_hand = (state.get("regions") or {}).get(region, {})
        up, why = set_by_hand.get("health", "up") == "up", set_by_hand.get("reason", "")
        held = [e["name"] for e in endpoints if e.get("region") == region and
                (state.get("endpoints") or {}).get(e["name"], {}).get("admin")
                in ("drain", "force_down")]
        headroom = set_by_hand.get("headroom")
        for node in nodes:
            summary = (node.get("info") or {}).get("health") or {}
            served = ((summary.get("served") or {}).get(plan.zone) or {}).get("regions", {})
            view = served.get(region)
            if view is not None and view.get("state") != "up":
                up, why = False, f"{view.get('cause')}: {view.get('reason')} on {node['node_id']}"
            reported = (summary.get("regions") or {}).get(region, {}).get("headroom")
            if reported is not None:
                headroom = reported if headroom is None else min(headroom, reported)
        regions[region] = RegionFacts(up, bool(held), headroom,
                                      why or (f"admin on {', '.join(held)}" if held else ""))
    return Facts(regions, now)


def ramp_steps(original: int, target: int, steps: int) -> list[int]:
    """TTLs from ``original`` down to ``target`` in geometric steps (the last is target)."""
    if original <= target:
        return [target]
    ratio = target / original
    values = [max(target, round(original * math.pow(ratio, i / steps)))
              for i in range(1, steps + 1)]
    return list(dict.fromkeys([*values[:-1], target]))


class Runner:
    def __init__(self, plan: Plan, raw_plan: dict[str, Any], api: Client, options: RunOptions):
        self.plan = plan
        self.raw_plan = raw_plan
        self.api = api
        self.options = options
        self.observations: list[Observation] = []
        self.timeline = Timeline()
        self.drill_id = ""
        self.overridden: list[str] = []

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        return (await asyncio.to_thread(self.api.call, method, path, body)).body

    async def run(self) -> dict[str, Any]:
        plan = self.plan
        live = await self.call("GET", "/v1/config")
        document = live["document"]
        nodes = (await self.call("GET", "/v1/nodes"))["items"]
        refusals = check(plan, gather_facts(document, nodes, plan, dt.datetime.now(dt.UTC)))
        await self._open_record(refusals)
        servers = self.options.dns or plan.observe.dns
        if not servers:
            raise GtmError("no DNS server to observe through: set observe.dns in the plan "
                           "or give --dns HOST:PORT")
        ctx = DrillContext(plan, self.api, self.drill_id, document,
                           time.time() + plan.planned_seconds + plan.restore.expiry_grace,
                           self.options.plan_dir)
        fault = make_fault(ctx)
        regions = region_of_addresses(document, plan.zone)
        points = [VantagePoint(v, plan.observe.names, servers, regions, plan.observe.port,
                               plan.observe.path, plan.observe.interval, plan.observe.timeout,
                               self.observations) for v in plan.observe.vantage]
        tasks = [asyncio.create_task(p.run()) for p in points]
        outcome, reason = "succeeded", ""
        try:
            outcome, reason = await self._drive(ctx, fault, document)
        finally:
            if self.timeline.restored is None:  # an error or a cancel: restore anyway
                with contextlib.suppress(Exception):
                    await ctx.restore_all("runner stopped early")
                self.timeline.restored = time.time()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        report = self.report(fault.describe(), outcome, reason)
        outcome = report["outcome"]
        await self.call("PUT", f"/v1/drills/{self.drill_id}/result",
                        {"status": outcome, "reason": report["reason"], "report": report})
        return report

    async def _open_record(self, refusals: list[Refusal]) -> None:
        plan, detail = self.plan, {"scheduled": self.options.scheduled}
        if refusals and not self.options.force:
            record = await self.call("POST", "/v1/drills", {
                "name": plan.name, "plan": self.raw_plan, "status": "refused",
                "reason": "; ".join(str(r) for r in refusals),
                "detail": {**detail, "rules": [r.rule for r in refusals]}})
            raise DrillRefused(refusals, record["id"])
        if refusals and not self.options.reason:
            raise GtmError("--force needs --reason (it is audited)")
        self.overridden = [str(r) for r in refusals]
        record = await self.call("POST", "/v1/drills", {
            "name": plan.name, "plan": self.raw_plan,
            "reason": f"forced: {self.options.reason}" if refusals else "",
            "detail": {**detail, "forced_rules": [r.rule for r in refusals],
                       "force_reason": self.options.reason if refusals else ""}})
        self.drill_id = record["id"]
        self.options.say(f"drill {self.drill_id} started ({plan.name})")
        for line in self.overridden:
            self.options.say(f"  overridden with --force: {line}")

    async def _drive(self, ctx: DrillContext, fault: Fault, document: dict[str, Any]
                     ) -> tuple[str, str]:
        plan = self.plan
        await self._warm_up()
        try:
            if plan.ramp is not None:
                await self._ramp(ctx, document)
            self.options.say(f"injecting: {fault.describe()}")
            await fault.inject()
            self.timeline.injected = time.time()
            self.timeline.note("fault injected", fault=fault.describe())
            await self._watch(self.timeline.injected + plan.fault.duration)
        except Aborted as exc:
            self.options.say(f"ABORT: {exc.reason}; restoring now")
            await self._restore(fault, f"abort: {exc.reason}")
            await self._settle()
            return "aborted", exc.reason
        await self._restore(fault, "end of fault")
        await self._settle()
        return "succeeded", ""

    async def _restore(self, fault: Fault, why: str) -> None:
        await fault.restore()
        self.timeline.restored = time.time()
        self.timeline.note("restored", why=why)
        self.options.say(f"restored ({why})")

    async def _warm_up(self) -> None:
        wanted = WARMUP_ROUNDS * len(self.plan.observe.vantage) * len(self.plan.observe.names)
        deadline = time.monotonic() + max(5.0, 10 * self.plan.observe.interval * WARMUP_ROUNDS)
        while len(self.observations) < wanted and time.monotonic() < deadline:
            await asyncio.sleep(POLL)

    async def _ramp(self, ctx: DrillContext, document: dict[str, Any]) -> None:
        """Each step a new audited version; then wait out the TTL it replaced, so the
        resolvers' caches hold the shorter TTL when the fault starts."""
        assert self.plan.ramp is not None
        names = self._steered_names(document)
        if not names:
            return
        original = {label: ttl for label, ttl in names.items()}
        current = max(t for t in original.values() if t is not None)
        for ttl in ramp_steps(current, self.plan.ramp.ttl, self.plan.ramp.steps):
            await ctx.record_override({
                "kind": "ttl", "zone": self.plan.zone,
                "names": {label: {"value": ttl, "previous": original[label]}
                          for label in names},
                "description": f"TTL ramp-down to {ttl} s"})
            self.timeline.note("ttl ramp", ttl=ttl)
            self.options.say(f"TTL ramp: {ttl} s (waiting out the previous {current} s)")
            wait = self.plan.ramp.step_wait
            await self._watch(time.time() + (current if wait is None else wait),
                              before_fault=True)
            current = ttl

    def _steered_names(self, document: dict[str, Any]) -> dict[str, int | None]:
        """Observed names' steered definitions in the zone: label -> TTL set (or None)."""
        steering = document.get("steering", {})
        table: dict[str, Any] = next((v for k, v in steering.items()
                      if k.rstrip(".").lower() == self.plan.zone.rstrip(".").lower()), {})
        defined = table.get("names") or {}
        labels = {}
        for name in self.plan.observe.names:
            label = name.removesuffix(self.plan.zone).rstrip(".")
            if label in defined:
                labels[label] = defined[label].get("ttl")
        default = 300
        return {label: (ttl if ttl is not None else default) for label, ttl in labels.items()}

    async def _watch(self, until: float, before_fault: bool = False) -> None:
        """Until ``until``, checking the abort conditions (and an operator's abort)."""
        last_status = 0.0
        while time.time() < until:
            if time.monotonic() - last_status >= STATUS_POLL:
                last_status = time.monotonic()
                record = await self.call("GET", f"/v1/drills/{self.drill_id}")
                if record["abort_requested"] or record["status"] != "running":
                    raise Aborted(record["reason"] or f"aborted by {record['abort_requested']}")
            if not before_fault:
                why = self._abort_condition()
                if why is not None:
                    raise Aborted(why)
            await asyncio.sleep(POLL)

    def _abort_condition(self) -> str | None:
        abort, injected = self.plan.abort, self.timeline.injected
        assert injected is not None
        now = time.time()
        recent = [o for o in self.observations if o.t >= max(injected, now - abort.window)]
        if abort.error_rate is not None and len(recent) >= abort.min_samples:
            failed = sum(1 for o in recent if not o.ok)
            if failed / len(recent) > abort.error_rate:
                return (f"client error rate {failed / len(recent):.0%} over the budget "
                        f"{abort.error_rate:.0%} (last {abort.window:g} s, {len(recent)} "
                        "requests)")
        if abort.p95_ms is not None:
            latencies = sorted(o.latency_ms for o in recent if o.ok and o.latency_ms)
            p95 = rep.percentile(latencies, 0.95)
            if p95 is not None and len(latencies) >= abort.min_samples and p95 > abort.p95_ms:
                return f"p95 latency {p95:.0f} ms over the bound {abort.p95_ms:g} ms"
        if abort.move_deadline is not None and now - injected > abort.move_deadline:
            times = rep.milestones([o.public() for o in self.observations], self.plan.region,
                                   injected, None)
            if times["affected"] and times["first_moved"] is None:
                return f"no answer moved within {abort.move_deadline:g} s of the fault"
        return None

    async def _settle(self) -> None:
        """Watch until every affected vantage point is answered by the target again."""
        restored = self.timeline.restored
        assert restored is not None
        deadline = time.time() + self.plan.restore.settle
        while time.time() < deadline:
            times = rep.milestones([o.public() for o in self.observations], self.plan.region,
                                   self.timeline.injected, restored)
            if times["all_returned"] is not None or (self.timeline.injected is None):
                break
            await asyncio.sleep(POLL)

    def report(self, fault: str, outcome: str, reason: str) -> dict[str, Any]:
        observations = [o.public() for o in self.observations]
        times = rep.milestones(observations, self.plan.region, self.timeline.injected,
                               self.timeline.restored)
        if outcome == "succeeded":
            outcome, reason = judge(times)
        injected = times["fault_injected"]

        def since(key: str, origin: float | None) -> float | None:
            t = times.get(key)
            return None if t is None or origin is None else round(t - origin, 3)

        vantage = rep.summarise(observations)
        by_vantage: dict[str, list[dict[str, Any]]] = {}
        for o in observations:
            by_vantage.setdefault(str(o["vantage"]), []).append(o)
        ramp = self.plan.ramp
        return {
            "id": self.drill_id, "plan": self.raw_plan, "outcome": outcome, "reason": reason,
            "fault": fault, "started_at": self.timeline.started, "ended_at": time.time(),
            "ramp": None if ramp is None else {"ttl": ramp.ttl, "steps": ramp.steps},
            "milestones": {k: times[k] for k in rep.MILESTONES},
            "affected": times["affected"], "per_vantage": times["per_vantage"],
            "durations": {
                "time_to_first_move": since("first_moved", injected),
                "time_to_all_moved": since("all_moved", injected),
                "time_to_clients_ok": since("clients_ok_again", injected),
                "time_to_all_returned": since("all_returned", times["restored"]),
            },
            "vantage": vantage,
            "runs": {v: rep.region_runs(obs) for v, obs in by_vantage.items()},
            "events": self.timeline.events, "overridden": self.overridden,
            "observations": observations,
        }


def judge(times: dict[str, Any]) -> tuple[str, str]:
    """A drill that ran to its end succeeded when every affected vantage point moved
    away and came back; else it failed, saying which part did not happen."""
    if not times["affected"]:
        return "failed", "no vantage point was answered by the target region before the fault"
    if times["all_moved"] is None:
        stuck = [v for v, p in times["per_vantage"].items() if p["moved"] is None]
        return "failed", f"answers did not move for {', '.join(stuck)}"
    if times["all_returned"] is None:
        stuck = [v for v, p in times["per_vantage"].items() if p["returned"] is None]
        return "failed", f"answers did not return for {', '.join(stuck)} after the restore"
    return "succeeded", ""
