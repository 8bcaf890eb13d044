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
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read state: {exc}", str(path)) from exc
    return parse_state(raw, str(path))


def parse_state(raw: Any, source: str) -> SteeringState:
    if not isinstance(raw, dict):
        raise ConfigError("state must be an object", source)
    endpoints = {
        name: _endpoint_state(value, source, f"endpoints.{name}")
        for name, value in _table(raw, "endpoints", source).items()
    }
    regions = {
        name: _region_state(value, source, f"regions.{name}")
        for name, value in _table(raw, "regions", source).items()
    }
    return SteeringState(endpoints, regions)


def _table(raw: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError("must be an object", source, key)
    return value


def _endpoint_state(value: Any, source: str, where: str) -> EndpointState:
    if not isinstance(value, dict):
        raise ConfigError("must be an object", source, where)
    health = value.get("health", "up")
    admin = value.get("admin", "none")
    if health not in HEALTH_VALUES:
        raise ConfigError(f"health must be one of {HEALTH_VALUES}", source, f"{where}.health")
    if admin not in ADMIN_VALUES:
        raise ConfigError(f"admin must be one of {ADMIN_VALUES}", source, f"{where}.admin")
    return EndpointState(health, admin, str(value.get("reason", "")))


def _region_state(value: Any, source: str, where: str) -> RegionState:
    if not isinstance(value, dict):
        raise ConfigError("must be an object", source, where)
    health = value.get("health", "up")
    headroom = value.get("headroom")
    if health not in HEALTH_VALUES:
        raise ConfigError(f"health must be one of {HEALTH_VALUES}", source, f"{where}.health")
    if headroom is not None and not (
        isinstance(headroom, int | float) and 0.0 <= headroom <= 1.0
    ):
        raise ConfigError("headroom must be a number from 0 to 1", source, f"{where}.headroom")
    return RegionState(health, None if headroom is None else float(headroom),
                       str(value.get("reason", "")))


def save_state(path: Path, state: SteeringState) -> None:
    """Write atomically (temp file, then rename) so a reader never sees half a file."""
    document = {
        "endpoints": {k: asdict(v) for k, v in sorted(state.endpoints.items())},
        "regions": {k: asdict(v) for k, v in sorted(state.regions.items())},
    }
    write_atomic(path, json.dumps(document, indent=2) + "\n")
