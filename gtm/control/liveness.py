"""Whether a node still reports: live, stale, or gone (`gtm status`, ``/v1/nodes``).

A node reports on every reconcile tick (its heartbeat, which it states in its report
as ``info.heartbeat_seconds``). A node that stopped reporting is *stale* once it has
missed a few heartbeats, and *gone* after a much longer silence: gone nodes are not
listed unless asked for (``--all``, ``?all=true``), so a node that was stopped for good
leaves `gtm status` by itself while one that merely hiccups stays in view.
"""

from __future__ import annotations

from dataclasses import dataclass

from gtm.control.store import NodeStatus

LIVE, STALE, GONE = "live", "stale", "gone"
MISSED_HEARTBEATS = 3
DEFAULT_HEARTBEAT = 2.0  # FollowerSettings.reconcile_interval's default
DEFAULT_GONE_AFTER = 3600.0


@dataclass(frozen=True)
class Liveness:
    # Seconds without a report before a node is stale; None: MISSED_HEARTBEATS of its own.
    stale_after: float | None = None
    # Seconds without a report before a node is gone.
    gone_after: float = DEFAULT_GONE_AFTER

    def state(self, status: NodeStatus, now: float) -> str:
        silence = now - status.last_contact
        if silence > self.gone_after:
            return GONE
        return STALE if silence > self.stale_limit(status) else LIVE

    def stale_limit(self, status: NodeStatus) -> float:
        if self.stale_after is not None:
            return self.stale_after
        return MISSED_HEARTBEATS * heartbeat(status)


def heartbeat(status: NodeStatus) -> float:
    """The node's own report interval, from its report (older nodes did not send one)."""
    value = status.info.get("heartbeat_seconds")
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 86400:
        return float(value)
    return DEFAULT_HEARTBEAT
