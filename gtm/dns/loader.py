"""Loading a directory of zone files, and reloading it without losing good zones.

Every file named ``<zone>.zone`` in the directory is one zone, its origin taken from
the file name (``example.test.zone`` serves ``example.test.``). Other files are
only read through ``$INCLUDE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name

from gtm import log
from gtm.dns.answer import ZoneSet
from gtm.dns.zone import Zone, attach_steering, compile_zone, name_key
from gtm.dns.zonefile import read_master_file
from gtm.errors import ConfigError, ZoneError
from gtm.steering.definitions import STEERING_SUFFIX, load_steering_file
from gtm.steering.state import STATE_SUFFIX, load_state

ZONE_SUFFIX = ".zone"

Signature = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class LoadResult:
    zones: ZoneSet
    errors: tuple[ConfigError, ...]
    signature: Signature


def zone_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        raise ZoneError("not a directory", str(directory))
    return sorted(
        p for p in directory.iterdir() if p.name.endswith(ZONE_SUFFIX) and p.is_file()
    )


def origin_of(path: Path) -> dns.name.Name:
    stem = path.name[: -len(ZONE_SUFFIX)]
    try:
        return dns.name.from_text(stem)
    except dns.exception.DNSException as exc:
        raise ZoneError(f"file name is not a zone name: {exc}", str(path)) from exc


def load_zone(path: Path) -> Zone:
    """A zone file, with its steering definitions and state when they sit beside it."""
    origin = origin_of(path)
    records = read_master_file(path, origin)
    zone = compile_zone(origin, records, str(path))
    stem = path.name[: -len(ZONE_SUFFIX)]
    steering_file = path.with_name(stem + STEERING_SUFFIX)
    if not steering_file.exists():
        return zone
    steering = load_steering_file(steering_file, origin)
    state = load_state(path.with_name(stem + STATE_SUFFIX))
    return attach_steering(zone, steering, state)


def signature(directory: Path) -> Signature:
    """What changes when any file under the directory changes (mtime, size or name)."""
    entries = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            entries.append((path, st.st_mtime_ns, st.st_size))
    return tuple(sorted(entries))


def load_directory(directory: Path, previous: ZoneSet | None = None) -> LoadResult:
    """Load every zone; a zone that fails keeps its previous version when there is one."""
    sig = signature(directory)
    zones: list[Zone] = []
    errors: list[ConfigError] = []
    for path in zone_files(directory):
        try:
            zone = load_zone(path)
        except ConfigError as exc:
            errors.append(exc)
            kept = _previous_version(path, previous)
            if kept is not None:
                log.zones.error("%s; still serving serial %d", exc, kept.serial)
                zones.append(kept)
            else:
                log.zones.error("%s", exc)
            continue
        for warning in zone.warnings:
            log.zones.warning("%s", warning)
        zones.append(zone)
    return LoadResult(ZoneSet.of(zones), tuple(errors), sig)


def _previous_version(path: Path, previous: ZoneSet | None) -> Zone | None:
    if previous is None:
        return None
    try:
        return previous.zones.get(name_key(origin_of(path)))
    except ZoneError:
        return None
