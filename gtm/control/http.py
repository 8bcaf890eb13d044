"""The API's HTTP conventions: one error boundary, JSON bodies, versions, pages.

Every error leaves in the one body of the product's APIs (gtm.http_errors):
``{"error": {"status", "message", "field", "request_id"}}``; ``field`` names the
offending input (a JSON path into the document, a query parameter, a header) so a
client can point at it.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from gtm import http_errors, log
from gtm.errors import RequestError
from gtm.http_errors import Handler
from gtm.json_input import read_json

MAX_PAGE = 500
DEFAULT_PAGE = 50
MAX_NUMBER = 2**62  # versions, ids and cursors: far beyond use, within every store's integers
_ETAG = re.compile(r'^\s*(?:W/)?"?([0-9]+)"?\s*$')
# ASCII digits only: str.isdigit() and int() also take "²", "٣" and "1_0".
_WHOLE = re.compile(r"^-?[0-9]{1,20}$")


# The one error body and status rule of the product's APIs (gtm.http_errors).
error_boundary = http_errors.error_boundary(log.control, "the control plane")


# Controls (NUL included) and lone surrogates: no name, id or number has them, and they
# would reach queries, messages and the audit log.
_NOT_IN_PATHS = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


@web.middleware
async def plain_path_parameters(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a path parameter with a control character. Runs after authentication, so
    an unauthenticated request is still refused (and audited) as such."""
    for name, value in request.match_info.items():
        if _NOT_IN_PATHS.search(value):
            raise RequestError(400, f"the path's {name} holds a control character", name)
    return await handler(request)


async def json_body(request: web.Request) -> dict[str, Any]:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object", "body")
    return body


def field(
    body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...
) -> Any:
    if name not in body:
        if default is ...:
            raise RequestError(400, f"{name!r} is required", name)
        return default
    value = body[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise RequestError(400, f"{name!r} must be of type {names}", name)
    return value


def base_version(request: web.Request, body: dict[str, Any] | None = None) -> int:
    """The version a write was based on: If-Match, else ``base_version`` in the body."""
    header = request.headers.get("If-Match")
    if header is not None:
        match = _ETAG.match(header)
        if match is None:
            raise RequestError(400, 'If-Match must be a version ETag such as "12"', "If-Match")
        return whole_number(match.group(1), "If-Match", 0, MAX_NUMBER)
    if body is not None and "base_version" in body:
        value = field(body, "base_version", int)
        if not 0 <= value <= MAX_NUMBER:
            raise RequestError(400, f"'base_version' must be 0 to {MAX_NUMBER}", "base_version")
        return int(value)
    raise RequestError(
        428, 'name the version this change is based on (If-Match: "N" or base_version)',
        "If-Match",
    )


def etag(version: int) -> str:
    return f'"{version}"'


def query_flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise RequestError(400, f"{name!r} must be true or false", name)
    return value in ("true", "1")


def query_int(
    request: web.Request, name: str, default: int | None, low: int, high: int
) -> int | None:
    text = request.query.get(name)
    if text is None:
        return default
    return whole_number(text, name, low, high)


def whole_number(text: str, name: str, low: int, high: int) -> int:
    """``text`` as a whole number from ``low`` to ``high`` (ASCII digits), or 400 naming it."""
    if _WHOLE.match(text) is None or not low <= int(text) <= high:
        raise RequestError(400, f"{name!r} must be a whole number from {low} to {high}", name)
    return int(text)


def page_args(request: web.Request) -> tuple[int | None, int]:
    """``cursor`` (opaque: the id of the last item of the previous page) and ``limit``."""
    limit = query_int(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    cursor = query_int(request, "cursor", None, 0, MAX_NUMBER)
    return cursor, limit or DEFAULT_PAGE


def page(items: list[dict[str, Any]], limit: int, key: str) -> web.Response:
    next_cursor = str(items[-1][key]) if len(items) == limit and items else None
    return web.json_response({"items": items, "next_cursor": next_cursor})
