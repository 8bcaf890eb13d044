"""`gtm steer`: set endpoint and region state by hand, until health checks feed it.

It edits ``<zone>.state.json`` beside the zone file; running nodes pick the change
up through their zone watcher (or at once on SIGHUP) and drop cached answers.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import dns.name

from gtm.dns.loader import load_zone
from gtm.errors import ConfigError
from gtm.steering.state import (
    ADMIN_VALUES,
    HEALTH_VALUES,
    EndpointState,
    RegionState,
    SteeringState,
    load_state,
    save_state,
    state_path,
)


def _zone_files(zones_dir: Path, zone: str) -> tuple[Path, Path]:
    origin = dns.name.from_text(zone).to_text().rstrip(".")
    zone_file = zones_dir / f"{origin}.zone"
    if not zone_file.exists():
        raise ConfigError(f"no zone file {zone_file}")
    return zone_file, state_path(zones_dir, origin)


def set_endpoint(
    zones_dir: Path,
    zone: str,
    endpoint: str,
    health: str | None = None,
    admin: str | None = None,
    reason: str = "",
) -> EndpointState:
    zone_file, path = _zone_files(zones_dir, zone)
    steering = load_zone(zone_file).steering
    if steering is None or steering.endpoint(endpoint) is None:
        raise ConfigError(f"zone {zone} has no steered endpoint {endpoint!r}")
    if health is not None and health not in HEALTH_VALUES:
        raise ConfigError(f"health must be one of {HEALTH_VALUES}")
    if admin is not None and admin not in ADMIN_VALUES:
        raise ConfigError(f"admin must be one of {ADMIN_VALUES}")
    state = load_state(path)
    current = state.endpoint_state(endpoint)
    updated = replace(
        current,
        health=health or current.health,  # type: ignore[arg-type]
        admin=admin or current.admin,  # type: ignore[arg-type]
        reason=reason,
    )
    endpoints = {**state.endpoints, endpoint: updated}
    save_state(path, SteeringState(endpoints, state.regions))
    return updated


def set_region(
    zones_dir: Path,
    zone: str,
    region: str,
    health: str | None = None,
    headroom: float | None = None,
    reason: str = "",
) -> RegionState:
    zone_file, path = _zone_files(zones_dir, zone)
    steering = load_zone(zone_file).steering
    if steering is None or region not in steering.regions:
        raise ConfigError(f"zone {zone} has no region {region!r}")
    if health is not None and health not in HEALTH_VALUES:
        raise ConfigError(f"health must be one of {HEALTH_VALUES}")
    if headroom is not None and not 0.0 <= headroom <= 1.0:
        raise ConfigError("headroom must be from 0 to 1")
    state = load_state(path)
    current = state.region_state(region)
    updated = RegionState(
        health=health or current.health,  # type: ignore[arg-type]
        headroom=current.headroom if headroom is None else headroom,
        reason=reason,
    )
    save_state(path, SteeringState(state.endpoints, {**state.regions, region: updated}))
    return updated
