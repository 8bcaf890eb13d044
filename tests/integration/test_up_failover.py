"""End to end on `gtm up`: a region whose balancer has no backend left leaves the
steered answers, and comes back when its backends do (issue 6's closing check)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dns.edns
import pytest

from tests.integration.servers import (
    GtmServer,
    ServerFactory,
    free_port,
    gtm_command,
    wait_until,
)

# The example regions bind fixed addresses (127.0.N.1:8080, :9900, demo backends :9001)
# or the example zone probes them: one test at a time on this machine holds them.
pytestmark = [pytest.mark.integration, pytest.mark.serial,
              pytest.mark.usefixtures("example_regions")]

REPO = Path(__file__).resolve().parents[2]
REGIONS = ("eu-west", "us-east", "ap-northeast", "sa-east")
EU_BACKENDS = ("127.0.1.101:9001", "127.0.1.102:9001")
EU_ADMIN = "http://127.0.1.1:9900"
GB_CLIENT = dns.edns.ECSOption("81.2.69.0", 24)  # GB in the shipped database: eu-west
EU, US = {"127.0.1.1", "127.0.1.2"}, {"127.0.2.1", "127.0.2.2"}
# Region reports every 1 s, flips coalesced by 0.5 s: well inside this.
MOVE_DEADLINE = 10.0


def answers(server: GtmServer) -> set[str]:
    return server.addresses("www.gslb.example.test.", use_edns=0, options=[GB_CLIENT])


def wait_for(server: GtmServer, wanted: set[str], deadline: float) -> float:
    """Seconds until every answer is one of wanted (a few queries in a row)."""
    start = time.monotonic()
    in_a_row = 0
    while time.monotonic() - start < deadline:
        in_a_row = in_a_row + 1 if answers(server) <= wanted else 0
        if in_a_row >= 3:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"answers did not move to {wanted} in {deadline} s: {answers(server)}")


def set_backend_state(address: str, state: str) -> None:
    request = urllib.request.Request(
        f"{EU_ADMIN}/pools/web/backends/{address}", method="PATCH",
        data=json.dumps({"state": state}).encode(),
        headers={"Authorization": "Bearer demo-token", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=3) as response:
        assert response.status == 200


def api_url(server: GtmServer) -> str:
    match = re.search(r"control plane API on (http://\S+)", server.log())
    assert match, server.log()
    return match.group(1)


def gtm_health(server: GtmServer, state_root: Path) -> str:
    """`gtm health` as an operator runs it next to gtm up (token from var/control)."""
    command = [*gtm_command("health", "--api", api_url(server))]
    result = subprocess.run(command, cwd=state_root, capture_output=True, text=True,
                            timeout=20, check=True)
    return result.stdout


def audited_flips(server: GtmServer, state_root: Path, what: str) -> list[str]:
    """The health flips of `what` in the control plane's audit log, oldest first."""
    token = (state_root / "var" / "control" / "admin.token").read_text().strip()
    request = urllib.request.Request(f"{api_url(server)}/v1/audit?limit=200",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=3) as response:
        body = json.loads(response.read())
    entries = body["items"] if isinstance(body, dict) else body
    flips = [e for e in entries if e["action"] == "health.change" and e["target"] == what]
    return [e["outcome"] for e in sorted(flips, key=lambda e: e.get("id", 0))]


def test_a_region_without_backends_leaves_the_answers_and_returns(
    gtm_server: ServerFactory, tmp_path: Path
) -> None:
    # Copies of the example regions: admin changes are written beside the config.
    regions = []
    for name in REGIONS:
        target = tmp_path / f"{name}.toml"
        shutil.copy(REPO / "examples" / "lb" / f"{name}.toml", target)
        regions += ["--region", str(target)]
    port = free_port(("127.0.0.1",))
    script = Path(sys.executable).parent / "gtm"
    server = gtm_server(
        REPO / "zones", workers=None, subcommand="up",
        extra=["--listen", f"127.0.0.1:{port}", "--api-listen", "127.0.0.1:0", *regions],
        command=[str(script)] if script.exists() else gtm_command(),
    )  # fmt: skip
    wait_for(server, EU, deadline=15.0)  # probes have seen the balancers up

    for backend in EU_BACKENDS:
        set_backend_state(backend, "maintenance")
    moved = wait_for(server, US, deadline=MOVE_DEADLINE)

    # The flip's audit row is written beside the rebuild of the answers, not before it.
    flips = wait_until(lambda: audited_flips(server, tmp_path, "region eu-west") or None,
                       5.0, "the audited flip of region eu-west")
    assert flips == ["down"]
    # `gtm health` reads what the node last reported to the control plane (every few
    # seconds), so it may trail the answers a little.
    listing = ""
    for _ in range(50):
        listing = gtm_health(server, tmp_path)
        if "region eu-west: DOWN" in listing:
            break
        time.sleep(0.2)
    assert "region eu-west: DOWN" in listing, listing
    for backend in EU_BACKENDS:
        assert re.search(rf"backend {re.escape(backend)}: \w+, admin maintenance", listing), listing

    for backend in EU_BACKENDS:
        set_backend_state(backend, "enabled")
    returned = wait_for(server, EU, deadline=MOVE_DEADLINE)
    assert moved < MOVE_DEADLINE and returned < MOVE_DEADLINE
    print(f"answers moved after {moved:.2f} s, returned after {returned:.2f} s")
