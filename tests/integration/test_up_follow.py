"""`gtm up`: the example regions' balancers follow the embedded control plane, so a pool
changed through its API is what the running balancer uses (issue 12)."""

from __future__ import annotations

import copy
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.servers import ServerFactory, free_port

# gtm up without --region runs the example regions: their addresses are fixed, one holder.
pytestmark = [pytest.mark.integration, pytest.mark.serial, pytest.mark.timeout(90),
              pytest.mark.usefixtures("example_regions")]

REPO = Path(__file__).resolve().parents[2]
EU_LISTENER = "http://127.0.1.1:8080/"
EU_ADMIN = "http://127.0.1.1:9900"
EU_BACKENDS = {"127.0.1.101:9001", "127.0.1.102:9001"}


def call(url: str, token: str, method: str = "GET", body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
        **(headers or {})}, data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def answered_by(requests: int = 12) -> set[str]:
    seen = set()
    for _ in range(requests):
        try:
            with urllib.request.urlopen(EU_LISTENER, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            return set()
        match = re.fullmatch(r"hello from (\S+)\n", text)
        seen.add(match.group(1) if match else text)
    return seen


def wait_for_backends(wanted: set[str], log: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        seen = answered_by()
        if seen == wanted:
            return
        time.sleep(0.1)
    raise AssertionError(f"eu-west's traffic went to {seen}, not {wanted}\n{log()}")


def test_a_pool_changed_through_the_api_of_gtm_up_reaches_its_balancer(
    gtm_server: ServerFactory, tmp_path: Path
) -> None:
    server = gtm_server(REPO / "zones", workers=None, subcommand="up", extra=[
        "--listen", f"127.0.0.1:{free_port(('127.0.0.1',))}", "--api-listen", "127.0.0.1:0"])
    match = re.search(r"control plane API on (http://\S+)", server.log())
    assert match, server.log()
    api = match.group(1)
    token = (tmp_path / "var" / "control" / "admin.token").read_text().strip()

    # The example regions' tables are in the first version, beside the zones.
    status, section = call(f"{api}/v1/config/sections/lb", token)
    assert status == 200, section
    assert sorted(section["value"]) == ["ap-northeast", "eu-west", "sa-east", "us-east"]
    wait_for_backends(EU_BACKENDS, server.log)

    lb = copy.deepcopy(section["value"])
    lb["eu-west"]["pools"][0]["backends"] = ["127.0.1.101:9001"]
    status, body = call(f"{api}/v1/config/sections/lb", token, "PUT", {"value": lb},
                        {"If-Match": f'"{section["version"]}"'})
    assert status == 201, body
    version = body["version"]["version"]
    wait_for_backends({"127.0.1.101:9001"}, server.log)
    status, pools = call(f"{EU_ADMIN}/pools", "demo-token")
    assert [b["address"] for b in pools["pools"][0]["backends"]] == ["127.0.1.101:9001"]

    # `gtm status` lists each region's balancer, at the version it serves.
    deadline = time.monotonic() + 10
    while True:
        _, nodes = call(f"{api}/v1/nodes", token)
        kinds = {n["node_id"]: (n["kind"], n["version"]) for n in nodes["items"]}
        if kinds.get("lb-eu-west") == ("lb", version) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert kinds.get("lb-eu-west") == ("lb", version), kinds
    assert kinds.get("lb-us-east", ("", 0))[0] == "lb", kinds

    # sa-east's demo pool scales (examples/lb/sa-east.toml): a higher min through the
    # API, and the process actuator starts a demo backend the balancer sends requests to.
    status, body = call(f"{api}/v1/scale/sa-east/web", token, "PUT", {"min": 3})
    assert status == 200, body
    deadline = time.monotonic() + 20
    seen: set[str] = set()
    while not scaled(seen) and time.monotonic() < deadline:
        seen |= answered_at(SA_LISTENER)
        time.sleep(0.1)
    assert scaled(seen), (seen, server.log())
    [started] = scaled(seen)
    _, scale = call(f"{api}/v1/scale?region=sa-east", token)
    assert scale["regions"]["sa-east"]["pools"]["web"]["current"] == 3
    assert "Traceback" not in server.log(), server.log()
    server.process.terminate()
    server.process.wait(15)
    # gtm up leaves nothing behind: the scaled backend's process stopped with it.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://{started}/", timeout=2)


SA_LISTENER = "http://127.0.4.1:8080/"


def scaled(seen: set[str]) -> list[str]:
    """Backends the actuator started (its range: 127.0.4.110, ports 9001-9008)."""
    return [name for name in seen if name.startswith("127.0.4.110:")]


def answered_at(url: str, requests: int = 6) -> set[str]:
    seen = set()
    for _ in range(requests):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                text = response.read().decode()
        except OSError:
            continue
        match = re.fullmatch(r"hello from (\S+)\n", text)
        seen.add(match.group(1) if match else text)
    return seen
