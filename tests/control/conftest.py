"""The control-plane test harness: real PostgreSQL and Redis, a namespace per test.

Server URLs come from GTM_TEST_POSTGRES_URL and GTM_TEST_REDIS_URL (this machine's
defaults otherwise). Each test gets its own PostgreSQL schema and Redis key prefix,
``gtm_test_<run>_<worker>_<n>``, removed when it ends, so runs (and the parallel
workers of one run, pytest-xdist) never collide. A server that
cannot be reached skips its tests loudly, except under CI=true, where it fails them:
CI must never pass by skipping the real thing.

Test functions may be ``async def``: the hook below runs each in a fresh event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import os
import secrets
import socket
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from gtm.control.plane import ControlPlane, ControlSettings, start_control_plane
from gtm.control.postgres_store import PostgresStore
from gtm.control.sqlite_store import SqliteStore
from gtm.control.store import Store
from tests.control.apiclient import Api

POSTGRES_URL = os.environ.get(
    "GTM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("GTM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# One id per run and worker (PYTEST_XDIST_WORKER: gw0, gw1, ...), so the namespaces of
# parallel workers can never be the same even if their random parts were.
RUN_ID = f"{secrets.token_hex(3)}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
_COUNTER = itertools.count(1)

EXAMPLE_ZONE = """$TTL 60
@    SOA  ns1 hostmaster 1 7200 1800 1209600 60
@    NS   ns1
ns1  A    127.0.0.1
www  A    192.0.2.1
"""


def example_document(www: str = "192.0.2.1", serial: int = 1) -> dict[str, Any]:
    text = EXAMPLE_ZONE.replace("192.0.2.1", www).replace("hostmaster 1 ", f"hostmaster {serial} ")
    return {"zones": {"example.test.": text}}


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


def _reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1",
                                       parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _require(url: str, default_port: int, what: str) -> None:
    if _reachable(url, default_port):
        return
    message = f"{what} at {url} is unreachable"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}: CI requires it (no skipping in CI)")
    reason = f"!!! SKIPPED: {message}; these tests need a real {what} !!!"
    warnings.warn(reason, stacklevel=1)
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> str:
    _require(POSTGRES_URL, 5432, "PostgreSQL")
    return POSTGRES_URL


@pytest.fixture
def redis_url() -> str:
    _require(REDIS_URL, 6379, "Redis")
    return REDIS_URL


@pytest.fixture
def namespace(request: pytest.FixtureRequest) -> Iterator[str]:
    """A schema name and Redis key prefix of this test alone; removed afterwards."""
    name = f"gtm_test_{RUN_ID}_{next(_COUNTER)}"
    yield name
    if _reachable(REDIS_URL, 6379):
        asyncio.run(_drop_redis_keys(name))
    if _reachable(POSTGRES_URL, 5432):
        asyncio.run(PostgresStore(POSTGRES_URL, name).drop_schema())


async def _drop_redis_keys(namespace: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    """An unopened store of each kind; the PostgreSQL one in this test's own schema."""
    if store_kind == "sqlite":
        return SqliteStore(tmp_path / "gtm.db")
    url = request.getfixturevalue("postgres_url")
    return PostgresStore(url, request.getfixturevalue("namespace"))


@pytest.fixture
def settings(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> ControlSettings:
    """A control plane on port 0 over the parametrized store (SQLite, PostgreSQL)."""
    if store_kind == "sqlite":
        return ControlSettings(port=0, state_dir=tmp_path / "control")
    request.getfixturevalue("postgres_url")
    return ControlSettings(port=0, state_dir=tmp_path / "control", store_url=POSTGRES_URL,
                           namespace=request.getfixturevalue("namespace"))


@contextlib.asynccontextmanager
async def running(settings: ControlSettings) -> AsyncIterator[tuple[ControlPlane, Api]]:
    """A started control plane and an admin API client, both stopped on the way out."""
    plane = await start_control_plane(settings)
    api = Api(plane.url, plane.admin_token_path.read_text().strip())
    try:
        yield plane, api
    finally:
        await api.close()
        await plane.stop()
