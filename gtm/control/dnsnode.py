"""Wiring a DNS worker to the control plane: each new version swaps its zones at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gtm import log, metrics
from gtm.config.document import CompiledConfig
from gtm.control.cookies import apply_cookie_secrets
from gtm.control.events import EventLog
from gtm.control.fanout import RedisFanout
from gtm.control.follower import ConfigFollower, FollowerSettings
from gtm.control.notify import Notifier
from gtm.control.service import ConfigService
from gtm.control.zoneops import ZoneOperations
from gtm.dns.stats import Stats
from gtm.sealing import SecretKey, key_file, read_key
from gtm.serving.service import DnsService


async def follow_dns(
    service: DnsService, settings: FollowerSettings, worker: int = 0
) -> ConfigFollower:
    """Start following; returns once the snapshot (or a first version) is being served."""
    if worker:  # every worker reports on its own, so `gtm status` shows a stuck one
        settings = replace(settings, node_id=f"{settings.node_id}/{worker}")
    secret_key = _secret_key(settings)
    # The first worker notifies secondaries; every worker answers transfers and updates.
    operations = ZoneOperations(secret_key, notifier=None if worker else
                                Notifier(notice_source(service)))

    async def apply(version: int, compiled: CompiledConfig) -> None:
        if service.engine.awaiting_config:
            log.dns.info("answering from version %d from now on", version)
        # Both before the next packet: the swap clears the SERVFAIL answers cached so far.
        service.engine.awaiting_config = False
        apply_cookie_secrets(service.engine.cookies, compiled, secret_key)
        service.serve_zones(compiled.zones)
        operations.apply(version, compiled)
        for zone in compiled.zones.zones.values():
            metrics.zone_serial.labels(zone.origin.to_text()).set(zone.serial)

    service.engine.awaiting_config = True
    follower = ConfigFollower(settings, apply)
    report_split(follower, service)
    operations.service = _writer(follower, settings)
    service.engine.operations = operations
    follower.closers.append(operations.close)
    await follower.start()
    if service.engine.awaiting_config:
        log.dns.warning("no configuration yet (no usable snapshot in %s, and no version from "
                        "the store): answering SERVFAIL to every query until one arrives",
                        settings.state_dir)
    return follower


def _writer(follower: ConfigFollower, settings: FollowerSettings) -> ConfigService:
    """Updates are written to the store this node follows, announced as the API does."""
    fanout = RedisFanout(settings.redis_url, settings.namespace) if settings.redis_url \
        else None
    events = EventLog(follower.store, None, settings.namespace)
    writer = ConfigService(follower.store, fanout, events=events)

    async def close() -> None:
        await events.close()
        if fanout is not None:
            await fanout.close()

    follower.closers.append(close)
    return writer


def notice_source(service: DnsService) -> str | None:
    """NOTIFY leaves from the address the node listens on (a wildcard: the kernel's)."""
    host = service.settings.listen[0].host if service.settings.listen else None
    return None if host in (None, "0.0.0.0", "::") else host


def _secret_key(settings: FollowerSettings) -> SecretKey | None:
    path = key_file(settings.secret_key_file)
    return read_key(path) if path is not None else None


def answers_per_region(stats: Stats) -> dict[str, int]:
    """Steered answers per region since this worker started, every name and decision
    (gtm_dns_steered_answers_total added up by region): the node's DNS traffic split."""
    split: dict[str, int] = {}
    for tally in list(stats.tallies.values()):  # read beside the hot path: a copy
        if tally.count and tally.region:
            split[tally.region] = split.get(tally.region, 0) + tally.count
    return split


def report_split(follower: ConfigFollower, service: DnsService) -> None:
    """Each status report carries ``info.dns_split`` (the status page adds the live
    nodes' up), beside whatever else it reports."""
    report_also(follower, lambda: {"dns_split": answers_per_region(service.engine.stats)})


def report_also(follower: ConfigFollower, more: Callable[[], dict[str, Any]]) -> None:
    """Add to what the follower reports, keeping what it reported already."""
    before = follower.status_extra
    follower.status_extra = (lambda: {**before(), **more()}) if before is not None else more
