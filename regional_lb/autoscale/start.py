"""Starting a balancer's scaler: only when a pool has ``[lb.pools.autoscale]``.

The scale store (where the region's balancers meet, and the control plane reads them) is
the first of: ``[lb.autoscale] store``; the balancer's ``redis_url``; its control
plane's (``[lb.tls] control_store``, or the one it follows with `gtm lb serve --control`
or runs beside in `gtm up`: that plane's Redis, else its PostgreSQL store or SQLite
file); else an SQLite file of this host in its state directory
(``[lb.autoscale] state_dir``, by default the config file's directory):
``<region>.scale.db``, shared by the balancers of one region on one host.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from gtm.scalestore import open_scale_store
from regional_lb.autoscale.files import state_dir
from regional_lb.config import LbConfig


def scale_store_url(config: LbConfig) -> tuple[str, str]:
    """The store's URL and namespace."""
    settings = config.autoscale
    if settings.store:
        return settings.store, settings.namespace
    if config.redis_url:
        return config.redis_url, settings.namespace
    if config.tls.control_store:
        return config.tls.control_store, config.tls.control_namespace
    return f"sqlite://{state_dir(config) / (config.region + '.scale.db')}", settings.namespace


def with_scale_store(config: LbConfig, url: str | None, namespace: str | None = None,
                     directory: Path | None = None) -> LbConfig:
    """The store (``url``, in ``namespace``) of a config that names none and has no
    redis_url, and the state directory of one that has none."""
    settings = config.autoscale
    if url and not (settings.store or config.redis_url):
        settings = replace(settings, store=url, namespace=namespace or settings.namespace)
    if directory is not None and settings.state_dir is None:
        settings = replace(settings, state_dir=directory)
    return replace(config, autoscale=settings)


async def start_scaler(handle: Any, index: int) -> Any:
    """A running Scaler for the handle's balancer, or None (no pool scales)."""
    config: LbConfig = handle.snapshot.config
    if not any(pool.autoscale is not None for pool in config.pools):
        return None
    url, namespace = scale_store_url(config)
    from regional_lb.autoscale.scaler import Scaler, default_member

    member = f"{config.autoscale.member}/{index}" if config.autoscale.member \
        else default_member(index)
    scaler = Scaler(handle, open_scale_store(url, namespace), member)
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
            ProcessActuator(spec, state_dir(config)).stop_all_sync()
