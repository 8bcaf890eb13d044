"""The status page's login, session and JSON (issue 17), over real HTTP; the page itself in
a browser is tests/integration/test_status_browser.py."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from gtm.config.document import document_from_zone_dir
from gtm.control.plane import ControlSettings
from gtm.control.store import NewCertificate, NodeStatus
from tests.control.conftest import running
from tests.control.test_events import REPO, region_down

pytestmark = pytest.mark.integration


async def post_form(base: str, path: str, body: str, headers: dict[str, str]
                    ) -> tuple[int, str, Any]:
    async with aiohttp.ClientSession() as session, session.post(
            base + path, data=body, allow_redirects=False, headers={
                "Content-Type": "application/x-www-form-urlencoded", **headers}) as response:
        return response.status, await response.text(), response.headers


async def get(base: str, path: str, cookie: str | None) -> tuple[int, str, Any]:
    headers = {"Cookie": cookie} if cookie else {}
    async with aiohttp.ClientSession() as session, session.get(
            base + path, headers=headers) as response:
        return response.status, await response.text(), response.headers


async def test_login_session_cookie_and_logout(settings: ControlSettings,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running(settings) as (plane, api):
        base, origin = plane.url, {"Origin": plane.url}
        _, made, _ = await api.call("POST", "/v1/tokens", {"name": "wall", "role": "viewer"})
        secret = made["token"]

        status, text, _ = await get(base, "/status", None)
        assert status == 200 and 'name="token"' in text  # the login form
        status, _, _ = await post_form(base, "/status/login", f"token={secret}", {})
        assert status == 403  # no Origin: not a post of the page's own form
        status, _, _ = await post_form(base, "/status/login", f"token={secret}",
                                       {"Origin": "http://evil.example"})
        assert status == 403
        status, text, _ = await post_form(base, "/status/login", "token=gtm_nope", origin)
        assert status == 401 and "unknown or revoked" in text
        _, audit, _ = await api.call("GET", "/v1/audit")
        assert any(e["action"] == "auth.refused" and e["target"] == "POST /status/login"
                   for e in audit["items"])

        status, _, headers = await post_form(base, "/status/login", f"token={secret}", origin)
        assert status == 303 and headers["Location"] == "/status"
        set_cookie = headers["Set-Cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        cookie = set_cookie.split(";", 1)[0]
        assert secret not in set_cookie and secret not in cookie

        status, text, headers = await get(base, "/status", cookie)
        assert status == 200 and 'id="map"' in text and "signed in as wall" in text
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        status, text, _ = await get(base, "/v1/status", cookie)
        assert status == 200 and '"regions"' in text
        # The cookie authorises the page's reads only: never another route, never a write.
        assert (await get(base, "/v1/config", cookie))[0] == 401
        status, _, _ = await post_form(base, "/status/logout", "", {"Origin": "http://evil"})
        assert status == 403 and (await get(base, "/v1/status", cookie))[0] == 200

        # Revoking the token ends its sessions at once.
        status, _, _ = await api.call("DELETE", f"/v1/tokens/{made['id']}")
        assert status == 200
        assert (await get(base, "/v1/status", cookie))[0] == 401

        # A new login, then logout: the session is gone on the server too.
        _, again, _ = await api.call("POST", "/v1/tokens", {"name": "wall2", "role": "viewer"})
        _, _, headers = await post_form(base, "/status/login", f"token={again['token']}",
                                        origin)
        cookie = headers["Set-Cookie"].split(";", 1)[0]
        assert (await get(base, "/v1/status", cookie))[0] == 200
        status, _, headers = await post_form(base, "/status/logout", "",
                                             {**origin, "Cookie": cookie})
        assert status == 303
        assert (await get(base, "/v1/status", cookie))[0] == 401
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert secret not in logged and again["token"] not in logged


def certificate(name: str, days: float) -> NewCertificate:
    return NewCertificate(name=name, chain="-----BEGIN CERTIFICATE-----\n", sealed_key=b"k",
                          key_nonce=b"n" * 12, key_id="0123456789abcdef",
                          names=(f"{name}.example.com",), not_after=time.time() + days * 86400,
                          fingerprint=name, updated_by="test")


def health_summary() -> dict[str, Any]:
    """What a DNS node with health checking reports (gtm.health.service.summary)."""
    now = time.time()
    return {"regions": {"us-east": {"healthy": True, "headroom": 0.4, "time": now,
                                    "detail": "balancer reports healthy", "backends": [
                                        {"address": "10.0.0.1:80", "health": "up"}],
                                    "requests_per_s": 12.5, "p95_ms": 8.0}},
            "served": {"gslb.example.test.": {"regions": {
                "sa-east": {"state": "down", "cause": "region report",
                            "reason": "no healthy backends"},
                # Stale: set down by hand before, up again at the head version.
                "ap-northeast": {"state": "down", "cause": "admin", "reason": "old"}}}}}


async def test_status_shows_regions_nodes_events_and_certificates_close_to_expiry(
        settings: ControlSettings) -> None:
    settings = replace(settings, expiry_check_interval=0.1)
    async with running(settings) as (plane, api):
        await api.call("PUT", "/v1/config", {"document": document_from_zone_dir(REPO / "zones")},
                       if_match=0)
        await api.call("PUT", "/v1/config/sections/state", {"value": region_down("drill")},
                       if_match=1)
        await plane.store.report_node(NodeStatus("dns-1", "dns", 1, time.time(), {
            "heartbeat_seconds": 2.0, "health": health_summary()}))
        await plane.store.put_certificate(certificate("soon", 10))
        await plane.store.put_certificate(certificate("later", 90))
        deadline = time.monotonic() + 10
        while True:  # the expiry watch runs every 0.1 s here
            _, body, _ = await api.call("GET", "/v1/status")
            kinds = [e["type"] for e in body["events"]]
            if "certificate.expiring" in kinds or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.3)  # more rounds of the watch: still one event per certificate

        status, body, _ = await api.call("GET", "/v1/status")
        assert status == 200 and body["version"] == 2
        regions = {r["name"]: r for r in body["regions"]}
        assert sorted(regions) == ["ap-northeast", "eu-west", "sa-east", "us-east"]
        assert (regions["eu-west"]["latitude"], regions["eu-west"]["longitude"]) == \
            (53.35, -6.26)
        assert (regions["eu-west"]["state"], regions["eu-west"]["cause"],
                regions["eu-west"]["reason"]) == ("down", "admin", "drill")
        assert (regions["sa-east"]["state"], regions["sa-east"]["cause"]) == \
            ("down", "region report")
        assert regions["ap-northeast"]["state"] == "up"  # the node's "admin" view is stale
        assert (regions["us-east"]["state"], regions["us-east"]["headroom"],
                regions["us-east"]["requests_per_s"]) == ("up", 0.4, 12.5)
        assert body["dns_split"]["available"] is False and body["dns_split"]["note"]
        [node] = body["nodes"]
        assert (node["node_id"], node["version"], node["lag_versions"]) == ("dns-1", 1, 1)
        assert [c["name"] for c in body["certificates"]["items"]] == ["soon"]
        expiring = [e for e in body["events"] if e["type"] == "certificate.expiring"]
        assert [e["subject"] for e in expiring] == ["certificate soon"]
        assert "steer.region" in [e["type"] for e in body["events"]]
