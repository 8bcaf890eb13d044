"""/v1/acme/challenges: ACME DNS-01 values published as versions, on both stores."""

from __future__ import annotations

from gtm.control.plane import ControlSettings
from tests.control.conftest import example_document, running

OWNER = "_acme-challenge.www.example.test."


async def test_values_are_added_kept_and_withdrawn(settings: ControlSettings) -> None:
    async with running(settings) as (plane, api):
        status, _, _ = await api.call("PUT", "/v1/config", {"document": example_document()},
                                      if_match=0)
        assert status == 201
        status, body, _ = await api.call("PUT", f"/v1/acme/challenges/{OWNER}",
                                         {"values": ["one"]})
        assert status == 201, body
        # A second order proving the same name keeps the first one's value.
        await api.call("PUT", f"/v1/acme/challenges/{OWNER}", {"values": ["two"]})
        _, body, _ = await api.call("GET", "/v1/config/sections/challenges")
        assert body["value"] == {OWNER: ["one", "two"]}

        status, _, _ = await api.call("DELETE", f"/v1/acme/challenges/{OWNER}?value=one")
        assert status == 201
        _, body, _ = await api.call("GET", "/v1/config/sections/challenges")
        assert body["value"] == {OWNER: ["two"]}
        await api.call("DELETE", f"/v1/acme/challenges/{OWNER}?value=two")
        status, _, _ = await api.call("GET", "/v1/config/sections/challenges")
        assert status == 404
        status, body, _ = await api.call("DELETE", f"/v1/acme/challenges/{OWNER}")
        assert status == 404, body
        audit = await plane.store.audit(None, 50)
        assert sum("published" in str(entry.detail) for entry in audit
                   if entry.outcome == "ok") == 2
        assert [entry.action for entry in audit if entry.outcome == "not_found"] == [
            "config.commit"]  # the withdrawal of nothing, refused and audited


async def test_bad_challenges_are_refused_and_change_nothing(
        settings: ControlSettings) -> None:
    async with running(settings) as (_plane, api):
        await api.call("PUT", "/v1/config", {"document": example_document()}, if_match=0)
        status, body, _ = await api.call("PUT", "/v1/acme/challenges/_acme-challenge.other.test.",
                                         {"values": ["x"]})
        assert status == 422 and "in no zone" in body["error"]["message"], body
        status, body, _ = await api.call("PUT", "/v1/acme/challenges/www.example.test.",
                                         {"values": ["x"]})
        assert status == 422 and "_acme-challenge" in body["error"]["message"], body
        status, body, _ = await api.call("PUT", f"/v1/acme/challenges/{OWNER}", {"values": []})
        assert status == 400 and body["error"]["field"] == "values", body
        status, body, _ = await api.call("PUT", f"/v1/acme/challenges/{OWNER}",
                                         {"values": ['a"b']})
        assert status == 422 and body["error"]["field"].endswith("[0]"), body
        status, viewer, _ = await api.call("POST", "/v1/tokens",
                                           {"name": "reader", "role": "viewer"})
        assert status == 201
        status, _, _ = await api.call("PUT", f"/v1/acme/challenges/{OWNER}", {"values": ["x"]},
                                      token=viewer["token"])
        assert status == 403
        _, body, headers = await api.call("GET", "/v1/config")
        assert headers["ETag"] == '"1"' and "challenges" not in body["document"]
