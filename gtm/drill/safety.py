"""Safety before starting ("look both ways"): pure rules over a snapshot of facts.

Each rule that refuses names itself, so an operator knows which one to fix (or to
override with ``--force --reason``, which is audited):

- ``another-region-down``: another region is already down or draining;
- ``headroom``: the remaining regions' reported headroom cannot take the moved traffic;
- ``blocked-window``: now is inside a blocked date or weekly window;
- ``assertion:min_regions_up``: fewer regions than asserted would stay up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from gtm.config.drills import Plan, blocked_by


@dataclass(frozen=True)
class RegionFacts:
    up: bool = True
    draining: bool = False        # an endpoint of it is drained or forced down by hand
    headroom: float | None = None  # the lowest reported (balancer report or state section)
    why: str = ""


@dataclass(frozen=True)
class Facts:
    """What the control plane says right now, about the plan's zone."""

    regions: Mapping[str, RegionFacts] = field(default_factory=dict)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


@dataclass(frozen=True)
class Refusal:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"refused by safety rule {self.rule}: {self.message}"


def check(plan: Plan, facts: Facts) -> list[Refusal]:
    """Every rule that refuses this drill now (empty: it may start)."""
    refusals: list[Refusal] = []
    others = {name: f for name, f in facts.regions.items() if name != plan.region}
    for name, region in sorted(others.items()):
        if not region.up or region.draining:
            state = "down" if not region.up else "draining"
            refusals.append(Refusal("another-region-down",
                                    f"region {name} is already {state} ({region.why})"))
    refusals.extend(_headroom(plan, facts, others))
    blocked = blocked_by(plan.safety.blocked_dates, plan.safety.blocked_weekly, facts.now)
    if blocked is not None:
        refusals.append(Refusal("blocked-window", f"now ({facts.now:%Y-%m-%d %H:%M} UTC) is "
                                f"inside a {blocked}"))
    wanted = plan.safety.min_regions_up
    if wanted is not None:
        staying = sorted(n for n, f in others.items() if f.up and not f.draining)
        if len(staying) < wanted:
            refusals.append(Refusal(
                "assertion:min_regions_up",
                f"at least {wanted} regions must stay up while {plan.region} is out; "
                f"{len(staying)} would ({', '.join(staying) or 'none'})"))
    return refusals


def _headroom(plan: Plan, facts: Facts, others: Mapping[str, RegionFacts]) -> list[Refusal]:
    """The target's load (1 - its headroom) spread evenly over the regions that stay up
    must leave each of them at least ``min_headroom`` (regions alike in capacity: the
    report gives shares, not absolute capacities)."""
    staying = {n: f for n, f in others.items() if f.up and not f.draining}
    if not staying:
        return [Refusal("headroom", f"no other region is up to take {plan.region}'s traffic")]
    target = facts.regions.get(plan.region, RegionFacts())
    load = 1.0 - (1.0 if target.headroom is None else target.headroom)
    share = load / len(staying)
    short = [f"{name} reports {f.headroom:.2f}" for name, f in sorted(staying.items())
             if f.headroom is not None and f.headroom - share < plan.safety.min_headroom]
    if not short:
        return []
    return [Refusal("headroom", f"{plan.region}'s load ({load:.2f} of its capacity) spread "
                    f"over {len(staying)} regions needs {share:.2f} each plus the minimum "
                    f"{plan.safety.min_headroom:.2f}: {', '.join(short)}")]
