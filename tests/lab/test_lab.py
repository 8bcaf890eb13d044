"""`gtm lab`, for real: namespaces, the delay lines, faults, and removal after a crash.

One lab (prefix gtmt<pid>-) serves the module; the last test kills its `gtm lab up` with
SIGKILL and checks that `gtm lab down` leaves nothing behind. Needs root, ip and nft:
skipped loudly without them, failed under CI=true.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gtm.lab.faults import LabControl
from gtm.lab.state import STATE_FILE, Lab
from tests.lab.harness import lab_down, lab_requirements, lab_up, wait

pytestmark = [pytest.mark.integration]
PREFIX = f"gtmt{os.getpid()}-"
ZONE_NAME = "www.gslb.example.test"
# The steering of examples/lab/regions.toml: each country's resolver gets this region.
EXPECTED = {"gb": "eu-west", "jp": "ap-northeast", "us": "us-east", "br": "sa-east"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LabControl, Any]]:
    reason = lab_requirements(("ip", "nft", "dig", "curl"))
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"gtm lab tests: {reason}")
        pytest.skip(f"SKIPPED gtm lab tests: {reason}")
    state_dir = tmp_path_factory.mktemp("lab")
    with lab_up(PREFIX, state_dir, state_dir / "up.out", 50) as up:
        yield LabControl.connect(state_dir), up


def _answer(control: LabControl, vantage: str, node: str = "dns1") -> list[str]:
    server = control.description.nodes[node].address
    out = control.run_in(vantage, ["dig", "+short", "+time=1", "+tries=1", f"@{server}",
                                   ZONE_NAME]).stdout
    return out.split()


def _region_of(control: LabControl, address: str) -> str | None:
    for region in control.description.regions.values():
        if address in region.endpoints.values():
            return region.name
    return None


def _answered_region(control: LabControl, vantage: str, node: str = "dns1") -> str | None:
    answer = _answer(control, vantage, node)
    return _region_of(control, answer[0]) if len(answer) == 1 else None


def _connect_seconds(control: LabControl, vantage: str, address: str) -> float:
    """A TCP handshake's duration, timed inside the vantage point's namespace."""
    code = ("import socket, time\n"
            f"s = socket.socket(); s.settimeout(10); t = time.monotonic()\n"
            f"s.connect(({address!r}, 8080)); print(time.monotonic() - t)")
    result = control.run_in(vantage, [sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    return float(result.stdout)


def _http(control: LabControl, vantage: str, address: str) -> subprocess.CompletedProcess[str]:
    return control.run_in(vantage, ["curl", "-s", "-m", "2", f"http://{address}:8080/"])


def test_each_country_resolves_to_its_region_and_fetches_through_the_balancer(lab) -> None:
    control, _ = lab
    for vantage, region in EXPECTED.items():
        wait(lambda v=vantage, r=region: all(_answered_region(control, v, n) == r
                                              for n in control.description.nodes),
              10, f"{vantage} to be answered with {region} by every DNS node")
    address = _answer(control, "gb")[0]
    reply = _http(control, "gb", address)
    backends = [b.split(":")[0] for b in control.description.regions["eu-west"].backends]
    assert reply.returncode == 0, reply.stderr
    assert reply.stdout.startswith("hello from ")
    assert reply.stdout.split()[-1].split(":")[0] in backends  # a backend of eu-west


def test_latency_follows_distance_and_is_set_at_run_time(lab) -> None:
    control, _ = lab
    tokyo = control.description.regions["ap-northeast"].endpoints["ap-northeast-1"]
    # The distance's round trip (London to Tokyo, about 96 ms) is a floor, never a ceiling.
    default_ms = control.description.latency_ms["ap-northeast"]["81.2.69.160"]
    assert default_ms > 90
    assert _connect_seconds(control, "gb", tokyo) >= default_ms / 1000
    control.set_latency("ap-northeast", 400)
    try:
        assert _connect_seconds(control, "jp", tokyo) >= 0.4
        assert control.refresh().latency_ms["ap-northeast"]["133.1.1.1"] == 400
    finally:
        control.set_latency("ap-northeast", None)


def test_loss_drops_udp_on_the_path_and_bad_values_change_nothing(lab) -> None:
    control, _ = lab
    with pytest.raises(Exception, match="share"):
        control.set_loss("sa-east", 2)
    assert control.refresh().loss["sa-east"] == 0
    before = control.counters()["sa-east"]["dropped_loss"]
    control.set_loss("sa-east", 1.0)
    try:
        address = control.description.regions["sa-east"].endpoints["sa-east-1"]
        code = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for _ in range(5): s.sendto(b'x', ({address!r}, 9999))")
        assert control.run_in("br", [sys.executable, "-c", code]).returncode == 0
        wait(lambda: control.counters()["sa-east"]["dropped_loss"] >= before + 5, 5,
              "the delay line to drop the datagrams")
    finally:
        control.set_loss("sa-east", 0)


def test_a_link_cut_takes_the_region_out_and_a_restore_brings_it_back(lab) -> None:
    control, _ = lab
    eu = control.description.regions["eu-west"].endpoints["eu-west-1"]
    control.cut_link("eu-west")
    try:
        # Health checks from the DNS nodes fail; GB moves to its second region.
        wait(lambda: _answered_region(control, "gb") == "us-east", 15,
              "GB's answer to move to us-east")
        assert _http(control, "gb", eu).returncode != 0
        assert control.refresh().faults["cut"] == ["eu-west"]
    finally:
        control.restore_link("eu-west")
    wait(lambda: _answered_region(control, "gb") == "eu-west", 15,
          "GB's answer to come back to eu-west")
    assert _http(control, "gb", eu).returncode == 0


def test_killed_lab_is_removed_by_down_with_nothing_left(lab) -> None:
    control, up = lab
    control.partition("eu-west")  # an nft table in a region namespace, to be removed too
    state_dir = Path(control.description.state_dir)
    recorded = Lab.load(state_dir)
    region_ns = recorded.regions["eu-west"].namespace
    tables = subprocess.run(["ip", "netns", "exec", region_ns, "nft", "list", "tables"],
                            capture_output=True, text=True, check=True).stdout
    assert "gtmlab" in tables
    up.send_signal(signal.SIGKILL)
    up.wait()
    assert all(p.id.alive() for p in recorded.processes)  # orphans, still running

    first = lab_down(PREFIX, state_dir)
    assert first.returncode == 0, first.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert PREFIX not in netns
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert PREFIX not in links
    host_tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True)
    assert "gtmlab" not in host_tables.stdout
    assert not any(p.id.alive() for p in recorded.processes)
    assert not (state_dir / STATE_FILE).exists()
    again = lab_down(PREFIX, state_dir)  # idempotent
    assert again.returncode == 0, again.stderr
