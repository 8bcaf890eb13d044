"""``Idempotency-Key`` on every write of the API: retry safely, learn the outcome.

A client that sends a write and loses the answer (a reset connection, a timeout, a 503
from a store connection that broke after COMMIT) cannot know whether the write was
made. With ``Idempotency-Key: <up to 200 visible ASCII characters>`` it can send the
same request again, to any API process: the answer of the first attempt is kept in the
store, and a retry with the same key and the same request (method, path with query,
body) gets that answer again, status and body, without making anything a second time.
The same key with a different request is refused (422). Keys belong to the token that
sent them and are kept for IDEMPOTENCY_TTL (24 h).

Where the write is a version or a token, its answer is stored in the write's own
transaction (a Receipt), so even a connection lost after COMMIT leaves it there. Other
writes (certificates) keep their answer once they have it. Answers of 5xx and 429 are
not kept: those are to be retried for real. Refusals (409, 422, 404) are kept: the
request was acted on, and its retry must not meet a different world.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from gtm.control.auth import PRINCIPAL
from gtm.control.http import Handler
from gtm.control.store import IDEMPOTENCY_TTL, IdempotencyKey, KeptOutcome, Outcome, Store
from gtm.errors import RequestError

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
KEY = web.RequestKey("idempotency_key", IdempotencyKey)
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
KEPT_HEADERS = ("ETag", "Location")
_VALID = re.compile(r"[\x21-\x7e]{1,200}")
_FORGET_EVERY = 3600.0
Completer = Callable[[web.Request, Outcome], Outcome]
F = TypeVar("F", bound=Callable[..., Any])


def idempotency_key(request: web.Request) -> IdempotencyKey | None:
    """The key of this write, when the client sent one."""
    return request.get(KEY)


def replay_completer(complete: Completer) -> Callable[[F], F]:
    """Mark a handler whose kept answers lack what may not be stored (a new token's
    secret): ``complete(request, outcome)`` restores it when the answer is replayed."""

    def mark(handler: F) -> F:
        handler.complete_replay = complete  # type: ignore[attr-defined]
        return handler

    return mark


class Idempotency:
    def __init__(self, store: Store):
        self.store = store
        self._forgotten_at = float("-inf")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """After authentication (keys belong to a token), before the handler's own error
        boundary (refusals are answers too, and are kept like any other)."""
        text = request.headers.get(HEADER)
        token = request.get(PRINCIPAL)
        if text is None or request.method not in WRITES or token is None:
            return await handler(request)
        if not _VALID.fullmatch(text):
            raise RequestError(400, f"{HEADER} must be 1 to 200 visible ASCII characters",
                               HEADER)
        key = IdempotencyKey(token.id, text, await _fingerprint(request))
        request[KEY] = key
        kept = await self.store.kept_outcome(key.scope, key.key)
        if kept is not None:
            return _replay(request, key, kept)
        response = await handler(request)
        outcome = _outcome(response)
        if outcome is None:
            return response
        earlier = await self.store.keep_outcome(key, outcome)
        await self._forget_expired()
        # The store already held an answer: this request's own (kept with the version it
        # made), or that of a concurrent request with the same key, which wins.
        if earlier is None or (earlier.fingerprint == key.fingerprint
                               and earlier.outcome.status == outcome.status):
            return response
        return _replay(request, key, earlier)

    async def _forget_expired(self) -> None:
        now = time.monotonic()
        if now - self._forgotten_at >= _FORGET_EVERY:
            self._forgotten_at = now
            await self.store.forget_outcomes(time.time() - IDEMPOTENCY_TTL)


async def _fingerprint(request: web.Request) -> str:
    digest = hashlib.sha256()
    digest.update(f"{request.method} {request.raw_path}\n".encode())
    digest.update(await request.read())
    return digest.hexdigest()


def _outcome(response: web.StreamResponse) -> Outcome | None:
    """What is kept of an answer; None for what must not be (5xx, 429, not JSON)."""
    if response.status >= 500 or response.status == 429 or not isinstance(
            response, web.Response) or not isinstance(response.body, bytes):
        return None
    try:
        body = json.loads(response.body)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    headers = {name: response.headers[name] for name in KEPT_HEADERS if name in response.headers}
    return Outcome(response.status, body, headers)


def _replay(request: web.Request, key: IdempotencyKey, kept: KeptOutcome) -> web.Response:
    if kept.fingerprint != key.fingerprint:
        raise RequestError(
            422, f"this {HEADER} was used for a different request (method, path or body); "
            "a new request needs a new key", HEADER)
    outcome = kept.outcome
    complete = getattr(request.match_info.route.handler, "complete_replay", None)
    if complete is not None:
        outcome = complete(request, outcome)
    return web.json_response(outcome.body, status=outcome.status,
                             headers={**outcome.headers, REPLAYED: "true"})
