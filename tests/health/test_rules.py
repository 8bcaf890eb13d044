"""The pure parts: check definitions, rise/fall, quorum, the overlay and coalescing."""

from __future__ import annotations

import asyncio
import random
import time

import dns.name
import pytest

from gtm.dns.zone import name_key
from gtm.errors import ConfigError
from gtm.health.overlay import ServingFeed, overlay
from gtm.health.probes import ProbeResult
from gtm.health.quorum import Agreed, HealthFacts, Observation, QuorumView, RegionFact
from gtm.health.state import HealthMachine
from gtm.steering.definitions import parse_steering
from gtm.steering.model import HealthCheck
from gtm.steering.state import EndpointState, SteeringState
from tests.health.helpers import Served, check, compile_zones, health_of, steering, zone_of

T = "hc.test/eu-1"


# ---- definitions ----


def test_check_table_is_parsed() -> None:
    parsed = parse_steering(steering(check(8080, expect=[200, 204])),
                            dns.name.from_text("hc.test."), "hc.steering.toml")
    spec = parsed.pools["web"].check
    assert spec == HealthCheck("http", port=8080, path="/healthz", interval=0.2, timeout=0.15,
                               fastinter=0.1, jitter=0.0, expect=(200, 204))


@pytest.mark.parametrize(("change", "where", "reason"), [
    ({"type": "smtp"}, "pools.web.check.type", "must be one of tcp, http"),
    ({"rise": 0}, "pools.web.check.rise", "must be from 1 to 100"),
    ({"timeout": 5.0}, "pools.web.check.timeout", "must not be longer than the interval"),
    ({"expect": []}, "pools.web.check.expect", "needs at least one status code"),
    ({"query": "x."}, "pools.web.check.query", "unknown key"),
    ({"path": "healthz"}, "pools.web.check.path", "must start with /"),
    ({"jitter": 0.9}, "pools.web.check.jitter", "must be from 0 to 0.5"),
])
def test_bad_checks_name_file_path_and_reason(change: dict[str, object], where: str,
                                              reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_steering(steering(check(8080, **change)), dns.name.from_text("hc.test."),
                       "hc.steering.toml")
    assert caught.value.source == "hc.steering.toml"
    assert caught.value.where == where
    assert reason in caught.value.reason


def test_type_specific_requirements() -> None:
    for spec, where in (({"type": "tcp"}, "pools.web.check.port"),
                        ({"type": "dns"}, "pools.web.check.query"),
                        ({"type": "exec"}, "pools.web.check.command")):
        with pytest.raises(ConfigError) as caught:
            parse_steering(steering(spec), dns.name.from_text("hc.test."), "f")
        assert caught.value.where == where


# ---- rise / fall ----


def result(ok: bool) -> ProbeResult:
    return ProbeResult(ok, "HTTP 200" if ok else "HTTP 500", 0.001, time.time())


def test_fall_then_rise_with_fastinter_while_changing() -> None:
    machine = HealthMachine(T, HealthCheck("http", interval=2.0, fastinter=0.5, jitter=0.0,
                                           rise=3, fall=2))
    assert machine.state == "up" and machine.next_delay() == 2.0
    assert not machine.observe(result(False))
    assert machine.changing and machine.next_delay() == 0.5  # confirming a failure: fast
    assert machine.observe(result(False)) and machine.state == "down"
    assert "HTTP 500 (2 in a row)" in machine.reason
    assert machine.next_delay() == 2.0
    assert not machine.observe(result(True)) and not machine.observe(result(True))
    assert machine.observe(result(True)) and machine.state == "up"


def test_flapping_is_held_by_hysteresis() -> None:
    machine = HealthMachine(T, HealthCheck("http", rise=2, fall=2))
    for turn in range(50):
        assert not machine.observe(result(turn % 2 == 0))
    assert machine.state == "up"


def test_jitter_stays_within_its_fraction() -> None:
    machine = HealthMachine(T, HealthCheck("http", interval=2.0, jitter=0.1),
                            random.Random(7))
    delays = [machine.next_delay() for _ in range(200)]
    assert 1.8 <= min(delays) < 1.9 and 2.1 < max(delays) <= 2.2


# ---- quorum ----


def obs(observer: str, ok: bool, at: float) -> Observation:
    return Observation(observer, T, ok, at, "r")


def test_majority_decides_and_ties_fail_open() -> None:
    view = QuorumView(quorum=2, expiry=5.0)
    now = 1000.0
    for name in "abc":
        view.add(obs(name, True, now), now)
    assert view.agreed[T].state == "up" and not view.agreed[T].doubt
    view.add(obs("c", False, now + 1), now + 1)  # one dissenter: still up, in doubt
    assert view.agreed[T].state == "up" and view.agreed[T].doubt
    view.add(obs("b", False, now + 1), now + 1)
    assert view.agreed[T].state == "down" and view.agreed[T].observers == 3


def test_a_node_cut_off_keeps_the_last_agreed_state_and_says_so() -> None:
    view = QuorumView(quorum=2, expiry=5.0)
    view.add(obs("a", True, 1000.0), 1000.0)
    view.add(obs("b", True, 1000.0), 1000.0)
    assert view.agreed[T].state == "up" and not view.isolated()
    # Only its own observations stay fresh, and they say down: it does not act on them.
    for second in range(1, 20):
        view.add(obs("a", False, 1000.0 + second), 1000.0 + second)
        view.sweep(1000.0 + second)
    assert view.agreed[T].state == "up"
    assert view.isolated() and view.agreed[T].isolated
    view.add(obs("b", False, 1020.0), 1020.0)
    assert view.agreed[T].state == "down" and not view.isolated()


def test_late_older_observation_is_ignored() -> None:
    view = QuorumView()
    view.add(obs("a", False, 1000.0), 1000.0)
    view.add(obs("a", True, 990.0), 1000.0)
    assert view.agreed[T].state == "down"


# ---- overlay ----


def test_overlay_merges_health_keeps_admin_and_caps_ttl_in_doubt() -> None:
    zones = compile_zones(check(8080))
    facts = HealthFacts({T: Agreed("down", "refused", 1.0, 1, doubt=True)})
    merged = overlay(zones, facts, doubt_ttl=5)
    assert health_of(merged, "eu-1") == "down" and health_of(zones, "eu-1") == "up"
    steered = zone_of(merged).steering
    assert steered is not None
    assert steered.names[name_key(dns.name.from_text("api.hc.test."))].ttl == 5
    # Admin force_up set by an operator still wins over a health fact.
    forced = SteeringState({"eu-1": EndpointState(admin="force_up", reason="by hand")})
    zone = zone_of(zones)
    from dataclasses import replace

    from gtm.dns.answer import ZoneSet
    zones_forced = ZoneSet.of([replace(zone, state=forced)])
    merged = overlay(zones_forced, facts)
    state = zone_of(merged).state
    assert state.endpoint_state("eu-1").health == "down"
    assert zone_of(merged).steering is not None
    endpoint = zone_of(merged).steering.endpoint("eu-1")  # type: ignore[union-attr]
    assert endpoint is not None and state.healthy(endpoint)


def test_region_report_unhealthy_takes_the_region_out_and_headroom_feeds_capacity() -> None:
    zones = compile_zones(check(8080))
    facts = HealthFacts(regions={"eu": RegionFact(False, 0.0, time.time(), "no backends"),
                                 "us": RegionFact(True, 0.4, time.time(), "fine")})
    state = zone_of(overlay(zones, facts)).state
    assert state.region_state("eu").health == "down"
    assert state.headroom("us") == 0.4
    endpoint = zone_of(zones).steering.endpoint("eu-1")  # type: ignore[union-attr]
    assert endpoint is not None and not state.healthy(endpoint)


async def test_feed_coalesces_flips_and_survives_config_swaps() -> None:
    served = Served()
    feed = ServingFeed(served, coalesce=0.3)
    facts = {T: Agreed("down", "x", 1.0, 1)}
    feed.facts = lambda: HealthFacts(dict(facts))
    feed.serve(compile_zones(check(8080)))
    assert health_of(served.current, "eu-1") == "down"
    started = len(served.swaps)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:  # a storm of flips: 100 per second
        feed.request()
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.35)
    rebuilds = len(served.swaps) - started
    assert 2 <= rebuilds <= 5, rebuilds  # about 1 s / 0.3 s, never one per flip
    gaps = [b[0] - a[0] for a, b in zip(served.swaps[started:], served.swaps[started + 1:],
                                         strict=False)]
    assert all(gap >= 0.29 for gap in gaps), gaps
    # A new config version: the overlay is applied to it before it is served.
    feed.serve(compile_zones(check(9090)))
    assert health_of(served.current, "eu-1") == "down"
    feed.close()
