"""The REST API against a real server on port 0, on both stores."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from gtm.control.plane import ControlSettings
from tests.control.conftest import example_document, running


async def test_write_read_and_versions(settings: ControlSettings) -> None:
    async with running(settings) as (_plane, api):
        status, body, headers = await api.call("GET", "/v1/config")
        assert (status, body["version"], headers["ETag"]) == (200, 0, '"0"')
        status, body, headers = await api.call(
            "PUT", "/v1/config", {"document": example_document(), "message": "first"}, if_match=0)
        assert status == 201, body
        assert body["version"]["version"] == 1 and headers["ETag"] == '"1"'
        status, body, _ = await api.call(
            "PUT", "/v1/config/zones/example.test.",
            {"text": example_document("192.0.2.7")["zones"]["example.test."],
             "base_version": 1})
        assert status == 201 and body["diff"][0]["op"] == "change"
        status, body, headers = await api.call("GET", "/v1/config/zones/example.test.")
        assert "192.0.2.7" in body["text"] and headers["ETag"] == '"2"'
        status, body, _ = await api.call("GET", "/v1/versions?limit=1")
        assert [v["version"] for v in body["items"]] == [2] and body["next_cursor"] == "2"
        status, body, _ = await api.call("GET", "/v1/versions?limit=1&cursor=2")
        assert [v["version"] for v in body["items"]] == [1]
        status, body, _ = await api.call("GET", "/v1/versions/2/diff")
        assert body["from"] == 1 and body["diff"][0]["path"] == 'zones["example.test."]'


async def test_stale_writes_get_409_and_racers_one_wins(settings: ControlSettings) -> None:
    async with running(settings) as (_plane, api):
        await api.call("PUT", "/v1/config", {"document": example_document()}, if_match=0)
        racers = [
            api.call("PUT", "/v1/config", {"document": example_document(f"192.0.2.{i}")},
                     if_match=1)
            for i in (10, 11)
        ]
        results = await asyncio.gather(*racers)
        assert sorted(status for status, _, _ in results) == [201, 409]
        [(_, loser, _)] = [r for r in results if r[0] == 409]
        assert loser["error"]["current_version"] == 2
        status, body, _ = await api.call("GET", "/v1/config")
        winner = next(r for r in results if r[0] == 201)
        assert body["version"] == 2 and winner[1]["version"]["version"] == 2
        status, body, _ = await api.call("PUT", "/v1/config", {"document": {}})
        assert status == 428 and body["error"]["field"] == "If-Match"


async def test_invalid_changes_name_the_field_and_store_nothing(
    settings: ControlSettings,
) -> None:
    async with running(settings) as (_plane, api):
        await api.call("PUT", "/v1/config", {"document": example_document()}, if_match=0)
        bad_zone = example_document()["zones"]["example.test."] + "www CNAME x.example.\n"
        cases = [
            ({"document": {"zonez": {}}}, 422, "zonez"),
            ({"document": {"zones": {"example.test.": bad_zone}}}, 422,
             'zones["example.test."]:6'),
            ({"document": {"zones": {"bad..name.": "x"}}}, 422, 'zones["bad..name."]'),
            ({"document": []}, 400, "document"),
            ({"document": {}, "message": 5}, 400, "message"),
        ]
        for body, expected, where in cases:
            status, reply, _ = await api.call("PUT", "/v1/config", body, if_match=1)
            assert (status, reply["error"]["field"]) == (expected, where), reply
        status, reply, _ = await api.call("GET", "/v1/versions?limit=0")
        assert (status, reply["error"]["field"]) == (400, "limit")
        status, reply, _ = await api.call("GET", "/v1/config")
        assert reply["version"] == 1


async def test_rollback_dry_run_and_sections(settings: ControlSettings) -> None:
    async with running(settings) as (_plane, api):
        await api.call("PUT", "/v1/config", {"document": example_document()}, if_match=0)
        lb = {"eu": {"listeners": [{"bind": "127.0.0.1:8080"}],
                     "pools": [{"name": "web", "backends": ["127.0.0.1:9001"]}]}}
        await api.call("PUT", "/v1/config/sections/lb", {"value": lb}, if_match=1)
        status, body, _ = await api.call("GET", "/v1/config/sections/lb")
        assert (status, body["value"]) == (200, lb)
        status, body, _ = await api.call(
            "PUT", "/v1/config?dry_run=true", {"document": {}}, if_match=2)
        assert status == 200 and body["dry_run"] and len(body["diff"]) == 2
        status, body, _ = await api.call("POST", "/v1/versions/1/rollback", if_match=2)
        assert status == 201 and body["version"]["rollback_of"] == 1
        status, body, _ = await api.call("GET", "/v1/config")
        assert body["version"] == 3 and body["document"] == example_document()
        status, body, _ = await api.call("GET", "/v1/config/sections/nope")
        assert status == 404 and body["error"]["field"] == "name"


async def test_tokens_roles_and_audit(settings: ControlSettings) -> None:
    async with running(settings) as (plane, api):
        status, viewer, _ = await api.call("POST", "/v1/tokens",
                                           {"name": "dash", "role": "viewer"})
        assert status == 201 and viewer["token"].startswith("gtm_")
        status, body, _ = await api.call("GET", "/v1/config", token=viewer["token"])
        assert status == 200
        status, body, _ = await api.call("PUT", "/v1/config", {"document": {}},
                                         token=viewer["token"], if_match=0)
        assert status == 403 and body["error"]["field"] == "Authorization"
        status, body, headers = await api.call("GET", "/v1/config", token="gtm_nope")
        assert status == 401 and "Bearer" in headers["WWW-Authenticate"]
        status, body, _ = await api.call("GET", "/v1/config", token=None)
        assert status == 401
        status, _, _ = await api.call("DELETE", f"/v1/tokens/{viewer['id']}")
        assert status == 200
        status, _, _ = await api.call("GET", "/v1/config", token=viewer["token"])
        assert status == 401
        # Four refusals; the two "unknown or revoked token" ones are one kind, counted.
        await plane.service.refusals.flush(everything=True)
        status, body, _ = await api.call("GET", "/v1/audit?limit=100")
        actions = [(e["action"], e["outcome"]) for e in body["items"]]
        refused = [e for e in body["items"] if e["action"] == "auth.refused"]
        assert sum(e["detail"].get("repeated", 1) for e in refused) == 4
        assert len(refused) == 4 and refused[0]["detail"]["repeated"] == 1
        assert ("token.revoke", "ok") in actions and ("token.create", "ok") in actions
        tokens = await plane.store.tokens()
        assert all("token" not in t.public() for t in tokens)


async def test_openapi_describes_every_route(settings: ControlSettings) -> None:
    async with running(settings) as (plane, api):
        status, spec, _ = await api.call("GET", "/openapi.json", token=None)
        assert status == 200 and spec["openapi"].startswith("3.")
        app = plane.runner.app
        served = {
            (route.method.lower(), route.resource.canonical)
            for route in app.router.routes() if route.method != "HEAD"
            and route.resource is not None
        }
        described = {(m, p) for p, ops in spec["paths"].items() for m in ops}
        renamed = {(m, p.replace("{id}", "{id}")) for m, p in served}
        assert renamed == described


def refusal_rows(audit: list[dict[str, Any]], action: str, outcome: str) -> list[dict[str, Any]]:
    return [e for e in audit if (e["action"], e["outcome"]) == (action, outcome)]


def refusals_counted(rows: list[dict[str, Any]]) -> int:
    """How many refusals these rows stand for (a count row says how many it stands for)."""
    return sum(row["detail"].get("repeated", 1) for row in rows)


async def test_every_refused_change_is_audited_and_repeats_are_counted(
    settings: ControlSettings,
) -> None:
    async with running(replace(settings, audit_window=3600.0)) as (plane, api):
        await api.call("PUT", "/v1/config", {"document": example_document()}, if_match=0)
        zone = example_document("192.0.2.7")["zones"]["example.test."]
        answers = []
        for _ in range(20):  # stale base: caught early (a zone edit) and late (a document)
            status, _, _ = await api.call("PUT", "/v1/config/zones/example.test.",
                                          {"text": zone}, if_match=0)
            answers.append(status)
            status, _, _ = await api.call("PUT", "/v1/config", {"document": {}}, if_match=0)
            answers.append(status)
        for _ in range(10):  # refused by the validator, and a zone that is not there
            status, _, _ = await api.call("PUT", "/v1/config", {"document": {"zonez": {}}},
                                          if_match=1)
            answers.append(status)
            status, _, _ = await api.call("DELETE", "/v1/config/zones/nope.test.", if_match=1)
            answers.append(status)
        assert answers.count(409) == 40 and answers.count(422) == 10
        assert answers.count(404) == 10
        _, body, _ = await api.call("GET", "/v1/audit?limit=500")
        before_counts = body["items"]
        await plane.service.refusals.flush(everything=True)
        _, body, _ = await api.call("GET", "/v1/audit?limit=500")
        audit = body["items"]
        for outcome, refused in (("conflict", 40), ("invalid", 10), ("not_found", 10)):
            rows = refusal_rows(audit, "config.commit", outcome)
            assert len(rows) == 2, rows  # the first at once, then one row with the count
            assert refusals_counted(rows) == refused
            assert len(refusal_rows(before_counts, "config.commit", outcome)) == 1
        assert await plane.store.head() == 1


async def test_failed_authentication_is_limited_per_client_and_counted(
    settings: ControlSettings,
) -> None:
    limited = replace(settings, audit_window=3600.0, auth_failure_burst=5,
                      auth_failures_per_second=0.1)
    async with running(limited) as (plane, api):
        answers = [await api.call("GET", "/v1/config", token=f"gtm_wrong{i}")
                   for i in range(100)]
        statuses = [status for status, _, _ in answers]
        assert statuses[:5] == [401] * 5 and 429 in statuses and set(statuses) == {401, 429}
        for status, body, headers in answers:
            if status == 429:
                assert int(headers["Retry-After"]) >= 1
                assert "too many failed authentications" in body["error"]["message"]
        status, _, _ = await api.call("GET", "/v1/config")  # a valid token still works
        assert status == 200
        await plane.service.refusals.flush(everything=True)
        _, body, _ = await api.call("GET", "/v1/audit?limit=500")
        rows = refusal_rows(body["items"], "auth.refused", "refused")
        assert len(rows) <= 4 and refusals_counted(rows) == 100, rows


async def test_idempotency_keys_are_checked_and_answers_kept_on_both_stores(
    settings: ControlSettings,
) -> None:
    async with running(settings) as (plane, api):
        change = {"document": example_document()}
        for bad in ("has space", "x" * 201, "é"):
            status, body, _ = await api.call("PUT", "/v1/config", change, if_match=0,
                                             headers={"Idempotency-Key": bad})
            assert (status, body["error"]["field"]) == (400, "Idempotency-Key"), body
        key = {"Idempotency-Key": "one"}
        first = await api.call("PUT", "/v1/config", change, if_match=0, headers=key)
        again = await api.call("PUT", "/v1/config", change, if_match=0, headers=key)
        assert first[0] == again[0] == 201 and first[1] == again[1]
        rollback = await api.call("POST", "/v1/versions/1/rollback", if_match=1,
                                  headers={"Idempotency-Key": "back"})
        assert rollback[0] == 201
        assert (await api.call("POST", "/v1/versions/1/rollback", if_match=1,
                               headers={"Idempotency-Key": "back"}))[:2] == rollback[:2]
        status, body, _ = await api.call("POST", "/v1/nowhere", {}, headers=key)
        assert status == 404
        assert await plane.store.head() == 2
        audit = [e for e in await plane.store.audit(None, 50) if e.outcome == "ok"]
        assert [e.target for e in audit if e.action.startswith("config.")] == [
            "version 2", "version 1"]
