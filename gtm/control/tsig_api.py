"""``/v1/tsig``: TSIG keys for zone transfers and dynamic updates (admin).

``POST /v1/tsig`` with ``{"name", "algorithm"}`` makes a key with a fresh secret, stores
it sealed (gtm.control.tsig) as a new version and answers the secret, once: no other
answer carries it, sealed or not. ``GET`` lists names and algorithms; ``DELETE
/v1/tsig/{name}`` removes a key no transfer rule or grant names.
"""

from __future__ import annotations

from aiohttp import web

from gtm.config.tsig import TSIG
from gtm.control.auth import actor, principal, requires
from gtm.control.certificates_api import certificates_of
from gtm.control.http import field, json_body
from gtm.control.routes_shared import service_of
from gtm.control.tsig import add_key, describe, remove_key
from gtm.errors import RequestError


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/tsig", list_keys),
        web.post("/v1/tsig", post_key),
        web.delete("/v1/tsig/{name}", delete_key),
    ]


@requires("admin")
async def list_keys(request: web.Request) -> web.Response:
    service = service_of(request)
    document = await service.document_at(await service.store.head())
    return web.json_response({"items": describe(document.get(TSIG, {}))})


@requires("admin")
async def post_key(request: web.Request) -> web.Response:
    body = await json_body(request)
    name = field(body, "name", str)
    algorithm = body.get("algorithm", "hmac-sha256")
    if not isinstance(algorithm, str):
        raise RequestError(400, "must be a string", "algorithm")
    sealing = certificates_of(request).key  # the control plane's secret key, if it has one
    if sealing is None:
        raise RequestError(503, "this control plane has no secret key to seal TSIG "
                           "secrets with", "secret_key")
    new = await add_key(service_of(request), sealing, name, algorithm,
                        actor(principal(request)))
    return web.json_response({"name": new.name, "algorithm": new.algorithm,
                              "secret": new.secret, "version": new.version}, status=201)


@requires("admin")
async def delete_key(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    version = await remove_key(service_of(request), name, actor(principal(request)))
    return web.json_response({"name": name, "deleted": True, "version": version})
