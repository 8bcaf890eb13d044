"""The region's scaler: every balancer runs one; the lease holder decides for all.

Each tick (``[lb.autoscale] interval``) every balancer

1. writes its facts (per backend of each auto-scaled pool: in flight, requests, 5xx,
   latency buckets, the admin state it serves) to the region's scale store;
2. applies the scaler's layer (backends added, draining, removed) when it changed, by a
   reload: the snapshot is compiled with it and swapped, never edited;
3. takes or renews the region's lease; the holder (the leader) then, per pool, adds up
   every balancer's facts into the policy's metric, records the load history, asks
   :func:`regional_lb.autoscale.decide.decide`, and acts through the actuator, each
   change a fenced write (a leader that lost the lease is refused before it acts).

Every scale-out records its intent first: a fenced ``scale_out.begin`` event naming the
action's idempotency key, closed by its outcome (``scale_out`` or ``failed``, the same
key). A leader lost between the two (killed while the actuator starts backends, or
refused when it records them) leaves the intent open; the next leader, before it
decides anything for the pool, replays each open intent through the actuator with the
same key, so the actuator answers the backends it already started (the process
actuator knows them by key; exec and webhook receivers are told ``"replay": true``) and
they are recorded instead of left running unseen. The policy then keeps or drains them
like any backend.

Scale-in is drain-aware: the chosen backends (fewest in flight, newest; protected ones
never) are set to drain in the layer; once every balancer serves that layer and has
nothing in flight to them (or ``deregistration_delay`` passed) the actuator removes
them and the layer drops them. A new leader resumes the drains it finds.
Actions run in their own tasks: a slow actuator delays that pool's next action, never
a request. A failed action backs the pool off (doubling, up to 5 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from gtm import log, metrics
from gtm.errors import GtmError
from gtm.process import cancel_and_wait
from gtm.scalestore import MAX_EVENTS, Fenced, ScaleStore
from regional_lb.autoscale.actuators import (
    Actuator,
    make_actuator,
    post_signed,
    read_key,
    with_retries,
)
from regional_lb.autoscale.decide import Decision, Memory, Observation, decide, remember_action
from regional_lb.autoscale.files import state_dir
from regional_lb.autoscale.forecast import backends_for, forecast
from regional_lb.autoscale.layer import Layer
from regional_lb.autoscale.metrics import SAMPLE_EVERY, Sampler
from regional_lb.config import LbConfig
from regional_lb.config_autoscale import PER_BACKEND, ScalePolicy
from regional_lb.snapshot import Snapshot

BACKOFF_START, BACKOFF_CAP = 2.0, 300.0
HISTORY_MINUTES_SHOWN = 120


class Scaled(Protocol):
    """The balancer as the scaler uses it (regional_lb.node.BalancerHandle)."""

    @property
    def snapshot(self) -> Snapshot: ...

    base: LbConfig

    async def apply_layer(self, layer: Layer) -> None: ...


def default_member(index: int) -> str:
    return f"{socket.gethostname()}:{os.getpid()}/{index}"


@dataclass
class PoolRun:
    """The leader's memory of one pool (lost with the lease: a new leader starts afresh)."""

    memory: Memory = field(default_factory=Memory)
    task: asyncio.Task[None] | None = None
    backoff_until: float = 0.0
    backoff: float = BACKOFF_START
    minute: int = 0
    minute_loads: list[float] = field(default_factory=list)
    forecast: list[tuple[int, float]] = field(default_factory=list)
    forecast_at: float = 0.0
    last: Decision | None = None
    value: float | None = None
    current: int = 0
    warm: int = 0
    actions: list[dict[str, Any]] = field(default_factory=list)
    actual: list[tuple[int, float]] = field(default_factory=list)  # recent history shown
    reconciled: bool = False  # this term looked for intents its predecessors left open
    intent: str | None = None  # the idempotency key of the scale-out under way


class Scaler:
    def __init__(self, handle: Scaled, store: ScaleStore, member: str):
        self.handle = handle
        self.store = store
        self.member = member
        self.layer: Layer = {}
        self.layer_writes = 0  # layers this scaler wrote: a tick's older read is not applied
        self.token: int | None = None
        self.pools: dict[str, PoolRun] = {}
        self.sampler = Sampler(handle.snapshot.config.autoscale.outbound_networks)
        self.task: asyncio.Task[None] | None = None
        self.sampling: asyncio.Task[None] | None = None
        self.actuators: dict[str, Actuator] = {}
        self.notifying: set[asyncio.Task[None]] = set()
        self.ticks = 0
        self.last_ok = 0.0  # when a tick last reached the store
        self.operator: dict[str, Any] = {}  # operator settings by pool, as last read

    @property
    def config(self) -> LbConfig:
        return self.handle.snapshot.config

    @property
    def region(self) -> str:
        return self.config.region

    def policies(self) -> dict[str, ScalePolicy]:
        return {p.name: p.autoscale for p in self.handle.base.pools if p.autoscale is not None}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.sampling = loop.create_task(self._sample())
        self.task = loop.create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self.sampling, self.task,
                              *(run.task for run in self.pools.values()), *self.notifying)
        if self.token is not None:
            with contextlib.suppress(Exception):
                await self.store.release(self.region, self.member)
        metrics.scale_leader.labels(self.region, self.member).set(0)
        await self.store.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store down, a bug: the balancer serves on
                log.scale.warning("scaler tick failed (region %s): %s", self.region, exc)
            else:
                self.last_ok = time.time()
            self.ticks += 1
            await asyncio.sleep(self.config.autoscale.interval)

    async def _sample(self) -> None:
        """In-flight counts between two facts, for their means (see metrics.Sampler)."""
        every = min(SAMPLE_EVERY, self.config.autoscale.interval / 5)
        while True:
            self.sampler.sample(self.handle.snapshot, set(self.policies()))
            await asyncio.sleep(every)

    async def tick(self) -> None:
        settings = self.config.autoscale
        await self.store.put_facts(self.region, self.member, self.sampler.facts(
            self.handle.snapshot, set(self.policies())))
        writes = self.layer_writes
        layer = await self.store.layer(self.region)
        # An action of ours may have written a newer layer while this one was read.
        if layer != self.layer and writes == self.layer_writes:
            await self.handle.apply_layer(layer)
            self.layer = layer
        token = await self.store.acquire(self.region, self.member, settings.lease)
        if token != self.token:
            log.scale.info("region %s: %s %s the scaling leader", self.region, self.member,
                           "is now" if token is not None else "is no longer")
            self.pools = {}  # a new term starts from what the store says
        self.token = token
        metrics.scale_leader.labels(self.region, self.member).set(1 if token else 0)
        operator = self.operator = await self.store.settings(self.region)
        if token is None:
            return
        facts = await self.store.facts(self.region, 3 * settings.interval + 1.0)
        status = {}
        for name, policy in self.policies().items():
            run = self.pools.setdefault(name, PoolRun())
            status[name] = await self._pool(name, policy, operator.get(name, {}), run, facts)
        await self.store.put_status(self.region, {
            "region": self.region, "leader": self.member, "token": token, "at": time.time(),
            "pools": status})

    async def _pool(self, name: str, policy: ScalePolicy, operator: dict[str, Any],
                    run: PoolRun, facts: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        policy = replace(policy, min=int(operator.get("min", policy.min)),
                         max=int(operator.get("max", policy.max)))
        entries = self.layer.get(name, {})
        serving = self._serving(name, entries)
        warm = [k for k in serving
                if now - float(entries.get(k, {}).get("added_at", 0)) >= policy.warmup]
        value = await self.sampler.metric(policy, name, facts, warm, serving, now)
        run.value, run.current, run.warm = value, len(serving), len(warm)
        if value is not None and policy.metric in PER_BACKEND:
            await self._record(name, run, value * max(len(warm), 1), now)
        wanted = await self._forecast(name, policy, run, now)
        paused = bool(operator.get("paused"))
        if run.task is None or run.task.done():
            await self._forget_lost(name, policy, run, entries)
            if not await self._reconcile(name, policy, run):
                self._resume_drains(name, policy, run, entries)
        busy = run.task is not None and not run.task.done()
        if not paused:
            decision = decide(policy, Observation(now, len(serving), len(warm), value, wanted),
                              run.memory)
            run.memory, run.last = decision.memory, decision
            if not busy and now >= run.backoff_until and decision.desired != len(serving):
                self._act(name, policy, run, serving, decision, now)
        self._gauges(name, policy, run, wanted)
        return self._status(name, policy, run, paused, wanted, operator)

    def _serving(self, pool: str, entries: dict[str, Any]) -> list[str]:
        spec = self.handle.snapshot.config.pool(pool)
        return [b.key for b in spec.backends if b.state == "enabled"
                and entries.get(b.key, {}).get("state", "enabled") == "enabled"]

    # -- history and forecast ---------------------------------------------------------

    async def _record(self, pool: str, run: PoolRun, load: float, now: float) -> None:
        minute = int(now // 60)
        if run.minute and minute != run.minute and run.minute_loads:
            point = sum(run.minute_loads) / len(run.minute_loads)
            await self.store.add_history(self.region, pool, {run.minute: point})
            run.minute_loads = []
            if run.minute % 60 == 0:  # compaction, hourly: one-minute points for history_days
                days = self.config.autoscale.history_days
                await self.store.compact(self.region, pool, minute - int(days * 1440))
        run.minute = minute
        run.minute_loads.append(load)

    async def _forecast(self, pool: str, policy: ScalePolicy, run: PoolRun,
                        now: float) -> int | None:
        predictive = policy.predictive
        if predictive is None or policy.target is None:
            return None
        if now - run.forecast_at >= 60 or not run.forecast:
            history = await self.store.history(self.region, pool, int(now // 60) - 15 * 1440)
            run.forecast = forecast(history, now, max(predictive.horizon, predictive.buffer))
            start = int(now // 60) - HISTORY_MINUTES_SHOWN
            run.actual = sorted((m, v) for m, v in history.items() if m >= start)
            run.forecast_at = now
        return backends_for(run.forecast, now, predictive.buffer, policy.target)

    # -- acting -------------------------------------------------------------------------

    def _actuator(self, pool: str, policy: ScalePolicy) -> Actuator | None:
        if policy.actuator is None:
            return None
        actuator = self.actuators.get(pool)
        if actuator is None or actuator.spec != policy.actuator:
            settings = self.config.autoscale
            actuator = make_actuator(policy.actuator, state_dir(self.config),
                                     settings.outbound_networks)
            self.actuators[pool] = actuator
        return actuator

    def _act(self, pool: str, policy: ScalePolicy, run: PoolRun, serving: list[str],
             decision: Decision, now: float) -> None:
        change = decision.desired - len(serving)
        run.memory = remember_action(run.memory, now, change)
        if change > 0:
            work = self._scale_out(pool, policy, run, serving, change, decision)
        else:
            victims = self._victims(pool, policy, serving, -change)
            if not victims:
                return
            work = self._scale_in(pool, policy, run, serving, victims, decision)
        run.task = asyncio.get_running_loop().create_task(self._guarded(pool, run, work))

    async def _guarded(self, pool: str, run: PoolRun, work: Any) -> None:
        try:
            await work
            run.backoff = BACKOFF_START
        except Fenced as exc:
            metrics.scale_events.labels(self.region, pool, "refused").inc()
            log.scale.warning("pool %s: action refused: %s", pool, exc)
        except Exception as exc:
            run.backoff_until = time.time() + run.backoff
            log.scale.error("pool %s: scaling failed (next try in %.0f s): %s", pool,
                            run.backoff, exc)
            run.backoff = min(run.backoff * 2, BACKOFF_CAP)
            failed: dict[str, Any] = {"type": "failed", "error": str(exc)[:500]}
            if run.intent is not None:  # the outcome that closes the intent
                failed["intent"] = run.intent
            with contextlib.suppress(Exception):
                await self._event(pool, run, failed)
        finally:
            run.intent = None

    def _victims(self, pool: str, policy: ScalePolicy, serving: list[str],
                 count: int) -> list[str]:
        """Fewest in flight first, then the newest; protected backends never."""
        entries = self.layer.get(pool, {})
        in_flight = self.sampler.in_flight.get(pool, {})
        candidates = [k for k in serving if k not in policy.protected]
        candidates.sort(key=lambda k: (in_flight.get(k, 0),
                                       -float(entries.get(k, {}).get("added_at", 0))))
        return candidates[:count]

    def _request(self, pool: str, action: str, serving: list[str], decision: Decision,
                 **extra: Any) -> dict[str, Any]:
        return {"region": self.region, "pool": pool, "action": action,
                "current": serving, "desired": decision.desired, "reason": decision.reason,
                "idempotency_key": str(uuid.uuid4()), "count": 0, "remove": [], **extra}

    async def _scale_out(self, pool: str, policy: ScalePolicy, run: PoolRun,
                         serving: list[str], count: int, decision: Decision) -> None:
        request = self._request(pool, "add", serving, decision, count=count)
        intent = request["idempotency_key"]
        # The intent, fenced, before the actuator starts anything (see the module's text).
        await self._event(pool, run, {"type": "scale_out.begin", "from": len(serving),
                                      "to": decision.desired, "reason": decision.reason,
                                      "intent": intent, "count": count,
                                      "current": serving})
        run.intent = intent
        answer = await self._call(pool, policy, request)
        await self._record_added(pool, run, intent, answer["added"], len(serving),
                                 decision.reason)

    async def _record_added(self, pool: str, run: PoolRun, intent: str, added: list[str],
                            before: int, reason: str, **extra: Any) -> None:
        """The outcome of a scale-out: its backends in the layer, the intent closed."""
        layer = self._copy_layer()
        now = time.time()
        entries = layer.setdefault(pool, {})
        for address in added:
            if entries.get(address, {}).get("state") != "enabled":
                entries[address] = {"state": "enabled", "added_at": now}
        await self._event(pool, run, {"type": "scale_out", "from": before,
                                      "to": before + len(added), "added": added,
                                      "reason": reason, "intent": intent, **extra}, layer)

    async def _open_intents(self, pool: str) -> list[dict[str, Any]]:
        """The pool's scale-outs begun and never closed, oldest first."""
        events = await self.store.events(self.region, MAX_EVENTS)
        closed = {e.get("intent") for e in events if e.get("type") != "scale_out.begin"}
        return [e for e in reversed(events) if e.get("type") == "scale_out.begin"
                and e.get("pool") == pool and e.get("intent") and e["intent"] not in closed]

    async def _reconcile(self, pool: str, policy: ScalePolicy, run: PoolRun) -> bool:
        """Once per term: replay the intents an earlier leader left open, in the pool's
        task (nothing else acts on the pool meanwhile). Whether there were any."""
        if run.reconciled:
            return False
        run.reconciled = True
        intents = await self._open_intents(pool)
        if not intents:
            return False
        log.scale.warning("pool %s: %d scale-out(s) of an earlier leader without an outcome: "
                          "asking the actuator what they started", pool, len(intents))
        run.task = asyncio.get_running_loop().create_task(
            self._guarded(pool, run, self._replay(pool, policy, run, intents)))
        return True

    async def _replay(self, pool: str, policy: ScalePolicy, run: PoolRun,
                      intents: list[dict[str, Any]]) -> None:
        for begun in intents:
            intent = str(begun["intent"])
            run.intent = intent
            current = [str(k) for k in begun.get("current", [])]
            reason = f"replay of {intent} (its leader was lost before the outcome)"
            request = {"region": self.region, "pool": pool, "action": "add",
                       "current": current, "desired": begun.get("to", 0), "reason": reason,
                       "idempotency_key": intent, "count": int(begun.get("count", 0)),
                       "remove": [], "replay": True}
            answer = await self._call(pool, policy, request)
            await self._record_added(pool, run, intent, answer["added"],
                                     len(self._serving(pool, self.layer.get(pool, {}))),
                                     reason, replayed=True)
            run.intent = None

    async def _scale_in(self, pool: str, policy: ScalePolicy, run: PoolRun,
                        serving: list[str], victims: list[str], decision: Decision) -> None:
        layer = self._copy_layer()
        now = time.time()
        for address in victims:
            entry = layer.setdefault(pool, {}).get(address, {"added_at": 0.0})
            layer[pool][address] = {**entry, "state": "drain", "draining_since": now,
                                    "scale_in": True}
        await self._event(pool, run, {"type": "drain", "from": len(serving),
                                      "to": len(serving) - len(victims), "backends": victims,
                                      "reason": decision.reason}, layer)
        await self._finish_drain(pool, policy, run, victims)

    async def _forget_lost(self, pool: str, policy: ScalePolicy, run: PoolRun,
                           entries: dict[str, Any]) -> None:
        """Backends of the process actuator whose process is gone (it crashed, or the host
        restarted): out of the layer, so the pool's count is what runs."""
        actuator = self._actuator(pool, policy)
        running = getattr(actuator, "running", None)
        if running is None:
            return
        lost = [k for k, e in entries.items() if e.get("added_at") and running(k) is False]
        if lost:
            layer = self._copy_layer()
            for address in lost:
                layer[pool].pop(address, None)
            await self._event(pool, run, {"type": "lost", "backends": lost}, layer)

    def _resume_drains(self, pool: str, policy: ScalePolicy, run: PoolRun,
                       entries: dict[str, Any]) -> None:
        """Drains a scale-in started (maybe under another leader) and not finished."""
        pending = [k for k, e in entries.items() if e.get("scale_in") and
                   e.get("state") == "drain"]
        if pending:
            run.task = asyncio.get_running_loop().create_task(
                self._guarded(pool, run, self._finish_drain(pool, policy, run, pending)))

    async def _finish_drain(self, pool: str, policy: ScalePolicy, run: PoolRun,
                            victims: list[str]) -> None:
        since = min(float(self.layer.get(pool, {}).get(k, {}).get("draining_since", 0) or
                          time.time()) for k in victims)
        while time.time() - since < policy.deregistration_delay:
            if await self._drained(pool, victims):
                break
            await asyncio.sleep(min(self.config.autoscale.interval, 0.2))
        request = self._request(pool, "remove", [], Decision(0, 0, "scale-in", run.memory),
                                remove=victims)
        try:
            answer = await self._call(pool, policy, request)
        except Exception:  # still there: serving again beats a drained backend left idle
            layer = self._copy_layer()
            for address in victims:
                entry = layer.get(pool, {}).get(address)
                if entry is not None:
                    layer[pool][address] = {**entry, "state": "enabled", "scale_in": False}
            self.layer_writes += 1
            await self.store.fenced(self.region, self._token(), layer=layer)
            self.layer = layer
            await self.handle.apply_layer(layer)
            raise
        layer = self._copy_layer()
        file_backends = {b.key for b in self.handle.base.pool(pool).backends}
        for address in answer["removed"] or victims:
            if address in file_backends:
                layer.setdefault(pool, {})[address] = {"state": "removed", "added_at": 0.0}
            else:
                layer.get(pool, {}).pop(address, None)
        await self._event(pool, run, {"type": "scale_in", "removed": victims}, layer)

    async def _drained(self, pool: str, victims: list[str]) -> bool:
        """Every live balancer of the region drains them and has nothing in flight."""
        facts = await self.store.facts(self.region, 3 * self.config.autoscale.interval + 1.0)
        for member in facts.values():
            backends = member.get("pools", {}).get(pool, {})
            for address in victims:
                seen = backends.get(address)
                if seen is not None and (seen[0] > 0 or seen[3] != "drain"):
                    return False
        return bool(facts)

    async def _call(self, pool: str, policy: ScalePolicy,
                    request: dict[str, Any]) -> dict[str, list[str]]:
        actuator = self._actuator(pool, policy)
        if actuator is None:  # no actuator: the layer's own (backends named by an operator)
            raise GtmError(f"pool {pool} has no actuator")

        def attempt(n: int, error: BaseException | None) -> None:
            log.scale.info("pool %s: %s actuator, %s attempt %d: %s", pool,
                           actuator.spec.type, request["action"], n,
                           "ok" if error is None else error)
        return await with_retries(actuator, request, attempt)

    def _copy_layer(self) -> Layer:
        return {pool: {k: dict(v) for k, v in entries.items()}
                for pool, entries in self.layer.items()}

    def _token(self) -> int:
        if self.token is None:
            raise Fenced("no longer the leader")
        return self.token

    async def _event(self, pool: str, run: PoolRun, event: dict[str, Any],
                     layer: Layer | None = None) -> None:
        """A fenced write of the event (and the layer with it); then metrics, log and the
        notification webhook."""
        event = {"pool": pool, "leader": self.member, **event}
        if layer is not None:
            self.layer_writes += 1
        event_id = await self.store.fenced(self.region, self._token(), layer, event)
        if layer is not None:
            self.layer = layer
            await self.handle.apply_layer(layer)
        metrics.scale_events.labels(self.region, pool, event["type"]).inc()
        log.scale.info("region %s pool %s: %s", self.region, pool,
                       {k: v for k, v in event.items() if k != "pool"})
        run.actions = [{"id": event_id, "at": time.time(), **event}, *run.actions][:10]
        notify = self.config.autoscale.notify
        if notify is not None:
            task = asyncio.get_running_loop().create_task(self._notify(event))
            self.notifying.add(task)
            task.add_done_callback(self.notifying.discard)

    async def _notify(self, event: dict[str, Any]) -> None:
        notify = self.config.autoscale.notify
        assert notify is not None
        for attempt in range(3):
            try:
                await post_signed(notify.url, read_key(notify.secret_file),
                                  {"region": self.region, **event}, notify.ca,
                                  self.config.autoscale.outbound_networks, 10.0)
                return
            except Exception as exc:
                log.scale.warning("scaling notification failed (attempt %d): %s",
                                  attempt + 1, exc)
                await asyncio.sleep(2 ** attempt)

    def growth(self) -> tuple[int, list[str]]:
        """For the region report: in-flight requests the pools may still grow into (not
        while paused, nor while the store cannot be reached), and the pools at max."""
        room, at_max = 0, []
        fresh = time.time() - self.last_ok < 3 * self.config.autoscale.interval + 1.0
        for name, policy in self.policies().items():
            top = int(self.operator.get(name, {}).get("max", policy.max))
            serving = len(self._serving(name, self.layer.get(name, {})))
            if serving >= top:
                at_max.append(name)
            elif fresh and not self.operator.get(name, {}).get("paused"):
                room += (top - serving) * self.handle.base.pool(name).max_connections
        return room, at_max

    # -- status -------------------------------------------------------------------------

    def _gauges(self, pool: str, policy: ScalePolicy, run: PoolRun, wanted: int | None) -> None:
        values = {"current": run.current, "min": policy.min, "max": policy.max,
                  "desired": run.last.desired if run.last else run.current}
        if wanted is not None:
            values["forecast"] = wanted
        for kind, value in values.items():
            metrics.scale_backends.labels(self.region, pool, kind).set(value)

    def _status(self, pool: str, policy: ScalePolicy, run: PoolRun, paused: bool,
                wanted: int | None, operator: dict[str, Any]) -> dict[str, Any]:
        target = policy.target
        return {
            "current": run.current, "warm": run.warm,
            "desired": run.last.desired if run.last else run.current,
            "recommended": run.last.recommended if run.last else run.current,
            "reason": "paused" if paused else (run.last.reason if run.last else ""),
            "min": policy.min, "max": policy.max, "paused": paused,
            "at_max": run.current >= policy.max, "metric": policy.metric,
            "value": run.value, "target": target, "operator": operator,
            "acting": run.task is not None and not run.task.done(),
            "backoff_until": run.backoff_until or None,
            "last_actions": run.actions[:5],
            "forecast": {
                "mode": policy.predictive.mode, "buffer": policy.predictive.buffer,
                "backends": wanted,
                "points": [[m * 60, round(v, 3)] for m, v in run.forecast],
            } if policy.predictive is not None else None,
            "load": [[m * 60, round(v, 3)] for m, v in self._recent(run)],
            "draining": [k for k, e in self.layer.get(pool, {}).items()
                         if e.get("state") == "drain"],
        }

    def _recent(self, run: PoolRun) -> list[tuple[int, float]]:
        """The actual load beside the forecast: stored minutes, then the one running."""
        points = [p for p in run.actual if p[0] != run.minute]
        if run.minute_loads:
            points.append((run.minute, sum(run.minute_loads) / len(run.minute_loads)))
        return points
