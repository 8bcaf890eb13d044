"""`gtm health` next to `gtm up` shows what is served and why: a region set down by hand
is DOWN (admin) although its balancer reports it healthy (issue 13)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.servers import (
    EXAMPLE_ZONES,
    GtmServer,
    ServerFactory,
    free_port,
    gtm_command,
    subprocess_env,
)

# The example regions bind fixed addresses (127.0.N.1:8080, :9900, demo backends :9001)
# or the example zone probes them: one test at a time on this machine holds them.
pytestmark = [pytest.mark.integration, pytest.mark.serial,
              pytest.mark.usefixtures("example_regions")]

HOST = "127.0.77.1"  # this test's own loopback address: no clash with the example regions


def region_file(path: Path, region: str = "eu-west", host: str = HOST,
                extra: str = "") -> Path:
    """A balancer for a region of the example zone, on ports of its own (``extra``: more
    lines of its [lb] table)."""
    admin, listener, backend = (free_port((host,)) for _ in range(3))
    path.write_text(f"""[lb]
region = "{region}"
admin = "{host}:{admin}"
admin_token = "test-token"
demo_backends = ["{host}:{backend}"]
access_log = "off"
{extra}

[[lb.listeners]]
name = "web"
bind = "{host}:{listener}"
pool = "web"

[[lb.pools]]
name = "web"
backends = ["{host}:{backend}"]
""")
    return path


def gtm(server: GtmServer, cwd: Path, *args: str) -> str:
    match = re.search(r"control plane API on (http://\S+)", server.log())
    assert match, server.log()
    result = subprocess.run(gtm_command(*args, "--api", match.group(1)), cwd=cwd,
                            env=subprocess_env(), capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def health_until(server: GtmServer, cwd: Path, pattern: str, deadline: float = 15.0) -> str:
    """`gtm health` reads what the node last reported (every couple of seconds)."""
    listing = ""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        listing = gtm(server, cwd, "health")
        if re.search(pattern, listing):
            return listing
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} in gtm health after {deadline} s:\n{listing}")


def test_a_region_set_down_by_hand_is_shown_down_with_its_cause(
    gtm_server: ServerFactory, tmp_path: Path
) -> None:
    region = region_file(tmp_path / "eu-west.toml")
    server = gtm_server(
        EXAMPLE_ZONES, workers=None, subcommand="up",
        extra=["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0",
               "--region", str(region)],
    )  # fmt: skip
    health_until(server, tmp_path, r"region eu-west: up \(region report: balancer reports "
                 r"healthy")
    gtm(server, tmp_path, "steer", "region", "gslb.example.test", "eu-west", "--health",
        "down", "--reason", "drill")
    listing = health_until(server, tmp_path, r"region eu-west: DOWN")
    # Served down, because of the hand-set state; the balancer's own word beside it.
    assert re.search(r"region eu-west: DOWN \(admin: drill\), balancer reports healthy",
                     listing), listing
    # Its endpoints are not handed out (down by their probes here, or by the region).
    assert re.search(r"gslb\.example\.test/eu-west-1 +down ", listing), listing
    explained = gtm(server, tmp_path, "explain", "www.gslb.example.test", "--subnet",
                    "81.2.69.0/24")
    assert "region down" in explained
