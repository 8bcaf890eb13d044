"""Two real `gtm api` processes over one PostgreSQL store and one Redis: what one process
does, the other must honour at once (revocation) or answer the same way (idempotent
retries)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.control.apiclient import Api
from tests.control.harness import ApiProcess, ApiProcesses

pytestmark = pytest.mark.integration


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[ApiProcesses]:
    group = ApiProcesses(tmp_path / "apis")
    try:
        yield group
    finally:
        group.stop_all()


def start_pair(processes: ApiProcesses, postgres_url: str, redis_url: str,
               namespace: str) -> tuple[ApiProcess, ApiProcess, str]:
    """Two API processes; the first makes the admin token (the second finds one)."""
    first = processes.start("api1", postgres_url, namespace, redis_url=redis_url)
    second = processes.start("api2", postgres_url, namespace, redis_url=redis_url)
    return first, second, (first.state_dir / "admin.token").read_text().strip()


async def test_revocation_holds_on_every_process_when_the_call_returns(
    processes: ApiProcesses, postgres_url: str, redis_url: str, namespace: str
) -> None:
    first, second, root = start_pair(processes, postgres_url, redis_url, namespace)
    one, two = Api(first.url, root), Api(second.url, root)
    try:
        status, deputy, _ = await one.call("POST", "/v1/tokens",
                                           {"name": "deputy", "role": "admin"})
        assert status == 201, deputy
        for _ in range(3):  # the second process has seen the deputy's token at work
            status, _, _ = await two.call("GET", "/v1/tokens", token=deputy["token"])
            assert status == 200
        status, body, _ = await one.call("DELETE", f"/v1/tokens/{deputy['id']}")
        assert status == 200, body
        # No sleep: the revocation holds everywhere once the call has returned.
        status, body, _ = await two.call("GET", "/v1/config", token=deputy["token"])
        assert status == 401, body
        status, body, _ = await two.call("POST", "/v1/tokens", {"name": "heir", "role": "admin"},
                                         token=deputy["token"])
        assert status == 401, body
        status, body, _ = await two.call("GET", "/v1/tokens")
        assert "heir" not in {item["name"] for item in body["items"]}
    finally:
        await one.close()
        await two.close()
