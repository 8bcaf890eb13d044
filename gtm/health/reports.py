"""The in-process channel for region reports, shared by both tiers.

A regional load balancer publishes its region report here (and to Redis when it
has one); the GTM health service subscribes. It lives in gtm because regional_lb
may import gtm's shared parts but never the reverse (ARCHITECTURE.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Report = dict[str, Any]

REPORTS: dict[str, Report] = {}  # region -> its latest report in this process
SUBSCRIBERS: list[Callable[[Report], None]] = []


def publish(report: Report) -> None:
    REPORTS[report["region"]] = report
    for subscriber in list(SUBSCRIBERS):
        subscriber(report)
