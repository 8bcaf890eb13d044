"""The event stream: health flips, config versions, admin changes and certificates (and,
as they arrive, drills and scaling), to a Redis stream and to the store.

Every event has one JSON shape (gtm.control.store.Event): ``id`` (time-ordered, unique;
the same in both sinks, so a reader of both can deduplicate), ``time`` (Unix seconds),
``type``, ``subject``, ``detail`` (an object) and ``actor``.

Publishing never blocks or fails its caller (a commit, a health flip): ``publish`` puts
the event in a bounded queue and returns; one background task writes batches to the
store (one transaction) and to the stream (``XADD ... MAXLEN ~``), each within a bounded
time, like the Redis announcement of a version (gtm.control.fanout). A sink that is down
loses its copy of the events of that moment (counted in gtm_events_published_total and
logged once a minute); the other sink still has them. A queue that outgrows QUEUE_LIMIT
(a sink hung for long) drops its oldest events, counted the same way.

The Redis stream is ``<namespace>:events``; each entry has the fields id, time, type,
subject, actor and detail (JSON text). External tools read it with XREAD, or without
loss across their restarts with a consumer group (XREADGROUP, then XACK once handled:
README, "Events"; `gtm events --group NAME --consumer C` does exactly that).

Other parts of a process publish through the module-level ``publish(type, subject,
detail)``: it goes to the event log the control plane of this process installed (`gtm
up`, `gtm api`), and is dropped (logged at debug) where there is none.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from gtm import log, metrics
from gtm.control.store import Event, Store, storable
from gtm.errors import ConfigError, StoreUnavailable
from gtm.redis_client import client

STREAM_MAXLEN = 10_000  # entries the Redis stream keeps (approximately: MAXLEN ~)
QUEUE_LIMIT = 10_000  # events waiting for their sinks; past it the oldest are dropped
BATCH = 200  # events written in one store transaction / one Redis pipeline
REDIS_TIMEOUT = 0.5  # the longest one Redis call may take, connecting included
STORE_TIMEOUT = 5.0  # the longest one store write may take
MAX_DETAIL = 8 * 1024  # bytes of a detail's JSON; a bigger one is replaced by a note
MAX_SUBJECT = 300
MAX_ACTOR = 200
# Dotted lower-case words: health.flip, config.version, steer.region, drill.start ...
EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]{0,31}(\.[a-z0-9_]{1,32}){0,3}$")


# publish(kind, subject, detail, actor): EventLog.publish, or the module-level publish.
Publish = Callable[[str, str, dict[str, Any] | None, str], object]


def stream_key(namespace: str) -> str:
    return f"{namespace}:events"


def check_type(name: str, where: str = "type") -> str:
    if EVENT_TYPE.match(name) is None:
        raise ConfigError("an event type is dotted lower-case words (health.flip, "
                          "config.version)", "event", where)
    return name


def new_id(now: float) -> str:
    """Milliseconds then randomness: sorts by time, unique without coordination."""
    return f"{int(now * 1000):013d}-{secrets.token_hex(6)}"


def new_event(kind: str, subject: str, detail: dict[str, Any] | None = None,
              actor: str = "gtm", now: float | None = None) -> Event:
    """An event, checked and bounded: a bad type is a ConfigError (a bug of the caller);
    an oversize subject or detail is cut down rather than refused."""
    moment = time.time() if now is None else now
    body: dict[str, Any] = dict(detail or {})
    text = json.dumps(body, default=str, sort_keys=True)
    if len(text.encode()) > MAX_DETAIL:
        body = {"truncated": True, "bytes": len(text.encode())}
    else:
        body = json.loads(text)  # what the sinks will hold: plain JSON, no objects
    return Event(new_id(moment), moment, check_type(kind), storable(subject[:MAX_SUBJECT]),
                 body, storable(actor[:MAX_ACTOR]))


def stream_fields(event: Event) -> dict[str, str]:
    """An event as the fields of its Redis stream entry."""
    return {"id": event.id, "time": repr(event.time), "type": event.type,
            "subject": event.subject, "actor": event.actor,
            "detail": json.dumps(event.detail, sort_keys=True)}


def event_from_fields(fields: dict[str, str]) -> Event:
    """A stream entry back into an event (KeyError, ValueError when it is not one)."""
    return Event(fields["id"], float(fields["time"]), fields["type"], fields["subject"],
                 json.loads(fields["detail"]), fields["actor"])


class EventLog:
    """A process's publisher: a bounded queue and one writer task for both sinks."""

    def __init__(self, store: Store | None, redis_url: str | None, namespace: str = "gtm",
                 *, maxlen: int = STREAM_MAXLEN, redis_timeout: float = REDIS_TIMEOUT,
                 store_timeout: float = STORE_TIMEOUT, queue_limit: int = QUEUE_LIMIT):
        self.store = store
        self.stream = stream_key(namespace)
        self.maxlen = maxlen
        self.redis_timeout = redis_timeout
        self.store_timeout = store_timeout
        self.queue_limit = queue_limit
        self.redis = client(redis_url, redis_timeout) if redis_url else None
        self._queue: deque[Event] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._written = asyncio.Event()  # set (and replaced) after each batch
        self._warned_at: dict[str, float] = {}

    def publish(self, kind: str, subject: str, detail: dict[str, Any] | None = None,
                actor: str = "gtm") -> Event | None:
        """Queue an event for both sinks and return at once (from the event loop). Never
        raises: an event that cannot be made is a logged bug, not a failed commit."""
        try:
            event = new_event(kind, subject, detail, actor)
        except Exception:
            log.control.exception("event %r about %r not published", kind, subject)
            return None
        if len(self._queue) >= self.queue_limit:
            self._queue.popleft()
            for sink in self._sinks():
                metrics.events_published.labels(sink, "dropped").inc()
        self._queue.append(event)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_queued(), name="events-writer")
        return event

    async def wait_written(self, timeout: float) -> None:
        """Until the next batch is written (or ``timeout``): long polls wake on it."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._written.wait(), timeout)

    async def flush(self, timeout: float = 2 * STORE_TIMEOUT) -> bool:
        """Until everything queued is written (bounded); True when it was."""
        deadline = time.monotonic() + timeout
        while self._queue or (self._writer is not None and not self._writer.done()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await self.wait_written(min(remaining, 0.5))
        return True

    async def close(self) -> None:
        await self.flush(timeout=1.0)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self.redis is not None:
            await self.redis.aclose()

    def _sinks(self) -> list[str]:
        return [s for s, on in (("store", self.store), ("redis", self.redis)) if on is not None]

    async def _write_queued(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            await asyncio.gather(self._to_store(batch), self._to_redis(batch))
            written, self._written = self._written, asyncio.Event()
            written.set()

    async def _to_store(self, batch: Sequence[Event]) -> None:
        if self.store is None:
            return
        try:
            async with asyncio.timeout(self.store_timeout):
                await self.store.add_events(batch)
        except (StoreUnavailable, TimeoutError, OSError) as exc:
            self._lost("store", batch, exc)
            return
        except Exception as exc:  # a bug here must not stop the writer for good
            log.control.exception("writing events to the store failed")
            self._lost("store", batch, exc)
            return
        metrics.events_published.labels("store", "ok").inc(len(batch))

    async def _to_redis(self, batch: Sequence[Event]) -> None:
        if self.redis is None:
            return
        try:
            async with asyncio.timeout(self.redis_timeout):
                pipe = self.redis.pipeline(transaction=False)
                for event in batch:
                    pipe.xadd(self.stream, stream_fields(event),  # type: ignore[arg-type]
                              maxlen=self.maxlen, approximate=True)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            self._lost("redis", batch, exc)
            return
        metrics.events_published.labels("redis", "ok").inc(len(batch))

    def _lost(self, sink: str, batch: Sequence[Event], exc: BaseException) -> None:
        metrics.events_published.labels(sink, "failed").inc(len(batch))
        # An outage would otherwise log on every event: once a minute per sink is enough.
        now = time.monotonic()
        if now - self._warned_at.get(sink, -60.0) >= 60:
            self._warned_at[sink] = now
            log.control.warning("%d event(s) not written to the %s: %s", len(batch), sink,
                                str(exc) or type(exc).__name__)


_installed: EventLog | None = None


def install(events: EventLog | None) -> EventLog | None:
    """Make ``events`` this process's event log (the control plane does at start); the
    one it replaces is returned, so a stopping control plane can put it back."""
    global _installed
    previous, _installed = _installed, events
    return previous


def installed() -> EventLog | None:
    return _installed


def publish(kind: str, subject: str, detail: dict[str, Any] | None = None,
            actor: str = "gtm") -> Event | None:
    """Publish through this process's event log (drills, scaling, anything in-process).
    Returns at once; never raises; None when the process has no event log."""
    if _installed is None:
        log.control.debug("no event log in this process: event %s about %s dropped",
                          kind, subject)
        return None
    return _installed.publish(kind, subject, detail, actor)


def health_flips(publish: Publish, observer: str) -> Callable[[str, str, str, str], None]:
    """A health service's ``on_change``: each agreed flip as a ``health.flip`` event, the
    same shape under `gtm up` and from a `gtm serve --probe` node."""
    def flipped(what: str, before: str, after: str, reason: str) -> None:
        publish("health.flip", what, {"from": before, "to": after, "reason": reason},
                f"health:{observer}")

    return flipped
