"""The one error answer of every HTTP API the product serves.

The control API (gtm.control) and the balancer's admin API (regional_lb.admin) answer
every error with the same body, so one client (the ``gtm`` CLI, Terraform) reads both::

    {"error": {"status": 404, "message": "...", "field": null, "request_id": "..."}}

``field`` names the input at fault (a JSON path into a document, a body key, a query
parameter, a header) or is null; some errors add keys (``detail``, ``current_version``).
``request_id`` is the request's ``X-Request-ID`` when it sent a plain one (a balancer in
front sends one), else a new one; the response carries it in ``X-Request-ID`` too, and
the log line of a 500 names it.

The status of an error is decided here, once (:func:`describe`); the middleware made by
:func:`error_boundary` applies it, gives aiohttp's own errors (unknown path, method, body
size) the same body, and turns anything else into a logged 500 that shows no traceback.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from gtm.errors import (
    ConfigError,
    GtmError,
    NotFound,
    RequestError,
    StoreUnavailable,
    VersionConflict,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

RETRY_AFTER = "5"  # seconds, on every 503
REQUEST_ID_HEADER = "X-Request-ID"
# An id from the client is used only when it is short and plain: it reaches logs.
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_REQUEST_ID = web.RequestKey("request_id", str)  # where the id is kept, once made


def request_id(request: web.Request) -> str:
    """The request's id: its own X-Request-ID when plain, else a new random one (kept,
    so that every answer and log line about the request names the same id)."""
    known = request.get(_REQUEST_ID)
    if known is None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        known = given if _PLAIN_ID.fullmatch(given) else secrets.token_hex(8)
        request[_REQUEST_ID] = known
    return known


def error_response(request: web.Request, status: int, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    """The one error body, with the request's id (also as a header) and, on 503,
    Retry-After."""
    rid = request_id(request)
    body = {"error": {"status": status, "message": message, "field": field,
                      "request_id": rid, **extra}}
    answer_headers = {REQUEST_ID_HEADER: rid, **(headers or {})}
    if status == 503:
        answer_headers.setdefault("Retry-After", RETRY_AFTER)
    return web.json_response(body, status=status, headers=answer_headers)


def describe(exc: GtmError) -> tuple[int, str, str | None, dict[str, Any]]:
    """Status, message, field and extra keys of the answer to a deliberate error.

    The one status rule of the APIs: a refused request says its own status (400, 404,
    413, ...); a stale write is 409; a missing resource 404; a store that cannot be
    reached 503; an invalid document 422 (an invalid *request* field is a RequestError:
    400); any other GtmError 400, since it was raised on purpose and says what to fix.
    """
    if isinstance(exc, RequestError):
        return exc.status, str(exc), exc.field, {}
    if isinstance(exc, VersionConflict):
        # HTTP would say 412 for a failed If-Match; the contract of these APIs is 409 for
        # every stale write, whether the base came in If-Match or in the body.
        return 409, str(exc), "If-Match", {"current_version": exc.current}
    if isinstance(exc, NotFound):
        return 404, str(exc), None, {}
    if isinstance(exc, StoreUnavailable):
        return 503, f"the config store is unavailable: {exc}", None, {}
    if isinstance(exc, ConfigError):
        where = None if exc.where is None or exc.where == "" else str(exc.where)
        return 422, exc.reason, where, {"detail": str(exc)}
    return 400, str(exc), None, {}


def http_exception_response(request: web.Request,
                            exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (unknown path or method, a body too large) in our body."""
    message = (exc.text or exc.reason).removeprefix(f"{exc.status}: ")
    allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None  # RFC 9110
    return error_response(request, exc.status, message, headers=allow)


def error_boundary(logger: logging.Logger, server: str) -> Middleware:
    """The middleware that makes every error of an API the one body. ``server`` names
    the process whose log a 500 points to ("the control plane", "the balancer")."""

    @web.middleware
    async def boundary(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GtmError as exc:
            status, message, field, extra = describe(exc)
            if status == 503:
                logger.warning("%s %s (request %s): %s", request.method, request.path,
                               request_id(request), exc)
            return error_response(request, status, message, field, **extra)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise  # a redirect is an answer, not an error
            return http_exception_response(request, exc)
        except Exception:  # a bug answers 500 (logged once, here), never kills the server
            # Method, path (never the query or headers: they can hold credentials) and id.
            rid = request_id(request)
            logger.exception("%s %s failed (request %s)", request.method, request.path, rid)
            return error_response(request, 500,
                                  f"internal error; see {server}'s log (request {rid})")

    return boundary
