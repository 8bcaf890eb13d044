"""Every node's latest report as the API shows it (`GET /v1/nodes`, the status page): the
store's rows and Redis's reports merged (the newer wins), with state, lag and age."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from gtm.control.liveness import GONE, Liveness
from gtm.control.service import ConfigService
from gtm.control.store import NodeStatus

LIVENESS = web.AppKey("liveness", Liveness)


async def node_items(service: ConfigService, liveness: Liveness,
                     head: int) -> list[dict[str, Any]]:
    """Every known node, gone ones included (their ``state`` says so), by node id."""
    latest: dict[str, NodeStatus] = {s.node_id: s for s in await service.store.nodes()}
    if service.fanout is not None:
        for status in await service.fanout.nodes():
            known = latest.get(status.node_id)
            if known is None or status.last_contact > known.last_contact:
                latest[status.node_id] = status
    now = time.time()
    return [
        {**s.public(), "state": liveness.state(s, now), "lag_versions": max(head - s.version, 0),
         "seconds_since_contact": round(max(now - s.last_contact, 0.0), 3)}
        for s in sorted(latest.values(), key=lambda s: s.node_id)
    ]


def is_gone(item: dict[str, Any]) -> bool:
    return bool(item["state"] == GONE)
