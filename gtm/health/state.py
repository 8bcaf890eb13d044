"""One observer's view of one target: rise/fall hysteresis, HAProxy-style fastinter.

A target starts up (fail open: a node that has just started must not take every
endpoint out before it has looked) and needs ``fall`` consecutive failures to go
down, ``rise`` consecutive successes to come back. While a change is under way (a
failure seen while up, a success while down) the next probe comes after
``fastinter`` instead of ``interval``, so a real death is confirmed quickly and a
single lost probe costs little.
"""

from __future__ import annotations

import logging
import random
import time

from gtm import log, metrics
from gtm.health.probes import ProbeResult
from gtm.steering.model import HealthCheck
from gtm.steering.state import Health


class HealthMachine:
    def __init__(self, target: str, check: HealthCheck, rng: random.Random | None = None):
        self.target = target
        self.check = check
        self.state: Health = "up"
        self.reason = "not checked yet"
        self.since = time.time()
        self.successes = 0  # consecutive, counted while down
        self.failures = 0  # consecutive, counted while up
        self.last: ProbeResult | None = None
        self.rng = rng or random.Random()

    @property
    def changing(self) -> bool:
        return (self.state == "up" and self.failures > 0) or (
            self.state == "down" and self.successes > 0)

    def observe(self, result: ProbeResult) -> bool:
        """Count one probe result; True when it changed the state."""
        self.last = result
        verdict = "ok" if result.ok else "fail"
        metrics.health_probes.labels(self.check.type, verdict).inc()
        metrics.health_probe_seconds.labels(self.check.type, verdict).observe(result.latency)
        if result.ok:
            self.failures = 0
            if self.state == "up":
                self.reason = result.reason
                return False
            self.successes += 1
            if self.successes >= self.check.rise:
                self._flip("up", f"{result.reason} ({self.successes} in a row)", result.time)
                return True
            return False
        self.successes = 0
        if self.state == "down":
            self.reason = result.reason
            return False
        self.failures += 1
        if self.failures >= self.check.fall:
            self._flip("down", f"{result.reason} ({self.failures} in a row)", result.time)
            return True
        return False

    def next_delay(self) -> float:
        """Seconds to the next probe: fastinter while changing, with jitter either way."""
        base = self.check.fastinter if self.changing else self.check.interval
        spread = self.check.jitter
        return max(0.0, base * (1.0 + self.rng.uniform(-spread, spread)))

    def _flip(self, state: Health, reason: str, when: float) -> None:
        previous = self.state
        self.state, self.reason, self.since = state, reason, when
        self.successes = self.failures = 0
        metrics.health_transitions.labels("local", state).inc()
        # A loss of health is what an operator must see; a recovery is good news.
        level = logging.WARNING if state == "down" else logging.INFO
        log.health.log(level, "%s: %s -> %s (%s)", self.target, previous, state, reason)
