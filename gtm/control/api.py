"""The REST API (aiohttp): the configuration, its versions, nodes, audit and tokens.

Reads carry the version as an ETag; writes name their base version (If-Match or
``base_version``) and get 409 when it is stale. Every write goes through
ConfigService, so it is validated, diffed, audited and announced the same way as
from the CLI.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from gtm.config.document import ZONES, known_sections
from gtm.control.api_metrics import count_requests
from gtm.control.api_metrics import routes as metrics_routes
from gtm.control.auth import Authenticator, actor, bearer_secret, principal, requires
from gtm.control.diff import diff_documents
from gtm.control.http import (
    MAX_NUMBER,
    base_version,
    error_boundary,
    etag,
    field,
    json_body,
    page,
    page_args,
    plain_path_parameters,
    query_flag,
    query_int,
    whole_number,
)
from gtm.control.idempotency import Idempotency, idempotency_key, replay_completer
from gtm.control.liveness import Liveness
from gtm.control.nodes_view import LIVENESS, is_gone, node_items
from gtm.control.openapi import openapi_document
from gtm.control.ratelimit import TokenBuckets
from gtm.control.routes_shared import SERVICE, caller_of, proposal_response, respond, service_of
from gtm.control.service import ConfigService, Document
from gtm.control.store import (
    AuditEntry,
    Outcome,
    Receipt,
    TokenRecord,
    hash_secret,
    new_token,
    token_secret,
)
from gtm.errors import ConfigError, NotFound, RequestError

MAX_BODY = 32 * 1024 * 1024  # a large deployment's zones, with room to spare
AUTH = web.AppKey("auth", Authenticator)


def build_app(service: ConfigService, liveness: Liveness | None = None,
              failed_logins: TokenBuckets | None = None) -> web.Application:
    auth = Authenticator(service, failed_logins)
    # The inner error boundary makes the handlers' refusals answers before the
    # idempotency layer sees them, so they are kept for a retry like any answer.
    middlewares = [count_requests, error_boundary, auth.middleware, plain_path_parameters,
                   Idempotency(service.store).middleware, error_boundary]
    app = web.Application(middlewares=middlewares, client_max_size=MAX_BODY)
    app[SERVICE] = service
    app[AUTH] = auth
    app[LIVENESS] = liveness or Liveness()
    routes = [
        web.get("/openapi.json", get_openapi),
        web.get("/v1/health", get_health),
        web.get("/v1/config", get_config),
        web.put("/v1/config", put_config),
        web.get("/v1/config/zones", list_zones),
        web.get("/v1/config/zones/{name}", get_zone),
        web.put("/v1/config/zones/{name}", put_zone),
        web.delete("/v1/config/zones/{name}", delete_zone),
        web.get("/v1/config/sections/{name}", get_section),
        web.put("/v1/config/sections/{name}", put_section),
        web.delete("/v1/config/sections/{name}", delete_section),
        web.get("/v1/versions", list_versions),
        web.get("/v1/versions/{number}", get_version),
        web.get("/v1/versions/{number}/diff", get_diff),
        web.post("/v1/versions/{number}/rollback", post_rollback),
        web.get("/v1/nodes", list_nodes),
        web.get("/v1/audit", list_audit),
        web.get("/v1/tokens", list_tokens),
        web.post("/v1/tokens", post_token),
        web.delete("/v1/tokens/{id}", delete_token),
    ]
    from gtm.control.certificates_api import routes as certificate_routes
    from gtm.control.challenges_api import routes as challenge_routes
    from gtm.control.drills_api import add_drills
    from gtm.control.events_api import routes as event_routes
    from gtm.control.scale_api import routes as scale_routes
    from gtm.control.status_api import routes as status_routes
    from gtm.control.tsig_api import routes as tsig_routes

    app.add_routes([*routes, *challenge_routes(), *certificate_routes(), *event_routes(app),
                    *status_routes(app, auth), *metrics_routes(app[LIVENESS]),
                    *tsig_routes(), *scale_routes()])
    add_drills(app, service)
    return app


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


async def get_health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@requires("viewer")
async def get_config(request: web.Request) -> web.Response:
    service = service_of(request)
    head = await service.store.head()
    document = await service.document_at(head)
    return versioned({"version": head, "document": document}, head)


@requires("editor")
async def put_config(request: web.Request) -> web.Response:
    body = await json_body(request)
    document = field(body, "document", dict)
    return await write(request, body, lambda _old: document)


@requires("viewer")
async def list_zones(request: web.Request) -> web.Response:
    cursor, limit = page_args(request)
    service = service_of(request)
    head = await service.store.head()
    names = sorted((await service.document_at(head)).get(ZONES, {}))
    start = cursor or 0
    items = [{"name": n, "index": start + i + 1} for i, n in enumerate(names[start:start + limit])]
    return page(items, limit, "index")


@requires("viewer")
async def get_zone(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    service = service_of(request)
    head = await service.store.head()
    zones = (await service.document_at(head)).get(ZONES, {})
    if name not in zones:
        raise NotFound(f"no zone {name!r} in version {head}")
    return versioned({"version": head, "name": name, "text": zones[name]}, head)


@requires("editor")
async def put_zone(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    body = await json_body(request)
    text = field(body, "text", str)

    def change(doc: Document) -> Document:
        doc.setdefault(ZONES, {})[name] = text
        return doc

    return await write(request, body, change, f"zone {name} set")


@requires("editor")
async def delete_zone(request: web.Request) -> web.Response:
    name = request.match_info["name"]

    def change(doc: Document) -> Document:
        if name not in doc.get(ZONES, {}):
            raise NotFound(f"no zone {name!r}")
        del doc[ZONES][name]
        return doc

    return await write(request, {}, change, f"zone {name} removed")


def section_name(request: web.Request) -> str:
    name = request.match_info["name"]
    if name not in known_sections() or name == ZONES:
        sections = ", ".join(s for s in known_sections() if s != ZONES)
        raise RequestError(404, f"no section {name!r} (sections: {sections})", "name")
    return name


@requires("viewer")
async def get_section(request: web.Request) -> web.Response:
    name = section_name(request)
    service = service_of(request)
    head = await service.store.head()
    document = await service.document_at(head)
    if name not in document:
        raise NotFound(f"section {name!r} is not set in version {head}")
    return versioned({"version": head, "name": name, "value": document[name]}, head)


@requires("editor")
async def put_section(request: web.Request) -> web.Response:
    name = section_name(request)
    body = await json_body(request)
    if "value" not in body:
        raise RequestError(400, "'value' is required", "value")
    value = body["value"]

    def change(doc: Document) -> Document:
        doc[name] = value
        return doc

    return await write(request, body, change, f"section {name} set")


@requires("editor")
async def delete_section(request: web.Request) -> web.Response:
    name = section_name(request)

    def change(doc: Document) -> Document:
        if doc.pop(name, None) is None:
            raise NotFound(f"section {name!r} is not set")
        return doc

    return await write(request, {}, change, f"section {name} removed")


async def write(
    request: web.Request, body: dict[str, Any], change: Callable[[Document], Document],
    default_message: str = "",
) -> web.Response:
    """Apply ``change`` to the document at the base version, as one new version."""
    base = base_version(request, body)
    message = field(body, "message", str, default_message or "change through the API")
    dry_run = query_flag(request, "dry_run")
    who = actor(principal(request))
    proposal = await service_of(request).edit(base, who, message, change, dry_run,
                                              caller_of(request, dry_run))
    return proposal_response(proposal, dry_run)


def versioned(body: dict[str, Any], version: int) -> web.Response:
    return web.json_response(body, headers={"ETag": etag(version)})


def version_number(request: web.Request) -> int:
    return whole_number(request.match_info["number"], "number", 0, MAX_NUMBER)


@requires("viewer")
async def list_versions(request: web.Request) -> web.Response:
    cursor, limit = page_args(request)
    records = await service_of(request).store.history(cursor, limit)
    return page([r.summary() for r in records], limit, "version")


@requires("viewer")
async def get_version(request: web.Request) -> web.Response:
    number = version_number(request)
    record = await service_of(request).store.get(number)
    if record is None:
        raise NotFound(f"no version {number}")
    body = {**record.summary(), "diff": record.diff, "document": record.document}
    return versioned(body, number)


@requires("viewer")
async def get_diff(request: web.Request) -> web.Response:
    number = version_number(request)
    against = query_int(request, "against", max(number - 1, 0), 0, MAX_NUMBER)
    assert against is not None
    service = service_of(request)
    changes = diff_documents(await service.document_at(against), await service.document_at(number))
    return web.json_response({"from": against, "to": number, "diff": changes})


@requires("editor")
async def post_rollback(request: web.Request) -> web.Response:
    number = version_number(request)
    body = await json_body(request) if request.can_read_body else {}
    base = base_version(request, body)
    message = field(body, "message", str, "")
    proposal = await service_of(request).rollback(number, base, actor(principal(request)),
                                                  message, caller_of(request))
    return proposal_response(proposal, False)


@requires("viewer")
async def list_nodes(request: web.Request) -> web.Response:
    """Every node's latest report; gone nodes (silent for long) only with ``?all=true``."""
    everything = query_flag(request, "all")
    service = service_of(request)
    head = await service.store.head()
    items = await node_items(service, request.app[LIVENESS], head)
    shown = items if everything else [item for item in items if not is_gone(item)]
    return web.json_response({"version": head, "items": shown,
                              "gone_hidden": len(items) - len(shown)})


@requires("admin")
async def list_audit(request: web.Request) -> web.Response:
    cursor, limit = page_args(request)
    entries = await service_of(request).store.audit(cursor, limit)
    return page([e.public() for e in entries], limit, "id")


@requires("admin")
async def list_tokens(request: web.Request) -> web.Response:
    tokens = await service_of(request).store.tokens()
    return web.json_response({"items": [t.public() for t in tokens], "next_cursor": None})


def minted_secret(request: web.Request, outcome: Outcome) -> str:
    """The secret of a token made with an Idempotency-Key: derived from the caller's own
    secret, so that a retry gets it again while the store never holds it (nor anything
    it can be derived from without the caller's secret)."""
    key = idempotency_key(request)
    assert key is not None
    seed = hmac.new(bearer_secret(request).encode(),
                    f"{outcome.private['salt']}\0{outcome.body['id']}\0{key.key}".encode(),
                    hashlib.sha256).digest()
    return token_secret(str(outcome.body["id"]), seed)


def with_minted_secret(request: web.Request, outcome: Outcome) -> Outcome:
    if "salt" not in outcome.private:  # a refusal: there is no token to give again
        return outcome
    return replace(outcome, body={**outcome.body, "token": minted_secret(request, outcome)})


@requires("admin")
@replay_completer(with_minted_secret)
async def post_token(request: web.Request) -> web.Response:
    body = await json_body(request)
    name, role = field(body, "name", str), field(body, "role", str)
    who = actor(principal(request))
    try:
        record, secret = new_token(name, role, who)
    except ConfigError as exc:  # a bad field of this request, not a bad document (422)
        raise RequestError(400, exc.reason, str(exc.where)) from None
    key = idempotency_key(request)
    answer = Outcome(201, record.public(), private={"salt": secrets.token_hex(16)})
    if key is not None:
        secret = minted_secret(request, answer)
    receipt: Receipt[TokenRecord] = Receipt(
        lambda r: AuditEntry(who, "token.create", r.id, "ok", {"name": name, "role": role}),
        key, lambda _r: answer)
    await service_of(request).store.add_token(record, hash_secret(secret), receipt)
    service_of(request).events.publish("token.create", f"token {record.id}",
                                       {"name": name, "role": role}, who)
    return web.json_response({**record.public(), "token": secret}, status=201)


@requires("admin")
async def delete_token(request: web.Request) -> web.Response:
    token_id = request.match_info["id"]
    who = actor(principal(request))
    answer = Outcome(200, {"id": token_id, "revoked": True})
    receipt: Receipt[str] = Receipt(
        lambda _id: AuditEntry(who, "token.revoke", token_id, "ok", {}),
        idempotency_key(request), lambda _id: answer)
    if not await service_of(request).store.revoke_token(token_id, receipt):
        raise NotFound(f"no live token {token_id!r}")
    service_of(request).events.publish("token.revoke", f"token {token_id}", {}, who)
    return respond(answer)
