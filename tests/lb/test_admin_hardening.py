"""The balancer's admin API against crafted input: an over-long or broken header line never
gets the credential into the log (`gtm lb serve`'s stderr, as an operator reads it), and
bodies go through the same strict JSON reader as the control plane's."""

from __future__ import annotations

import json
import secrets
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.lb.conftest import Env
from tests.lb.process import LbProcess, free_port
from tests.lb.test_lifecycle import wait_admin


def ask_raw(port: int, head: bytes) -> int:
    """Send ``head`` as given; the status of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        client.sendall(head)
        response = b""
        while b"\r\n" not in response:
            chunk = client.recv(4096)
            if not chunk:
                break
            response += chunk
    return int(response.split(b" ", 2)[1])


def test_the_admin_token_never_reaches_the_log(env: Env, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GTM_LOG_LEVEL", "DEBUG")  # every record aiohttp makes is printed
    token = secrets.token_urlsafe(32)
    backend = env.recorder("a")
    port, admin_port = free_port(), free_port()
    config = tmp_path / "lb.toml"
    config.write_text(f"""[lb]
admin = "127.0.0.1:{admin_port}"
admin_token = "{token}"
[[lb.listeners]]
name = "web"
bind = "127.0.0.1:{port}"
[[lb.pools]]
name = "app"
backends = ["{backend.address}"]
""")
    lb = LbProcess(config)
    try:
        wait_admin(admin_port)
        overlong = f"Authorization: Bearer {token}{'A' * 9000}\r\n".encode()
        broken = f"Authorization: Bearer {token}".encode() + b"\x01\xff\r\n"
        for header in (overlong, broken):
            status = ask_raw(admin_port, b"GET /pools HTTP/1.1\r\nHost: a\r\n" + header + b"\r\n")
            assert 400 <= status < 500
        lb.wait_for_log(r"refused a malformed HTTP request .*BadHttpMessage")
    finally:
        lb.stop()
    text = "".join(lb.lines)
    assert "LineTooLong (HTTP 400); its bytes are not logged" in text
    assert token not in text and token[:8] not in text


def admin_put(port: int, method: str, path: str, data: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method, data=data,
        headers={"Authorization": "Bearer t", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_admin_bodies_are_read_strictly(env: Env) -> None:
    backend = env.recorder("a")
    env.balancer([backend.address], admin="127.0.0.1:0", admin_token="t")
    assert env.handle is not None and env.handle.admin is not None
    port = env.handle.admin.port
    path = f"/pools/app/backends/{backend.address}"
    cases = [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"weight": 2, "weight": 0}', 'duplicate key "weight"'),
        ('{"state": "dra\\u0000in"}', "NUL"),
    ]
    for data, reason in cases:
        status, body = admin_put(port, "PATCH", path, data.encode())
        assert status == 400 and reason in body["error"]["message"], body
    status, body = admin_put(port, "PATCH", path, b'{"weight": 3}')
    assert (status, body["weight"]) == (200, 3), body
