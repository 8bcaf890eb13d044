"""The balancer admin API's auto-scaling routes (same bearer token, same error body):

    GET  /scale                       this region's status (from the scale store)
    GET  /scale/history?limit=N       its scaling events, newest first
    PUT  /scale/{pool}                {"min": n, "max": n}: operator bounds (null: policy's)
    POST /scale/{pool}/pause          no decisions until resumed
    POST /scale/{pool}/resume

The same store and checks as the control API's /v1/scale (gtm.scalestore).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gtm import log
from gtm.errors import ConfigError, NotFound, RequestError
from gtm.json_input import read_json
from gtm.scalestore import ScaleStore, operator_changes


def scale_routes(handle: Any) -> list[web.RouteDef]:
    def store() -> ScaleStore:
        if handle.scaler is None:
            raise NotFound("no pool of this balancer has [lb.pools.autoscale]")
        scale_store: ScaleStore = handle.scaler.store
        return scale_store

    def region() -> str:
        return str(handle.snapshot.config.region)

    def pool_of(request: web.Request) -> str:
        name = request.match_info["pool"]
        spec = next((p for p in handle.base.pools if p.name == name), None)
        if spec is None or spec.autoscale is None:
            raise NotFound(f"no auto-scaled pool {name!r}")
        return name

    async def status(request: web.Request) -> web.Response:
        found = (await store().statuses()).get(region(), {})
        return web.json_response({"region": region(), "member": handle.scaler.member
                                  if handle.scaler else None, "status": found})

    async def history(request: web.Request) -> web.Response:
        text = request.query.get("limit", "100")
        if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 1000):
            raise RequestError(400, "must be a whole number from 1 to 1000", "limit")
        return web.json_response({"events": await store().events(region(), int(text))})

    async def change(request: web.Request, changes: dict[str, Any]) -> web.Response:
        pool = pool_of(request)
        settings = await store().set_settings(region(), pool, changes)
        log.scale.info("admin API: pool %s of region %s: %s", pool, region(), changes)
        return web.json_response({"region": region(), "pool": pool, "settings": settings})

    async def put_bounds(request: web.Request) -> web.Response:
        pool_of(request)
        body = await read_json(request)
        try:
            changes = operator_changes(body)
        except ConfigError as exc:
            raise RequestError(400, exc.reason, str(exc.where or "body")) from exc
        return await change(request, changes)

    async def pause(request: web.Request) -> web.Response:
        return await change(request, {"paused": True})

    async def resume(request: web.Request) -> web.Response:
        return await change(request, {"paused": None})

    return [web.get("/scale", status), web.get("/scale/history", history),
            web.put("/scale/{pool}", put_bounds), web.post("/scale/{pool}/pause", pause),
            web.post("/scale/{pool}/resume", resume)]
