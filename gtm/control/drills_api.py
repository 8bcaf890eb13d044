"""``/v1/drills``: failover drills kept by the control plane (gtm.control.drills).

    GET  /v1/drills[?active=true&limit=N]   drills, newest first (no reports)
    POST /v1/drills                         {"name", "plan", "status"?, "reason"?, "detail"?}
    GET  /v1/drills/{id}                    one drill with its report
    POST /v1/drills/{id}/overrides          an override with its expiry (recorded, then
                                            applied when it is a document change)
    POST /v1/drills/{id}/restore            restore what the drill set, now
    POST /v1/drills/{id}/abort              {"reason"}: flag its runner, restore now
    PUT  /v1/drills/{id}/result             {"status", "reason", "report"}: the outcome
    POST /v1/drills/{id}/recover            restore the drill's overrides now; the id
                                            ``active``: those of every active drill

Every change is audited with who and when; the plan is kept with the record.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from gtm.config.drills import parse_plan
from gtm.control.auth import actor, principal, requires
from gtm.control.drills import FINAL, DrillService
from gtm.control.http import field, json_body, query_flag, query_int
from gtm.control.service import ConfigService
from gtm.errors import ConfigError, RequestError

DRILL_SERVICE = web.AppKey("drills", DrillService)
MAX_REPORT = 16 * 1024 * 1024  # bytes of a report's JSON
MAX_TEXT = 2000
ALL_ACTIVE = "active"  # POST /v1/drills/active/recover: every active drill


def add_drills(app: web.Application, service: ConfigService) -> None:
    """The drill routes and their service (its loops start with the control plane)."""
    app[DRILL_SERVICE] = DrillService(service)
    app.add_routes(routes())


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/drills", list_drills),
        web.post("/v1/drills", post_drill),
        web.get("/v1/drills/{id}", get_drill),
        web.post("/v1/drills/{id}/overrides", post_override),
        web.post("/v1/drills/{id}/restore", post_restore),
        web.post("/v1/drills/{id}/abort", post_abort),
        web.put("/v1/drills/{id}/result", put_result),
        web.post("/v1/drills/{id}/recover", post_recover),
    ]


def drills_of(request: web.Request) -> DrillService:
    return request.app[DRILL_SERVICE]


def who(request: web.Request) -> str:
    return actor(principal(request))


def text_field(body: dict[str, Any], name: str, default: str = "") -> str:
    value = field(body, name, str, default)
    if len(value) > MAX_TEXT:
        raise RequestError(400, f"{name!r} is longer than {MAX_TEXT} characters", name)
    return str(value)


@requires("viewer")
async def list_drills(request: web.Request) -> web.Response:
    limit = query_int(request, "limit", 50, 1, 500)
    assert limit is not None
    records = await drills_of(request).store.drills(limit, query_flag(request, "active"))
    return web.json_response({"items": [r.public() for r in records]})


@requires("editor")
async def post_drill(request: web.Request) -> web.Response:
    body = await json_body(request)
    plan = field(body, "plan", dict)
    try:
        parsed = parse_plan(plan, "request", "plan")
    except ConfigError as exc:
        raise RequestError(400, exc.reason, str(exc.where or "plan")) from exc
    status = field(body, "status", str, "running")
    if status not in ("running", "refused"):
        raise RequestError(400, "must be running or refused", "status")
    detail = field(body, "detail", dict, {})
    if len(json.dumps(detail)) > 64 * 1024:
        raise RequestError(400, "'detail' is too large", "detail")
    record = await drills_of(request).create(parsed.name, plan, who(request), status,
                                             text_field(body, "reason"), detail)
    return web.json_response(record.public(), status=201)


@requires("viewer")
async def get_drill(request: web.Request) -> web.Response:
    record = await drills_of(request).get(request.match_info["id"])
    return web.json_response(record.public(with_report=True))


@requires("editor")
async def post_override(request: web.Request) -> web.Response:
    body = await json_body(request)
    override = await drills_of(request).add_override(request.match_info["id"], body,
                                                     who(request))
    return web.json_response(override, status=201)


@requires("editor")
async def post_restore(request: web.Request) -> web.Response:
    body = await json_body(request) if request.can_read_body else {}
    restored = await drills_of(request).restore_all(
        request.match_info["id"], who(request), text_field(body, "reason", "end of drill"))
    return web.json_response({"restored": restored})


@requires("editor")
async def post_abort(request: web.Request) -> web.Response:
    body = await json_body(request) if request.can_read_body else {}
    record = await drills_of(request).request_abort(
        request.match_info["id"], who(request), text_field(body, "reason", "operator abort"))
    return web.json_response(record.public())


@requires("editor")
async def put_result(request: web.Request) -> web.Response:
    if (request.content_length or 0) > MAX_REPORT:
        raise RequestError(413, f"a report is at most {MAX_REPORT} bytes", "report")
    body = await json_body(request)
    status = field(body, "status", str)
    if status not in FINAL:
        raise RequestError(400, f"must be one of {', '.join(FINAL)}", "status")
    report = field(body, "report", dict)
    record = await drills_of(request).finish(request.match_info["id"], status,
                                             text_field(body, "reason"), report, who(request))
    return web.json_response(record.public())


@requires("editor")
async def post_recover(request: web.Request) -> web.Response:
    drill_id = request.match_info["id"]
    results = await drills_of(request).recover(who(request),
                                               None if drill_id == ALL_ACTIVE else drill_id)
    return web.json_response({"drills": results})
