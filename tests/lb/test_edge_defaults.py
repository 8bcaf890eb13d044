"""What the balancer does with its defaults: a killed backend, its own responses, Via,
the listen backlog, and a backend that closes after an error (issue 13)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from tests.lb.conftest import Env, connect, exchange, read_response, status_of
from tests.lb.process import free_port

ROOT = Path(__file__).resolve().parents[2]
H = b"Host: example.test\r\n"


def _dead_address() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there: connections are refused


# -- retries that cost no backend anything --------------------------------------------------
def test_refused_connections_are_retried_without_spending_the_budget(env: Env) -> None:
    good = env.recorder("good")
    # A budget of 0 leaves only the reserve of 10 retries; ejection off, so every second
    # request is first sent to the dead backend.
    address = env.balancer([_dead_address(), good.address],
                           pool={"retry_budget": 0.0, "outlier": False})
    with connect(address) as client:
        for _ in range(40):
            client.sendall(b"POST /p HTTP/1.1\r\n" + H + b"Content-Length: 1\r\n\r\nx")
            status, _, body = read_response(client)
            assert (status, body) == (200, b"x")
    assert len(good.requests) == 40


def test_a_dead_backend_is_ejected_by_default(env: Env) -> None:
    good = env.recorder("good")
    dead = _dead_address()
    address = env.balancer([dead, good.address])
    for _ in range(10):
        assert status_of(exchange(address, b"GET / HTTP/1.1\r\n" + H
                                  + b"Connection: close\r\n\r\n")) == 200
    assert env.handle is not None
    backends = env.loop.call(lambda: {b.key: b.healthy for b in
                                      env.handle.snapshot.pools["app"].backends})  # type: ignore[union-attr]
    assert backends == {dead: False, good.address: True}


def _demo_backend(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-m", "gtm.cli", "lb", "demo-backend", "--listen",
                             f"127.0.0.1:{port}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("demo backend did not start")


def _keep_alive_client(address: tuple[str, int], stop: threading.Event,
                       results: list[int]) -> None:
    client = None
    for _ in range(2000):  # bounded in count as well as by the stop event
        if stop.is_set():
            break
        try:
            if client is None:
                client = connect(address, 5.0)
            client.sendall(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
            status, headers, _ = read_response(client)
            results.append(status)
            if headers.get("connection") == "close":
                client.close()
                client = None
        except OSError:
            results.append(0)
            client = None
    if client is not None:
        client.close()


def test_killed_backend_under_keep_alive_load_fails_no_request(env: Env) -> None:
    """The outside tester's case: two backends, defaults, one killed (SIGKILL) mid-load."""
    ports = [free_port(), free_port()]
    procs = [_demo_backend(port) for port in ports]
    try:
        address = env.balancer([f"127.0.0.1:{p}" for p in ports])
        stop = threading.Event()
        results: list[list[int]] = [[] for _ in range(4)]
        threads = [threading.Thread(target=_keep_alive_client, args=(address, stop, out))
                   for out in results]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while sum(map(len, results)) < 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(procs[0].pid, signal.SIGKILL)
        procs[0].wait(5)
        before = sum(map(len, results))
        while sum(map(len, results)) < before + 400 and time.monotonic() < deadline + 10:
            time.sleep(0.01)
        stop.set()
        for thread in threads:
            thread.join(10)
        statuses = [s for out in results for s in out]
        failed = [s for s in statuses if s != 200]
        assert len(statuses) >= before + 400
        assert failed == [], f"{len(failed)} of {len(statuses)} failed: {set(failed)}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def test_gateway_errors_keep_the_client_connection(env: Env) -> None:
    address = env.balancer([_dead_address()], pool={"outlier": False})
    with connect(address) as client:
        for _ in range(3):
            client.sendall(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
            status, headers, _ = read_response(client)
            assert status == 503 and "connection" not in headers
        client.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, headers, _ = read_response(client)
        assert status == 503 and headers["connection"] == "keep-alive"


# -- the balancer's own responses ---------------------------------------------------------
def _check_own(response: bytes) -> None:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    date = re.search(r"\r\nDate: ([^\r]+)", head)
    assert date is not None, head
    assert abs(parsedate_to_datetime(date.group(1)).timestamp() - time.time()) < 5
    assert "\r\nCache-Control: no-store" in head, head


@pytest.mark.parametrize(("raw", "status", "settings"), [
    (b"GET /.gtm/health HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", 200, {}),
    (b"GET / HTTP/1.1\r\n\r\n", 400, {}),
    (b"GET / HTTP/1.1\r\n" + H, 408, {"timeouts": {"header_read": 0.2}}),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414, {}),
    (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501, {}),
    (b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", 503, {}),
], ids=["health", "400", "408", "414", "501", "503"])
def test_own_responses_carry_date_and_no_store(env: Env, raw: bytes, status: int,
                                               settings: dict[str, Any]) -> None:
    address = env.balancer([_dead_address()], pool={"outlier": False}, **settings)
    response = exchange(address, raw)
    assert status_of(response) == status, response
    _check_own(response)


def test_502_carries_date_and_no_store(env: Env) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"NOT HTTP\r\n\r\n")
    backend = env.raw(garbage)
    address = env.balancer([backend.address], pool={"retries": 0})
    response = exchange(address, b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert status_of(response) == 502
    _check_own(response)


# -- a backend's Connection: close ----------------------------------------------------------
def _replying(status_line: bytes) -> Any:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(status_line + b"\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbad")
        await writer.drain()
    return handler


def test_backend_close_after_an_error_closes_the_client_connection(env: Env) -> None:
    backend = env.raw(_replying(b"HTTP/1.1 400 Bad Request"))
    address = env.balancer([backend.address])
    with connect(address) as client:
        client.sendall(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
        status, headers, body = read_response(client)
        assert (status, body, headers.get("connection")) == (400, b"bad", "close")
        assert client.recv(1) == b""  # closed by the balancer


def test_backend_close_after_a_success_keeps_the_client(env: Env) -> None:
    backend = env.raw(_replying(b"HTTP/1.1 200 OK"))
    address = env.balancer([backend.address])
    with connect(address) as client:
        for _ in range(2):  # each on a new backend connection, one client connection
            client.sendall(b"GET / HTTP/1.1\r\n" + H + b"\r\n")
            status, headers, _ = read_response(client)
            assert status == 200 and "connection" not in headers


# -- Via --------------------------------------------------------------------------------------
def test_via_on_forwarded_requests_and_responses(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address])
    with connect(address) as client:
        client.sendall(b"GET / HTTP/1.1\r\n" + H + b"Via: 1.1 edge\r\n\r\n")
        _, headers, _ = read_response(client)
        assert headers["via"] == "1.1 gtm"
        client.sendall(b"GET / HTTP/1.0\r\n" + H + b"Connection: keep-alive\r\n\r\n")
        read_response(client)
    assert backend.header(0, "Via") == ["1.1 edge", "1.1 gtm"]
    assert backend.header(1, "Via") == ["1.0 gtm"]


def test_via_can_be_turned_off_and_must_be_a_token(env: Env) -> None:
    from gtm.errors import ConfigError
    backend = env.recorder()
    address = env.balancer([backend.address], via="")
    response = exchange(address, b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n")
    assert b"\r\nVia:" not in response and backend.header(0, "Via") == []
    with pytest.raises(ConfigError, match="via"):
        env.balancer([backend.address], via="a b")


# -- listen backlog -------------------------------------------------------------------------
def _backlog(port: int) -> int:
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=5, check=True).stdout.split()
    return int(out[2])  # State Recv-Q Send-Q ...: Send-Q of a listener is its backlog


@pytest.mark.skipif(shutil.which("ss") is None and os.environ.get("CI") != "true",
                    reason="ss is not installed (apt-get install iproute2)")
@pytest.mark.parametrize("configured", [None, 512])
def test_listen_backlog(env: Env, configured: int | None) -> None:
    listener: dict[str, Any] = {"name": "web", "bind": "127.0.0.1:0"}
    if configured is not None:
        listener["backlog"] = configured
    address = env.balancer([_dead_address()], listeners=[listener])
    expected = configured or int(Path("/proc/sys/net/core/somaxconn").read_text())
    assert _backlog(address[1]) == expected
