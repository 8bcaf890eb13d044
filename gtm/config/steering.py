"""Steering in the control plane's document: definitions and admin state per zone.

``{"steering": {"gslb.example.test.": {regions, pools, names}},
   "state": {"gslb.example.test.": {"endpoints": {...}, "regions": {...}}}}``

Admin state (drain, force down, headroom set by hand) lives in the document too,
so every such action is a versioned, audited change like any other. A zone
directory carries the same data as ``<zone>.steering.toml`` and ``<zone>.state.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dns.name

from gtm.config_reader import read_json_file
from gtm.dns.zone import Zone, attach_steering, name_key
from gtm.errors import ConfigError
from gtm.steering.definitions import STEERING_SUFFIX, parse_steering
from gtm.steering.state import STATE_SUFFIX, SteeringState, parse_state
from gtm.toml_input import read_toml

STEERING = "steering"
STATE = "state"


def check_zone_table(value: Any, source: str, path: str) -> Any:
    """The shape both sections share: zone name -> object. Details are checked at attach."""
    if not isinstance(value, dict):
        raise ConfigError("must be an object of zone name to definitions", source, path)
    for zone, body in value.items():
        if not isinstance(body, dict):
            raise ConfigError("must be an object", source, f"{path}[{json.dumps(zone)}]")
    return value


def attach_all(
    zones: list[Zone], steering: Mapping[str, Any], state: Mapping[str, Any], source: str
) -> list[Zone]:
    """Zones with their steering attached; every error names its path in the document."""
    by_key = {zone.key: zone for zone in zones}
    for table, label in ((steering, STEERING), (state, STATE)):
        for zone_name in table:
            if _key(zone_name) not in by_key:
                raise ConfigError("no such zone in the document's zones", source,
                                  f"{label}[{json.dumps(zone_name)}]")
    out = []
    for zone in zones:
        name = _name_in(steering, zone) or _name_in(state, zone)
        if name is None or _name_in(steering, zone) is None:
            out.append(zone)
            continue
        out.append(_attach_one(zone, name, steering, state, source))
    return out


def _attach_one(
    zone: Zone, name: str, steering: Mapping[str, Any], state: Mapping[str, Any], source: str
) -> Zone:
    prefix = f"{STEERING}[{json.dumps(name)}]"
    definitions = parse_steering(steering[name], zone.origin, source, where=prefix)
    state_name = _name_in(state, zone)
    current = SteeringState()
    if state_name is not None:
        current = parse_state(state[state_name], source, f"{STATE}[{json.dumps(state_name)}]")
    try:
        return attach_steering(zone, definitions, current)
    except ConfigError as exc:
        raise ConfigError(exc.reason, source, f"{prefix}.{exc.where}") from exc


def _key(zone_name: str) -> tuple[bytes, ...]:
    return name_key(dns.name.from_text(zone_name))


def _name_in(table: Mapping[str, Any], zone: Zone) -> str | None:
    for name in table:
        if _key(name) == zone.key:
            return name
    return None


def sections_from_zone_dir(directory: Path) -> dict[str, dict[str, Any]]:
    """The steering and state sections for a zone directory's files (to seed a store).

    A latency ``table_file`` is inlined as ``networks``: a document has no directory.
    A file that cannot be read or parsed is a ConfigError naming it.
    """
    steering: dict[str, Any] = {}
    state: dict[str, Any] = {}
    for path in sorted(directory.glob(f"*{STEERING_SUFFIX}")):
        stem = path.name.removesuffix(STEERING_SUFFIX)
        zone_name = stem.rstrip(".") + "."
        steering[zone_name] = steering_from_file(path)
        state_file = directory / f"{stem}{STATE_SUFFIX}"
        if state_file.exists():
            state[zone_name] = state_from_file(state_file)
    sections: dict[str, dict[str, Any]] = {}
    if steering:
        sections[STEERING] = steering
    if state:
        sections[STATE] = state
    return sections


def steering_from_file(path: Path) -> dict[str, Any]:
    """A ``<zone>.steering.toml`` as the document holds it (tables inlined)."""
    return _inline_tables(read_toml(path), path)


def state_from_file(path: Path) -> dict[str, Any]:
    """A ``<zone>.state.json`` as the document holds it."""
    value = read_json_file(path)
    if not isinstance(value, dict):
        raise ConfigError("state must be an object", str(path))
    return value


def _inline_tables(definitions: dict[str, Any], path: Path) -> dict[str, Any]:
    for name in definitions.get("names", {}).values():
        for spec in name.get("filters", []) if isinstance(name, dict) else []:
            if isinstance(spec, dict) and "table_file" in spec:
                table = path.parent / str(spec.pop("table_file"))
                try:
                    spec["networks"] = json.loads(table.read_text(encoding="utf-8"))
                except OSError as exc:
                    raise ConfigError(f"cannot read the latency table {table}: "
                                      f"{exc.strerror}", str(path)) from exc
                except ValueError as exc:
                    raise ConfigError(f"latency table {table} is not valid JSON: {exc}",
                                      str(path)) from exc
    return definitions
