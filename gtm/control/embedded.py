"""The embedded default for `gtm up`: the control plane and a DNS worker in one process.

The store is the SQLite file in the state directory, seeded from the zone
directory on first start; the DNS worker follows that same store object, so a
change is announced in-process and swapped in without Redis or a reconcile. With
``store_url``/``redis_url`` the same code runs against PostgreSQL and Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gtm import log
from gtm.config.document import CompiledConfig, document_from_zone_dir
from gtm.control.cookies import apply_cookie_secrets, ensure_cookie_secret
from gtm.control.dnsnode import notice_source, report_split
from gtm.control.follower import ConfigFollower, FollowerSettings
from gtm.control.notify import Notifier
from gtm.control.plane import ControlPlane, ControlSettings, start_control_plane
from gtm.control.zoneops import ZoneOperations
from gtm.errors import GtmError
from gtm.sealing import read_key
from gtm.serving.service import DnsService

NODE_STATE = "node"  # the node's snapshot, below the state directory


@dataclass
class Embedded:
    plane: ControlPlane
    follower: ConfigFollower

    async def stop(self) -> None:
        await self.follower.stop()
        await self.plane.stop()


async def start_embedded(
    service: DnsService, zones_dir: Path, state_dir: Path, *, host: str = "127.0.0.1",
    port: int = 8080, store_url: str | None = None, redis_url: str | None = None,
    tls: tuple[Path, Path] | None = None, seed_sections: dict[str, Any] | None = None,
    drill_dns: tuple[str, ...] = (),
) -> Embedded:
    """Start the API and make ``service`` serve the stored configuration.

    A store with no version yet starts from the zone directory plus ``seed_sections``
    (gtm up: the example regions' ``lb`` tables)."""
    seed = document_from_zone_dir(zones_dir) if zones_dir.is_dir() else {}
    seed.update(seed_sections or {})
    plane = await start_control_plane(ControlSettings(
        host=host, port=port, store_url=store_url, redis_url=redis_url,
        state_dir=state_dir / "control", seed_document=seed,
        tls_cert=tls[0] if tls else None, tls_key=tls[1] if tls else None,
        drill_dns=drill_dns,
    ))

    secret_key = read_key(plane.settings.resolved_key_file())
    if service.engine.cookies is not None:
        try:  # the deployment's cookie secret, made on the first start
            await ensure_cookie_secret(plane.service, secret_key, "gtm-up")
        except GtmError as exc:
            log.dns.error("no DNS cookie secret in the control plane (%s): this node's "
                          "cookies are its own", exc)

    # Transfers, NOTIFY and updates; updates are changes through the plane's own service.
    operations = ZoneOperations(secret_key, plane.service, Notifier(notice_source(service)))
    service.engine.operations = operations

    async def apply(version: int, compiled: CompiledConfig) -> None:
        apply_cookie_secrets(service.engine.cookies, compiled, secret_key)
        service.serve_zones(compiled.zones)
        operations.apply(version, compiled)

    follower = ConfigFollower(
        FollowerSettings(node_id="embedded", state_dir=state_dir / NODE_STATE,
                         redis_url=redis_url),
        apply, store=plane.store,
    )
    report_split(follower, service)
    follower.closers.append(operations.close)
    await follower.start()
    return Embedded(plane, follower)
