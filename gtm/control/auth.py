"""Bearer tokens and roles for the API; every refusal is audited (coalesced).

Tokens are looked up by the SHA-256 of their secret, in the store, on every request.
Nothing is cached: a revocation is a row in the shared store, so once the revoke call
has returned every control-plane process refuses the token (a cache would let a
revoked admin token keep minting tokens on another process until it expired). The
lookup is one indexed read, the same cost as the read that any request makes anyway.

Failed authentications are limited per client (gtm.control.ratelimit): past a burst,
a client that keeps failing gets 429 with Retry-After instead of 401, and its refusals
are counted into one audit row per window rather than a row each. A valid token is
never refused for its address's failures: 256 random bits are not guessed, so the
limit is there to protect the audit log and the store, not the tokens.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from gtm import metrics
from gtm.control.http import Handler
from gtm.control.ratelimit import TokenBuckets, client_of
from gtm.control.service import ConfigService
from gtm.control.store import AuditEntry, TokenRecord, hash_secret, role_allows
from gtm.http_errors import error_response

# Failed authentications a client may make at once, then per second.
FAILURE_BURST = 10
FAILURES_PER_SECOND = 0.5

PRINCIPAL = web.RequestKey("principal", TokenRecord)
F = TypeVar("F", bound=Callable[..., Any])
# The status page's cookie session (gtm.control.status_api): the token of a request that
# carries no Authorization header, or None.
SessionLookup = Callable[[web.Request], Awaitable[TokenRecord | None]]


def requires(role: str) -> Callable[[F], F]:
    """Mark a handler with the least role that may call it (viewer, editor, admin)."""

    def mark(handler: F) -> F:
        handler.required_role = role  # type: ignore[attr-defined]
        return handler

    return mark


def session_ok(handler: F) -> F:
    """Mark a read-only (GET) handler that the status page's cookie session may call too.
    Only GETs: a cookie is sent by the browser on its own, so it must never authorise a
    change (CSRF); SameSite=Strict keeps it off other sites' requests besides."""
    handler.session_ok = True  # type: ignore[attr-defined]
    return handler


class Authenticator:
    def __init__(self, service: ConfigService, failures: TokenBuckets | None = None):
        self.service = service
        self.failures = failures or TokenBuckets(FAILURE_BURST, FAILURES_PER_SECOND)
        self.session_principal: SessionLookup | None = None

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
        if not header and request.method == "GET" and self.session_principal is not None \
                and getattr(route_handler, "session_ok", False):
            session_token = await self.session_principal(request)
            if session_token is not None and role_allows(session_token.role, needed):
                request[PRINCIPAL] = session_token
                return await handler(request)
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return await self._failed(request, "missing bearer token")
        token = await self.token_for(secret.strip())
        if token is None:
            return await self._failed(request, "unknown or revoked token")
        if not role_allows(token.role, needed):
            return await self._refuse(
                request, 403, f"role {token.role} may not do this (needs {needed})",
                actor(token),
            )
        request[PRINCIPAL] = token
        return await handler(request)

    async def refuse_login(self, request: web.Request, reason: str) -> float:
        """A failed login of the status page, limited and audited like a failed bearer
        token: 0, or the seconds the client must wait (it has failed too often)."""
        wait = self.failures.take(client_of(request.remote))
        kind = "limited" if wait else "unauthenticated"
        metrics.config_auth_refusals.labels(kind).inc()
        await self.service.refusals.add(AuditEntry(
            "anonymous", "auth.refused", f"{request.method} {request.path}", "refused",
            {"reason": reason, "status": 429 if wait else 401, "remote": request.remote or ""},
        ), client_of(request.remote), "too many failures" if wait else reason)
        return wait

    async def _failed(self, request: web.Request, reason: str) -> web.StreamResponse:
        """A failed authentication: 401, or 429 once the client has failed too often."""
        wait = self.failures.take(client_of(request.remote))
        if not wait:
            return await self._refuse(request, 401, reason, "anonymous")
        seconds = math.ceil(wait)
        response = await self._refuse(
            request, 429, f"too many failed authentications from this address ({reason}); "
            f"retry after {seconds} s", "anonymous", audit_reason="too many failures")
        response.headers["Retry-After"] = str(seconds)
        return response

    async def _refuse(
        self, request: web.Request, status: int, reason: str, who: str,
        audit_reason: str | None = None,
    ) -> web.StreamResponse:
        kind = {403: "forbidden", 429: "limited"}.get(status, "unauthenticated")
        metrics.config_auth_refusals.labels(kind).inc()
        client = client_of(request.remote)
        await self.service.refusals.add(AuditEntry(
            who, "auth.refused", f"{request.method} {request.path}", "refused",
            {"reason": reason, "status": status, "remote": request.remote or ""},
        ), client, audit_reason or reason)
        response = error_response(request, status, reason, "Authorization")
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="gtm"'
        return response


def actor(token: TokenRecord) -> str:
    return f"{token.name}#{token.id}"


def principal(request: web.Request) -> TokenRecord:
    return request[PRINCIPAL]


def bearer_secret(request: web.Request) -> str:
    """The secret of the token that authenticated this request."""
    return request.headers.get("Authorization", "").partition(" ")[2].strip()
