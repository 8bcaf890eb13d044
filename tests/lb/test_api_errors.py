"""One error body for every HTTP API: the control API and the balancer's admin API.

Both run in-process on real loopback ports; each is asked for an unknown path, sent a
body that is not JSON, refused for a domain reason, and made to hit a bug (a function a
handler calls is replaced by one that raises). Every answer has the same shape; the bug
is a 500 that shows no traceback and is logged once, with the method, path and request
id (the one the client sent in X-Request-ID).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gtm import log
from gtm.control.plane import ControlPlane, ControlSettings, start_control_plane
from regional_lb import start_balancer
from tests.control.conftest import example_document
from tests.lb.conftest import Env

TOKEN = "s3cret"
KEYS = {"status", "message", "field", "request_id"}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def errors_logged() -> Iterator[Records]:
    """What the two APIs' loggers record at ERROR and above during the test."""
    records = Records()
    for logger in (log.control, log.lb):
        logger.addHandler(records)
    try:
        yield records
    finally:
        for logger in (log.control, log.lb):
            logger.removeHandler(records)


def call(url: str, method: str, token: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=body, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
        **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def error_of(answer: tuple[int, dict[str, str], Any], status: int) -> dict[str, Any]:
    """The error of an answer, checked against the one shape; returned for more checks."""
    got, headers, body = answer
    assert got == status, body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) >= KEYS, error
    assert error["status"] == status and isinstance(error["message"], str) and error["message"]
    assert error["field"] is None or isinstance(error["field"], str)
    assert error["request_id"] and headers["X-Request-ID"] == error["request_id"]
    return dict(error)


# -- the control API ---------------------------------------------------------------------
@pytest.fixture
def control(env: Env, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A control plane (SQLite store) on a loopback port: its URL and admin token."""
    plane: ControlPlane = env.loop.run(start_control_plane(
        ControlSettings(port=0, state_dir=tmp_path / "control")))
    try:
        yield plane.url, plane.admin_token_path.read_text().strip()
    finally:
        env.loop.run(plane.stop())


def test_control_api_errors_have_the_one_shape(control: tuple[str, str]) -> None:
    url, token = control
    error_of(call(url + "/v1/nothing", "GET", token), 404)
    bad_json = error_of(call(url + "/v1/config", "PUT", token, b'{"document": ',
                             {"If-Match": '"0"'}), 400)
    assert "JSON" in bad_json["message"]
    document = json.dumps({"document": example_document()}).encode()
    assert call(url + "/v1/config", "PUT", token, document, {"If-Match": '"0"'})[0] == 201
    stale = error_of(call(url + "/v1/config", "PUT", token, document, {"If-Match": '"0"'}), 409)
    assert stale["current_version"] == 1 and stale["field"] == "If-Match"
    invalid = error_of(call(url + "/v1/config/zones/example.test.", "PUT", token,
                            b'{"text": "not a zone", "base_version": 1}'), 422)
    assert invalid["field"]  # the place in the document


def test_a_bug_in_a_control_api_handler_is_a_logged_500(
        control: tuple[str, str], errors_logged: Records,
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, token = control

    def broken(*_args: Any) -> Any:
        raise RuntimeError("injected: secret-detail")

    monkeypatch.setattr("gtm.control.api.diff_documents", broken)
    error = error_of(call(url + "/v1/versions/0/diff?token=hush", "GET", token,
                          headers={"X-Request-ID": "req-42"}), 500)
    assert error["request_id"] == "req-42"
    assert "secret-detail" not in error["message"] and "Traceback" not in error["message"]
    assert "req-42" in error["message"]  # where to look in the log
    [record] = errors_logged.records  # once: the outer boundary does not log it again
    line = record.getMessage()
    assert "GET /v1/versions/0/diff" in line and "req-42" in line
    assert "hush" not in line and token not in line  # no query string, no credentials
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    monkeypatch.undo()
    assert call(url + "/v1/versions/0/diff", "GET", token)[0] == 200  # still serving


# -- the balancer's admin API ------------------------------------------------------------
@pytest.fixture
def admin(env: Env, tmp_path: Path) -> str:
    """A balancer from a config file, with its admin API: the API's URL."""
    backend = env.recorder("a")
    config = tmp_path / "lb.toml"
    config.write_text(f"""[lb]
admin = "127.0.0.1:0"
admin_token = "{TOKEN}"
[lb.timeouts]
shutdown_grace = 0.0
[[lb.listeners]]
name = "web"
bind = "127.0.0.1:0"
[[lb.pools]]
name = "app"
backends = ["{backend.address}"]
""")
    env.handle = env.loop.run(start_balancer(config))
    assert env.handle.admin is not None
    return f"http://127.0.0.1:{env.handle.admin.port}"


def test_admin_api_errors_have_the_one_shape(admin: str) -> None:
    error_of(call(admin + "/nothing", "GET", TOKEN), 404)
    bad_json = error_of(call(admin + "/pools/app/backends", "POST", TOKEN, b'{"address": '), 400)
    assert "JSON" in bad_json["message"]
    missing = error_of(call(admin + "/pools/nope/backends", "POST", TOKEN,
                            b'{"address": "127.0.0.1:9"}'), 404)
    assert "nope" in missing["message"]
    invalid = error_of(call(admin + "/pools/app/backends", "POST", TOKEN,
                            b'{"address": "127.0.0.1:9", "weight": true}'), 400)
    assert invalid["field"] == "weight"
    error_of(call(admin + "/pools", "GET", "wrong"), 401)


def test_a_bug_in_an_admin_api_handler_is_a_logged_500(
        admin: str, errors_logged: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: Any) -> Any:
        raise RuntimeError("injected: secret-detail")

    monkeypatch.setattr("regional_lb.admin.backend_view", broken)
    error = error_of(call(admin + "/pools", "GET", TOKEN, headers={"X-Request-ID": "req-7"}),
                     500)
    assert error["request_id"] == "req-7"
    assert "secret-detail" not in error["message"] and "Traceback" not in error["message"]
    [record] = errors_logged.records
    line = record.getMessage()
    assert "GET /pools" in line and "req-7" in line and TOKEN not in line
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    monkeypatch.undo()
    assert call(admin + "/pools", "GET", TOKEN)[0] == 200  # still serving
