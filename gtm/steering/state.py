"""Endpoint and region state: health facts and admin overlays, kept apart.

This is the state set by hand: ``gtm steer endpoint|region`` writes it to the
control plane's document (``state`` section) or to ``<zone>.state.json`` beside the
zone, which the zone watcher picks up like any other file. Probes' health facts are
merged on top of it when zones are served (gtm.health.overlay).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from gtm.atomic import write_atomic
from gtm.config_reader import Reader, read_json_file
from gtm.errors import ConfigError
from gtm.steering.model import Endpoint

Health = Literal["up", "down"]
Admin = Literal["none", "force_up", "force_down", "drain"]
HEALTH_VALUES = ("up", "down")
ADMIN_VALUES = ("none", "force_up", "force_down", "drain")
STATE_SUFFIX = ".state.json"


@dataclass(frozen=True)
class EndpointState:
    health: Health = "up"
    admin: Admin = "none"
    reason: str = ""


@dataclass(frozen=True)
class RegionState:
    health: Health = "up"
    headroom: float | None = None  # 0.0 (saturated) to 1.0 (idle); None: not reported
    reason: str = ""


@dataclass(frozen=True)
class SteeringState:
    endpoints: Mapping[str, EndpointState] = field(default_factory=dict)
    regions: Mapping[str, RegionState] = field(default_factory=dict)

    def endpoint_state(self, name: str) -> EndpointState:
        return self.endpoints.get(name, EndpointState())

    def region_state(self, name: str) -> RegionState:
        return self.regions.get(name, RegionState())

    def healthy(self, endpoint: Endpoint) -> bool:
        """May this endpoint be handed out? Admin overlays win over health facts."""
        state = self.endpoint_state(endpoint.name)
        if state.admin == "force_up":
            return True
        if state.admin in ("force_down", "drain"):
            return False
        return state.health == "up" and self.region_state(endpoint.region).health == "up"

    def why_not(self, endpoint: Endpoint) -> str:
        state = self.endpoint_state(endpoint.name)
        if state.admin in ("force_down", "drain"):
            return f"admin {state.admin}" + (f" ({state.reason})" if state.reason else "")
        if state.health != "up":
            return "health down" + (f" ({state.reason})" if state.reason else "")
        region = self.region_state(endpoint.region)
        return f"region {endpoint.region} down" + (f" ({region.reason})" if region.reason else "")

    def headroom(self, region: str) -> float:
        reported = self.region_state(region).headroom
        return 1.0 if reported is None else reported


def state_path(zones_dir: Path, origin_text: str) -> Path:
    return zones_dir / f"{origin_text.rstrip('.')}{STATE_SUFFIX}"


def load_state(path: Path) -> SteeringState:
    if not path.exists():
        return SteeringState()
    return parse_state(read_json_file(path), str(path))


def parse_state(raw: Any, source: str, where: str = "") -> SteeringState:
    """Admin and health state from a JSON object; errors name ``where`` inside ``source``
    (the zone's path in a document) before the path inside the state."""
    if not isinstance(raw, dict):
        raise ConfigError("state must be an object", source, where or None)
    top = Reader(raw, source, where)
    endpoints = top.child("endpoints")
    regions = top.child("regions")
    return SteeringState(
        {name: _endpoint_state(endpoints.child(name)) for name in endpoints.table},
        {name: _region_state(regions.child(name)) for name in regions.table},
    )


def _endpoint_state(table: Reader) -> EndpointState:
    return EndpointState(table.choice("health", HEALTH_VALUES, "up"),  # type: ignore[arg-type]
                         table.choice("admin", ADMIN_VALUES, "none"),  # type: ignore[arg-type]
                         str(table.value("reason", "")))


def _region_state(table: Reader) -> RegionState:
    headroom = None  # not reported: absent, or null as saved
    if table.value("headroom", None) is not None:
        headroom = table.number("headroom", low=0, high=1, what="a number")
    return RegionState(table.choice("health", HEALTH_VALUES, "up"),  # type: ignore[arg-type]
                       headroom, str(table.value("reason", "")))


def save_state(path: Path, state: SteeringState) -> None:
    """Write atomically (temp file, then rename) so a reader never sees half a file."""
    document = {
        "endpoints": {k: asdict(v) for k, v in sorted(state.endpoints.items())},
        "regions": {k: asdict(v) for k, v in sorted(state.regions.items())},
    }
    write_atomic(path, json.dumps(document, indent=2) + "\n")
