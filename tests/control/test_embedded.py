"""The embedded default: API and DNS engine in one process, seeded from a zone directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gtm.config.settings import DnsSettings
from gtm.control.embedded import start_embedded
from gtm.dns.answer import ZoneSet
from tests.control.apiclient import Api
from tests.control.conftest import example_document

REPO_ZONES = Path(__file__).resolve().parents[2] / "zones"


class FakeEngine:
    def __init__(self) -> None:
        self.swapped: list[ZoneSet] = []
        self.cookies = None  # a fake with cookies off: no secret is stored

    def swap(self, zones: ZoneSet) -> None:
        self.swapped.append(zones)


class FakeService:
    def __init__(self) -> None:
        self.engine = FakeEngine()
        self.settings = DnsSettings(listen=())  # NOTIFY leaves from the kernel's choice

    def serve_zones(self, zones: ZoneSet) -> None:
        # DnsService.serve_zones merges health facts first; with none, it is a swap.
        self.engine.swap(zones)


async def test_seeded_from_zones_and_changes_swap_in(tmp_path: Path) -> None:
    service: Any = FakeService()
    embedded = await start_embedded(service, REPO_ZONES, tmp_path, port=0)
    api = Api(embedded.plane.url, embedded.plane.admin_token_path.read_text().strip())
    try:
        assert embedded.follower.version == 1
        first = service.engine.swapped[-1]
        assert len(first.zones) == len(list(REPO_ZONES.glob("*.zone")))
        status, _, _ = await api.call("PUT", "/v1/config", {"document": example_document()},
                                      if_match=1)
        assert status == 201
        await embedded.follower.wait_for_version(2, timeout=2)
        assert len(service.engine.swapped[-1].zones) == 1
    finally:
        await api.close()
        await embedded.stop()
