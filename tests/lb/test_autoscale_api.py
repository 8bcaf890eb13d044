"""`gtm scale ...`, the control API's /v1/scale and the balancer admin API's /scale,
over one control plane (SQLite, no Redis: its database file is the scale store) and a
balancer whose pool scales, with its scaler's events in the audit log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from gtm.control.plane import ControlPlane, ControlSettings, start_control_plane
from regional_lb.autoscale.actuators import ProcessActuator
from regional_lb.config_autoscale import ActuatorSpec
from tests.control.conftest import example_document
from tests.lb.conftest import Env
from tests.lb.process import free_port
from tests.lb.test_autoscale import BACKEND, free_range, get_ok, wait_for

pytestmark = pytest.mark.integration
TOKEN = "admin-" + uuid.uuid4().hex


def gtm(plane: ControlPlane, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "GTM_API": plane.url,
           "GTM_TOKEN": plane.admin_token_path.read_text().strip()}
    done = subprocess.run([sys.executable, "-m", "gtm.cli", *args], env=env,
                          capture_output=True, text=True, timeout=30)
    return done.returncode, done.stdout, done.stderr


def api_call(plane: ControlPlane, method: str, path: str, body: Any = None
             ) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{plane.url}{path}", method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {plane.admin_token_path.read_text().strip()}",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def api_get(plane: ControlPlane, path: str) -> Any:
    status, body = api_call(plane, "GET", path)
    assert status == 200, body
    return body


def history(plane: ControlPlane) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = api_get(plane, "/v1/scale/history")["events"]
    return events


def admin(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_scale_commands_and_apis(env: Env, tmp_path: Path) -> None:
    ports = free_range(6)
    admin_port = free_port()
    table: dict[str, Any] = {
        "region": "eu", "autoscale": {"interval": 0.2, "lease": 2.0},
        "listeners": [{"name": "web", "bind": "127.0.0.1:0"}],
        "pools": [{"name": "app", "backends": [], "autoscale": {
            "min": 1, "max": 3, "metric": "in_flight_per_backend", "target": 50,
            "warmup": 0, "scale_in": {"window": 0.5, "period": 0.2, "backends": 3},
            "deregistration_delay": 5,
            "actuator": {"type": "process", "ports": f"{ports[0]}-{ports[1]}",
                         "command": [sys.executable, BACKEND, "--listen", "{address}"]}}}]}
    settings = ControlSettings(port=0, state_dir=tmp_path / "control",
                               seed_document={**example_document(), "lb": {"eu": table}})
    plane: ControlPlane = env.loop.run(start_control_plane(settings))
    try:
        store = f"sqlite://{(tmp_path / 'control' / 'gtm.db').resolve()}"
        address = env.balancer(**{**table, "autoscale": {**table["autoscale"], "store": store,
                                                          "state_dir": str(tmp_path / "scale")},
                                  "admin": f"127.0.0.1:{admin_port}", "admin_token": TOKEN})
        wait_for(lambda: get_ok(address), what="the first backend serving")

        code, out, err = gtm(plane, "scale", "status")
        assert code == 0, err
        assert "region eu: leader" in out and "pool app: 1 backends" in out

        code, out, err = gtm(plane, "scale", "set", "app", "--min", "2")
        assert code == 0 and json.loads(out) == {"min": 2}, err
        wait_for(lambda: any(e["type"] == "scale_out" and e.get("to") == 2
                             for e in history(plane)), what="scale-out")

        # Refusals name the field, in the product's one error body.
        code, out, err = gtm(plane, "scale", "set", "app", "--min", "5", "--max", "4")
        assert code != 0 and "must not be above max (4)" in err
        status, body = api_call(plane, "POST", "/v1/scale/eu/nosuch/pause")
        assert status == 404 and "no auto-scaled pool 'nosuch'" in body["error"]["message"]
        status, body = admin(admin_port, "PUT", "/scale/app", {"min": "two"})
        assert (status, body["error"]["field"]) == (400, "min")
        status, body = admin(admin_port, "POST", "/scale/web/pause")
        assert status == 404

        # Paused through the balancer's admin API: min back to 1 changes nothing.
        status, body = admin(admin_port, "POST", "/scale/app/pause")
        assert status == 200 and body["settings"]["paused"] is True
        status, body = api_call(plane, "PUT", "/v1/scale/eu/app", {"min": None})
        assert status == 200 and body["settings"] == {"paused": True}, body
        wait_for(lambda: admin(admin_port, "GET", "/scale")[1]["status"]["pools"]["app"]
                 ["paused"], what="paused seen")
        assert "PAUSED" in gtm(plane, "scale", "status", "--region", "eu")[1]
        code, out, err = gtm(plane, "scale", "resume", "app")
        assert code == 0, err
        wait_for(lambda: any(e["type"] == "scale_in" for e in history(plane)),
                 what="scale-in")
        code, out, err = gtm(plane, "scale", "history")
        assert code == 0 and "eu/app scale_in" in out and "eu/app drain" in out, err

        # Every scaling event is in the control plane's audit log, as are operator changes.
        def audited() -> set[str]:
            rows = env.loop.run(plane.store.audit(None, 200))
            return {row.action for row in rows}
        wait_for(lambda: {"scale.scale_out", "scale.drain", "scale.scale_in", "scale.set",
                          "scale.resume"} <= audited(), what="audit rows")
        # ... and in the event stream (GET /v1/events), as scale.* events.
        def streamed() -> set[str]:
            page = api_get(plane, "/v1/events?tail=100&type=scale.scale_out&type=scale.scale_in")
            return {item["type"] for item in page["items"]}
        wait_for(lambda: streamed() == {"scale.scale_out", "scale.scale_in"},
                 what="scale events in the stream")
        status, body = admin(admin_port, "GET", "/scale/history?limit=2")
        assert status == 200 and len(body["events"]) == 2
    finally:
        env.close()
        env.handle = None
        env.loop.run(plane.stop())
        ProcessActuator(ActuatorSpec("process", ("x",), host="127.0.0.1", ports=ports),
                        tmp_path / "scale").stop_all_sync()
