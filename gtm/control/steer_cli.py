"""`gtm steer`: set endpoint and region state by hand (admin state, or health as an
operator's fact; probes' facts are merged on top, gtm.health.overlay).

Two places hold the state, and the command writes whichever the nodes follow:
- a zone directory: ``<zone>.state.json`` beside the zone file, picked up by each
  node's zone watcher (or at once on SIGHUP);
- the control plane: the document's ``state`` section, as a new version with an
  author and a message, like any other change (``gtm up`` serves this way).
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import dns.name

from gtm.control.client import Client
from gtm.dns.loader import load_zone
from gtm.errors import ConfigError
from gtm.steering.definitions import parse_steering
from gtm.steering.model import Steering
from gtm.steering.state import (
    RegionState,
    SteeringState,
    load_state,
    parse_state,
    save_state,
    state_path,
)


def with_endpoint(
    state: SteeringState, endpoint: str, health: str | None, admin: str | None, reason: str
) -> SteeringState:
    current = state.endpoint_state(endpoint)
    updated = replace(
        current,
        health=health or current.health,  # type: ignore[arg-type]
        admin=admin or current.admin,  # type: ignore[arg-type]
        reason=reason,
    )
    return SteeringState({**state.endpoints, endpoint: updated}, state.regions)


def with_region(
    state: SteeringState, region: str, health: str | None, headroom: float | None, reason: str
) -> SteeringState:
    current = state.region_state(region)
    updated = RegionState(
        health=health or current.health,  # type: ignore[arg-type]
        headroom=current.headroom if headroom is None else headroom,
        reason=reason,
    )
    return SteeringState(state.endpoints, {**state.regions, region: updated})


def state_document(state: SteeringState) -> dict[str, Any]:
    return {
        "endpoints": {k: asdict(v) for k, v in sorted(state.endpoints.items())},
        "regions": {k: asdict(v) for k, v in sorted(state.regions.items())},
    }


def check_target(steering: Steering | None, zone: str, endpoint: str | None,
                 region: str | None) -> None:
    if steering is None:
        raise ConfigError(f"zone {zone} has no steering definitions")
    if endpoint is not None and steering.endpoint(endpoint) is None:
        raise ConfigError(f"zone {zone} has no steered endpoint {endpoint!r}")
    if region is not None and region not in steering.regions:
        raise ConfigError(f"zone {zone} has no region {region!r}")
    # Values are checked again by the state parser; this catches typos in names.


# ---- a zone directory ----


def change_in_directory(
    zones_dir: Path, zone: str, endpoint: str | None, region: str | None,
    change: Any,
) -> SteeringState:
    origin = dns.name.from_text(zone).to_text().rstrip(".")
    zone_file = zones_dir / f"{origin}.zone"
    if not zone_file.exists():
        raise ConfigError(f"no zone file {zone_file}")
    check_target(load_zone(zone_file).steering, zone, endpoint, region)
    path = state_path(zones_dir, origin)
    updated = change(load_state(path))
    parse_state(state_document(updated), str(path))  # refuse what a node would refuse
    save_state(path, updated)
    return updated


# ---- the control plane ----


def change_through_api(
    api: Client, zone: str, endpoint: str | None, region: str | None, change: Any,
    message: str,
) -> tuple[SteeringState, int]:
    """Read the live document, change its state section, write it based on that version
    (a concurrent change gets 409 rather than being overwritten)."""
    live = api.call("GET", "/v1/config")
    version = int(live.body["version"])
    document = live.body["document"]
    zone_name = dns.name.from_text(zone).to_text()
    steering_raw = _zone_entry(document.get("steering", {}), zone_name)
    if steering_raw is None:
        raise ConfigError(f"zone {zone_name} has no steering in version {version}")
    check_target(parse_steering(steering_raw, dns.name.from_text(zone_name), "api"),
                 zone, endpoint, region)
    states = dict(document.get("state", {}))
    key = next((k for k in states if k.rstrip(".") == zone_name.rstrip(".")), zone_name)
    updated = change(parse_state(states.get(key, {}), "api"))
    states[key] = state_document(updated)
    reply = api.call("PUT", "/v1/config/sections/state",
                     {"value": states, "message": message}, if_match=version)
    return updated, int(reply.body["version"]["version"])


def _zone_entry(table: dict[str, Any], zone_name: str) -> Any:
    for name, value in table.items():
        if name.rstrip(".").lower() == zone_name.rstrip(".").lower():
            return value
    return None

