"""The drill's pure parts: the schedule's calendar, the ramp's steps, the milestones."""

from __future__ import annotations

import datetime as dt

import pytest

from gtm.config.drills import Scheduled, due_slot, parse_scheduled
from gtm.drill.report import milestones
from gtm.drill.runner import ramp_steps
from gtm.errors import ConfigError

TUESDAY_10 = dt.datetime(2026, 12, 1, 10, 0, tzinfo=dt.UTC)  # a Tuesday


def schedule(**extra: object) -> Scheduled:
    raw = {"plan": "p", "weekly": [{"days": ["tue"], "at": "10:00"}], **extra}
    return parse_scheduled("weekly", raw, "test", "drills.schedule")


def test_a_run_is_due_in_its_window_and_not_on_a_blocked_date() -> None:
    entry = schedule(window=600)
    assert due_slot(entry, TUESDAY_10 + dt.timedelta(minutes=5)) == TUESDAY_10
    assert due_slot(entry, TUESDAY_10 - dt.timedelta(minutes=1)) is None
    assert due_slot(entry, TUESDAY_10 + dt.timedelta(minutes=11)) is None
    blocked = schedule(blocked_dates=["2026-12-01"])
    assert due_slot(blocked, TUESDAY_10 + dt.timedelta(minutes=1)) is None


def test_a_bad_schedule_names_its_key() -> None:
    with pytest.raises(ConfigError) as error:
        parse_scheduled("w", {"plan": "p", "weekly": [{"days": ["tue"], "at": "25:00"}]},
                        "test", "drills.schedule")
    assert error.value.where == "drills.schedule.w.weekly[0].at"


def test_ramp_steps_go_down_geometrically_to_the_target() -> None:
    assert ramp_steps(300, 5, 2) == [39, 5]
    assert ramp_steps(30, 5, 1) == [5]
    assert ramp_steps(2, 5, 3) == [5]


def obs(t: float, vantage: str, region: str, ok: bool = True) -> dict[str, object]:
    return {"t": t, "vantage": vantage, "region": region, "ok": ok}


def test_milestones_follow_the_affected_vantage_points() -> None:
    seen = [obs(0, "GB", "eu"), obs(0, "JP", "ap"), obs(1, "GB", "eu", ok=False),
            obs(2, "GB", "us"), obs(2, "JP", "ap"), obs(3, "GB", "us"), obs(4, "GB", "eu")]
    times = milestones(seen, "eu", injected=0.5, restored=3.5)
    assert times["affected"] == ["GB"]
    assert (times["first_moved"], times["all_moved"], times["clients_ok_again"],
            times["all_returned"]) == (2, 2, 2, 4)


def test_every_example_plan_is_valid() -> None:
    from pathlib import Path

    from gtm.config.drills import parse_plan
    from gtm.toml_input import read_toml

    plans = sorted((Path(__file__).resolve().parents[2] / "examples" / "drills").glob("*.toml"))
    assert len(plans) >= 3
    for path in plans:
        assert parse_plan(read_toml(path), str(path)).region == "eu-west"
