"""Runtime changes made through the admin API, applied on top of the config file.

They are kept per pool and backend, ``{pool: {address: entry}}``, where an entry is one of

* ``{"added": true, "weight": n, "state": s}``: a backend the admin API added;
* ``{"weight": n, "state": s}`` (either key): changes to a backend the file lists;
* ``{"removed": true}``: a backend the file lists that the admin API removed.

Only what is live is kept: removing an added backend deletes its entry, removing a
file's backend leaves the marker alone, and entries about backends or pools the file no
longer lists are dropped (:func:`prune`). They are re-applied at every reload, so a
SIGHUP does not undo a drain, and written to ``FILE.runtime.json`` beside the config so
that restarts and every worker see them. Every entry goes through the config's own
backend reader (:func:`regional_lb.config.parse_backend` and its parts), so a
hand-edited file is refused for the same reasons as a bad admin request.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from gtm.atomic import SHARED, write_atomic
from gtm.config_reader import Reader
from gtm.errors import ConfigError
from regional_lb.config import BackendSpec, LbConfig, backend_address, backend_values

Overrides = dict[str, dict[str, dict[str, Any]]]
ENTRY_KEYS = ("added", "removed", "weight", "state")


def overrides_path(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".runtime.json")


def load_overrides(path: Path | None) -> Overrides:
    if path is None or not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise ConfigError(f"cannot read runtime overrides: {exc}", str(path)) from exc
    if not (isinstance(data, dict) and all(
            isinstance(pool, dict) and all(isinstance(e, dict) for e in pool.values())
            for pool in data.values())):
        raise ConfigError("must be {pool: {address: {...}}} (delete it to go back to the "
                          "config file)", str(path))
    for pool in data.values():
        for entry in pool.values():
            if entry.get("removed") is False:  # written before "added" existed
                del entry["removed"]
                entry["added"] = True
    return data


def save_overrides(path: Path, overrides: Overrides) -> None:
    write_atomic(path, json.dumps(overrides, indent=1, sort_keys=True), SHARED)


def _file_keys(base: LbConfig, pool: str) -> set[str]:
    return {b.key for p in base.pools if p.name == pool for b in p.backends}


def add(overrides: Overrides, base: LbConfig, pool: str, key: str,
        values: dict[str, Any]) -> None:
    """Add a backend (or bring back one of the file's that was removed), with values."""
    entry = overrides.setdefault(pool, {}).setdefault(key, {})
    entry.pop("removed", None)
    if key not in _file_keys(base, pool):
        entry["added"] = True
    entry.update(values)


def remove(overrides: Overrides, base: LbConfig, pool: str, key: str) -> None:
    """Remove a backend: its changes go; a file's backend keeps a marker, nothing else."""
    entries = overrides.setdefault(pool, {})
    if key in _file_keys(base, pool):
        entries[key] = {"removed": True}
    else:
        entries.pop(key, None)


def change(overrides: Overrides, pool: str, key: str, values: dict[str, Any]) -> None:
    """Change a live backend's weight or state (values already checked by the caller)."""
    overrides.setdefault(pool, {}).setdefault(key, {}).update(values)


def prune(overrides: Overrides, base: LbConfig) -> Overrides:
    """What still means something against ``base``: no empty entries, no entries about
    backends or pools the file no longer has (except backends the admin API added)."""
    kept: Overrides = {}
    for pool in base.pools:
        listed = {b.key for b in pool.backends}
        entries = {key: dict(entry) for key, entry in overrides.get(pool.name, {}).items()
                   if entry and (entry.get("added") or key in listed)}
        if entries:
            kept[pool.name] = entries
    return kept


def apply_overrides(config: LbConfig, overrides: Overrides) -> LbConfig:
    source = str(overrides_path(Path(config.source)))
    pools = []
    for pool in config.pools:
        changes = overrides.get(pool.name, {})
        if not changes:
            pools.append(pool)
            continue
        backends = {b.key: b for b in pool.backends}
        for key, entry in changes.items():
            reader = Reader(entry, source, f"{pool.name}.{key}", ENTRY_KEYS)
            added, removed = reader.flag("added", False), reader.flag("removed", False)
            if removed:
                backends.pop(key, None)
            elif key in backends:
                backends[key] = replace(backends[key], **backend_values(reader))
            elif added:  # checked like a backend of the file: address, networks, values
                address = backend_address(Reader({"address": key}, source, reader.where),
                                          config.allowed_backend_networks)
                backends[str(address)] = BackendSpec(address, **backend_values(reader))
            # else: changes to a backend the file no longer lists; prune() drops them
        pools.append(replace(pool, backends=tuple(backends.values())))
    return replace(config, pools=tuple(pools))
