"""Bearer tokens and roles for the API; every refusal is audited.

Tokens are looked up by the SHA-256 of their secret, in the store, on every request.
Nothing is cached: a revocation is a row in the shared store, so once the revoke call
has returned every control-plane process refuses the token (a cache would let a
revoked admin token keep minting tokens on another process until it expired). The
lookup is one indexed read, the same cost as the read that any request makes anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from gtm import metrics
from gtm.control.http import Handler, error_response
from gtm.control.service import ConfigService
from gtm.control.store import TokenRecord, hash_secret, role_allows

PRINCIPAL = web.RequestKey("principal", TokenRecord)
F = TypeVar("F", bound=Callable[..., Any])


def requires(role: str) -> Callable[[F], F]:
    """Mark a handler with the least role that may call it (viewer, editor, admin)."""

    def mark(handler: F) -> F:
        handler.required_role = role  # type: ignore[attr-defined]
        return handler

    return mark


class Authenticator:
    def __init__(self, service: ConfigService):
        self.service = service

    async def token_for(self, secret: str) -> TokenRecord | None:
        record = await self.service.store.token_by_hash(hash_secret(secret))
        return record if record is not None and record.revoked_at is None else None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route_handler = request.match_info.route.handler
        needed = getattr(route_handler, "required_role", None)
        if needed is None:  # public: /openapi.json, /v1/health, unknown routes (404)
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return await self._refuse(request, 401, "missing bearer token", "anonymous")
        token = await self.token_for(secret.strip())
        if token is None:
            return await self._refuse(request, 401, "unknown or revoked token", "anonymous")
        if not role_allows(token.role, needed):
            return await self._refuse(
                request, 403, f"role {token.role} may not do this (needs {needed})",
                actor(token),
            )
        request[PRINCIPAL] = token
        return await handler(request)

    async def _refuse(
        self, request: web.Request, status: int, reason: str, who: str
    ) -> web.StreamResponse:
        kind = "forbidden" if status == 403 else "unauthenticated"
        metrics.config_auth_refusals.labels(kind).inc()
        await self.service.audit(
            who, "auth.refused", f"{request.method} {request.path}", "refused",
            {"reason": reason, "remote": request.remote or ""},
        )
        response = error_response(status, reason, "Authorization")
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="gtm"'
        return response


def actor(token: TokenRecord) -> str:
    return f"{token.name}#{token.id}"


def principal(request: web.Request) -> TokenRecord:
    return request[PRINCIPAL]
