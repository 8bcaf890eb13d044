"""End to end on `gtm up`: the example regions' listeners speak HTTP/2 with prior
knowledge (h2c) to curl and h2load, through the balancers to their demo backends."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.servers import ServerFactory, free_port, gtm_command
from tests.integration.test_up_failover import EU, REGIONS, wait_for
from tests.lb.h2client import require

# The example regions bind fixed addresses (127.0.N.1:8080, :9900, demo backends :9001)
# or the example zone probes them: one test at a time on this machine holds them.
pytestmark = [pytest.mark.integration, pytest.mark.serial,
              pytest.mark.usefixtures("example_regions")]

REPO = Path(__file__).resolve().parents[2]


def test_http2_through_gtm_up_regions(gtm_server: ServerFactory, tmp_path: Path) -> None:
    curl = require("curl", "curl")
    h2load = require("h2load", "nghttp2-client")
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
    wait_for(server, EU, deadline=15.0)  # the balancers are up and checked
    for host in ("127.0.1.1", "127.0.2.1", "127.0.3.1", "127.0.4.1"):
        out = subprocess.run([curl, "-sS", "-i", "--http2-prior-knowledge",
                              f"http://{host}:8080/"], capture_output=True, text=True,
                             timeout=30, check=False)
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("HTTP/2 200"), out.stdout
        assert "via: 1.1 gtm" in out.stdout and "hello from 127.0." in out.stdout
    load = subprocess.run([h2load, "-n", "2000", "-c", "10", "-m", "10",
                           "http://127.0.1.1:8080/"], capture_output=True, text=True,
                          timeout=120, check=False)
    match = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", load.stdout)
    assert match and match.groups() == ("2000", "0", "0"), load.stdout + load.stderr
