"""A fresh `gtm serve --control` node (no snapshot) whose store is unreachable: it has
nothing to answer from, so it answers SERVFAIL (resolvers try another server) rather than
REFUSED (not our names), says so in its log, and answers for real once the store is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest

from gtm.control.plane import ControlSettings
from tests.control.conftest import POSTGRES_URL, example_document, running
from tests.control.harness import Nodes, TcpRelay, wait_for_answer

pytestmark = pytest.mark.integration


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    group = Nodes(tmp_path / "nodes")
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
def relay(postgres_url: str) -> Iterator[TcpRelay]:
    parsed = urlparse(postgres_url)
    relay = TcpRelay((parsed.hostname or "127.0.0.1", parsed.port or 5432))
    try:
        yield relay
    finally:
        relay.close()


async def rcode_of(port: int, name: str = "www.example.test.") -> int | None:
    try:
        reply = await dns.asyncquery.udp(dns.message.make_query(name, "A"), "127.0.0.1",
                                         port=port, timeout=1.0)
    except (TimeoutError, OSError, dns.exception.DNSException):
        return None  # not answering yet (still waiting for the store at start)
    return reply.rcode()


async def first_answer(port: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rcode = await rcode_of(port)
        if rcode is not None:
            return rcode
        await asyncio.sleep(0.1)
    raise AssertionError(f"no answer from port {port} in {timeout} s")


async def test_a_fresh_node_without_its_store_answers_servfail_until_it_has_data(
    tmp_path: Path, nodes: Nodes, relay: TcpRelay, namespace: str
) -> None:
    settings = ControlSettings(port=0, state_dir=tmp_path / "control", store_url=POSTGRES_URL,
                               namespace=namespace)
    async with running(settings) as (_plane, api):
        status, _, _ = await api.call("PUT", "/v1/config", {"document": example_document()},
                                      if_match=0)
        assert status == 201
        relay.cut()  # the node's only way to the store
        node = nodes.start("fresh", relay.url(POSTGRES_URL), namespace, reconcile=0.3)
        assert await first_answer(node.port, timeout=15) == dns.rcode.SERVFAIL
        for name in ("www.example.test.", "example.com."):  # ours or not: it cannot know yet
            assert await rcode_of(node.port, name) == dns.rcode.SERVFAIL
        assert "answering SERVFAIL to every query until one arrives" in node.log()
        relay.restore()
        await wait_for_answer(node.port, "192.0.2.1", timeout=10)
        assert await rcode_of(node.port, "example.com.") == dns.rcode.REFUSED
        assert "answering from version 1 from now on" in node.log()
