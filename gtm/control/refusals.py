"""Refusals in the audit log, coalesced so that no client can grow it without bound.

Every refused change (invalid, stale base, missing target) and every refused
authentication is audited, whichever path caught it. A client refused again and again
for the same reason would otherwise add a row per attempt, so refusals are grouped by
kind: the client's address, the actor, the action and the reason. The first refusal of
a kind writes its row at once (an attack shows up at once); the ones that follow within
the window are only counted, and when the window ends one more row says how many there
were (``detail.repeated``) and when they started (``detail.since``). A kind therefore
costs at most two rows per window and process, and the kinds held in memory are capped
(the rest share one overflow kind per action).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from gtm.control.store import AuditEntry

DEFAULT_WINDOW = 60.0
MAX_KINDS = 10_000
OVERFLOW = "(too many kinds of refusal at once)"

Kind = tuple[str, str, str, str]  # client, actor, action, reason


@dataclass
class _Window:
    opened: float          # time.monotonic()
    since: float           # wall-clock time of the row written at once
    latest: AuditEntry     # the newest refusal counted, which the count row describes
    repeated: int = 0


class RefusalLog:
    def __init__(self, write: Callable[[AuditEntry], Awaitable[None]],
                 window: float = DEFAULT_WINDOW, max_kinds: int = MAX_KINDS):
        self.write = write
        self.window = window
        self.max_kinds = max_kinds
        self._windows: dict[Kind, _Window] = {}

    async def add(self, entry: AuditEntry, client: str, reason: str) -> None:
        now = time.monotonic()
        kind: Kind = (client, entry.actor, entry.action, reason)
        if kind not in self._windows and len(self._windows) >= self.max_kinds:
            kind = ("*", "*", entry.action, OVERFLOW)
        window = self._windows.get(kind)
        if window is not None and now - window.opened < self.window:
            window.repeated += 1
            window.latest = entry
            return
        # Opened before the write is awaited: refusals arriving meanwhile are counted.
        self._windows[kind] = _Window(now, entry.at, entry)
        if window is not None:
            await self._write_count(window)
        await self.write(entry)

    async def flush(self, everything: bool = False) -> None:
        """Close the windows that have ended (all of them with ``everything``), writing
        the count row of each that counted something."""
        now = time.monotonic()
        ended = [kind for kind, window in self._windows.items()
                 if everything or now - window.opened >= self.window]
        for kind in ended:
            window = self._windows.pop(kind, None)
            if window is not None:
                await self._write_count(window)

    async def run(self) -> None:
        """Flush ended windows for as long as the control plane runs."""
        while True:
            await asyncio.sleep(self.window / 4)
            await self.flush()

    async def _write_count(self, window: _Window) -> None:
        if window.repeated:
            await self.write(replace(window.latest, at=time.time(), detail={
                **window.latest.detail, "repeated": window.repeated, "since": window.since,
                "window_seconds": self.window}))
