"""``/v1/certificates``: TLS certificates for the balancers, private keys stored sealed.

``PUT /v1/certificates/{name}`` takes ``{"chain": PEM, "key": PEM}`` (admin), checks it as
a balancer would, seals the key and stores it; balancers following the store serve it
within their ``watch_interval``. Reads return metadata only: no response carries a
key, sealed or not. Bad input is 400 naming the field; no secret key on this control
plane, or no store, is 503.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

from aiohttp import web

from gtm.control.auth import actor, principal, requires
from gtm.control.certificates import CertificateService, describe
from gtm.control.http import field, json_body
from gtm.errors import CertificateError, RequestError, SealingError

CERTIFICATES = web.AppKey("certificates", CertificateService)
T = TypeVar("T")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/certificates", list_certificates),
        web.get("/v1/certificates/{name}", get_certificate),
        web.put("/v1/certificates/{name}", put_certificate),
        web.delete("/v1/certificates/{name}", delete_certificate),
    ]


def certificates_of(request: web.Request) -> CertificateService:
    service = request.app.get(CERTIFICATES)
    if service is None:  # an app built without a control plane around it: reads only
        from gtm.control.routes_shared import service_of

        return CertificateService(service_of(request), None)
    return service


@requires("viewer")
async def list_certificates(request: web.Request) -> web.Response:
    records = await certificates_of(request).live()
    return web.json_response({"items": [describe(r) for r in records], "next_cursor": None})


@requires("viewer")
async def get_certificate(request: web.Request) -> web.Response:
    record = await _refusing_bad_input(certificates_of(request).get(request.match_info["name"]))
    return web.json_response(describe(record))


@requires("admin")
async def put_certificate(request: web.Request) -> web.Response:
    body = await json_body(request)
    chain, key = field(body, "chain", str), field(body, "key", str)
    service = certificates_of(request)
    try:
        stored = await service.put(request.match_info["name"], chain, key,
                                   actor(principal(request)))
    except CertificateError as exc:
        raise RequestError(400, exc.reason, exc.source) from None
    except SealingError as exc:
        raise RequestError(503, str(exc), "secret_key") from None
    return web.json_response({**describe(stored.record), "replaced": stored.replaced},
                             status=200 if stored.replaced else 201)


@requires("admin")
async def delete_certificate(request: web.Request) -> web.Response:
    service = certificates_of(request)
    tombstone = await _refusing_bad_input(
        service.delete(request.match_info["name"], actor(principal(request))))
    return web.json_response({"name": tombstone.name, "revision": tombstone.revision,
                              "deleted": True})


async def _refusing_bad_input(work: Awaitable[T]) -> T:
    try:
        return await work
    except CertificateError as exc:
        raise RequestError(400, exc.reason, exc.source) from None
