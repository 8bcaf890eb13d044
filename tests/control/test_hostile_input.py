"""Crafted input against the API, on both stores: a 4xx naming what was wrong, never a 500,
nothing lost, and whatever is refused still audited when it should be."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from gtm.config import document
from gtm.config.document import accept_object, register_section
from gtm.control.plane import ControlSettings
from tests.control.apiclient import Api
from tests.control.conftest import example_document, running


async def send(api: Api, method: str, path: str, data: bytes | None = None,
               if_match: int | None = None, token: str | None = ...  # type: ignore[assignment]
               ) -> tuple[int, Any]:
    """A request with a body sent byte for byte (the client would re-encode JSON)."""
    chosen = api.token if token is ... else token
    headers = {"Content-Type": "application/json"}
    if chosen:
        headers["Authorization"] = f"Bearer {chosen}"
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    async with api.session.request(method, api.base + path, data=data,
                                   headers=headers) as response:
        return response.status, await response.json(content_type=None)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_an_unauthenticated_nul_in_the_path_is_refused_and_audited(
    settings: ControlSettings,
) -> None:
    async with running(settings) as (plane, api):
        for path in ("/v1/config/zones/a%00b", "/v1/config/zones/a%ED%A0%80b"):
            status, body = await send(api, "GET", path, token=None)
            assert (status, body["error"]["field"]) == (401, "Authorization"), body
        # The second refusal is of the first one's kind: it is written as their count.
        await plane.service.refusals.flush(everything=True)
        status, body, _ = await api.call("GET", "/v1/audit?limit=10")
        assert status == 200, body
        targets = [e["target"] for e in body["items"] if e["action"] == "auth.refused"]
        # Stored escaped (NUL cannot be stored as PostgreSQL text), in both stores alike.
        assert targets == ["GET /v1/config/zones/a%ED%A0%80b", "GET /v1/config/zones/a\\x00b"]


async def test_control_characters_in_path_parameters_get_400(settings: ControlSettings) -> None:
    async with running(settings) as (_plane, api):
        await api.call("PUT", "/v1/config", {"document": example_document()}, if_match=0)
        zone = json.dumps({"text": example_document()["zones"]["example.test."]}).encode()
        cases = [
            ("DELETE", "/v1/tokens/a%00b", None, "id"),
            ("PUT", "/v1/config/zones/a%00b.", zone, "name"),
            ("PUT", "/v1/config/zones/a%0ab.", zone, "name"),
            ("GET", "/v1/config/zones/a%1bb.", None, "name"),
            ("PUT", "/v1/acme/challenges/_acme-challenge.a%00b.example.test.",
             b'{"values": ["x"]}', "name"),
            ("GET", "/v1/versions/1%00", None, "number"),
        ]
        for method, path, data, field in cases:
            status, body = await send(api, method, path, data, if_match=1)
            assert (status, body["error"]["field"]) == (400, field), (path, body)
            assert "control character" in body["error"]["message"]
        status, body, _ = await api.call("GET", "/v1/config")
        assert body["version"] == 1


async def test_nul_and_lone_surrogates_in_names_and_messages_get_400(
    settings: ControlSettings,
) -> None:
    async with running(settings) as (_plane, api):
        cases: list[tuple[str, str, str, str]] = [
            ("POST", "/v1/tokens", '{"name": "a\\u0000b", "role": "viewer"}', "name"),
            ("POST", "/v1/tokens", '{"name": "a\\ud800b", "role": "viewer"}', "name"),
            ("PUT", "/v1/config", json.dumps(
                {"document": example_document(), "message": "m"})[:-1]
                + ', "base_version": 0}', ""),  # the valid control case
            ("PUT", "/v1/config/sections/lb", '{"value": {}, "message": "x\\u0000"}', "message"),
            ("PUT", "/v1/config/sections/lb", '{"value": {}, "message": "\\udfffx"}', "message"),
            ("PUT", "/v1/config/sections/lb", '{"value": {"a\\u0000": 1}}', 'value["a\\u0000"]'),
        ]
        for method, path, data, field in cases:
            status, body = await send(api, method, path, data.encode(), if_match=1
                                      if path != "/v1/config" else None)
            if not field:
                assert status == 201, body
                continue
            assert (status, body["error"]["field"]) == (400, field), body
            assert "NUL" in body["error"]["message"] or "surrogate" in body["error"]["message"]
        status, body, _ = await api.call("GET", "/v1/tokens")
        assert [t["name"] for t in body["items"]] == ["bootstrap-admin"]
        status, body, _ = await api.call("GET", "/v1/config")
        assert body["version"] == 1


async def test_version_numbers_out_of_range_or_not_ascii_digits_get_400(
    settings: ControlSettings,
) -> None:
    async with running(settings) as (_plane, api):
        await api.call("PUT", "/v1/config", {"document": example_document()}, if_match=0)
        for number in (str(2**63), str(2**64), "9" * 400, "²", "٣", "1_0", " 1", "-1"):
            for method, path in (("GET", f"/v1/versions/{number}"),
                                 ("GET", f"/v1/versions/{number}/diff"),
                                 ("POST", f"/v1/versions/{number}/rollback")):
                status, body = await send(api, method, path, if_match=1)
                assert (status, body["error"]["field"]) == (400, "number"), (path, body)
        for query in ("against=²", f"against={2**63}", "against=٣"):
            status, body = await send(api, "GET", f"/v1/versions/1/diff?{query}")
            assert (status, body["error"]["field"]) == (400, "against"), (query, body)
        for query in ("cursor=٣", "limit=٣", "cursor=1_0", f"cursor={2**63}"):
            status, body = await send(api, "GET", f"/v1/versions?{query}")
            assert status == 400, (query, body)
        async with api.session.put(api.base + "/v1/config/sections/lb", json={"value": {}},
                                   headers={"Authorization": f"Bearer {api.token}",
                                            "If-Match": '"\u0661"'}) as response:
            body = await response.json()
            assert (response.status, body["error"]["field"]) == (400, "If-Match"), body
        status, body, _ = await api.call("GET", "/v1/versions/1")
        assert status == 200 and body["version"] == 1
        status, body, _ = await api.call("GET", f"/v1/versions/{2**62}")
        assert status == 404


@pytest.fixture
def free_form_section() -> Iterator[str]:
    """A section that keeps any JSON object (lb is compiled by the balancer now), for a
    document as deep as the reader allows."""
    saved = dict(document._SECTIONS)
    register_section("notes", accept_object)
    try:
        yield "notes"
    finally:
        document._SECTIONS.clear()
        document._SECTIONS.update(saved)


async def test_deep_duplicate_and_non_json_bodies_get_400_and_later_edits_work(
    settings: ControlSettings, free_form_section: str,
) -> None:
    async with running(settings) as (_plane, api):
        await api.call("PUT", "/v1/config", {"document": example_document()}, if_match=0)
        deep_lb = '{"value": ' + '{"a": ' * 500 + "1" + "}" * 500 + "}"
        too_deep = "nested too deeply: more than 64 levels"
        cases = [
            ("/v1/config/sections/lb", deep_lb, "body", too_deep),
            ("/v1/config/sections/lb", '{"value": ' + nested(100_000) + "}", "body", too_deep),
            ("/v1/config", nested(100_000), "body", too_deep),
            ("/v1/config/sections/lb", '{"value": {"pools": 1, "pools": 2}}', "body",
             'duplicate key "pools"'),
            ("/v1/config/sections/lb", '{"value": {}, "value": {"x": 1}}', "body",
             'duplicate key "value"'),
            ("/v1/config/sections/lb", '{"value": {"a": [NaN]}}', "value.a[0]", "not a finite"),
            ("/v1/config/sections/lb", '{"value": {"b": -Infinity}}', "value.b", "not a finite"),
            ("/v1/config/sections/lb", '{"value": 1e999}', "value", "not a finite"),
            ("/v1/config/sections/lb", '{"value": 1' + "0" * 5000 + "}", "body", "not JSON"),
            # Large enough to be parsed off the event loop: the same rules there.
            ("/v1/config/sections/lb", '{"value": {"pad": "' + "x" * (1 << 21) + '"}, "value": 1}',
             "body", 'duplicate key "value"'),
        ]
        for path, data, field, reason in cases:
            status, body = await send(api, "PUT", path, data.encode(), if_match=1)
            assert (status, body["error"]["field"]) == (400, field), body
            assert reason in body["error"]["message"], body
        status, body = await send(api, "PUT", "/v1/config/sections/lb", b"\xff{}", if_match=1)
        assert (status, body["error"]["field"]) == (400, "body") and "not UTF-8" in str(body)
        async with api.session.put(api.base + "/v1/config/sections/lb", data=b'{"value": {}}',
                                   headers={"Authorization": f"Bearer {api.token}",
                                            "If-Match": '"1"', "Content-Type":
                                            "application/json; charset=latin-1"}) as response:
            body = await response.json()
            assert (response.status, body["error"]["field"]) == (400, "Content-Type"), body
        status, body, _ = await api.call("GET", "/v1/config")
        assert body["version"] == 1
        # A document as deep as the limit allows is still one every later edit can handle.
        value = '{"a": ' * 60 + "1" + "}" * 60
        status, body = await send(api, "PUT", f"/v1/config/sections/{free_form_section}",
                                  f'{{"value": {value}}}'.encode(), if_match=1)
        assert status == 201, body
        status, body, _ = await api.call("PUT", "/v1/config/zones/example.test.",
                                         {"text": example_document("192.0.2.9")["zones"]
                                          ["example.test."]}, if_match=2)
        assert status == 201, body
