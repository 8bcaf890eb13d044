"""`gtm drill --lab` in the real network lab (one `gtm lab up` for the module): every lab
fault against www.gslb.example.test, observed from inside the lab's client namespaces
(gb, jp, us, br: their own addresses, no ECS), where the answers go, the report's
milestones, a runner killed with SIGKILL during a lab fault, and `gtm lab down` after.

Drills on different regions run three at a time (each region's clients fall back to
us-east, which no drill of the batch touches); they start together, so one may see
another's region down and the another-region-down rule would refuse it: they run with
`--force --reason`, audited. Needs root, ip and nft: skipped loudly without them,
failed under CI=true.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gtm.control.client import Client
from gtm.lab.faults import LabControl
from gtm.lab.state import STATE_FILE
from tests.integration.servers import gtm_command, subprocess_env
from tests.lab.harness import lab_down, lab_requirements, lab_up, wait

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PREFIX = f"gtmt{os.getpid() % 100000}d-"
ZONE = "gslb.example.test"
NAME = f"www.{ZONE}"
VANTAGE = ("gb", "jp", "us", "br")
HOME = {"gb": "eu-west", "jp": "ap-northeast", "us": "us-east", "br": "sa-east"}
FALLBACK = "us-east"  # the second region of every country's list in the lab's steering
FORCE = ("--force", "--reason", "lab test: concurrent drills on separate regions")


@dataclass
class Lab:
    control: LabControl
    up: subprocess.Popen[bytes]
    state_dir: Path
    work: Path

    @property
    def api(self) -> Client:
        return Client(self.control.description.api_url, self.control.description.token)

    def region_of(self, address: str) -> str | None:
        for region in self.control.description.regions.values():
            if address in region.endpoints.values():
                return region.name
        return None

    def answered(self, vantage: str) -> str | None:
        """The region dns1 answers the vantage point with (dig inside its namespace)."""
        server = self.control.description.nodes["dns1"].address
        out = self.control.run_in(vantage, ["dig", "+short", "+time=1", "+tries=1",
                                            f"@{server}", NAME]).stdout.split()
        return self.region_of(out[0]) if len(out) == 1 else None

    def drill(self, body: dict[str, Any], *extra: str) -> subprocess.Popen[str]:
        path = self.work / f"{body['name']}.json"
        path.write_text(json.dumps(body))
        return subprocess.Popen(gtm_command("drill", "run", str(path), "--lab",
                                            str(self.state_dir), "--json", *extra),
                                cwd=self.work, env=subprocess_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _set_ttl(api: Client, ttl: int) -> None:
    live = api.get("/v1/config")
    steering = live["document"]["steering"]
    key = next(k for k in steering if k.rstrip(".") == ZONE)
    steering[key]["names"]["www"]["ttl"] = ttl
    api.call("PUT", "/v1/config/sections/steering", {"value": steering},
             if_match=int(live["version"]))


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = lab_requirements(("ip", "nft", "dig"))
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"gtm drill lab tests: {reason}")
        pytest.skip(f"SKIPPED gtm drill lab tests: {reason}")
    work = tmp_path_factory.mktemp("drill-lab")
    state_dir = work / "lab"
    with lab_up(PREFIX, state_dir, work / "up.out", 60) as up:
        running = Lab(LabControl.connect(state_dir), up, state_dir, work)
        # A 1 s TTL on www, so the resolvers' caches turn over within a second.
        _set_ttl(running.api, 1)
        for vantage, region in HOME.items():
            wait(lambda v=vantage, r=region: running.answered(v) == r, 20,
                  f"{vantage} answered with {region}")
        yield running


def plan(name: str, region: str, fault: dict[str, Any], **sections: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name, "zone": ZONE, "target": {"region": region}, "fault": fault,
        # Each vantage point observes from inside its namespace: no ECS, its own address.
        "observe": {"names": [NAME], "vantage": [{"name": v, "lab": v} for v in VANTAGE],
                    "interval": 0.1, "timeout": 0.5},
        "abort": {"error_rate": False, "move_deadline": 20},
        "restore": {"expiry_grace": 10, "settle": 15},
        "safety": {"min_headroom": 0.0},
    }
    for key, value in sections.items():
        body[key] = {**body.get(key, {}), **value}
    return body


def finish(runners: dict[str, subprocess.Popen[str]]) -> dict[str, dict[str, Any]]:
    reports = {}
    for name, runner in runners.items():
        out, err = runner.communicate(timeout=60)
        assert out.strip(), f"{name}: {err}"
        reports[name] = json.loads(out)
        assert runner.returncode == 0, f"{name}: {reports[name]['reason']}\n{err}"
    return reports


def regions_seen(report: dict[str, Any], vantage: str, start: float, end: float) -> set[str]:
    return {o["region"] for o in report["observations"]
            if o["vantage"] == vantage and start <= o["t"] < end and o["region"]}


def failures(report: dict[str, Any], vantage: str) -> list[dict[str, Any]]:
    return [o for o in report["observations"] if o["vantage"] == vantage and not o["ok"]]


def assert_moved_and_returned(report: dict[str, Any], vantage: str) -> None:
    """The target's clients (``vantage``) left for the fallback during the fault and came
    back after the restore; the timeline is in order and inside the drill."""
    times = report["milestones"]
    assert report["outcome"] == "succeeded", report["reason"]
    assert report["affected"] == [vantage]
    order = ["fault_injected", "first_moved", "all_moved", "restored", "all_returned"]
    assert all(times[k] is not None for k in order), times
    assert [times[k] for k in order] == sorted(times[k] for k in order), times
    duration = report["plan"]["fault"]["duration"]
    assert times["restored"] - times["fault_injected"] >= duration
    moved = report["per_vantage"][vantage]["moved"]
    region = report["plan"]["target"]["region"]
    assert regions_seen(report, vantage, 0, times["fault_injected"]) == {region}
    assert regions_seen(report, vantage, moved, times["restored"]) == {FALLBACK}
    returned = report["per_vantage"][vantage]["returned"]
    assert times["restored"] <= returned <= times["all_returned"]
    assert regions_seen(report, vantage, returned, 1e12) == {region}
    # Observed from the lab's client: its own address (no ECS), as its resolver is seen.
    address = report_address(report, vantage)
    assert f"lab client {vantage} ({address}," in report["observed_from"][vantage]
    assert "ECS" not in report["observed_from"][vantage]
    assert regions_seen(report, "us", 0, 1e12) == {"us-east"}  # us-east: never faulted


def report_address(report: dict[str, Any], vantage: str) -> str:
    return {"gb": "81.2.69.160", "jp": "133.1.1.1", "us": "216.160.83.56",
            "br": "200.147.67.142"}[vantage]


def assert_lab_clean(lab: Lab) -> None:
    described = lab.control.refresh()
    assert described.faults == {"cut": [], "partitions": {}, "stopped": []}
    assert not any(described.loss.values())
    assert all(p.id.alive() for p in described.processes)


def test_cut_link_latency_and_stopped_backends_move_clients_and_bring_them_back(lab: Lab
                                                                                 ) -> None:
    runners = {
        "cut": lab.drill(plan("lab-cut", "eu-west", {"type": "cut_link", "duration": 6}),
                         *FORCE),
        # Past the health check's 0.5 s timeout: the region is out for the probes too.
        "latency": lab.drill(plan("lab-latency", "ap-northeast",
                                  {"type": "latency", "duration": 6, "latency_ms": 1500}),
                             *FORCE),
        "backends": lab.drill(plan("lab-backends", "sa-east",
                                   {"type": "stop_backends", "duration": 6}), *FORCE),
    }
    cut_started = time.time()

    def in_force() -> bool:
        described = lab.control.refresh()
        return (described.faults["cut"] == ["eu-west"]
                and described.latency_ms["ap-northeast"]["133.1.1.1"] == 1500
                and "backends:sa-east" in described.faults["stopped"])

    wait(in_force, 20, "the three faults in force in the lab")
    reports = finish(runners)
    assert_moved_and_returned(reports["cut"], "gb")
    assert_moved_and_returned(reports["latency"], "jp")
    assert_moved_and_returned(reports["backends"], "br")
    # A cut link: GB's requests to eu-west fail until its answers move, never after.
    cut = reports["cut"]
    assert failures(cut, "gb")
    assert all(o["t"] < cut["per_vantage"]["gb"]["moved"] for o in failures(cut, "gb"))
    assert cut["milestones"]["fault_injected"] >= cut_started - 5
    # Latency: JP's requests to ap-northeast time out or crawl before the move.
    latency = reports["latency"]
    slow = [o for o in latency["observations"] if o["vantage"] == "jp"
            and o["region"] == "ap-northeast"
            and latency["milestones"]["fault_injected"] + 0.2 < o["t"]
            < latency["per_vantage"]["jp"]["moved"]]
    assert slow and all(not o["ok"] for o in slow)
    # Every lab override was restored by the control plane, by the runner's request.
    for report in reports.values():
        record = lab.api.get(f"/v1/drills/{report['id']}")
        assert record["status"] == "succeeded"
        lab_overrides = [o for o in record["overrides"] if o["kind"] == "lab"]
        assert len(lab_overrides) == 1 and lab_overrides[0]["restored_at"]
        assert lab_overrides[0]["lab"]["state_dir"] == str(lab.state_dir.resolve())
    assert_lab_clean(lab)
    assert lab.control.description.latency_ms["ap-northeast"]["133.1.1.1"] < 1500


def test_partition_and_loss_move_clients_and_bring_them_back(lab: Lab) -> None:
    runners = {
        # Cut off from both DNS nodes: they see it down and move GB away, although
        # GB's clients could still reach it (a "false failover": no client error).
        "partition": lab.drill(plan("lab-partition", "eu-west",
                                    {"type": "partition", "duration": 6,
                                     "nodes": ["dns1", "dns2"]}), *FORCE),
        # Every packet on the path lost, TCP too: probes and clients alike time out.
        "loss": lab.drill(plan("lab-loss", "ap-northeast",
                               {"type": "loss", "duration": 6, "loss": 1.0}), *FORCE),
    }

    def in_force() -> bool:
        described = lab.control.refresh()
        return (described.faults["partitions"] == {"eu-west": ["dns1", "dns2"]}
                and described.loss["ap-northeast"] == 1.0)

    wait(in_force, 20, "both faults in force in the lab")
    reports = finish(runners)
    assert_moved_and_returned(reports["partition"], "gb")
    assert not failures(reports["partition"], "gb")
    assert_moved_and_returned(reports["loss"], "jp")
    assert failures(reports["loss"], "jp")
    assert_lab_clean(lab)


def test_stopped_node_keeps_answers_while_a_killed_runners_cut_is_restored_by_expiry(
        lab: Lab) -> None:
    """Two drills at once, apart: a stopped GTM node (its last "up" verdicts stay fresh
    for the health expiry, so health-detected drills beside it would be slowed down;
    this one detects nothing), and a runner killed with SIGKILL during a link cut."""
    node_runner = lab.drill(plan("lab-node", "us-east",
                                 {"type": "stop_node", "duration": 4, "node": "dns1"}),
                            *FORCE)
    killed = lab.drill(plan("lab-killed", "eu-west", {"type": "cut_link", "duration": 1.5},
                            restore={"expiry_grace": 0.5, "settle": 1}), *FORCE)
    try:
        wait(lambda: lab.control.refresh().faults["cut"] == ["eu-west"], 20, "the link cut")
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.communicate(timeout=10)
    drill_id = next(d["id"] for d in lab.api.get("/v1/drills?active=true")["items"]
                    if d["name"] == "lab-killed")
    assert lab.control.refresh().faults["cut"] == ["eu-west"]  # outlives its runner, for now
    wait(lambda: lab.api.get(f"/v1/drills/{drill_id}")["overrides"][0]["restored_at"], 20,
          "the control plane to restore the link at expiry")
    assert lab.control.refresh().faults["cut"] == []
    override = lab.api.get(f"/v1/drills/{drill_id}")["overrides"][0]
    assert override["kind"] == "lab" and override["fault"] == "cut_link"
    assert override["restored_by"] == "control-plane"
    assert override["restore_reason"] == "expired"
    assert override["restored_at"] >= override["expires_at"]
    wait(lambda: lab.api.get(f"/v1/drills/{drill_id}")["status"] == "abandoned", 10,
          "the killed drill to end abandoned")

    node = finish({"node": node_runner})["node"]
    assert node["outcome"] == "succeeded", node["reason"]
    assert node["expect"] == "stay" and node["affected"] == ["us"]
    times = node["milestones"]
    assert times["first_moved"] is None and times["all_moved"] is None
    assert times["fault_injected"] < times["restored"] <= times["all_returned"]
    assert regions_seen(node, "us", 0, 1e12) == {"us-east"}
    assert not [o for o in node["observations"] if o["error"] == "no DNS answer"]
    assert not failures(node, "us")  # each resolver went on with dns2
    assert_lab_clean(lab)
    wait(lambda: lab.answered("us") == "us-east", 20, "dns1 answering again")
    wait(lambda: lab.answered("gb") == "eu-west", 20, "GB back on eu-west")


def test_lab_down_after_the_drills_leaves_nothing(lab: Lab) -> None:
    recorded = lab.control.refresh()
    lab.up.send_signal(signal.SIGTERM)
    lab.up.wait(timeout=40)
    result = lab_down(PREFIX, lab.state_dir)
    assert result.returncode == 0, result.stderr
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert PREFIX not in netns
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert PREFIX not in links
    assert not any(p.id.alive() for p in recorded.processes)
    assert not (lab.state_dir / STATE_FILE).exists()
