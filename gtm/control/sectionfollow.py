"""Following one entry of a section (``lb.<region>``) for a node gtm does not import.

A regional balancer follows versions exactly as a DNS node does (gtm.control.follower:
snapshot on disk, Redis and store announcements, reconcile, status reports); this is
the part that differs: of each version it serves, only its own entry matters, and a
version that leaves that entry as it was changes nothing on the node. regional_lb gets a
:class:`SectionFollow` from gtm (through the `gtm lb serve` hooks, or from gtm up) and
never imports the control plane.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gtm import log
from gtm.config.document import CompiledConfig, canonical_json
from gtm.control.events import EventLog
from gtm.control.follower import ConfigFollower, FollowerSettings
from gtm.control.store import Store
from gtm.scalestore import control_plane_scale_store

# apply(version, value): the entry's raw JSON value in a version where it changed.
EntryApply = Callable[[int, Any], Awaitable[None]]


@dataclass(frozen=True)
class SectionFollow:
    """How to follow the control plane: where from (settings, or a store in this
    process) and where the snapshot is kept."""

    settings: FollowerSettings
    store: Store | None = None

    @property
    def state_dir(self) -> Path:
        return self.settings.state_dir

    @property
    def scale_store(self) -> tuple[str, str] | None:
        """Where this control plane reads the regions' scalers (gtm.scalestore): the URL
        and namespace a following balancer's scaler meets its region in."""
        url = control_plane_scale_store(self.settings.store_url, self.settings.redis_url)
        return None if url is None else (url, self.settings.namespace)

    async def start(self, section: str, key: str, apply: EntryApply,
                    current: Any = None) -> ConfigFollower:
        """Follow; ``apply`` runs for each version whose ``section.key`` differs from the
        last one applied (at first ``current``, what the node already serves).

        Returns once the snapshot (or a first version) has been looked at, as
        ConfigFollower.start does; an entry missing from the version served leaves the
        node with what it has.
        """
        entry = EntryWatch(section, key, apply, current)
        follower = ConfigFollower(self.settings, entry.on_version, self.store)
        follower.status_extra = lambda: {section: key}
        await follower.start()
        return follower

    def events(self, following: ConfigFollower) -> EventLog:
        """This node's events (a balancer's admin changes) into the control plane's event
        store and Redis stream, through the store the follower reports to: no other
        connection, and the same two sinks as the control plane's own events."""
        return EventLog(following.store, self.settings.redis_url, following.namespace)


class EntryWatch:
    def __init__(self, section: str, key: str, apply: EntryApply, current: Any):
        self.section, self.key, self.apply = section, key, apply
        self.applied = None if current is None else canonical_json(current)
        self.missing_in = 0  # the last version found without the entry (logged once)

    async def on_version(self, version: int, compiled: CompiledConfig) -> None:
        value = compiled.document.get(self.section, {}).get(self.key)
        if value is None:
            if self.missing_in != version:
                self.missing_in = version
                log.follower.warning("version %d has no %s.%s; %s", version, self.section,
                                     self.key, "waiting for one" if self.applied is None
                                     else "keeping the configuration served so far")
            return
        text = canonical_json(value)
        if text == self.applied:
            return  # another part of the document changed: nothing to reload here
        await self.apply(version, value)  # raises: the follower keeps what it serves
        self.applied = text
