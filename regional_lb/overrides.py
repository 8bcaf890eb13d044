"""Runtime changes made through the admin API, applied on top of the config file.

They are kept per backend ``{pool: {address: {"weight": n, "state": s, "removed": bool}}}``
and re-applied at every reload, so a SIGHUP does not undo a drain. With several workers
they are written to a JSON file beside the config and every worker re-reads it.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from gtm.config.settings import parse_listen
from gtm.errors import ConfigError
from regional_lb.config import ADMIN_STATES, BackendSpec, LbConfig

Overrides = dict[str, dict[str, dict[str, Any]]]


def overrides_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".runtime.json")


def load_overrides(path: Path | None) -> Overrides:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read runtime overrides: {exc}", str(path)) from exc
    return data if isinstance(data, dict) else {}


def save_overrides(path: Path, overrides: Overrides) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(overrides, indent=1, sort_keys=True))
    os.replace(temporary, path)


def change(overrides: Overrides, pool: str, address: str, **values: Any) -> None:
    """Record one change; validates values so a bad request changes nothing."""
    if "weight" in values and not (isinstance(values["weight"], int)
                                   and 0 <= values["weight"] <= 10000):
        raise ConfigError("must be a whole number from 0 to 10000", "admin", "weight")
    if "state" in values and values["state"] not in ADMIN_STATES:
        raise ConfigError(f"must be one of {', '.join(ADMIN_STATES)}", "admin", "state")
    key = str(parse_listen(address, default_port=0))
    overrides.setdefault(pool, {}).setdefault(key, {}).update(values)


def apply_overrides(config: LbConfig, overrides: Overrides) -> LbConfig:
    pools = []
    for pool in config.pools:
        changes = overrides.get(pool.name, {})
        if not changes:
            pools.append(pool)
            continue
        backends = {b.key: b for b in pool.backends}
        for key, values in changes.items():
            if values.get("removed"):
                backends.pop(key, None)
                continue
            current = backends.get(key) or BackendSpec(parse_listen(key, default_port=0))
            backends[key] = replace(current, weight=values.get("weight", current.weight),
                                    state=values.get("state", current.state))
        pools.append(replace(pool, backends=tuple(backends.values())))
    return replace(config, pools=tuple(pools))
