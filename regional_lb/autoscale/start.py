"""Starting a balancer's scaler: only when a pool has ``[lb.pools.autoscale]``.

The scale store is ``[lb.autoscale] store``, else the balancer's ``redis_url``, else an
SQLite file beside its config file (``<config>.scale.db``: right for one balancer per
region; balancers of one region on one host must name the same store). `gtm up` gives
its control plane's database file (:func:`with_scale_store`).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from gtm import log
from gtm.scalestore import open_scale_store
from regional_lb.config import LbConfig


def scale_store_url(config: LbConfig) -> str | None:
    settings = config.autoscale
    if settings.store:
        return settings.store
    if config.redis_url:
        return config.redis_url
    source = Path(config.source)
    if source.is_file():
        return f"sqlite://{source.resolve().with_name(source.name + '.scale.db')}"
    return None


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
    if url is None:
        log.scale.error("region %s: pools have autoscale but there is no scale store "
                        "([lb.autoscale] store or redis_url): not scaling", config.region)
        return None
    from regional_lb.autoscale.scaler import Scaler, default_member

    member = f"{config.autoscale.member}/{index}" if config.autoscale.member \
        else default_member(index)
    scaler = Scaler(handle, open_scale_store(url, config.autoscale.namespace), member)
    await scaler.start()
    handle.reporter.growth = scaler.growth
    return scaler
