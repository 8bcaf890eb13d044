"""``/v1/scale``: the regional balancers' auto-scaling, seen and steered from the control
plane through the region's scale store (gtm.scalestore), which the balancers' scalers
share: no balancer is called.

    GET  /v1/scale[?region=R]                 every region's status (viewer)
    GET  /v1/scale/history[?region=R&limit=N] scaling events, newest first (viewer)
    PUT  /v1/scale/{region}/{pool}            {"min": n, "max": n}: operator bounds (editor)
    POST /v1/scale/{region}/{pool}/pause      no decisions until resumed (editor)
    POST /v1/scale/{region}/{pool}/resume

Operator changes are audited here; the scalers' own events reach the audit log and the
event stream (gtm.control.events, types ``scale.*``) through :func:`mirror_events`.
The store: the control plane's Redis when it has one, else its own store (PostgreSQL:
tables ``scale_*`` in its schema; SQLite: its file).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gtm import log
from gtm.control.auth import actor, principal, requires
from gtm.control.http import json_body, query_int
from gtm.control.routes_shared import service_of
from gtm.control.service import ConfigService
from gtm.errors import ConfigError, NotFound, RequestError
from gtm.scalestore import (
    ScaleStore,
    control_plane_scale_store,
    open_scale_store,
    operator_changes,
)

SCALE = web.AppKey("scale", ScaleStore)
MIRROR_INTERVAL = 2.0


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/scale", get_status),
        web.get("/v1/scale/history", get_history),
        web.put("/v1/scale/{region}/{pool}", put_bounds),
        web.post("/v1/scale/{region}/{pool}/pause", post_pause),
        web.post("/v1/scale/{region}/{pool}/resume", post_resume),
    ]


def scale_store_for(store_url: str, redis_url: str | None, namespace: str) -> ScaleStore | None:
    url = control_plane_scale_store(store_url, redis_url)
    return open_scale_store(url, namespace) if url else None


def store_of(request: web.Request) -> ScaleStore:
    """The scale store; a control plane without one (a store of an unknown kind)
    refuses changes with 409: nothing there could carry them to the balancers."""
    store = request.app.get(SCALE)
    if store is None:
        raise RequestError(409, "auto-scaling needs Redis, PostgreSQL or SQLite on this "
                           "control plane", "scale")
    return store


@requires("viewer")
async def get_status(request: web.Request) -> web.Response:
    wanted = request.query.get("region")
    if request.app.get(SCALE) is None:  # no store: nothing scales through this plane
        return web.json_response({"regions": {}, "store": None})
    statuses = await store_of(request).statuses()
    if wanted is not None:
        statuses = {k: v for k, v in statuses.items() if k == wanted}
    return web.json_response({"regions": statuses})


@requires("viewer")
async def get_history(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 100, 1, 1000) or 100
    if request.app.get(SCALE) is None:
        return web.json_response({"events": [], "store": None})
    store = store_of(request)
    wanted = request.query.get("region")
    regions = [wanted] if wanted is not None else await store.regions()
    events = [e for region in regions for e in await store.events(region, limit)]
    events.sort(key=lambda e: e.get("at", 0), reverse=True)
    return web.json_response({"events": events[:limit]})


async def _target(request: web.Request) -> tuple[str, str]:
    """A pool with an autoscale policy in the configuration's lb.<region> (nothing else
    gets settings kept for it): 404 otherwise."""
    region, pool = request.match_info["region"], request.match_info["pool"]
    service = service_of(request)
    lb = (await service.document_at(await service.store.head())).get("lb", {})
    table = lb.get(region) if isinstance(lb, dict) else None
    pools = table.get("pools", []) if isinstance(table, dict) else []
    if not any(isinstance(p, dict) and p.get("name") == pool and "autoscale" in p
               for p in pools):
        raise NotFound(f"no auto-scaled pool {pool!r} in lb.{region}")
    return region, pool


async def _change(request: web.Request, action: str, changes: dict[str, Any]) -> web.Response:
    region, pool = await _target(request)
    settings = await store_of(request).set_settings(region, pool, changes)
    await service_of(request).audit(actor(principal(request)), action, f"{region}/{pool}",
                                    "ok", changes)
    return web.json_response({"region": region, "pool": pool, "settings": settings})


@requires("editor")
async def put_bounds(request: web.Request) -> web.Response:
    body = await json_body(request)
    await _target(request)
    try:
        changes = operator_changes(body)
    except ConfigError as exc:
        raise RequestError(400, exc.reason, str(exc.where or "body")) from exc
    return await _change(request, "scale.set", changes)


@requires("editor")
async def post_pause(request: web.Request) -> web.Response:
    return await _change(request, "scale.pause", {"paused": True})


@requires("editor")
async def post_resume(request: web.Request) -> web.Response:
    return await _change(request, "scale.resume", {"paused": None})


def publish_event(region: str, event: dict[str, Any]) -> None:
    """To the event stream (gtm.control.events) as ``scale.<type>``: scale_out,
    scale_out.begin, drain, scale_in, failed, lost."""
    from gtm.control import events

    kind = f"scale.{event.get('type', 'unknown')}"
    try:
        events.check_type(kind)
    except ConfigError:  # a type the stream refuses (never one the scaler writes)
        kind = "scale.other"
    events.publish(kind, f"{region}/{event.get('pool', '?')}", event,
                   f"scaler:{event.get('leader', '?')}")


async def mirror_events(store: ScaleStore, service: ConfigService,
                        interval: float = MIRROR_INTERVAL) -> None:
    """Copy the scalers' events into the audit log, once each across control-plane
    nodes: a node claims events by moving the region's cursor (compare-and-set) and then
    writes them (at most once: a node that dies between the two loses those rows)."""
    while True:
        try:
            for region in await store.regions():
                name = f"audit:{region}"
                seen = await store.cursor(name)
                new = sorted((e for e in await store.events(region, 1000)
                              if int(e.get("id", 0)) > seen), key=lambda e: int(e["id"]))
                if new and await store.advance_cursor(name, seen, int(new[-1]["id"])):
                    for event in new:
                        publish_event(region, event)
                        await service.audit(f"scaler:{event.get('leader', '?')}",
                                            f"scale.{event.get('type', '?')}",
                                            f"{region}/{event.get('pool', '?')}",
                                            "failed" if event.get("type") == "failed"
                                            else "ok", event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.control.warning("scaling events not copied to the audit log: %s", exc)
        await asyncio.sleep(interval)
