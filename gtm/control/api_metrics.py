"""The control API's ``/metrics`` and the counting of its requests.

``/metrics`` needs the viewer role, like every read of the API: the scrape shows node
names, versions and request rates, which is what a viewer may see and no more, and a
Prometheus server gets a token of its own (``gtm token create prometheus --role viewer``,
read from a file by its ``authorization.credentials_file``), revocable on its own. A
node that wants a scrape without a token has ``gtm serve --metrics`` on a private
address instead.

Before answering, the handler reads what only the API can see (the store's newest
version, each node's report, whether the store and Redis answer) into gauges; requests
are counted by route template (``/v1/config/zones/{name}``), never by raw path, so
neither a client nor a scanner can add label values.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiohttp import web

from gtm import metrics
from gtm.control.auth import requires
from gtm.control.http import Handler
from gtm.control.liveness import GONE, Liveness
from gtm.control.routes_shared import service_of
from gtm.control.service import ConfigService
from gtm.control.store import NodeStatus
from gtm.errors import GtmError
from gtm.metrics_export import local_text, metrics_response

UNMATCHED = "unmatched"  # the route label of a path no route has (404, 405)


def route_of(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: counts every answer, refusals and errors included."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = route_of(request)
        method = request.method if request.method in KNOWN_METHODS else "other"
        metrics.api_requests.labels(method, route, str(status)).inc()
        metrics.api_request_seconds.labels(route).observe(time.perf_counter() - started)


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def refresh(service: ConfigService, liveness: Liveness) -> None:
    """Read the store's head, the nodes' reports and Redis into their gauges."""
    try:
        head = await service.store.head()
        reported = {s.node_id: s for s in await service.store.nodes()}
        metrics.dependency_up.labels("store").set(1)
    except GtmError:  # StoreUnavailable and its kin: the scrape still answers
        metrics.dependency_up.labels("store").set(0)
        head, reported = None, {}
    if service.fanout is not None:
        metrics.dependency_up.labels("redis").set(1 if await _redis_answers(service) else 0)
        for status in await service.fanout.nodes():
            known = reported.get(status.node_id)
            if known is None or status.last_contact > known.last_contact:
                reported[status.node_id] = status
    if head is not None:
        metrics.config_head_version.set(head)
        _node_gauges(head, reported.values(), liveness)


def _node_gauges(head: int, statuses: Iterable[NodeStatus], liveness: Liveness) -> None:
    now = time.time()
    for gauge in (metrics.node_config_version, metrics.node_config_lag_versions,
                  metrics.node_report_age_seconds):
        gauge.clear()  # a node gone from the reports leaves the scrape
    for status in statuses:
        if liveness.state(status, now) == GONE:
            continue
        labels = (status.node_id, status.kind)
        metrics.node_config_version.labels(*labels).set(status.version)
        metrics.node_config_lag_versions.labels(*labels).set(max(head - status.version, 0))
        metrics.node_report_age_seconds.labels(*labels).set(max(now - status.last_contact, 0))


async def _redis_answers(service: ConfigService) -> bool:
    fanout = service.fanout
    assert fanout is not None
    try:
        async with asyncio.timeout(fanout.timeout):
            await fanout.redis.ping()
    except Exception:  # any failure to answer is "down" for this gauge
        return False
    return True


def routes(liveness: Liveness) -> list[web.RouteDef]:
    """``GET /metrics`` (viewer); ``liveness`` decides which nodes are gone."""

    @requires("viewer")
    async def get_metrics(request: web.Request) -> web.Response:
        await refresh(service_of(request), liveness)
        return await metrics_response(local_text)

    return [web.get("/metrics", get_metrics)]
