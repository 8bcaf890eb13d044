"""The zone directory as a way to change the configuration (`gtm up`), and who owns what.

Each zone's files are entries of the document: ``<zone>.zone`` (``zones``),
``<zone>.steering.toml`` (``steering``) and ``<zone>.state.json`` (``state``). An entry
follows its file while the live value is the one the file last gave it. A change made
through the control plane instead (`gtm config apply`, the API, a rollback, `gtm steer`)
takes the entry over: a later edit of the file is refused, with the reason and the
command that takes the entry back (`gtm zones apply ZONE`), until the file and the live
configuration agree again. So neither way of changing things silently undoes the other.

What each file last gave is kept in ``zones-dir.json`` in the state directory, so the
rule holds across restarts: a file edited while `gtm up` was down is applied at start,
unless the entry was changed through the control plane meanwhile.

Bad files are refused zone by zone, with file, line and reason, while the other zones'
edits go ahead. Each problem is logged and audited once, and again only when it changes
or is resolved; the directory is looked at again only when a file or the live version
changes, never retried every second.
"""

from __future__ import annotations

import asyncio
import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gtm import log
from gtm.atomic import write_atomic
from gtm.config.document import digest, zone_name_of, zone_text_from_file
from gtm.config.steering import state_from_file, steering_from_file
from gtm.control.service import ConfigService
from gtm.dns.loader import ZONE_SUFFIX, Signature, load_zone, signature
from gtm.errors import ConfigError, GtmError, StoreUnavailable, VersionConflict
from gtm.steering.definitions import STEERING_SUFFIX
from gtm.steering.state import STATE_SUFFIX

FILE_SECTIONS = ("zones", "steering", "state")
SUFFIXES = {"zones": ZONE_SUFFIX, "steering": STEERING_SUFFIX, "state": STATE_SUFFIX}
WHAT = {"zones": "records", "steering": "steering", "state": "state"}
AUTHOR = "zones-dir"
RECORD_FILE = "zones-dir.json"

Entry = tuple[str, str]  # (section, zone name as the document spells it: "example.test.")


def file_of(directory: Path, entry: Entry) -> Path:
    section, zone = entry
    return directory / f"{zone.rstrip('.')}{SUFFIXES[section]}"


def zone_of_file(path: Path) -> str:
    """The zone a zone, steering or state file belongs to ("example.test.")."""
    name = path.name
    for suffix in (STEERING_SUFFIX, STATE_SUFFIX, ZONE_SUFFIX):
        if name.endswith(suffix):
            return name.removesuffix(suffix).rstrip(".") + "."
    return name


def take_back_command(directory: Path, zone: str) -> str:
    return f"gtm zones apply {zone.rstrip('.')} --zones {directory}"


@dataclass
class DirectoryRead:
    """A zone directory's entries; a zone whose files cannot be read is left out whole
    (its error says which file, where and why), so its entries count as unchanged."""

    values: dict[Entry, Any] = field(default_factory=dict)
    errors: dict[str, ConfigError] = field(default_factory=dict)

    def digests(self) -> dict[Entry, str]:
        return {entry: digest(value) for entry, value in self.values.items()}


def read_zone_dir(directory: Path, only: str | None = None) -> DirectoryRead:
    """Every zone's entries as its files give them (``only``: one zone's)."""
    zones: dict[str, list[tuple[str, Path]]] = {}
    for path in sorted(directory.iterdir()):
        for section in ("zones", "steering"):
            if path.name.endswith(SUFFIXES[section]) and path.is_file():
                zone = zone_name_of(path.with_name(
                    path.name.removesuffix(SUFFIXES[section]) + ZONE_SUFFIX))
                zones.setdefault(zone, []).append((section, path))
    read = DirectoryRead()
    for zone, files in zones.items():
        if only is not None and zone != only:
            continue
        try:
            read.values.update(_zone_entries(directory, zone, dict(files)))
        except ConfigError as exc:
            read.errors[zone] = exc
    return read


def _zone_entries(directory: Path, zone: str, files: dict[str, Path]) -> dict[Entry, Any]:
    entries: dict[Entry, Any] = {}
    if "zones" in files:
        entries[("zones", zone)] = zone_text_from_file(files["zones"])
    if "steering" in files:  # as in a seeded document: state only beside steering
        entries[("steering", zone)] = steering_from_file(files["steering"])
        state = file_of(directory, ("state", zone))
        if state.exists():
            entries[("state", zone)] = state_from_file(state)
    return entries


def validate_zone_files(directory: Path, zone: str) -> None:
    """The check `gtm zones check` makes, so errors name the file and its line."""
    path = file_of(directory, ("zones", zone))
    if path.exists():
        load_zone(path)


def live_digests(document: dict[str, Any]) -> dict[Entry, str]:
    entries: dict[Entry, str] = {}
    for section in FILE_SECTIONS:
        table = document.get(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"section {section} is not an object")
        for zone, value in table.items():
            entries[(section, zone)] = digest(value)
    return entries


def with_entries(live: dict[str, Any], changes: dict[Entry, Any]) -> dict[str, Any]:
    """``live`` with entries set (a value) or removed (None)."""
    updated = copy.deepcopy(live)
    for (section, zone), value in changes.items():
        if value is None:
            updated.get(section, {}).pop(zone, None)
        else:
            updated.setdefault(section, {})[zone] = copy.deepcopy(value)
    for section in FILE_SECTIONS:
        if section in updated and not updated[section]:
            del updated[section]
    return updated


@dataclass(frozen=True)
class Problem:
    kind: str  # "invalid" (a file cannot be used) or "conflict" (the file would undo)
    message: str
    audit_target: str


class ZoneDirSync:
    """Turns changes of the zone directory into versions, entry by entry."""

    def __init__(self, service: ConfigService, zones_dir: Path, record: Path | None = None):
        self.service = service
        self.zones_dir = zones_dir
        self.record = record
        # What each file last gave the live configuration (digests); None: not known yet.
        self.given: dict[Entry, str] | None = _read_record(record)
        self.problems: dict[str, Problem] = {}
        self.store_problem: str | None = None
        self._looked_at: tuple[Signature, int] | None = None

    async def run_once(self, force: bool = False) -> None:
        """Look at the directory if a file or the live version changed (``force``: now)."""
        try:
            await self._sync(force)
        except VersionConflict:
            log.zones.debug("another change was committed meanwhile; looking again")
            return  # a race with another writer: the next tick looks again
        except StoreUnavailable as exc:
            # Not the files' fault: the next tick tries again; said once until it changes.
            self._store_trouble(str(exc))
            return
        except (GtmError, OSError, ValueError) as exc:
            self._report({**self.problems, "zone directory": Problem(
                "invalid", f"zone directory {self.zones_dir} not applied: {exc}",
                "zone directory")})
            return
        self._store_trouble(None)

    async def _sync(self, force: bool) -> None:
        loop = asyncio.get_running_loop()
        current = await loop.run_in_executor(None, signature, self.zones_dir)
        head = await self.service.store.head()
        if not force and self._looked_at == (current, head):
            return
        read = await loop.run_in_executor(None, read_zone_dir, self.zones_dir)
        live = await self.service.document_at(head)
        files, live_entries = read.digests(), live_digests(live)
        if self.given is None:  # first look with no record: only what agrees is the file's
            given = {k: d for k, d in files.items() if live_entries.get(k) == d}
        else:
            given = dict(self.given)
        apply, conflicts = self._decide(read, files, given, live_entries)
        invalid = await self._validate(read, apply)
        problems = {zone: Problem("invalid", f"{error}; the live version of {zone} stays",
                                  f"zone {zone}")
                    for zone, error in {**read.errors, **invalid}.items()}
        problems.update(conflicts)
        if apply:
            head = await self._propose(live, read, apply, head, given, problems)
        self._report(problems)
        self._remember(given)
        self._looked_at = (current, head)

    def _decide(self, read: DirectoryRead, files: dict[Entry, str], given: dict[Entry, str],
                live: dict[Entry, str]) -> tuple[dict[Entry, str | None], dict[str, Problem]]:
        """Which entries to take from the files, and which the files may not overwrite."""
        apply: dict[Entry, str | None] = {}
        conflicts: dict[str, Problem] = {}
        for entry in sorted(set(files) | set(given)):
            if entry[1] in read.errors:
                continue  # unreadable: neither changed nor removed
            wanted, last, now = files.get(entry), given.get(entry), live.get(entry)
            if wanted == last:
                continue  # the file did not change (the live value may have moved on)
            if now == wanted:
                _set(given, entry, wanted)  # they agree: the file follows again
            elif now == last:
                apply[entry] = wanted
            else:
                path = str(file_of(self.zones_dir, entry))
                conflicts[path] = self._conflict(entry, wanted is None)
        return apply, conflicts

    def _conflict(self, entry: Entry, removed: bool) -> Problem:
        section, zone = entry
        path = file_of(self.zones_dir, entry)
        edit = "was removed" if removed else "changed"
        return Problem("conflict", (
            f"{path} {edit}, but the live {WHAT[section]} of {zone} no longer comes from "
            f"it (changed through the control plane since: gtm config history); not "
            f"applied, so that change is not undone. To make the file's content live: "
            f"{take_back_command(self.zones_dir, zone)}"), f"zone {zone}")

    async def _validate(self, read: DirectoryRead, apply: dict[Entry, str | None]
                        ) -> dict[str, ConfigError]:
        """Zones whose files fail the file check; their entries are not applied."""
        invalid: dict[str, ConfigError] = {}
        loop = asyncio.get_running_loop()
        for zone in sorted({z for (_, z), d in apply.items() if d is not None}):
            try:
                await loop.run_in_executor(None, validate_zone_files, self.zones_dir, zone)
            except ConfigError as exc:
                invalid[zone] = exc
        for entry in [e for e in apply if e[1] in invalid]:
            del apply[entry]
        return invalid

    async def _propose(self, live: dict[str, Any], read: DirectoryRead,
                       apply: dict[Entry, str | None], head: int, given: dict[Entry, str],
                       problems: dict[str, Problem]) -> int:
        changes = {e: (read.values[e] if d is not None else None) for e, d in apply.items()}
        updated = with_entries(live, changes)
        if updated == live:
            return head
        names = sorted({zone for _, zone in apply})
        try:
            proposal = await self.service.propose(
                updated, head, AUTHOR, f"zone directory changed: {', '.join(names)}")
        except ConfigError as exc:  # the document as a whole (audited by propose)
            problems["document"] = Problem(
                "invalid", f"zone directory changes of {', '.join(names)} not applied: {exc}",
                "")
            return head
        for entry, wanted in apply.items():
            _set(given, entry, wanted)
        assert proposal.version is not None
        return proposal.version.number

    def _report(self, current: dict[str, Problem]) -> None:
        """Log (and audit) each problem once, again when it changes, and its end."""
        for topic, problem in current.items():
            if self.problems.get(topic) == problem:
                continue
            level = log.zones.error if problem.kind == "invalid" else log.zones.warning
            level("%s", problem.message)
            if problem.audit_target:
                self._audit(problem)
        for topic in sorted(self.problems.keys() - current.keys()):
            ended = ("the file and the live configuration agree again"
                     if self.problems[topic].kind == "conflict" else "fixed")
            log.zones.info("%s: %s", topic, ended)
        self.problems = current

    def _audit(self, problem: Problem) -> None:
        task = asyncio.get_running_loop().create_task(self.service.audit(
            AUTHOR, "config.commit", problem.audit_target, problem.kind,
            {"error": problem.message}))
        _PENDING.add(task)
        task.add_done_callback(_PENDING.discard)

    def _store_trouble(self, message: str | None) -> None:
        if message == self.store_problem:
            return
        if message is not None:
            log.zones.warning("zone directory: the configuration store cannot be reached "
                              "(%s); trying again", message)
        elif self.store_problem is not None:
            log.zones.info("zone directory: the configuration store answers again")
        self.store_problem = message

    def _remember(self, given: dict[Entry, str]) -> None:
        if given == self.given:
            return
        self.given = dict(given)
        if self.record is not None:
            _write_record(self.record, self.given)


_PENDING: set[asyncio.Task[None]] = set()


def _set(table: dict[Entry, str], entry: Entry, value: str | None) -> None:
    if value is None:
        table.pop(entry, None)
    else:
        table[entry] = value


def _read_record(path: Path | None) -> dict[Entry, str] | None:
    if path is None or not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {(str(item["section"]), str(item["zone"])): str(item["digest"])
                for item in raw["given"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.zones.warning("ignoring %s (%s): edits to files made while gtm was down and "
                          "that differ from the live configuration need gtm zones apply",
                          path, exc)
        return None


def _write_record(path: Path, given: dict[Entry, str]) -> None:
    body = {"given": [{"section": s, "zone": z, "digest": d}
                      for (s, z), d in sorted(given.items())]}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(body, indent=1) + "\n")


def take_back(directory: Path, zone: str, live: dict[str, Any]) -> dict[str, Any]:
    """``live`` with ``zone``'s entries as its files give them (`gtm zones apply`).
    Entries the files do not have (state set with `gtm steer`) are left as they are."""
    read = read_zone_dir(directory, only=zone)
    if zone in read.errors:
        raise read.errors[zone]
    if not read.values:
        raise ConfigError(f"no {zone.rstrip('.')}{ZONE_SUFFIX} or "
                          f"{zone.rstrip('.')}{STEERING_SUFFIX} here", str(directory))
    validate_zone_files(directory, zone)
    return with_entries(live, dict(read.values))

