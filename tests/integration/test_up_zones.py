"""`gtm up` as a newcomer runs it: files and `gtm config apply` side by side, a bad
file, SIGTERM, and a restart with a bad zone (issue 13)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.servers import (
    GtmServer,
    ServerFactory,
    copy_example_zones,
    gtm_command,
    subprocess_env,
    wait_until,
)

pytestmark = pytest.mark.integration

UP_ARGS = ["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--no-regions",
           "--no-probe"]


def start_up(gtm_server: ServerFactory, zones: Path) -> GtmServer:
    return gtm_server(zones, workers=None, subcommand="up", extra=UP_ARGS)


def gtm(server: GtmServer, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A gtm command next to `gtm up` (its admin token from var/control)."""
    match = re.search(r"control plane API on (http://\S+)", server.log())
    assert match, server.log()
    return subprocess.run(gtm_command(*args, "--api", match.group(1)), cwd=cwd,
                          env=subprocess_env(), capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, check=False)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


def www_ttl(server: GtmServer) -> int:
    [rrset] = server.query("www.gslb.example.test.", "A").answer
    return int(rrset.ttl)


def answers(server: GtmServer, name: str) -> set[str]:
    return server.addresses(name)


def test_files_and_the_api_side_by_side_then_stop_and_restart_with_a_bad_zone(
    gtm_server: ServerFactory, tmp_path: Path
) -> None:
    zones = copy_example_zones(tmp_path / "zones")
    server = start_up(gtm_server, zones)

    # `gtm config apply` sets www's TTL; then the steering file is edited by hand.
    got = gtm(server, tmp_path, "config", "get")
    document = json.loads(got.stdout)
    document["steering"]["gslb.example.test."]["names"]["www"]["ttl"] = 99
    (tmp_path / "doc.json").write_text(json.dumps(document))
    applied = gtm(server, tmp_path, "config", "apply", "-f", str(tmp_path / "doc.json"),
                  "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    wait_until(lambda: www_ttl(server) == 99 or None, 10, "the applied TTL")
    steering = zones / "gslb.example.test.steering.toml"
    edit(steering, "ttl = 30", "ttl = 31")
    log = server.wait_for_log("no longer comes from it", timeout=10)
    assert f"To make the file's content live: gtm zones apply gslb.example.test --zones " \
           f"{zones}" in log
    assert www_ttl(server) == 99  # the edit did not undo the apply

    # A bad zone file: said once, with file, line and what was expected.
    org = zones / "example.org.zone"
    edit(org, "@     A    127.0.30.1", "@     A    127.0.30.300")
    server.wait_for_log(re.escape(f"{org}:5: not an IPv4 address: 127.0.30.300"), timeout=10)
    # A good edit of another zone after it: the watcher has looked again since.
    edit(zones / "example.test.zone", "mail        IN  A     127.0.10.25",
         "mail        IN  A     127.0.10.25\nlater       IN  A     127.0.10.77")
    wait_until(lambda: answers(server, "later.example.test.") == {"127.0.10.77"} or None,
               10, "the good edit of example.test")
    assert server.log().count("not an IPv4 address: 127.0.30.300") == 1

    # SIGTERM: the shutdown is in the log, step by step.
    assert server.stop() == 0
    log = server.log()
    for step in ("SIGTERM received: shutting down", "stopping the zone directory watcher",
                 "stopping the config follower and the control plane API",
                 "stopping the DNS service", "stopped"):
        assert f"INFO gtm.cli[{server.pid}] {step}" in log, log

    # Restarted with the bad file still there: it starts from its last-known-good
    # snapshot, says which zone is bad, and serves example.org as before.
    again = start_up(gtm_server, zones)
    log = again.wait_for_log("BAD ZONE FILES")
    assert re.search(r"ERROR gtm\.cli\[\d+\] BAD ZONE FILES for example\.org\.: starting "
                     r"from the last-known-good snapshot", log), log
    assert answers(again, "example.org.") == {"127.0.30.1"}
    assert answers(again, "later.example.test.") == {"127.0.10.77"}
    assert www_ttl(again) == 99
