"""Fixtures that run real `gtm` processes on loopback and stop them by PID afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.servers import (
    GtmServer,
    ServerFactory,
    copy_example_zones,
    example_regions_held,
    ipv6_loopback_available,
)

BIG_ZONE = "\n".join(
    [
        "; Answers too big for classic (512) and EDNS (1232) UDP responses.",
        "$TTL 300",
        "@       SOA  ns1 hostmaster 1 7200 1800 1209600 60",
        "@       NS   ns1",
        "ns1     A    127.0.0.1",
        *(f"medium  A    127.1.0.{i}" for i in range(1, 51)),
        *(f"large   A    127.2.{i // 250}.{i % 250 + 1}" for i in range(200)),
        "",
    ]
)


@pytest.fixture
def zones_dir(tmp_path: Path) -> Path:
    """A private copy of the repository's example zones."""
    return copy_example_zones(tmp_path / "zones")


@pytest.fixture
def gtm_server(tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="session")
def hosts() -> tuple[str, ...]:
    """The loopback addresses the shared server listens on."""
    return ("127.0.0.1", "::1") if ipv6_loopback_available() else ("127.0.0.1",)


@pytest.fixture(scope="session")
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, hosts: tuple[str, ...]
) -> Iterator[GtmServer]:
    """One server for the read-only tests: the example zones plus big.test, on v4 and v6.

    Read-only tests share it to keep the suite fast; tests that reload, signal or
    flood a server start their own.
    """
    directory = tmp_path_factory.mktemp("shared")
    zones = copy_example_zones(directory / "zones")
    (zones / "big.test.zone").write_text(BIG_ZONE)
    factory = ServerFactory(directory)
    try:
        yield factory(zones, listen=hosts, extra=["--nsid", "gtm-test"])
    finally:
        factory.stop_all()


@pytest.fixture
def example_regions() -> Iterator[None]:
    """Held for a test that runs the example regions or probes their addresses."""
    with example_regions_held():
        yield
