"""Two real `gtm api` processes over one PostgreSQL store and one Redis: what one process
does, the other must honour at once (revocation) or answer the same way (idempotent
retries)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.control.apiclient import Api
from tests.control.conftest import example_document
from tests.control.harness import ApiProcess, ApiProcesses

pytestmark = pytest.mark.integration


@pytest.fixture
def processes(tmp_path: Path, namespace: str) -> Iterator[ApiProcesses]:
    """Stopped before their namespace's schema is dropped."""
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


async def test_a_retry_with_the_same_key_gets_the_same_answer_from_another_process(
    processes: ApiProcesses, postgres_url: str, redis_url: str, namespace: str
) -> None:
    first, second, root = start_pair(processes, postgres_url, redis_url, namespace)
    one, two = Api(first.url, root), Api(second.url, root)
    key = {"Idempotency-Key": "deploy-7f3a"}
    change = {"document": example_document("192.0.2.1"), "message": "first"}
    try:
        status, body, headers = await one.call("PUT", "/v1/config", change, if_match=0,
                                               headers=key)
        assert status == 201 and "Idempotent-Replayed" not in headers, body
        again = await two.call("PUT", "/v1/config", change, if_match=0, headers=key)
        assert (again[0], again[1], again[2]["ETag"]) == (status, body, headers["ETag"])
        assert again[2]["Idempotent-Replayed"] == "true"
        _, history, _ = await two.call("GET", "/v1/versions")
        assert [v["version"] for v in history["items"]] == [1]

        # The same key for another request is refused, and changes nothing.
        other = {"document": example_document("192.0.2.9"), "message": "first"}
        status, body, _ = await two.call("PUT", "/v1/config", other, if_match=0, headers=key)
        assert status == 422 and body["error"]["field"] == "Idempotency-Key", body
        assert "different request" in body["error"]["message"]
        # A refusal is an answer too: a stale write's retry is refused the same way.
        stale = {**key, "Idempotency-Key": "stale-1"}
        first_answer = await one.call("PUT", "/v1/config", other, if_match=0, headers=stale)
        retried = await two.call("PUT", "/v1/config", other, if_match=0, headers=stale)
        assert first_answer[0] == retried[0] == 409 and first_answer[1] == retried[1]

        # Keys belong to a token: another token's same key is a new request.
        _, editor, _ = await one.call("POST", "/v1/tokens", {"name": "ci", "role": "editor"})
        zone = {"text": example_document("192.0.2.3")["zones"]["example.test."]}
        status, body, _ = await two.call("PUT", "/v1/config/zones/example.test.", zone,
                                         if_match=1, headers=key, token=editor["token"])
        assert status == 201 and body["version"]["version"] == 2, body

        # A token made with a key: the retry gets the same token, secret included.
        made = await one.call("POST", "/v1/tokens", {"name": "bot", "role": "viewer"},
                              headers={"Idempotency-Key": "bot-token"})
        remade = await two.call("POST", "/v1/tokens", {"name": "bot", "role": "viewer"},
                                headers={"Idempotency-Key": "bot-token"})
        assert made[0] == remade[0] == 201 and made[1] == remade[1]
        status, _, _ = await two.call("GET", "/v1/config", token=made[1]["token"])
        assert status == 200
        _, tokens, _ = await one.call("GET", "/v1/tokens")
        assert [t["name"] for t in tokens["items"]].count("bot") == 1
        revoke = ("DELETE", f"/v1/tokens/{made[1]['id']}")
        revoked = await one.call(*revoke, headers={"Idempotency-Key": "bot-revoke"})
        assert (await two.call(*revoke, headers={"Idempotency-Key": "bot-revoke"}))[:2] \
            == revoked[:2] == (200, {"id": made[1]["id"], "revoked": True})
    finally:
        await one.close()
        await two.close()
