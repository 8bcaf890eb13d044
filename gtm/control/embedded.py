"""The embedded default for `gtm up`: the control plane and a DNS worker in one process.

The store is the SQLite file in the state directory, seeded from the zone
directory on first start; the DNS worker follows that same store object, so a
change is announced in-process and swapped in without Redis or a reconcile. With
``store_url``/``redis_url`` the same code runs against PostgreSQL and Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gtm.config.document import CompiledConfig, document_from_zone_dir
from gtm.control.follower import ConfigFollower, FollowerSettings
from gtm.control.plane import ControlPlane, ControlSettings, start_control_plane
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
    tls: tuple[Path, Path] | None = None, drill_dns: tuple[str, ...] = (),
) -> Embedded:
    """Start the API and make ``service`` serve the stored configuration."""
    seed = document_from_zone_dir(zones_dir) if zones_dir.is_dir() else {}
    plane = await start_control_plane(ControlSettings(
        host=host, port=port, store_url=store_url, redis_url=redis_url,
        state_dir=state_dir / "control", seed_document=seed,
        tls_cert=tls[0] if tls else None, tls_key=tls[1] if tls else None,
        drill_dns=drill_dns,
    ))

    async def apply(version: int, compiled: CompiledConfig) -> None:
        service.serve_zones(compiled.zones)

    follower = ConfigFollower(
        FollowerSettings(node_id="embedded", state_dir=state_dir / NODE_STATE,
                         redis_url=redis_url),
        apply, store=plane.store,
    )
    await follower.start()
    return Embedded(plane, follower)
