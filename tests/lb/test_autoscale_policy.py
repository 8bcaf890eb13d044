"""Auto-scaling policies as written, and the decision they make, without processes:
bad policies refused with their key path (by the balancer's compiler, in a file and in
the control plane's lb section alike), flapping, and the forecast."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from gtm.errors import ConfigError
from regional_lb.autoscale.decide import Memory, Observation, decide, remember_action
from regional_lb.autoscale.forecast import backends_for, forecast
from regional_lb.autoscale.metrics import Sampler
from regional_lb.balancing.state import LATENCY_BUCKETS
from regional_lb.config import build_config
from regional_lb.config_autoscale import ScalePolicy
from regional_lb.sections import validate_lb
from regional_lb.snapshot import compile_snapshot


def table(**policy: Any) -> dict[str, Any]:
    """A balancer table whose pool has the policy (a key given as None is left out)."""
    autoscale = {"min": 1, "max": 4, "metric": "in_flight_per_backend", "target": 10,
                 **policy}
    return {"listeners": [{"bind": "127.0.0.1:0"}],
            "pools": [{"name": "app", "backends": ["127.0.0.1:9001"],
                       "autoscale": {k: v for k, v in autoscale.items() if v is not None}}]}


@pytest.mark.parametrize(("policy", "where", "reason"), [
    ({"min": 5, "max": 2}, "pools[0].autoscale.min", "must not be above max (2)"),
    ({"metric": "cpu"}, "pools[0].autoscale.metric", "must be one of in_flight_per_backend"),
    ({"target": 0}, "pools[0].autoscale.target", "must be above 0"),
    ({"target": None}, "pools[0].autoscale.target", "give a target"),
    ({"steps": [{"above": 5, "adjust": 0}], "target": None},
     "pools[0].autoscale.steps[0].adjust", "must not be 0"),
    ({"scale_in": {"window": -1}}, "pools[0].autoscale.scale_in.window", "must be"),
    ({"metric": "error_rate", "predictive": {"mode": "forecast_only"}},
     "pools[0].autoscale.predictive", "needs target tracking on a per-backend metric"),
    ({"metric": "prometheus", "prometheus": {"url": "http://169.254.169.254/", "query": "x"}},
     "pools[0].autoscale.prometheus.url", "not in outbound_networks"),
    ({"actuator": {"type": "webhook", "url": "http://10.0.0.1/"}},
     "pools[0].autoscale.actuator.url", "must be a https URL"),
    ({"actuator": {"type": "process", "command": ["srv"], "ports": "1-2"}},
     "pools[0].autoscale.actuator.command", "must name {port} or {address}"),
    ({"bogus": 1}, "pools[0].autoscale.bogus", "unknown key 'bogus'"),
])
def test_bad_policies_are_refused_with_the_key_path(policy: dict[str, Any], where: str,
                                                    reason: str) -> None:
    raw = table(**policy)
    with pytest.raises(ConfigError) as caught:
        build_config(raw, "lb.toml")
    assert caught.value.where == f"lb.{where}"
    assert reason in caught.value.reason
    # The control plane refuses the same table, at its place in the document.
    with pytest.raises(ConfigError) as in_document:
        validate_lb({"eu-west": raw}, "api", "lb")
    assert in_document.value.where == f"lb.eu-west.{where}"


def test_a_good_policy_compiles_with_its_defaults() -> None:
    config = build_config(table(), "lb.toml")
    policy = config.pools[0].autoscale
    assert policy is not None
    assert (policy.scale_out.window, policy.scale_in.window) == (0.0, 300.0)
    assert policy.tolerance == 0.1 and policy.deregistration_delay == 300.0


def policy(**changes: Any) -> ScalePolicy:
    config = build_config(table(**changes), "lb.toml")
    found = config.pools[0].autoscale
    assert found is not None
    return found


def run(p: ScalePolicy, metric_of: Any, seconds: int, start: int = 2,
        step: float = 1.0) -> tuple[int, int]:
    """Drive decide() over time as the scaler does (one action applied at once); the
    backends at the end and the number of actions."""
    memory, current, actions = Memory(), start, 0
    for tick in range(int(seconds / step)):
        now = tick * step
        # The pool's load: in flight per backend falls as backends are added.
        seen = Observation(now, current, current, metric_of(now) * start / current)
        decision = decide(p, seen, memory)
        memory = decision.memory
        if decision.desired != current:
            memory = remember_action(memory, now, decision.desired - current)
            current, actions = decision.desired, actions + 1
    return current, actions


def test_a_load_oscillating_around_the_target_does_not_flap() -> None:
    p = policy(max=10)
    # 30 s above, 30 s below the target, for 20 minutes: one scale-out, then nothing.
    def swinging(now: float) -> float:
        return 13.0 if int(now // 30) % 2 == 0 else 7.0
    end, actions = run(p, swinging, 1200)
    assert actions <= 1
    # Inside the tolerance band: nothing at all.
    end, actions = run(p, lambda now: 10.0 + (0.8 if int(now) % 2 else -0.8), 600)
    assert (end, actions) == (2, 0)


def test_scale_in_waits_for_its_window_and_respects_its_rate() -> None:
    p = policy(max=10, scale_in={"window": 60, "backends": 1, "period": 30})
    seen = Observation(0.0, 6, 6, 1.0)
    first = decide(p, seen, Memory(((-1.0, 6),), ()))
    assert first.desired == 6 and "stabilising scale-in" in first.reason
    later = decide(p, Observation(61.0, 6, 6, 1.0), first.memory)
    assert later.desired == 5  # one backend per 30 s period
    assert "rate limit" in later.reason


def test_backends_warming_up_count_as_capacity_not_as_data() -> None:
    p = policy(max=10, scale_in={"window": 0})
    # 2 warm backends at 2x the target: 4 wanted; 2 more are warming, so nothing to add.
    assert decide(p, Observation(0.0, 4, 2, 20.0), Memory()).desired == 4
    # Low load while some warm up: no scale-in yet.
    assert decide(p, Observation(0.0, 4, 2, 1.0), Memory()).desired == 4


def test_step_scaling_with_percent_and_min_step() -> None:
    p = policy(target=None, adjustment="percent", min_step=2,
               steps=[{"above": 20, "adjust": 50}, {"below": 5, "adjust": -10}],
               max=20, scale_in={"window": 0, "backends": 5})
    assert decide(p, Observation(0.0, 10, 10, 25.0), Memory()).desired == 15
    assert decide(p, Observation(0.0, 10, 10, 2.0), Memory()).desired == 8  # min_step 2


def test_in_flight_per_backend_tracks_the_mean_between_decisions_not_one_count() -> None:
    # A pool whose backend holds 10 in flight on average, counted at a moment it held 30:
    # the decision sees 10 (one count would scale out 3 times over).
    config = build_config(table(), "lb.toml")
    snapshot = compile_snapshot(config, None)
    backend = snapshot.pools["app"].backends[0]
    sampler = Sampler()
    for count in (4, 8, 10, 12, 16, 10, 30):
        backend.active = count
        sampler.sample(snapshot, {"app"})
    facts = {"m1": {"at": 100.0, **sampler.facts(snapshot, {"app"})}}
    assert facts["m1"]["pools"]["app"][backend.key][0] == 30  # what a drain waits on
    policy = config.pools[0].autoscale
    assert policy is not None
    value = asyncio.run(sampler.metric(policy, "app", facts, [backend.key], [backend.key],
                                       100.0))
    assert value == pytest.approx(90 / 7, abs=0.001)
    # A balancer of an earlier version sends no mean: its count is the figure.
    older = {"m1": {"at": 101.0, "pools": {"app": {backend.key: [
        12, 0, 0, "enabled", [0] * len(LATENCY_BUCKETS)]}}}}
    assert asyncio.run(sampler.metric(policy, "app", older, [backend.key], [backend.key],
                                      101.0)) == 12


def week_with_a_daily_peak(now: float, peak_in: int, base: float, peak: float
                           ) -> dict[int, float]:
    """Seven days of one-minute points: ``base``, and ``peak`` for 30 minutes a day,
    starting ``peak_in`` minutes after now's time of day."""
    minute_now = int(now // 60)
    history = {}
    for minute in range(minute_now - 7 * 1440, minute_now):
        offset = (minute - minute_now) % 1440
        history[minute] = peak if peak_in <= offset < peak_in + 30 else base
    return history


def test_the_forecast_schedules_capacity_before_a_daily_peak() -> None:
    now = 1_800_000_000.0
    history = week_with_a_daily_peak(now, peak_in=10, base=10.0, peak=40.0)
    points = forecast(history, now, 3600)
    assert max(v for _, v in points) == pytest.approx(40.0)
    # Buffer of 15 minutes: the peak (10 minutes away) is inside it: 4 backends now.
    assert backends_for(points, now, 900, 10.0) == 4
    # Buffer of 5 minutes: not yet (the seasonal base of 10 wants 1).
    assert backends_for(points, now, 300, 10.0) == 1
    # A busier week than the last ones is followed (level factor, clamped to 2).
    busier = {m: v * 1.5 for m, v in history.items() if m >= int(now // 60) - 30}
    assert backends_for(forecast({**history, **busier}, now, 3600), now, 900,
                        10.0) == math.ceil(40 * 1.5 / 10)


def test_a_short_daily_peak_is_forecast_at_its_height() -> None:
    # Three minutes a day at 60 among 5s: a mean over +/- 2 minutes would say 38 at most
    # and leave the peak with 4 backends of the 6 it needs.
    now = 1_800_000_000.0
    minute_now = int(now // 60)
    history = {m: 60.0 if 4 <= (m - minute_now) % 1440 < 7 else 5.0
               for m in range(minute_now - 7 * 1440, minute_now)}
    points = forecast(history, now, 900)
    assert max(v for _, v in points) == pytest.approx(60.0)
    assert backends_for(points, now, 600, 10.0) == 6
    # A peak a minute later or earlier from one day to the next is still covered.
    shifted = {m: 60.0 if 5 <= (m - minute_now) % 1440 < 8 else 5.0 for m in history}
    assert backends_for(forecast(shifted, now, 900), now, 300, 10.0) == 6


def test_a_level_from_a_few_minutes_of_load_is_not_applied() -> None:
    # A balancer that has seen five quiet minutes: its level would say 0.5 (the clamp)
    # and halve the forecast of the peak; ten minutes or more are needed.
    now = 1_800_000_000.0
    minute_now = int(now // 60)
    history = {m: v for m, v in week_with_a_daily_peak(now, 10, 10.0, 40.0).items()
               if m < minute_now - 30}
    quiet = {m: 4.0 for m in range(minute_now - 5, minute_now)}
    assert backends_for(forecast({**history, **quiet}, now, 3600), now, 900, 10.0) == 4
    quieter_week = {m: 4.0 for m in range(minute_now - 30, minute_now)}
    assert backends_for(forecast({**history, **quieter_week}, now, 3600), now, 900,
                        10.0) == 2


def test_gtm_scale_status_shows_the_forecast_beside_the_actual_load() -> None:
    from gtm.control.scale_cli import render_status

    status = {"leader": "a/0", "token": 3, "at": 100.0, "pools": {"web": {
        "current": 2, "warm": 2, "desired": 4, "min": 1, "max": 6, "paused": False,
        "at_max": False, "metric": "requests_per_backend", "value": 7.5, "target": 10.0,
        "reason": "forecast needs 4", "draining": [], "last_actions": [
            {"type": "scale_out", "at": 90.0, "from": 1, "to": 2}],
        "forecast": {"mode": "forecast_and_scale", "buffer": 900.0, "backends": 4,
                     "points": [[6000 + 60 * i, 10.0 + i] for i in range(30)]},
        "load": [[4200 + 60 * i, 15.0] for i in range(30)]}}}
    lines = render_status("eu", status, now=101.0)
    text = "\n".join(lines)
    assert "pool web: 2 backends (2 warm), desired 4, min 1 max 6" in text
    assert "requests_per_backend 7.5 vs target 10: forecast needs 4" in text
    assert "forecast (forecast_and_scale, buffer 900 s): 4 backends wanted" in text
    actual = next(line for line in lines if line.strip().startswith("actual"))
    forecast = next(line for line in lines if "next hour" in line)
    assert len(actual.split()[1]) == 30 and "peak 39" in forecast
    assert '"from": 1, "to": 2' in text
