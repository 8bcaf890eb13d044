"""Per-backend health facts beside a BackendState, and passive outlier detection.

The data plane reports each outcome with one call on ``backend.monitor`` (when set):

- ``response(status, seconds)`` for every response head from the backend (L7);
- ``gateway_error()`` when the backend failed a request: connect refused, reset or timed
  out, no response in time, a broken or invalid response (L7), a failed connect (L4);
- ``connected()`` when an L4 connection to it succeeded.

Consecutive 5xx responses or gateway errors beyond the pool's thresholds ask the
:class:`Ejector` (the worker's health manager) to eject the backend; the manager
applies the max-ejection-percent bound, the growing ejection time and the return.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import asyncio

    from gtm.health.state import HealthMachine
    from gtm.steering.model import HealthCheck
    from regional_lb.balancing.state import BackendState
    from regional_lb.health_spec import OutlierSpec


class Ejector(Protocol):
    def eject(self, monitor: BackendMonitor, reason: str) -> None: ...


class BackendMonitor:
    """What health checking knows of one backend of one pool (kept across reloads)."""

    __slots__ = ("backend", "check", "check_reason", "check_since", "consecutive_5xx",
                 "consecutive_gateway", "ejected_at", "ejected_until", "ejection_reason",
                 "ejections", "ejector", "latency_count", "latency_sum", "machine", "outlier",
                 "pool", "returned_at", "task")

    def __init__(self, backend: BackendState, pool: str, ejector: Ejector):
        self.backend = backend
        self.pool = pool
        self.ejector = ejector
        self.outlier: OutlierSpec | None = None
        self.check: HealthCheck | None = None  # with the backend's port filled in
        self.machine: HealthMachine | None = None
        self.task: asyncio.Task[None] | None = None
        self.check_reason = "not checked"
        self.check_since = 0.0  # unix seconds
        self.consecutive_5xx = 0
        self.consecutive_gateway = 0
        self.ejected_until: float | None = None  # loop time; None: not ejected
        self.ejected_at = 0.0
        self.ejection_reason = ""
        self.ejections = 0  # ejections in a row (decays while the backend behaves)
        self.returned_at = 0.0
        self.latency_sum = 0.0  # response times in the current latency window
        self.latency_count = 0

    # -- the data plane's calls (hot path: keep them cheap) -----------------------------
    def response(self, status: int, seconds: float) -> None:
        self.consecutive_gateway = 0
        spec = self.outlier
        if spec is None:
            return
        self.latency_sum += seconds
        self.latency_count += 1
        if status < 500:
            self.consecutive_5xx = 0
            return
        self.consecutive_5xx += 1
        if spec.consecutive_5xx and self.consecutive_5xx >= spec.consecutive_5xx:
            self._trip(f"{self.consecutive_5xx} consecutive 5xx responses")

    def gateway_error(self) -> None:
        spec = self.outlier
        if spec is None:
            return
        self.consecutive_gateway += 1
        if spec.consecutive_gateway and self.consecutive_gateway >= spec.consecutive_gateway:
            self._trip(f"{self.consecutive_gateway} consecutive gateway errors")

    def connected(self) -> None:
        self.consecutive_gateway = 0

    def _trip(self, reason: str) -> None:
        if self.ejected_until is None:
            self.ejector.eject(self, reason)

    # -- state --------------------------------------------------------------------------
    @property
    def check_ok(self) -> bool:
        return self.machine is None or self.machine.state == "up"

    @property
    def ejected(self) -> bool:
        return self.ejected_until is not None

    @property
    def healthy(self) -> bool:
        return self.check_ok and self.ejected_until is None

    def reason(self) -> str:
        if self.ejected_until is not None:
            return f"ejected: {self.ejection_reason}"
        if self.machine is not None:
            return self.check_reason
        return "no active check"

    def view(self, now: float) -> dict[str, object]:
        """The admin API's health fields for this backend."""
        ejection = None
        if self.ejected_until is not None:
            ejection = {"reason": self.ejection_reason, "count": self.ejections,
                        "remaining_s": round(max(0.0, self.ejected_until - now), 3)}
        return {
            "health": "up" if self.healthy else "down",
            "health_reason": self.reason(),
            "check": None if self.machine is None else {
                "state": self.machine.state, "reason": self.check_reason,
                "since": self.check_since, "type": self.check.type if self.check else None,
            },
            "ejection": ejection,
            "ejections_in_a_row": self.ejections,
        }
