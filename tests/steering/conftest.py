"""Shared fixtures of the steering tests: the exact GeoIP fixture database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gtm.geo.locate import Locator
from tests.steering.geofixture import build_fixture_mmdb


@pytest.fixture(scope="session")
def geo_mmdb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_mmdb(tmp_path_factory.mktemp("geo"))


@pytest.fixture(scope="session")
def locator(geo_mmdb: Path) -> Iterator[Locator]:
    with Locator(geo_mmdb) as opened:
        yield opened
