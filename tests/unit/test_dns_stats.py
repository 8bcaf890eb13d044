"""The DNS engine's counters, counted on every transport and read by a Prometheus scrape.

A real DnsService on real loopback sockets (the batched and the plain UDP path, and
TCP); the counts are read the way a scrape reads them, from gtm.metrics.REGISTRY.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import dns.message
import pytest
from prometheus_client import generate_latest

from gtm import metrics
from gtm.config.settings import DnsSettings
from gtm.config_reader import Listen
from gtm.dns import udp_batch
from gtm.dns.loader import load_directory
from gtm.serving.service import DnsService
from gtm.serving.sockets import bind_workers

ZONE = """$TTL 300
@    SOA ns.example.net. hostmaster.example.net. 1 7200 900 1209600 60
@    NS  ns.example.net.
www  A   192.0.2.1
"""


def _query(qid: int) -> bytes:
    message = dns.message.make_query("www.example.test.", "A", use_edns=False)
    message.id = qid
    return message.to_wire()


def _scraped(outcome: str) -> float:
    """One outcome's count as the Prometheus text exposition shows it."""
    text = generate_latest(metrics.REGISTRY).decode()
    prefix = f'gtm_dns_responses_total{{outcome="{outcome}"}} '
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, text
    return float(lines[0].removeprefix(prefix))


async def _udp_exchange(port: int, wire: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.setblocking(False)
        await loop.sock_connect(client, ("127.0.0.1", port))
        await loop.sock_sendall(client, wire)
        return await loop.sock_recv(client, 4096)


async def _tcp_exchange(port: int, wire: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(struct.pack("!H", len(wire)) + wire)
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize("batched", [True, False], ids=["recvmmsg", "asyncio"])
def test_cache_hits_are_counted_on_udp_and_tcp_and_reach_the_metrics_registry(
    tmp_path: Path, batched: bool
) -> None:
    if batched and not udp_batch.available():
        pytest.skip("recvmmsg is Linux only")
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "example.test.zone").write_text(ZONE)
    settings = DnsSettings(listen=(Listen("127.0.0.1", 0),), zones_dir=zones,
                           watch_interval=0, udp_batch=batched)
    sockets = bind_workers(settings.listen, 1)[0]
    port = sockets.udp[0].getsockname()[1]
    before_hits, before_answered = _scraped("cache_hit"), _scraped("answered")

    async def main() -> DnsService:
        service = DnsService(settings, sockets, load_directory(zones))
        await service.start()
        try:
            for qid in (1, 2, 3):  # the first is answered, the other two come from the cache
                reply = dns.message.from_wire(await _udp_exchange(port, _query(qid)))
                assert reply.id == qid and reply.answer
            for qid in (4, 5):     # TCP has a cache of its own: one answer, one hit
                reply = dns.message.from_wire(await _tcp_exchange(port, _query(qid)))
                assert reply.id == qid and reply.answer
            assert (service.engine.stats.answered, service.engine.stats.cache_hits) == (2, 3)
            assert _scraped("cache_hit") - before_hits == 3
            assert _scraped("answered") - before_answered == 2
        finally:
            await service.stop(0)
        return service

    asyncio.run(main())
    sockets.close()
    # A stopped service is no longer scraped: its counts leave the totals.
    assert _scraped("cache_hit") == before_hits


def test_every_outcome_is_exported_even_before_any_query() -> None:
    text = generate_latest(metrics.REGISTRY).decode()
    for outcome in ("answered", "cache_hit", "formerr", "notimp", "servfail", "dropped"):
        assert f'gtm_dns_responses_total{{outcome="{outcome}"}}' in text
    assert "# HELP gtm_dns_responses_total " in text
