"""Forecast of a pool's load from its one-minute history: a seasonal profile, explained.

For a future minute ``m`` the *seasonal* value is the mean of what was seen at the same
minute of the day on the previous days (up to 7) and at the same minute of the week on
previous weeks (up to 2), each smoothed over +/- 2 minutes; when both exist they are
averaged. A *level* factor then scales it: the load of the last 30 minutes divided by
what the profile said of those minutes (clamped to 0.5..2), so a week busier than the
last ones is followed. No data for a minute: no forecast for it.

Pure functions over ``{minute: load}`` (minute = Unix time // 60).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

DAY = 1440
WEEK = 7 * DAY
LEVEL_MINUTES = 30
SMOOTH = 2


def seasonal(history: Mapping[int, float], minute: int) -> float | None:
    daily = _mean([v for k in range(1, 8)
                   if (v := _around(history, minute - k * DAY)) is not None])
    weekly = _mean([v for k in (1, 2)
                    if (v := _around(history, minute - k * WEEK)) is not None])
    if daily is None:
        return weekly
    return daily if weekly is None else (daily + weekly) / 2


def level(history: Mapping[int, float], now_minute: int) -> float:
    seen, expected = [], []
    for minute in range(now_minute - LEVEL_MINUTES, now_minute):
        actual, profile = history.get(minute), seasonal(history, minute)
        if actual is not None and profile is not None:
            seen.append(actual)
            expected.append(profile)
    if not seen or sum(expected) <= 0:
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


def _around(history: Mapping[int, float], minute: int) -> float | None:
    return _mean([v for m in range(minute - SMOOTH, minute + SMOOTH + 1)
                  if (v := history.get(m)) is not None])


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None
