"""The proxies' catch-all: a bug while serving one request costs that request only.

A real balancer in front of a real backend; a function the proxy calls mid-request is
replaced by one that raises RuntimeError once (then behaves). The client gets the
proxy's own 500 (or, once the response has started, a closed connection or a reset
stream); one log line names the listener, client, request id and backend; the backend
slot is given back (``active`` is 0 again); the next request is served.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from gtm import log
from regional_lb.l7.proxy import ClientProtocol
from tests.lb.conftest import Env, Recorder, connect, read_all, read_response
from tests.lb.h2client import H2Client

pytestmark = pytest.mark.integration


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def internal_errors(self) -> list[str]:
        return [r.getMessage() for r in self.records if "internal error" in r.getMessage()]


@pytest.fixture
def errors_logged() -> Iterator[Records]:
    records = Records()
    log.lb.addHandler(records)
    try:
        yield records
    finally:
        log.lb.removeHandler(records)


def fail_once(original: Callable[..., Any]) -> Callable[..., Any]:
    """``original``, but the first call raises RuntimeError."""
    calls = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected failure")
        return original(*args, **kwargs)

    return wrapper


def fresh_heads(backend: Recorder) -> None:
    """Every response head differs: the proxy parses and rewrites each one (no cache)."""
    async def handler(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.Response(text=f"{backend.name}\n",
                            headers={"X-Nonce": secrets.token_hex(8)})

    backend.handler = handler


def active(env: Env) -> int:
    assert env.handle is not None
    return int(env.loop.call(lambda: sum(
        b.active for p in env.handle.snapshot.pools.values() for b in p.backends)))  # type: ignore[union-attr]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def get(request_id: str) -> bytes:
    return (f"GET / HTTP/1.1\r\nHost: example.test\r\nX-Request-ID: {request_id}\r\n\r\n"
            .encode())


def test_a_bug_before_the_response_is_a_500_and_frees_the_slot(
        env: Env, errors_logged: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = env.recorder("a")
    fresh_heads(backend)
    address = env.balancer([backend.address])
    from regional_lb.l7 import upstream
    monkeypatch.setattr(upstream, "response_head", fail_once(upstream.response_head))
    with connect(address) as sock:
        sock.sendall(get("req-one"))
        status, headers, body = read_response(sock)
        assert status == 500 and body == b"internal error\n"
        assert headers["connection"] == "close" and read_all(sock) == b""
    [line] = errors_logged.internal_errors()
    assert "listener web" in line and "client 127.0.0.1" in line
    assert "request req-one" in line and f"backend {backend.address}" in line
    wait_until(lambda: active(env) == 0)
    with connect(address) as sock:  # a new connection is served
        sock.sendall(get("req-two"))
        assert read_response(sock)[0] == 200
    assert len(errors_logged.internal_errors()) == 1


def test_a_bug_after_the_response_started_closes_and_frees_the_slot(
        env: Env, errors_logged: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = env.recorder("a")
    more = asyncio.Event()

    async def streaming(request: web.Request, body: bytes) -> web.StreamResponse:
        response = web.StreamResponse()  # no length: chunked, the head goes out first
        await response.prepare(request)
        await response.write(b"first ")
        if request.path == "/stream":
            await more.wait()
        await response.write(b"second\n")
        await response.write_eof()
        return response

    backend.handler = streaming
    address = env.balancer([backend.address])
    monkeypatch.setattr(ClientProtocol, "response_data",
                        fail_once(ClientProtocol.response_data))
    with connect(address) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: example.test\r\nX-Request-ID: r-3\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 200")
        env.loop.call(more.set)  # the rest of the body: the proxy's bug hits it
        rest = read_all(sock)  # until the proxy closes the connection
        assert b"second" not in head + rest  # the response was cut, not completed
    [line] = errors_logged.internal_errors()
    assert "request r-3" in line and f"backend {backend.address}" in line and "closed" in line
    wait_until(lambda: active(env) == 0)
    with connect(address) as sock:
        sock.sendall(b"GET /again HTTP/1.1\r\nHost: example.test\r\n\r\n")
        status, _, body = read_response(sock)
        assert status == 200 and body == b"first second\n"


def test_a_bug_on_one_http2_stream_leaves_the_connection_and_other_streams(
        env: Env, errors_logged: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = env.recorder("a")
    fresh_heads(backend)
    address = env.balancer([backend.address],
                           listeners=[{"name": "web", "bind": "127.0.0.1:0", "h2c": True}])
    from regional_lb.l7 import upstream
    monkeypatch.setattr(upstream, "response_head", fail_once(upstream.response_head))
    with H2Client(address) as client:
        first = client.start(headers=[("x-request-id", "h2-1")])
        second = client.start(headers=[("x-request-id", "h2-2")])
        replies = [client.wait(first), client.wait(second)]
        assert sorted(r.status for r in replies) == [200, 500]
        failed = next(r for r in replies if r.status == 500)
        assert failed.body == b"internal error\n" and failed.ended
        assert client.request().status == 200  # the same connection goes on
        assert client.terminated is None and not client.closed
    [line] = errors_logged.internal_errors()
    assert "request h2-" in line and f"backend {backend.address}" in line
    wait_until(lambda: active(env) == 0)


def test_a_bug_in_a_tcp_session_closes_it_and_frees_the_slot(
        env: Env, errors_logged: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    backend = env.raw(echo)
    address = env.balancer([backend.address], pool={"proxy_protocol": "v1"},
                           listeners=[{"name": "tcp", "bind": "127.0.0.1:0", "mode": "tcp"}])
    from regional_lb import proxyproto
    monkeypatch.setattr(proxyproto, "build", fail_once(proxyproto.build))
    with connect(address) as sock:  # the PROXY header for the backend fails to build
        sock.sendall(b"hello")
        assert read_all(sock) == b""  # closed, nothing forwarded
    [line] = errors_logged.internal_errors()
    assert "listener tcp" in line and "client 127.0.0.1" in line
    assert f"backend {backend.address}" in line
    wait_until(lambda: active(env) == 0)
    with connect(address) as sock:
        sock.sendall(b"hello")
        got = b""
        while not got.endswith(b"hello"):
            data = sock.recv(65536)
            assert data, got
            got += data
        assert got.startswith(b"PROXY TCP4 127.0.0.1 ")


def test_a_bug_while_accepting_is_a_500_and_the_next_connection_is_served(
        env: Env, errors_logged: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = env.recorder("a")
    address = env.balancer([backend.address], listeners=[{
        "name": "web", "bind": "127.0.0.1:0", "limits": {"max_connections": 100}}])
    from regional_lb.client_limits import Limiter
    monkeypatch.setattr(Limiter, "open_connection", fail_once(Limiter.open_connection))
    with connect(address) as sock:
        status, headers, body = read_response(sock)
        assert status == 500 and body == b"internal error\n"
        assert headers["connection"] == "close" and read_all(sock) == b""
    [line] = errors_logged.internal_errors()
    assert "internal error in accept" in line and "listener web" in line
    assert "client 127.0.0.1" in line
    with connect(address) as sock:
        sock.sendall(get("req-after"))
        assert read_response(sock)[0] == 200
    assert len(errors_logged.internal_errors()) == 1
    # Both connections are gone from the worker's table (none leaked by the failure).
    wait_until(lambda: env.loop.call(
        lambda: len(env.handle.worker.connections)) == 0)  # type: ignore[union-attr]
