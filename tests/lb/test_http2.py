"""HTTP/2 toward clients (h2c with prior knowledge here; TLS by ALPN in tests/tls):
streams take the HTTP/1.1 path's routing, balancing, pools, retries and rewriting."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from typing import Any

import pytest
from aiohttp import web
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, GoAwayFrame

from gtm.errors import ConfigError
from regional_lb.config import build_config
from tests.lb.conftest import Env, read_request
from tests.lb.h2client import H2Client, Reply

pytestmark = pytest.mark.integration


def h2c(name: str = "web") -> dict[str, Any]:
    return {"name": name, "bind": "127.0.0.1:0", "h2c": True}


def test_a_stream_is_routed_balanced_and_rewritten_as_http11(env: Env) -> None:
    app, api = env.recorder("app"), env.recorder("api")
    address = env.balancer(
        pools=[{"name": "app", "backends": [app.address]},
               {"name": "api", "backends": [api.address]}],
        listeners=[{**h2c(), "pool": "app",
                    "routes": [{"pool": "api", "path_prefix": "/api/"}]}])
    with H2Client(address) as client:
        home = client.request(path="/?q=1", headers=[("x-test", "yes"),
                                                      ("cookie", "a=1"), ("cookie", "b=2")])
        api_reply = client.request(path="/api/v1")
    assert home.status == 200 and home.body == b"app\n" and home.ended
    assert api_reply.status == 200 and api_reply.body == b"api\n"
    assert home.header("via") == "1.1 gtm"  # the backend's response came by HTTP/1.1
    seen = app.requests[0]
    assert seen["method"] == "GET" and seen["path"] == "/?q=1"
    assert app.header(0, "host") == ["example.test"]
    assert app.header(0, "x-test") == ["yes"]
    assert app.header(0, "cookie") == ["a=1; b=2"]  # crumbs joined (RFC 9113 8.2.3)
    assert app.header(0, "x-forwarded-for") == ["127.0.0.1"]
    assert app.header(0, "x-forwarded-proto") == ["http"]
    assert app.header(0, "x-forwarded-host") == ["example.test"]
    assert app.header(0, "forwarded") == ['for=127.0.0.1;host="example.test";proto=http']
    assert len(app.header(0, "x-request-id")) == 1
    assert app.header(0, "via") == ["2 gtm"]  # received by HTTP/2
    assert api.requests[0]["path"] == "/api/v1"


def test_plain_http11_still_works_on_an_h2c_listener(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], listeners=[h2c()])
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"b\n")


def test_the_preface_counts_only_first_and_only_where_allowed(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], listeners=[
        {"name": "plain", "bind": "127.0.0.1:0"}, h2c("h2c")])
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    with socket.create_connection(env.address("plain"), timeout=5) as sock:
        sock.sendall(preface)  # no h2c here: HTTP/2.0 is not an HTTP/1.x version
        assert sock.recv(100).startswith(b"HTTP/1.1 505")
    with socket.create_connection(env.address("h2c"), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(preface)  # after a request: not prior knowledge
        assert sock.recv(100).startswith(b"HTTP/1.1 505")
    assert address


def test_request_bodies_stream_both_ways_with_and_without_length(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], listeners=[h2c()])
    body = bytes(range(256)) * 4096  # 1 MiB: many times the 64 KiB window
    with H2Client(address) as client:
        sized = client.request("POST", "/up", body=body,
                               headers=[("content-length", str(len(body)))])
        unsized = client.request("PUT", "/up2", body=body)
        empty = client.request("POST", "/empty", body=b"")
    assert sized.status == 200 and sized.body == body
    assert unsized.status == 200 and unsized.body == body
    assert backend.requests[0]["body"] == body and backend.requests[1]["body"] == body
    assert backend.header(0, "content-length") == [str(len(body))]
    assert backend.header(1, "transfer-encoding") == ["chunked"]
    assert empty.status == 200 and backend.requests[2]["body"] == b""


def test_a_slow_backend_slows_the_client(env: Env) -> None:
    """DATA is acknowledged only as it is written to the backend: a backend that does
    not read shuts the client's window (the kernel's buffers aside), then reads it all."""
    reading = asyncio.Event()
    got = bytearray()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A small receive buffer: else the kernel alone takes up to 32 MiB (tcp_rmem).
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reading.wait()
        while len(got) < length:
            got.extend(await reader.read(65536))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()

    backend = env.raw(handler)
    address = env.balancer([backend.address], listeners=[h2c()])
    total = 10 * 1024 * 1024
    with H2Client(address, timeout=0.5) as client:
        stream_id = client.start("POST", "/", headers=[("content-length", str(total))],
                                 end=False)
        sent = 0
        while sent < total:
            window = min(client.conn.local_flow_control_window(stream_id), 16384)
            if window <= 0:
                try:
                    client.read_once()
                except TimeoutError:
                    break  # the window stays shut
                continue
            client.conn.send_data(stream_id, b"x" * window)
            client.flush()
            sent += window
        # Past the windows (1 MiB) only the balancer's socket buffer (tcp_wmem: 4 MiB).
        assert sent < 8 * 1024 * 1024, f"{sent} bytes went to a backend that reads nothing"
        env.loop.call(reading.set)
        client.sock.settimeout(5)
        client.send_body(stream_id, b"x" * (total - sent))
        reply = client.wait(stream_id, timeout=30)
    assert reply.status == 200 and reply.body == b"ok"
    assert len(got) == total


def _raw_response(response: bytes):  # type: ignore[no-untyped-def]
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(response)
            await writer.drain()
            if b"Connection: close" in response:
                return
    return handler


def test_chunked_trailers_become_http2_trailers(env: Env) -> None:
    backend = env.raw(_raw_response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: grpc-status\r\n\r\n"
        b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\nContent-Length: 9\r\n\r\n"))
    address = env.balancer([backend.address], listeners=[h2c()])
    with H2Client(address) as client:
        reply = client.request()
        again = client.request()  # the pooled backend connection stays in sync
    assert reply.status == 200 and reply.body == b"hello"
    assert reply.trailers == [(b"grpc-status", b"0")]  # framing fields are not trailers
    assert reply.header("transfer-encoding") is None and reply.header("trailer") is None
    assert again.body == b"hello" and again.trailers == [(b"grpc-status", b"0")]


def test_head_204_304_and_a_body_until_close(env: Env) -> None:
    backend = env.recorder()

    async def handler(request: web.Request, body: bytes) -> web.StreamResponse:
        if request.path == "/204":
            return web.Response(status=204)
        if request.path == "/304":
            return web.Response(status=304)
        return web.Response(body=b"0123456789")

    backend.handler = handler
    close = env.raw(_raw_response(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close"))
    address = env.balancer(pools=[{"name": "app", "backends": [backend.address]},
                                  {"name": "old", "backends": [close.address]}],
                           listeners=[{**h2c(), "pool": "app",
                                       "routes": [{"pool": "old", "path_prefix": "/old"}]}])
    with H2Client(address) as client:
        head = client.request("HEAD", "/")
        no_content = client.request(path="/204")
        not_modified = client.request(path="/304")
        until_close = client.request(path="/old")
    assert head.status == 200 and head.body == b"" and head.ended
    assert head.header("content-length") == "10"
    assert no_content.status == 204 and no_content.body == b"" and no_content.ended
    assert not_modified.status == 304 and not_modified.ended
    assert until_close.status == 200 and until_close.body == b"until close"
    assert until_close.header("connection") is None


def test_100_continue_is_an_informational_response(env: Env) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"expect: 100-continue" in head.lower()
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await reader.readexactly(4)
        writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()

    backend = env.raw(handler)
    address = env.balancer([backend.address], listeners=[h2c()])
    with H2Client(address) as client:
        stream_id = client.start("POST", "/", headers=[("content-length", "4"),
                                                       ("expect", "100-continue")], end=False)
        while not client.replies[stream_id].informational:
            assert client.read_once()
        client.send_body(stream_id, b"data")
        reply = client.wait(stream_id)
    assert reply.informational == [100] and reply.status == 201


MALFORMED = [
    ("connection", [("connection", "keep-alive")]),
    ("keep-alive", [("keep-alive", "5")]),
    ("transfer-encoding", [("transfer-encoding", "chunked")]),
    ("upgrade", [("upgrade", "websocket")]),
    ("proxy-connection", [("proxy-connection", "close")]),
    ("te gzip", [("te", "gzip")]),
    ("upper case", [("X-Upper", "1")]),
    ("whitespace", [("x-a", " padded")]),
    ("CR LF", [("x-a", "a\r\nx-injected: 1")]),
    ("colon in name", [("x:a", "1")]),
    ("host differs", [("host", "other.test")]),
]


@pytest.mark.parametrize(("case", "headers"), MALFORMED, ids=[c for c, _ in MALFORMED])
def test_malformed_requests_are_stream_errors(env: Env, case: str,
                                             headers: list[tuple[str, str]]) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], listeners=[h2c()])
    with H2Client(address) as client:
        bad = client.wait(client.start(headers=headers))
        good = client.request()  # the connection and its next streams go on
    assert bad.reset == ErrorCodes.PROTOCOL_ERROR and bad.status == 0
    assert good.status == 200
    assert len(backend.requests) == 1  # only the good one reached a backend


def test_pseudo_header_rules(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], listeners=[h2c()])
    cases = [
        [(":method", "GET"), (":scheme", "http"), (":authority", "x")],        # no :path
        [(":method", "GET"), (":path", "/"), (":authority", "x")],             # no :scheme
        [(":method", "GET"), (":path", "/"), (":scheme", "http"), (":foo", "1")],
        [(":method", "GET"), (":path", "/"), ("x-a", "1"), (":scheme", "http")],  # late
        [(":method", "GET"), (":method", "GET"), (":path", "/"), (":scheme", "http")],
        [(":method", "GET"), (":path", "http://x/"), (":scheme", "http")],    # not origin-form
        [(":method", "GET"), (":path", "/"), (":scheme", "ftp"), (":authority", "x")],
    ]
    with H2Client(address) as client:
        assert client.request().status == 200
        for headers in cases:
            stream_id = client.conn.get_next_available_stream_id()
            client.conn.send_headers(stream_id, headers, end_stream=True)
            client.replies[stream_id] = Reply()
            client.flush()
            assert client.wait(stream_id).reset == ErrorCodes.PROTOCOL_ERROR, headers
    assert len(backend.requests) == 1  # the one good request made above


def test_http_errors_are_responses_on_the_stream(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], listeners=[h2c()],
                           limits={"max_body_bytes": 10, "max_header_bytes": 4096})
    with H2Client(address) as client:
        bad_host = client.wait(client.start(authority="exa mple"))
        connect = client.wait(_connect(client))
        too_big = client.request("POST", "/", body=b"x" * 11,
                                 headers=[("content-length", "11")])
        huge_head = client.request(headers=[("x-big", "a" * 5000)])
        fine = client.request()
    assert bad_host.status == 400 and b"Host" in bad_host.body
    assert connect.status == 501
    assert too_big.status == 413
    assert huge_head.status == 431
    assert fine.status == 200
    assert len(backend.requests) == 1


def _connect(client: H2Client) -> int:
    stream_id = client.conn.get_next_available_stream_id()
    client.conn.send_headers(stream_id, [(":method", "CONNECT"), (":authority", "x:443")],
                             end_stream=True)
    client.replies[stream_id] = Reply()
    client.flush()
    return stream_id


def test_retries_and_gateway_errors_keep_the_connection(env: Env) -> None:
    backend = env.recorder()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{unused.getsockname()[1]}"
    address = env.balancer(pools=[{"name": "app", "backends": [dead, backend.address],
                                   "outlier": False},
                                  {"name": "none", "backends": [dead], "retries": 0,
                                   "outlier": False}],
                           listeners=[{**h2c(), "pool": "app",
                                       "routes": [{"pool": "none", "path_prefix": "/none"}]}])
    with H2Client(address) as client:
        replies = [client.request() for _ in range(4)]  # the dead one is tried, then not
        failed = client.request(path="/none")
        after = client.request()
    assert all(r.status == 200 for r in replies)
    assert failed.status == 502 and b"connect failed" in failed.body
    assert after.status == 200


def test_access_log_lines_for_streams(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], listeners=[h2c("logged")], access_log="json")
    with caplog.at_level(logging.INFO, logger="gtm.lb.access"), H2Client(address) as client:
        client.request(path="/logged?x=1")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gtm.lb.access"]
    assert any(line["target"] == "/logged?x=1" and line["status"] == 200
               and line["listener"] == "logged" and line["backend"] == backend.address
               for line in lines), lines


def test_an_idle_connection_gets_goaway_and_is_closed(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], listeners=[h2c()],
                           timeouts={"idle_keepalive": 0.3})
    with H2Client(address) as client:
        assert client.request().status == 200
        client.wait_closed()
    assert client.terminated is not None and client.terminated.error_code == 0


def test_stop_sends_goaway_and_finishes_streams_in_flight(env: Env) -> None:
    started = asyncio.Event()

    async def handler(request: web.Request, body: bytes) -> web.StreamResponse:
        started.set()
        await asyncio.sleep(0.5)
        return web.Response(text="finished")

    backend = env.recorder()
    backend.handler = handler
    address = env.balancer([backend.address], listeners=[h2c()])
    assert env.handle is not None
    handle = env.handle
    with H2Client(address) as client:
        stream_id = client.start()
        env.loop.run(asyncio.wait_for(started.wait(), 5))
        stopping = asyncio.run_coroutine_threadsafe(handle.stop(grace=0, deadline=5),
                                                    env.loop.loop)
        frames = client.raw_frames()
        stopping.result(10)
    env.handle = None
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    data = [f for f in frames if isinstance(f, DataFrame) and f.stream_id == stream_id]
    assert [(g.error_code, g.last_stream_id) for g in goaways] == [(0, stream_id)]
    assert frames.index(goaways[0]) < frames.index(data[0])  # GOAWAY first, then the end
    assert b"".join(f.data for f in data) == b"finished" and "END_STREAM" in data[-1].flags


def test_zero_window_frees_the_backend(env: Env) -> None:
    """A client that never opens its window: the stall ends at backend_response, the
    stream is reset (CANCEL) and the backend's slot and connection are given back."""
    backend = env.recorder()

    async def handler(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.Response(body=b"z" * 300_000)

    backend.handler = handler
    address = env.balancer([backend.address], listeners=[h2c()],
                           timeouts={"backend_response": 0.5})
    with H2Client(address, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}) as client:
        reply = client.wait(client.start(), timeout=10)
        assert reply.reset == ErrorCodes.CANCEL and reply.body == b""
    backend_state = _backends(env)[0]
    assert backend_state.active == 0  # its slot is free


def _backends(env: Env) -> list[Any]:
    assert env.handle is not None
    return [b for p in env.handle.worker.snapshot.pools.values() for b in p.backends]


def test_our_own_answers_do_not_wait_forever_on_a_zero_window(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], listeners=[h2c()],
                           timeouts={"backend_response": 0.3})
    with H2Client(address, settings={SettingCodes.INITIAL_WINDOW_SIZE: 0}) as client:
        health = client.wait(client.start(path="/.gtm/health"))
        refused = client.wait(client.start(authority="bad host"))
    assert health.status == 200 and health.reset == ErrorCodes.CANCEL
    assert refused.status == 400 and refused.reset == ErrorCodes.CANCEL


def test_a_reload_that_turns_h2c_off_drains_open_connections(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], listeners=[h2c()])
    assert env.handle is not None
    with H2Client(address) as client:
        assert client.request().status == 200
        plain = build_config({"listeners": [{"name": "web", "bind": "127.0.0.1:0"}],
                              "pools": [{"name": "app", "backends": [backend.address]}],
                              "timeouts": {"shutdown_grace": 0.0}}, "test")
        env.loop.run(env.handle.reload(plain))
        stream_id = client.start()  # served on the connection it came on, then GOAWAY
        frames = client.raw_frames()
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    data = [f for f in frames if isinstance(f, DataFrame) and f.stream_id == stream_id]
    assert [(g.error_code, g.last_stream_id) for g in goaways] == [(0, stream_id)]
    assert b"".join(f.data for f in data) == b"b\n"
    with socket.create_connection(address, timeout=5) as sock:  # new ones: HTTP/1.1 only
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 505")


def test_http2_settings_are_checked() -> None:
    def config(http2: dict[str, Any], **listener: Any) -> Any:
        return build_config({"http2": http2,
                             "listeners": [{"bind": "127.0.0.1:0", **listener}],
                             "pools": [{"name": "a", "backends": ["127.0.0.1:1"]}]}, "test")

    assert config({"max_concurrent_streams": 10}).http2.max_concurrent_streams == 10
    for http2, message in [({"max_concurrent_streams": 0}, "max_concurrent_streams: must be"),
                           ({"initial_window_size": 1024}, "initial_window_size: must be"),
                           ({"max_resets": True}, "max_resets: must be a whole number"),
                           ({"pings": 1}, "unknown key 'pings'")]:
        with pytest.raises(ConfigError, match=message):
            config(http2)
    with pytest.raises(ConfigError, match="h2c: is for plain http listeners"):
        config({}, mode="tcp", h2c=True)
    with pytest.raises(ConfigError, match=r"upgrades\[0\]: h2c cannot be tunnelled"):
        config({}, upgrades=["h2c"])
