"""Running on port 53 without root: the shipped systemd units (deploy/systemd/) pass
`systemd-analyze verify` with no warning and give exactly CAP_NET_BIND_SERVICE to a
dedicated user, and a node refused port 53 says what it lacks."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.knot_reference import require
from tests.integration.servers import REPO, copy_example_zones, subprocess_env

pytestmark = pytest.mark.integration

UNITS = REPO / "deploy" / "systemd"
GTM = Path(sys.executable).with_name("gtm")
BINDS_LOW = {"gtm-dns.service", "gtm-lb@.service", "gtm-up.service"}


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def test_the_units_pass_systemd_analyze_verify_without_a_warning(tmp_path: Path) -> None:
    analyze = require("systemd-analyze", "systemd")
    names = []
    for source in sorted(UNITS.glob("*.service")):
        # Where the operator installed gtm; the units say /opt/gtm.
        text = source.read_text().replace("/opt/gtm/bin/gtm", str(GTM))
        target = tmp_path / source.name.replace("@.service", "@eu-west.service")
        target.write_text(text)
        if "@" in source.name:
            (tmp_path / source.name).write_text(text)  # the template of the instance
        names.append(target.name)
    assert {"gtm-dns.service", "gtm-api.service", "gtm-lb@eu-west.service"} <= set(names)
    done = subprocess.run([analyze, "verify", *names], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    # verify exits 0 on unknown keys and bad values, which it only reports: none allowed.
    reported = [line for line in (done.stdout + done.stderr).splitlines()
                if str(tmp_path) in line or ".service" in line]
    assert done.returncode == 0 and not reported, done.stdout + done.stderr


@pytest.mark.parametrize("name", ["gtm-dns.service", "gtm-api.service", "gtm-lb@.service",
                                  "gtm-up.service"])
def test_each_unit_runs_as_the_dedicated_user_with_one_capability_at_most(name: str) -> None:
    service = unit(name)["Service"]
    assert (service["User"], service["Group"]) == ("gtm", "gtm")
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "yes"
    assert service["StateDirectory"].startswith("gtm/")
    if name in BINDS_LOW:
        assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
        assert service["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    else:
        assert "AmbientCapabilities" not in service
        assert service["CapabilityBoundingSet"] == ""
    sysusers = (UNITS / "gtm.sysusers.conf").read_text()
    assert "\nu gtm " in sysusers


def test_port_53_without_the_capability_says_what_is_missing(tmp_path: Path) -> None:
    setpriv = require("setpriv", "util-linux")
    if os.geteuid() != 0:
        pytest.skip("needs root, to drop CAP_NET_BIND_SERVICE from a root process")
    zones = copy_example_zones(tmp_path / "zones")
    done = subprocess.run(
        [setpriv, "--bounding-set=-net_bind_service", str(GTM), "serve", "--zones",
         str(zones), "--listen", "127.53.0.9:53", "--workers", "1"],
        capture_output=True, text=True, timeout=30, check=False, env=subprocess_env(),
        cwd=tmp_path)
    assert done.returncode != 0
    assert "cannot listen on 127.53.0.9:53 (UDP): Permission denied" in done.stderr
    assert "CAP_NET_BIND_SERVICE" in done.stderr and "deploy/systemd/" in done.stderr
