"""Observations from many observers, and the state a node agrees on from them.

Each observer publishes, after every probe, its own rise/fall verdict for the
target with the time it was made. A node derives the target's state from the
FRESH observations (younger than ``expiry``) of DISTINCT observers:

* at least ``quorum`` of them say down, and they outnumber those saying up: down;
* at least ``quorum`` say up, and at least as many as say down: up (ties fail open);
* otherwise (too few fresh observers, or a split): the last agreed state is kept.

A node that sees fewer than ``quorum`` fresh observers is cut off: it keeps the last
agreed state rather than act on its own view alone, and says so (``isolated``).
Region self-reports from the regional balancers are facts of their own, kept here
too: a region whose balancer says it has no healthy backend is down.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gtm import log, metrics
from gtm.steering.state import Health
from gtm.wording import counted


@dataclass(frozen=True)
class Observation:
    observer: str
    target: str  # "<zone>/<endpoint>", see target_id
    ok: bool  # the observer's verdict after its rise/fall hysteresis
    time: float  # unix seconds
    reason: str = ""
    latency: float = 0.0  # of the last probe, seconds
    changing: bool = False  # the observer is counting toward a change

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Observation:
        data = json.loads(text)
        return cls(str(data["observer"]), str(data["target"]), bool(data["ok"]),
                   float(data["time"]), str(data.get("reason", "")),
                   float(data.get("latency", 0.0)), bool(data.get("changing", False)))


@dataclass(frozen=True)
class Agreed:
    state: Health
    reason: str
    since: float
    observers: int = 0  # distinct fresh observers behind this
    doubt: bool = False  # observers disagree, one is mid-change, or too few to decide
    isolated: bool = False  # fewer fresh observers than the quorum


@dataclass(frozen=True)
class RegionFact:
    healthy: bool
    headroom: float | None
    time: float
    detail: str


@dataclass(frozen=True)
class HealthFacts:
    """Everything health knows at one moment; what the overlay merges into the zones."""

    endpoints: Mapping[str, Agreed] = field(default_factory=dict)
    regions: Mapping[str, RegionFact] = field(default_factory=dict)


def target_id(zone_origin: str, endpoint: str) -> str:
    return f"{zone_origin.rstrip('.')}/{endpoint}"


class QuorumView:
    def __init__(self, quorum: int = 1, expiry: float = 6.0):
        if quorum < 1:
            raise ValueError("quorum must be at least 1")
        self.quorum = quorum
        self.expiry = expiry
        self.observations: dict[str, dict[str, Observation]] = {}
        self.agreed: dict[str, Agreed] = {}
        self.started = time.time()

    def add(self, observation: Observation, now: float | None = None) -> bool:
        """Take one observation; True when the agreed state (or its doubt) changed."""
        seen = self.observations.setdefault(observation.target, {})
        previous = seen.get(observation.observer)
        if previous is not None and previous.time > observation.time:
            return False  # an older one arriving late (Redis backfill): keep the newer
        seen[observation.observer] = observation
        return self._recompute(observation.target, time.time() if now is None else now)

    def sweep(self, now: float | None = None) -> bool:
        """Re-derive every target as observations age; True when anything changed."""
        moment = time.time() if now is None else now
        changed = False
        for target in list(self.observations):
            changed |= self._recompute(target, moment)
        metrics.health_isolated.set(1 if self.isolated() else 0)
        return changed

    def forget(self, targets: set[str]) -> None:
        for target in targets:
            self.observations.pop(target, None)
            self.agreed.pop(target, None)

    def fresh(self, target: str, now: float | None = None) -> list[Observation]:
        moment = time.time() if now is None else now
        return [o for o in self.observations.get(target, {}).values()
                if moment - o.time <= self.expiry]

    def isolated(self) -> bool:
        return any(a.isolated for a in self.agreed.values())

    def _recompute(self, target: str, now: float) -> bool:
        fresh = self.fresh(target, now)
        ups = [o for o in fresh if o.ok]
        downs = [o for o in fresh if not o.ok]
        last = self.agreed.get(target)
        keep = last or Agreed("up", "no agreed state yet (failing open)", self.started)
        if len(fresh) < self.quorum:
            agreed = Agreed(keep.state, keep.reason, keep.since, len(fresh), True, True)
        elif len(downs) >= self.quorum and len(downs) > len(ups):
            agreed = self._decided(keep, "down", downs, len(fresh), now)
        elif len(ups) >= self.quorum and len(ups) >= len(downs):
            agreed = self._decided(keep, "up", ups, len(fresh), now)
        else:
            agreed = Agreed(keep.state, f"split {len(ups)} up / {len(downs)} down; keeping "
                            f"{keep.state}", keep.since, len(fresh), True, False)
        if agreed.state == keep.state and last is not None and agreed.isolated == last.isolated \
                and agreed.doubt == last.doubt and agreed.observers == last.observers:
            self.agreed[target] = agreed
            return False  # a new reason alone needs no rebuild of the serving snapshot
        self.agreed[target] = agreed
        if last is None or agreed.state != last.state:
            metrics.health_transitions.labels("agreed", agreed.state).inc()
            level = logging.WARNING if agreed.state == "down" else logging.INFO
            log.health.log(level, "%s: agreed %s (%s)", target, agreed.state, agreed.reason)
        elif agreed.isolated != last.isolated:
            what = (f"too few fresh observers ({len(fresh)}) for quorum {self.quorum}; "
                    f"keeping {agreed.state}") if agreed.isolated else "quorum regained"
            log.health.warning("%s: %s", target, what)
        return True

    def _decided(self, keep: Agreed, state: Health, voters: list[Observation], fresh: int,
                 now: float) -> Agreed:
        doubt = len(voters) < fresh or any(o.changing for o in voters)
        names = ", ".join(sorted(o.observer for o in voters))
        reason = f"{len(voters)}/{counted(fresh, 'observer')} ({names}): {voters[0].reason}"
        since = keep.since if keep.state == state else now
        return Agreed(state, reason, since, fresh, doubt, False)


def region_fact(
    reports: Sequence[Mapping[str, Any]], now: float, expiry: float
) -> RegionFact | None:
    """One region's fact from its workers' fresh reports (each worker reports its share)."""
    fresh = [r for r in reports if now - float(r.get("time", 0)) <= expiry]
    if not fresh:
        return None  # no word from the balancer: the probes alone decide
    healthy = any(bool(r.get("healthy")) for r in fresh)
    capacity = sum(int(r.get("capacity") or 0) for r in fresh)
    in_flight = sum(int(r.get("in_flight") or 0) for r in fresh)
    headroom = max(0.0, 1.0 - in_flight / capacity) if capacity else (1.0 if healthy else 0.0)
    up = sum(int(r.get("backends_up") or 0) for r in fresh)
    total = sum(int(r.get("backends_total") or 0) for r in fresh)
    detail = (f"balancer reports {'healthy' if healthy else 'no healthy backends'} "
              f"({up}/{counted(total, 'backend')} up, {counted(len(fresh), 'worker')})")
    return RegionFact(healthy, headroom, max(float(r["time"]) for r in fresh), detail)
