"""Health tests: real servers on loopback, real Redis (a key prefix per test).

A Redis that cannot be reached skips its tests loudly, except under CI=true, where
it fails them. Test functions may be ``async def``: each runs in a fresh event loop.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import secrets
import warnings
from collections.abc import Iterator

import pytest

REDIS_URL = os.environ.get("GTM_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# One id per run and worker (PYTEST_XDIST_WORKER), as in tests/control/conftest.py.
RUN_ID = f"{secrets.token_hex(3)}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
_COUNTER = itertools.count(1)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    asyncio.run(pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names}))
    return True


def _redis_reachable() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except Exception as exc:  # any failure means: no Redis here
        return str(exc)
    return None


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A key prefix of its own; its keys are deleted afterwards."""
    problem = _redis_reachable()
    if problem is not None:
        message = f"Redis at {REDIS_URL} unreachable: {problem}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        warnings.warn(message, stacklevel=1)
        pytest.skip(message)
    namespace = f"gtm_test_{RUN_ID}_{next(_COUNTER)}"
    yield namespace
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()
