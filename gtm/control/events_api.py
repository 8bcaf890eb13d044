"""``GET /v1/events``: the event stream from the store, in cursor pages, with a long poll.

``after`` (a cursor: every page's ``next_cursor``) pages forward, oldest first; ``tail=N``
gives the newest N instead; ``type`` (repeatable) and ``since`` (Unix seconds) filter;
``wait`` (seconds) holds the request until an event arrives when there is none yet, which
is how `gtm events --follow` follows. ``next_cursor`` is always set: where to go on from.

A held request wakes when this process writes events and otherwise looks again every
second (events written by another control-plane process). At most MAX_WAITERS requests
are held at once; past that a request is answered at once, as if ``wait`` were 0.
"""

from __future__ import annotations

import math
import time

from aiohttp import web

from gtm.control.auth import requires
from gtm.control.events import check_type
from gtm.control.http import MAX_NUMBER, query_int
from gtm.control.routes_shared import service_of
from gtm.control.store import StoredEvent
from gtm.errors import ConfigError, RequestError

MAX_WAIT = 25  # seconds: below the CLI's 30 s read timeout and common proxies' 30 to 60 s
MAX_WAITERS = 100
MAX_TYPES = 20
DEFAULT_LIMIT, MAX_LIMIT = 100, 500
RECHECK = 1.0  # seconds between looks at the store while a request is held
class Held:
    """How many requests are held now (at most MAX_WAITERS)."""

    def __init__(self) -> None:
        self.count = 0


WAITERS = web.AppKey("event_waiters", Held)


def routes(app: web.Application) -> list[web.RouteDef]:
    app[WAITERS] = Held()
    return [web.get("/v1/events", list_events)]


def event_types(request: web.Request) -> tuple[str, ...]:
    names = request.query.getall("type", [])
    if len(names) > MAX_TYPES:
        raise RequestError(400, f"at most {MAX_TYPES} types", "type")
    try:
        return tuple(dict.fromkeys(check_type(name) for name in names))
    except ConfigError as exc:
        raise RequestError(400, exc.reason, "type") from None


def since_of(request: web.Request) -> float:
    text = request.query.get("since")
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1e11:  # NaN fails too
        raise RequestError(400, "'since' is Unix seconds (a number from 0)", "since")
    return value


@requires("viewer")
async def list_events(request: web.Request) -> web.Response:
    types, since = event_types(request), since_of(request)
    after = query_int(request, "after", None, 0, MAX_NUMBER)
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
    tail = query_int(request, "tail", None, 1, MAX_LIMIT)
    wait = query_int(request, "wait", 0, 0, MAX_WAIT) or 0
    if tail is not None and after is not None:
        raise RequestError(400, "'tail' and 'after' do not go together", "tail")
    service = service_of(request)
    store = service.store
    if tail is not None:
        found = await store.last_events(tail, types)
    else:
        found = await store.events(after or 0, limit, types, since)
        held = request.app[WAITERS]
        if not found and wait and held.count < MAX_WAITERS:
            held.count += 1
            try:
                deadline = time.monotonic() + wait
                while not found and (left := deadline - time.monotonic()) > 0:
                    await service.events.wait_written(min(left, RECHECK))
                    found = await store.events(after or 0, limit, types, since)
            finally:
                held.count -= 1
    return web.json_response({"items": [s.event.public() for s in found],
                              "next_cursor": str(await next_cursor(request, found, after))})


async def next_cursor(request: web.Request, found: list[StoredEvent], after: int | None) -> int:
    if found:
        return found[-1].cursor
    if after is not None:
        return after
    latest = await service_of(request).store.last_events(1)  # nothing yet: go on from now
    return latest[-1].cursor if latest else 0
