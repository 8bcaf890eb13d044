"""`gtm drill` against a real `gtm up` (one per module): faults, where answers go, the
milestones, an abort on the error budget, the runner killed mid-drill, safety refusals.

The example regions are copied (admin changes are written beside their files) and the
steered name's TTL is set to 1 s through the API first, so drills take seconds."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.edns
import pytest

from tests.integration.servers import (
    GtmServer,
    example_regions_held,
    free_port,
    gtm_command,
    start_gtm,
    subprocess_env,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.serial, pytest.mark.timeout(120)]

REPO = Path(__file__).resolve().parents[2]
REGIONS = ("eu-west", "us-east", "ap-northeast", "sa-east")
ZONE = "gslb.example.test."
NAME = "www.gslb.example.test."
# Two EU resolvers (eu-west serves them), and three that eu-west does not serve.
VANTAGE = [{"name": "GB", "subnet": "81.2.69.0/24"}, {"name": "FR", "subnet": "62.4.0.0/24"},
           {"name": "JP", "subnet": "133.1.1.0/24"}, {"name": "US", "subnet": "8.8.8.0/24"},
           {"name": "BR", "subnet": "200.160.0.0/24"}]
HOME = {"GB": "eu-west", "FR": "eu-west", "JP": "ap-northeast", "US": "us-east",
        "BR": "sa-east"}
EU = {"127.0.1.1", "127.0.1.2"}


@dataclass
class Up:
    server: GtmServer
    root: Path
    api: str
    token: str
    dns_port: int

    def call(self, method: str, path: str, body: Any = None, if_match: int | None = None
             ) -> Any:
        request = urllib.request.Request(
            self.api + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}",
                     "Content-Type": "application/json",
                     **({"If-Match": f'"{if_match}"'} if if_match is not None else {})})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def document(self) -> tuple[int, dict[str, Any]]:
        live = self.call("GET", "/v1/config")
        return int(live["version"]), live["document"]

    def put_section(self, name: str, value: Any) -> None:
        version, _ = self.document()
        self.call("PUT", f"/v1/config/sections/{name}", {"value": value}, if_match=version)

    def answers(self, subnet: str = "81.2.69.0") -> set[str]:
        option = dns.edns.ECSOption(subnet, 24)
        return self.server.addresses(NAME, use_edns=0, options=[option])

    def admin_states(self) -> dict[str, str]:
        request = urllib.request.Request("http://127.0.1.1:9900/pools",
                                         headers={"Authorization": "Bearer demo-token"})
        with urllib.request.urlopen(request, timeout=5) as response:
            pools = json.loads(response.read())["pools"]
        return {b["address"]: b["state"] for p in pools for b in p["backends"]}

    def endpoint_admin(self) -> dict[str, str]:
        _, document = self.document()
        state = document.get("state", {}).get(ZONE, {}) or document.get("state", {}).get(
            ZONE.rstrip("."), {})
        return {name: e.get("admin", "none") for name, e in
                (state.get("endpoints") or {}).items()}


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    with example_regions_held():  # their addresses are fixed: one holder on this machine
        yield from _up(tmp_path_factory)


def _up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    root = tmp_path_factory.mktemp("drill")
    regions: list[str] = []
    for name in REGIONS:
        shutil.copy(REPO / "examples" / "lb" / f"{name}.toml", root / f"{name}.toml")
        regions += ["--region", str(root / f"{name}.toml")]
    port = free_port(("127.0.0.1",))
    server = start_gtm(["up", "--zones", str(REPO / "zones"), "--listen", f"127.0.0.1:{port}",
                        "--api-listen", "127.0.0.1:0", *regions], root / "up.log", cwd=root)
    try:
        match = wait_until(lambda: re.search(r"control plane API on (http://\S+)",
                                             server.log()), 10, "the API's address")
        token = (root / "var" / "control" / "admin.token").read_text().strip()
        running = Up(server, root, match.group(1), token, port)
        # Short TTLs for the steered name, so resolvers' caches turn over in a second.
        _, document = running.document()
        steering = document["steering"]
        key = next(k for k in steering if k.rstrip(".") == ZONE.rstrip("."))
        steering[key]["names"]["www"]["ttl"] = 1
        running.put_section("steering", steering)
        wait_until(lambda: running.answers() <= EU or None, 20, "eu-west in GB's answers")
        yield running
    finally:
        server.stop()


def plan(name: str, fault: dict[str, Any], **sections: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name, "zone": ZONE.rstrip("."), "target": {"region": "eu-west"},
        "fault": fault,
        "observe": {"names": [NAME], "vantage": VANTAGE, "interval": 0.1, "timeout": 0.5},
        "abort": {"error_rate": False, "move_deadline": 15},
        "restore": {"expiry_grace": 5, "settle": 15},
        "safety": {"min_headroom": 0.0},
    }
    for key, value in sections.items():
        body[key] = {**body.get(key, {}), **value}
    return body


def drill(up: Up, body: dict[str, Any], *extra: str, wait: bool = True
          ) -> subprocess.CompletedProcess[str] | subprocess.Popen[str]:
    path = up.root / f"{body['name']}.json"
    path.write_text(json.dumps(body))
    command = gtm_command("drill", "run", str(path), "--api", up.api, "--dns",
                          f"127.0.0.1:{up.dns_port}", "--json", *extra)
    if not wait:
        return subprocess.Popen(command, cwd=up.root, env=subprocess_env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return subprocess.run(command, cwd=up.root, env=subprocess_env(), text=True,
                          capture_output=True, timeout=90)


def gtm(up: Up, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(gtm_command(*args, "--api", up.api), cwd=up.root,
                          env=subprocess_env(), text=True, capture_output=True, timeout=30)


def regions_seen(report: dict[str, Any], vantage: str, start: float, end: float) -> set[str]:
    return {o["region"] for o in report["observations"]
            if o["vantage"] == vantage and start <= o["t"] < end and o["region"]}


def assert_moved_and_returned(report: dict[str, Any]) -> None:
    times = report["milestones"]
    assert report["outcome"] == "succeeded", report["reason"]
    order = ["fault_injected", "first_moved", "all_moved", "restored", "all_returned"]
    assert all(times[k] is not None for k in order), times
    assert [times[k] for k in order] == sorted(times[k] for k in order), times
    assert set(report["affected"]) == {"GB", "FR"}
    for vantage in ("GB", "FR"):
        moved = report["per_vantage"][vantage]["moved"]
        # Between its move and the restore, an EU client is answered by us-east only.
        assert regions_seen(report, vantage, moved, times["restored"]) == {"us-east"}
        assert regions_seen(report, vantage, 0, times["fault_injected"]) == {"eu-west"}
        returned = report["per_vantage"][vantage]["returned"]
        assert times["restored"] <= returned <= times["all_returned"]
        assert "eu-west" in regions_seen(report, vantage, returned, 1e12)
    for vantage in ("JP", "US", "BR"):  # never affected: their own region throughout
        assert regions_seen(report, vantage, 0, 1e12) == {HOME[vantage]}


def audit(up: Up, action: str) -> list[dict[str, Any]]:
    return [e for e in up.call("GET", "/v1/audit?limit=500")["items"] if e["action"] == action]


def test_force_down_moves_eu_clients_and_returns_them_with_forced_safety(up: Up) -> None:
    today = dt.datetime.now(dt.UTC).date().isoformat()
    body = plan("force-down", {"type": "force_down", "duration": 2.5},
                safety={"blocked_dates": [today]})
    result = drill(up, body, "--force", "--reason", "test: blocked date on purpose")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert_moved_and_returned(report)
    assert report["overridden"] and "blocked-window" in report["overridden"][0]
    assert set(up.endpoint_admin().values()) <= {"none"}  # restored in the document
    stored = up.call("GET", f"/v1/drills/{report['id']}")
    assert stored["status"] == "succeeded" and stored["report"]["milestones"]
    started = [e for e in audit(up, "drill.start") if e["target"] == f"drill {report['id']}"]
    assert started[0]["detail"]["forced_rules"] == ["blocked-window"]
    assert started[0]["detail"]["force_reason"] == "test: blocked date on purpose"
    text = gtm(up, "drill", "report", report["id"])
    assert "SUCCEEDED" in text.stdout and "all vantage points moved" in text.stdout
    page = up.root / "report.html"
    gtm(up, "drill", "report", report["id"], "--html", str(page))
    html = page.read_text()
    assert "<svg" in html and "us-east" in html and "fault injected" in html


def test_drain_through_the_balancer_moves_eu_clients(up: Up) -> None:
    body = plan("drain", {"type": "drain", "duration": 5,
                          "balancer": str(up.root / "eu-west.toml")})
    result = drill(up, body)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert_moved_and_returned(report)
    assert set(up.admin_states().values()) == {"enabled"}


def test_error_budget_aborts_restores_and_says_why(up: Up) -> None:
    # Removing every backend makes eu-west's balancer fail requests at once, before the
    # answers move: more than 20% of requests fail within the window.
    body = plan("stop-backends", {"type": "stop_backends", "duration": 20,
                                  "balancer": str(up.root / "eu-west.toml")},
                abort={"error_rate": 0.2, "window": 1.0, "min_samples": 3})
    result = drill(up, body)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["outcome"] == "aborted"
    assert "client error rate" in report["reason"] and "over the budget 20%" in report["reason"]
    times = report["milestones"]
    assert times["restored"] - times["fault_injected"] < 20  # restored at once, not at the end
    assert up.admin_states() == {"127.0.1.101:9001": "enabled", "127.0.1.102:9001": "enabled"}
    assert up.call("GET", f"/v1/drills/{report['id']}")["status"] == "aborted"
    wait_until(lambda: up.answers() <= EU or None, 15, "GB back on eu-west")


def start_and_kill(up: Up, body: dict[str, Any]) -> str:
    runner = drill(up, body, wait=False)
    assert isinstance(runner, subprocess.Popen)
    try:
        wait_until(lambda: "force_down" in up.endpoint_admin().values() or None, 20,
                   "the force-down in the control plane")
        drill_id = up.call("GET", "/v1/drills?active=true")["items"][0]["id"]
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.communicate(timeout=10)
    return str(drill_id)


def test_killed_runner_is_restored_by_expiry_and_recover_restores_at_once(up: Up) -> None:
    body = plan("killed", {"type": "force_down", "duration": 1.5},
                restore={"expiry_grace": 0.5, "settle": 1})
    drill_id = start_and_kill(up, body)
    record = up.call("GET", f"/v1/drills/{drill_id}")
    expires = record["overrides"][0]["expires_at"]
    wait_until(lambda: set(up.endpoint_admin().values()) <= {"none"} or None, 20,
               "the control plane's restore at expiry")
    assert time.time() >= expires
    record = up.call("GET", f"/v1/drills/{drill_id}")
    assert record["overrides"][0]["restored_by"] == "control-plane"
    assert record["overrides"][0]["restore_reason"] == "expired"
    wait_until(lambda: record_status(up, drill_id) == "abandoned" or None, 5, "abandoned")
    wait_until(lambda: up.answers() <= EU or None, 10, "GB back on eu-west")

    # An override that would live for 10 minutes: `gtm drill recover` restores it now.
    body = plan("recovered", {"type": "force_down", "duration": 600},
                restore={"expiry_grace": 600, "settle": 1})
    drill_id = start_and_kill(up, body)
    result = gtm(up, "drill", "recover")
    assert result.returncode == 0 and f"drill {drill_id}: 1 override(s) restored" in \
        result.stdout, result.stdout + result.stderr
    assert set(up.endpoint_admin().values()) <= {"none"}  # at once, not at expiry
    assert record_status(up, drill_id) == "aborted"
    assert any(e["outcome"] == "recover" for e in audit(up, "drill.restore"))


def record_status(up: Up, drill_id: str) -> str:
    return str(up.call("GET", f"/v1/drills/{drill_id}")["status"])


def refused_rules(up: Up, body: dict[str, Any]) -> str:
    result = drill(up, body)
    assert result.returncode == 3, result.stdout + result.stderr
    return result.stderr


def test_each_safety_rule_refuses_naming_itself(up: Up) -> None:
    base = plan("safety", {"type": "force_down", "duration": 1})
    now = dt.datetime.now(dt.UTC)
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[now.weekday()]
    blocked = refused_rules(up, {**base, "safety": {"blocked_weekly": [
        {"days": [day], "start": "00:00", "end": "24:00"}]}})
    assert "refused by safety rule blocked-window" in blocked and "weekly" in blocked
    asserted = refused_rules(up, {**base, "safety": {"assertions": [
        {"type": "min_regions_up", "count": 4}]}})
    assert "refused by safety rule assertion:min_regions_up" in asserted
    _, document = up.document()
    original = document.get("state", {})
    state = json.loads(json.dumps(original))
    zone = state.setdefault(ZONE.rstrip("."), {})
    zone.setdefault("regions", {})["us-east"] = {"health": "down", "reason": "test"}
    up.put_section("state", state)
    try:
        down = refused_rules(up, base)
        assert "refused by safety rule another-region-down" in down and "us-east" in down
    finally:
        up.put_section("state", original)
    state = json.loads(json.dumps(original))
    zone = state.setdefault(ZONE.rstrip("."), {})
    zone["regions"] = {r: {"health": "up", "headroom": 0.05} for r in REGIONS[1:]}
    up.put_section("state", state)
    try:
        short = refused_rules(up, {**base, "safety": {"min_headroom": 0.1}})
        assert "refused by safety rule headroom" in short and "reports 0.05" in short
    finally:
        up.put_section("state", original)
    refusals = [e for e in audit(up, "drill.refused")]
    assert {rule for e in refusals for rule in e["detail"]["rules"]} >= {
        "blocked-window", "assertion:min_regions_up", "another-region-down", "headroom"}


def test_bad_plans_are_refused_with_key_paths(up: Up, tmp_path: Path) -> None:
    bad = plan("bad", {"type": "force_down", "duration": -1})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = subprocess.run(gtm_command("drill", "check", str(path)), text=True,
                            capture_output=True, timeout=30, env=subprocess_env())
    assert result.returncode == 2 and "fault.duration" in result.stderr, result.stderr
    toml = tmp_path / "bad.toml"
    toml.write_text('name = "x"\nzone = "gslb.example.test"\ntarget = { region = "eu-west" }\n'
                    'fault = { type = "drain", duration = 5 }\n'
                    '[observe]\nnames = ["www.gslb.example.test"]\n'
                    'vantage = [{ name = "GB", subnet = "81.2.69.0/24" },'
                    ' { name = "JP", subnet = "133.1.1.1/24" }]\n')
    result = subprocess.run(gtm_command("drill", "check", str(toml)), text=True,
                            capture_output=True, timeout=30, env=subprocess_env())
    assert result.returncode == 2 and "fault.balancer" in result.stderr, result.stderr
    # Stored in the control plane: the document refuses it with the full path, changing
    # nothing.
    version, _ = up.document()
    wrong = plan("stored", {"type": "force_down", "duration": 5})
    wrong["observe"]["vantage"] = [{"name": "GB", "subnet": "133.1.1.1/24"}]
    with pytest.raises(urllib.error.HTTPError) as refused:
        up.put_section("drills", {"plans": {"stored": wrong}})
    error = json.loads(refused.value.read())["error"]
    assert refused.value.code == 422
    assert error["field"] == "drills.plans.stored.observe.vantage[0].subnet", error
    assert up.document()[0] == version
    with pytest.raises(urllib.error.HTTPError) as refused:
        up.call("POST", "/v1/drills", {"plan": {**wrong, "typo": 1}})
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error"]["field"] == "plan.typo"





def test_schedule_starts_a_run_at_its_slot_and_a_blocked_date_prevents_it(up: Up) -> None:
    # Two practice runs at the same slot, a few seconds from now (the control-plane
    # process wakes at a slot's time); the second's date is blocked.
    plans = {name: plan(name, {"type": "force_down", "duration": 1},
                        restore={"expiry_grace": 5, "settle": 10})
             for name in ("practice", "practice-blocked")}
    up.put_section("drills", {"plans": plans})  # observed through gtm up's DNS listener
    slot = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)).replace(microsecond=0)
    day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[slot.weekday()]
    for name, extra in (("weekly-practice", ()),
                        ("weekly-blocked", ("--blocked-date", slot.date().isoformat()))):
        plan_name = "practice" if name == "weekly-practice" else "practice-blocked"
        result = gtm(up, "drill", "schedule", name, "--plan", plan_name, "--weekly",
                     f"{day}@{slot:%H:%M:%S}", *extra)
        assert result.returncode == 0, result.stderr
    try:
        def finished() -> dict[str, Any] | None:
            items = up.call("GET", "/v1/drills?limit=50")["items"]
            done = [d for d in items if d["name"] == "practice" and d["status"] != "running"]
            return done[0] if done else None

        record = wait_until(finished, 60, "the scheduled practice run to end")
        assert record["status"] == "succeeded", record["reason"]
        assert record["created_at"] >= slot.timestamp()  # not before its time
        assert record["created_by"].startswith("drill-schedule-weekly-practice")
        started = [e for e in audit(up, "drill.start") if e["target"] == f"drill {record['id']}"]
        assert started[0]["detail"]["scheduled"] == "weekly-practice"
        launched = [e for e in audit(up, "drill.scheduled")
                    if e["target"] == "schedule weekly-practice"]
        assert len(launched) == 1 and launched[0]["detail"]["slot"] == slot.isoformat()
        skipped = wait_until(lambda: [e for e in audit(up, "drill.skipped")
                                      if e["target"] == "schedule weekly-blocked"] or None,
                             10, "the blocked slot's audit row")
        assert skipped[0]["detail"]["reason"] == f"blocked date {slot.date().isoformat()}"
        names = {d["name"] for d in up.call("GET", "/v1/drills?limit=100")["items"]}
        assert "practice-blocked" not in names
        # The run's own token is revoked once it ended.
        wait_until(lambda: not [t for t in up.call("GET", "/v1/tokens")["items"]
                                if t["name"].startswith("drill-schedule-")
                                and not t.get("revoked_at")] or None, 10, "the token revoked")
    finally:
        for name in ("weekly-practice", "weekly-blocked"):
            gtm(up, "drill", "schedule", name, "--remove")


def test_gtm_up_says_how_to_drill_it(up: Up) -> None:
    log = up.server.log()  # the example plans, with this gtm up's API and DNS listener
    assert f"eu-west-force-down.toml --api {up.api} --dns 127.0.0.1:{up.dns_port}" in log
    assert "gtm lab up, then gtm drill run" in log and "lab-cut-link.toml --lab" in log
