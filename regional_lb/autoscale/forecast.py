"""Forecast of a pool's load from its one-minute history: a seasonal profile, explained.

For a future minute ``m`` the *seasonal* value is the mean of what was seen at the same
minute of the day on the previous days (up to 7) and at the same minute of the week on
previous weeks (up to 2); when both exist they are averaged. Each day's (week's) value
is the busiest minute within +/- 2 minutes of ``m``: a peak that comes a minute or two
earlier or later from day to day still gets its capacity, and a short peak keeps its
height (a mean over the window would flatten a three-minute peak to under its half and
under-provision exactly the minutes that need it; the cost is capacity kept up to two
minutes longer around a peak).

A *level* factor then scales it: the load of the last 30 minutes divided by what the
same minutes were on the previous days and weeks (means over +/- 2 minutes here: like is
compared with like), clamped to 0.5..2, so a week busier than the last ones is followed.
A level from fewer than 10 observed minutes (a balancer just started, a new pool) is
noise and is not applied. No data for a minute: no forecast for it.

Pure functions over ``{minute: load}`` (minute = Unix time // 60).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

DAY = 1440
WEEK = 7 * DAY
LEVEL_MINUTES = 30
LEVEL_MIN_MINUTES = 10
SMOOTH = 2


def seasonal(history: Mapping[int, float], minute: int) -> float | None:
    """What the previous days and weeks ask of ``minute``: their busiest minute near it."""
    return _profile(history, minute, _peak_around)


def typical(history: Mapping[int, float], minute: int) -> float | None:
    """What the previous days and weeks were at ``minute``, on average near it."""
    return _profile(history, minute, _mean_around)


def _profile(history: Mapping[int, float], minute: int,
             around: Callable[[Mapping[int, float], int], float | None]) -> float | None:
    daily = _mean([v for k in range(1, 8)
                   if (v := around(history, minute - k * DAY)) is not None])
    weekly = _mean([v for k in (1, 2)
                    if (v := around(history, minute - k * WEEK)) is not None])
    if daily is None:
        return weekly
    return daily if weekly is None else (daily + weekly) / 2


def level(history: Mapping[int, float], now_minute: int) -> float:
    seen, expected = [], []
    for minute in range(now_minute - LEVEL_MINUTES, now_minute):
        actual, profile = history.get(minute), typical(history, minute)
        if actual is not None and profile is not None:
            seen.append(actual)
            expected.append(profile)
    if len(seen) < LEVEL_MIN_MINUTES or sum(expected) <= 0:
        return 1.0
    return min(2.0, max(0.5, sum(seen) / sum(expected)))


def forecast(history: Mapping[int, float], now: float, horizon: float
             ) -> list[tuple[int, float]]:
    """(minute, load) for the minutes from now to now + horizon that have a profile."""
    start = int(now // 60)
    factor = level(history, start)
    points = []
    for minute in range(start, start + max(1, math.ceil(horizon / 60)) + 1):
        value = seasonal(history, minute)
        if value is not None:
            points.append((minute, value * factor))
    return points


def backends_for(points: list[tuple[int, float]], now: float, buffer: float,
                 per_backend_target: float) -> int | None:
    """Backends needed now so that capacity stands ``buffer`` seconds before the load:
    the highest forecast of [now, now + buffer], over the target per backend."""
    start, end = int(now // 60), int((now + buffer) // 60)
    ahead = [v for m, v in points if start <= m <= end]
    if not ahead:
        return None
    return math.ceil(max(ahead) / per_backend_target - 1e-9)


def _near(history: Mapping[int, float], minute: int) -> list[float]:
    return [v for m in range(minute - SMOOTH, minute + SMOOTH + 1)
            if (v := history.get(m)) is not None]


def _peak_around(history: Mapping[int, float], minute: int) -> float | None:
    return max(_near(history, minute), default=None)


def _mean_around(history: Mapping[int, float], minute: int) -> float | None:
    return _mean(_near(history, minute))


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
