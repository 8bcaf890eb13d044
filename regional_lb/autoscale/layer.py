"""The scaler's backends, applied to a config at compile: ``{pool: {address: entry}}``.

An entry is ``{"state": "enabled" | "drain" | "removed", "added_at": unix seconds}``:
backends the scaler added (serving, or draining before their removal), and backends of
the file it drained or removed. The layer is kept in the region's scale store (every
balancer of the region applies the same one) and goes between the file (or followed
table) and the admin API's overrides: the file says what a pool is, the scaler what it
grew to, an operator's drain still wins. Every address is checked like a backend of the
file (allowed_backend_networks), so an actuator cannot add what a file could not.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gtm.config_reader import Reader
from regional_lb.config import BackendSpec, LbConfig, backend_address

Layer = dict[str, dict[str, dict[str, Any]]]
STATES = ("enabled", "drain", "removed")


def apply_layer(config: LbConfig, layer: Layer) -> LbConfig:
    if not layer:
        return config
    pools = []
    for pool in config.pools:
        entries = layer.get(pool.name)
        if not entries or pool.autoscale is None:
            pools.append(pool)
            continue
        backends = {b.key: b for b in pool.backends}
        for key, entry in entries.items():
            where = f"autoscale.{pool.name}.{key}"
            state = Reader(entry, "scale store", where).choice("state", STATES)
            if state == "removed":
                backends.pop(key, None)
            elif key in backends:
                backends[key] = replace(backends[key], state=state)
            else:
                address = backend_address(Reader({"address": key}, "scale store", where),
                                          config.allowed_backend_networks)
                backends[str(address)] = BackendSpec(address, state=state)
        pools.append(replace(pool, backends=tuple(backends.values())))
    return replace(config, pools=tuple(pools))


def serving(config: LbConfig, pool: str, layer: Layer) -> list[str]:
    """The pool's backends that take new requests (not draining), layer applied."""
    entries = layer.get(pool, {})
    keys = [b.key for b in config.pool(pool).backends if b.state == "enabled"
            and entries.get(b.key, {}).get("state", "enabled") == "enabled"]
    keys += [k for k, e in entries.items() if e.get("state") == "enabled" and k not in keys
             and k not in {b.key for b in config.pool(pool).backends}]
    return keys
