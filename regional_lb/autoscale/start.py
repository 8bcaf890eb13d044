"""Starting a balancer's scaler: only when a pool has ``[lb.pools.autoscale]``.

The scale store is ``[lb.autoscale] store``, else the balancer's ``redis_url``, else an
SQLite file of this host, per region (``$TMPDIR/gtm-autoscale-<uid>/<region>.scale.db``:
the balancers of one region on one host share it; across hosts, name Redis). `gtm up`
gives its control plane's database file, or its Redis (:func:`with_scale_store`).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from gtm.scalestore import open_scale_store
from regional_lb.config import LbConfig


def scale_store_url(config: LbConfig) -> str:
    settings = config.autoscale
    if settings.store:
        return settings.store
    if config.redis_url:
        return config.redis_url
    return f"sqlite://{local_dir() / (config.region + '.scale.db')}"


def local_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"gtm-autoscale-{os.getuid()}"


def with_scale_store(config: LbConfig, url: str) -> LbConfig:
    """The store of a config that names none (and has no redis_url): ``url``."""
    if config.autoscale.store or config.redis_url:
        return config
    return replace(config, autoscale=replace(config.autoscale, store=url))


async def start_scaler(handle: Any, index: int) -> Any:
    """A running Scaler for the handle's balancer, or None (no pool scales)."""
    config: LbConfig = handle.snapshot.config
    if not any(pool.autoscale is not None for pool in config.pools):
        return None
    url = scale_store_url(config)
    from regional_lb.autoscale.scaler import Scaler, default_member

    member = f"{config.autoscale.member}/{index}" if config.autoscale.member \
        else default_member(index)
    scaler = Scaler(handle, open_scale_store(url, config.autoscale.namespace), member)
    await scaler.start()
    handle.reporter.growth = scaler.growth
    return scaler


def stop_local_backends(handle: Any) -> None:
    """The processes the process actuator started for this balancer's pools (`gtm up`'s
    shutdown: it leaves nothing running behind it)."""
    from regional_lb.autoscale.actuators import ProcessActuator

    config: LbConfig = handle.snapshot.config
    for pool in config.pools:
        spec = pool.autoscale.actuator if pool.autoscale is not None else None
        if spec is not None and spec.type == "process":
            ProcessActuator(spec, config.autoscale.state_dir).stop_all_sync()
