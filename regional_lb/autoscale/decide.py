"""The scaling decision: a pure function of a policy, what was observed, and a memory.

Like Kubernetes' HPA v2 and AWS target tracking:

1. A raw recommendation: target tracking scales the warm backends by metric / target
   (nothing inside the tolerance band); step scaling applies the matching step.
   Backends still warming up count as capacity, not as data, so a pool does not grow
   again for load that the new backends are about to take; and it does not shrink
   while some are warming.
2. Predictive capacity (``forecast_and_scale``) raises it: reactive acts on top.
3. min / max, and ``disable_scale_in``.
4. Stabilisation: a scale-out takes the lowest recommendation of its window, a
   scale-in the highest of its window (default 0 s and 300 s), so a short dip or spike
   does nothing.
5. Rate policies: at most the larger of N backends or P % per period, per direction.
6. Cooldown: no action until ``cooldown`` seconds after the last one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from regional_lb.config_autoscale import ScalePolicy


@dataclass(frozen=True)
class Observation:
    now: float
    current: int               # serving backends (not draining), warming ones included
    warm: int                  # of those, past warm-up: their numbers make the metric
    metric: float | None       # the policy's metric; None: no data this tick
    forecast: int | None = None  # backends the forecast wants `buffer` s from now


@dataclass(frozen=True)
class Memory:
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, recommendation)
    actions: tuple[tuple[float, int], ...] = ()          # (time, change in backends)


@dataclass(frozen=True)
class Decision:
    desired: int
    recommended: int   # before stabilisation, rate policies and cooldown
    reason: str
    memory: Memory


def decide(policy: ScalePolicy, seen: Observation, memory: Memory) -> Decision:
    raw, why = _recommend(policy, seen)
    if policy.predictive is not None and policy.predictive.mode == "forecast_and_scale" \
            and seen.forecast is not None and seen.forecast > raw:
        raw, why = seen.forecast, f"forecast needs {seen.forecast}"
    raw = min(max(raw, policy.min), policy.max)
    if policy.disable_scale_in and raw < seen.current:
        raw = seen.current
    keep = max(policy.scale_out.window, policy.scale_in.window, policy.scale_out.period,
               policy.scale_in.period, policy.cooldown)
    recommendations = (*((t, n) for t, n in memory.recommendations if seen.now - t <= keep),
                       (seen.now, raw))
    actions = tuple((t, n) for t, n in memory.actions if seen.now - t <= keep)
    memory = Memory(recommendations, actions)
    desired, reason = _stabilise(policy, seen, recommendations, why)
    desired, reason = _rate_limit(policy, seen, actions, desired, reason)
    if desired != seen.current and actions and seen.now - actions[-1][0] < policy.cooldown:
        desired, reason = seen.current, f"cooldown ({why})"
    desired = min(max(desired, policy.min), policy.max)
    return Decision(desired, raw, reason, memory)


def remember_action(memory: Memory, now: float, change: int) -> Memory:
    return replace(memory, actions=(*memory.actions, (now, change)))


def _recommend(policy: ScalePolicy, seen: Observation) -> tuple[int, str]:
    if seen.metric is None:
        return seen.current, "no data"
    if policy.target is not None:
        return _track(policy, policy.target, seen)
    return _step(policy, seen)


def _track(policy: ScalePolicy, target: float, seen: Observation) -> tuple[int, str]:
    assert seen.metric is not None
    ratio = seen.metric / target
    said = f"{policy.metric} {seen.metric:.4g} vs target {target:g}"
    if abs(ratio - 1.0) <= policy.tolerance:
        return seen.current, f"{said}: within tolerance"
    base = seen.warm if seen.warm > 0 else seen.current
    if base == 0:
        return (1 if seen.metric > 0 else 0), said
    # A little slack below the integer: 2.0000001 backends is 2, not 3.
    wanted = math.ceil(base * ratio - 1e-9)
    if wanted < seen.current and seen.warm < seen.current:
        return seen.current, f"{said}: holding while {seen.current - seen.warm} warm up"
    return max(wanted, 0), said


def _step(policy: ScalePolicy, seen: Observation) -> tuple[int, str]:
    assert seen.metric is not None
    metric = seen.metric
    above = [s for s in policy.steps if s.above and metric > s.bound]
    below = [s for s in policy.steps if not s.above and metric < s.bound]
    if above:
        step = max(above, key=lambda s: s.bound)
    elif below:
        step = min(below, key=lambda s: s.bound)
    else:
        return seen.current, f"{policy.metric} {metric:.4g}: no step matches"
    said = f"{policy.metric} {metric:.4g} {'above' if step.above else 'below'} {step.bound:g}"
    if policy.adjustment == "exact":
        return step.adjust, said
    if policy.adjustment == "percent":
        change = max(policy.min_step, math.ceil(abs(seen.current * step.adjust) / 100))
        return seen.current + (change if step.adjust > 0 else -change), said
    return seen.current + step.adjust, said


def _stabilise(policy: ScalePolicy, seen: Observation,
               recommendations: tuple[tuple[float, int], ...], why: str) -> tuple[int, str]:
    up = min(n for t, n in recommendations if seen.now - t <= policy.scale_out.window)
    down = max(n for t, n in recommendations if seen.now - t <= policy.scale_in.window)
    desired = seen.current
    if desired < up:
        return up, why
    if desired > down:
        return down, why
    latest = recommendations[-1][1]
    if latest > seen.current:
        return desired, f"stabilising scale-out ({why})"
    if latest < seen.current:
        return desired, f"stabilising scale-in for {policy.scale_in.window:g} s ({why})"
    return desired, why


def _rate_limit(policy: ScalePolicy, seen: Observation, actions: tuple[tuple[float, int], ...],
                desired: int, reason: str) -> tuple[int, str]:
    if desired > seen.current:
        rate = policy.scale_out
        added = sum(n for t, n in actions if n > 0 and seen.now - t < rate.period)
        start = seen.current - added
        limit = max(rate.backends, math.ceil(start * rate.percent / 100))
        if desired > start + limit:
            return max(seen.current, start + limit), f"{reason}; scale-out rate limit"
    elif desired < seen.current:
        rate = policy.scale_in
        removed = -sum(n for t, n in actions if n < 0 and seen.now - t < rate.period)
        start = seen.current + removed
        limit = max(rate.backends, math.floor(start * rate.percent / 100))
        if desired < start - limit:
            return min(seen.current, start - limit), f"{reason}; scale-in rate limit"
    return desired, reason
