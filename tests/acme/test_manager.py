"""The ACME manager inside a balancer (in this process), against Pebble, with a real
`gtm serve` answering Pebble's lookups: renewal when expiry nears, and an order the
CA cannot validate, which leaves the placeholder serving and is retried."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from regional_lb.acme_store import held_pair
from regional_lb.node import start_balancer
from tests.acme.pebble import Pebble, start_pebble
from tests.acme.regions import REGION_HOST, WWW, example_zones, region_config, served
from tests.integration.servers import ServerFactory, free_port

pytestmark = pytest.mark.integration

WWW_AND_NOWHERE = WWW + """
[[lb.acme.certificates]]
name = "nowhere"
domains = ["nowhere.example.test"]
"""


def dns_and_pebble(gtm_server: ServerFactory, root: Path,
                   eab_keys: dict[str, str] | None = None) -> tuple[Pebble, dict[str, int]]:
    """`gtm serve` with the example zone (Pebble's resolver), a Pebble, and free ports."""
    dns = gtm_server(example_zones(root))
    pebble = start_pebble(root, dns.port, free_port((REGION_HOST,)), eab_keys)
    return pebble, {"admin": free_port((REGION_HOST,)), "https": free_port((REGION_HOST,)),
                    "backend": free_port(("127.0.9.101",)), "dns": dns.port}


async def until(condition, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def test_renewal_near_expiry_and_a_failed_validation(gtm_server: ServerFactory,
                                                     tmp_path: Path) -> None:
    pebble, ports = dns_and_pebble(gtm_server, tmp_path)
    config = region_config(tmp_path / "region.toml", pebble, ports, WWW_AND_NOWHERE)
    root = pebble.root_pem(tmp_path / "root.pem")
    output = tmp_path / "certs"

    async def main() -> None:
        handle = await start_balancer(config)
        try:
            manager = handle.acme
            assert manager is not None
            states = manager.states
            await until(lambda: states["www"].issued_at is not None
                        and states["nowhere"].failures >= 1)
            first = held_pair(output, "www")
            assert first is not None and not first.placeholder

            # The CA could not reach nowhere.example.test: its placeholder keeps serving,
            # the CA's reason is kept, and another attempt is scheduled.
            nowhere = held_pair(output, "nowhere")
            assert nowhere is not None and nowhere.placeholder
            error = states["nowhere"].last_error or ""
            assert "nowhere.example.test" in error and "127.0.9.250" in error, error
            assert states["nowhere"].next_at > dt.datetime.now(dt.UTC).timestamp()

            # A day before expiry the next pass renews, and the listener serves it.
            before = await asyncio.to_thread(served, ports["https"], "www.example.test", root)
            assert before is not None
            await manager.tick(now=first.not_after - dt.timedelta(days=1))
            renewed = held_pair(output, "www")
            assert renewed is not None and renewed.not_after >= first.not_after
            after = await asyncio.to_thread(served, ports["https"], "www.example.test", root)
            assert after is not None and after.serial_number != before.serial_number
            # Far from expiry, a pass orders nothing.
            issued = states["www"].issued_at
            await manager.tick()
            assert states["www"].issued_at == issued
        finally:
            await handle.stop(grace=0, deadline=1)

    try:
        asyncio.run(asyncio.wait_for(main(), 50))
    finally:
        pebble.stop()


EAB_KEY = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"  # Pebble's example


def test_a_ca_that_requires_external_account_binding(gtm_server: ServerFactory,
                                                     tmp_path: Path) -> None:
    pebble, ports = dns_and_pebble(gtm_server, tmp_path, {"kid-1": EAB_KEY})
    unbound = region_config(tmp_path / "unbound" / "region.toml", pebble, ports, WWW)
    (tmp_path / "eab.key").write_text(EAB_KEY + "\n")
    bound = region_config(tmp_path / "bound" / "region.toml", pebble, ports,
                          f'eab_kid = "kid-1"\neab_hmac_key_file = "{tmp_path / "eab.key"}"\n'
                          + WWW)

    async def main() -> None:
        handle = await start_balancer(unbound)
        try:
            assert handle.acme is not None
            state = handle.acme.states["www"]
            await until(lambda: state.failures >= 1)
            assert "requires external account binding" in (state.last_error or "")
        finally:
            await handle.stop(grace=0, deadline=1)
        handle = await start_balancer(bound)
        try:
            assert handle.acme is not None
            state = handle.acme.states["www"]
            await until(lambda: state.issued_at is not None or state.failures >= 1)
            assert state.issued_at is not None, state.last_error
        finally:
            await handle.stop(grace=0, deadline=1)

    try:
        asyncio.run(asyncio.wait_for(main(), 50))
    finally:
        pebble.stop()
