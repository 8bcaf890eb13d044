"""The HTTP proxy end to end: keep-alive, pooling, framing, headers, routing, errors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
import time
from typing import Any

from aiohttp import web

from tests.lb.conftest import (
    Env,
    connect,
    exchange,
    read_all,
    read_request,
    read_response,
    status_of,
)

H = b"Host: example.test\r\n"


def get(path: str = "/", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\n" + H + extra + b"\r\n"


# exchange() reads until the balancer closes: a gateway error keeps a connection open
# (the request was read whole), so such tests ask for the close themselves.
CLOSE = get("/", b"Connection: close\r\n")


def test_keep_alive_and_round_robin(env: Env) -> None:
    a, b = env.recorder("a"), env.recorder("b")
    address = env.balancer([a.address, b.address])
    with connect(address) as sock:
        names = []
        for _ in range(4):
            sock.sendall(get())
            status, _, body = read_response(sock)
            assert status == 200
            names.append(body.strip().decode())
    assert names == ["a", "b", "a", "b"]


def test_backend_connections_are_pooled(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address])
    for _ in range(5):  # five client connections, one after the other
        with connect(address) as sock:
            sock.sendall(get())
            assert read_response(sock)[0] == 200
    assert len(a.requests) == 5 and len(a.peers) == 1


def test_pipelined_requests_answered_in_order(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address])
    with connect(address) as sock:
        sock.sendall(get("/1") + get("/2") + get("/3"))
        assert [read_response(sock)[0] for _ in range(3)] == [200, 200, 200]
    assert [r["path"] for r in a.requests] == ["/1", "/2", "/3"]


def test_forwarding_headers(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address])
    extra = (b"Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
             b"X-Forwarded-For: 10.0.0.1\r\nTE: trailers\r\nProxy-Connection: x\r\n")
    with connect(address) as sock:
        sock.sendall(get("/h", extra))
        status, _, _ = read_response(sock)
    assert status == 200
    assert a.header(0, "X-Secret") == [] and a.header(0, "Keep-Alive") == []
    assert a.header(0, "TE") == [] and a.header(0, "Proxy-Connection") == []
    assert a.header(0, "X-Forwarded-For") == ["10.0.0.1, 127.0.0.1"]
    assert a.header(0, "X-Forwarded-Proto") == ["http"]
    assert a.header(0, "X-Forwarded-Host") == ["example.test"]
    assert a.header(0, "Forwarded") == ['for=127.0.0.1;host="example.test";proto=http']
    assert len(a.header(0, "X-Request-ID")[0]) > 8


def test_request_id_kept_when_present(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address])
    exchange(address, get("/", b"X-Request-ID: abc\r\nConnection: close\r\n"))
    assert a.header(0, "X-Request-ID") == ["abc"]


def test_response_hop_by_hop_removed(env: Env) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\n"
                     b"Keep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()
    raw = env.raw(handler)
    address = env.balancer([raw.address])
    with connect(address) as sock:
        sock.sendall(get())
        status, headers, body = read_response(sock)
    assert (status, body) == (200, b"ok")
    assert "x-internal" not in headers and "keep-alive" not in headers


def test_streaming_chunked_both_ways(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address])
    parts = [os.urandom(1000) for _ in range(20)]
    body = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts) + b"0\r\n\r\n"
    with connect(address) as sock:
        sock.sendall(b"POST /up HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + body)
        status, _, echoed = read_response(sock)
    assert status == 200 and echoed == b"".join(parts)
    assert a.requests[0]["body"] == b"".join(parts)


def test_chunked_response_and_until_close_response(env: Env) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if b"/chunked" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
            await writer.drain()
            await read_request(reader)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil close")
            await writer.drain()
    raw = env.raw(handler)
    address = env.balancer([raw.address])
    with connect(address) as sock:
        sock.sendall(get("/chunked"))
        status, _, body = read_response(sock)
        assert (status, body) == (200, b"hello world")
        sock.sendall(get("/close"))
        status, _, body = read_response(sock)
        assert (status, body) == (200, b"until close")
        sock.sendall(get("/chunked"))  # the client connection stayed open (re-chunked)
        assert read_response(sock)[2] == b"hello world"


def test_head_204_304_have_no_body(env: Env) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            if head.startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            elif b"/204" in head:
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n")
            await writer.drain()
    raw = env.raw(handler)
    address = env.balancer([raw.address])
    with connect(address) as sock:
        sock.sendall(b"HEAD / HTTP/1.1\r\n" + H + b"\r\n")
        status, headers, rest = read_response(sock, head_only=True)
        assert status == 200 and headers["content-length"] == "1000"
        for path, code in (("/204", 204), ("/304", 304)):
            sock.sendall(get(path))
            status, _, rest = read_response(sock)
            assert (status, rest) == (code, b"")
        sock.sendall(get("/204"))  # framing intact: the next response parses cleanly
        assert read_response(sock)[0] == 204


def test_expect_100_continue(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address])
    with connect(address) as sock:
        sock.sendall(b"POST /e HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n"
                     b"Content-Length: 5\r\n\r\n")
        status, _, rest = read_response(sock)
        assert status == 100 and rest == b""
        sock.sendall(b"hello")
        status, _, body = read_response(sock)
    assert (status, body) == (200, b"hello")


def test_routing_by_host_path_and_header(env: Env) -> None:
    a, b, c, d = (env.recorder(n) for n in "abcd")
    config: dict[str, Any] = {
        "pools": [{"name": n, "backends": [x.address]} for n, x in zip("abcd", (a, b, c, d),
                                                                       strict=True)],
        "listeners": [{"name": "web", "bind": "127.0.0.1:0", "pool": "a", "routes": [
            {"host": "api.test", "pool": "b"},
            {"path_prefix": "/static/", "pool": "c"},
            {"header": "X-Canary: 1", "pool": "d"},
        ]}],
    }
    address = env.balancer(**config)
    cases = [(b"Host: api.test:8080\r\n", "/x", "b"), (b"Host: www.test\r\n", "/static/a", "c"),
             (b"Host: www.test\r\nX-Canary: 1\r\n", "/", "d"), (b"Host: www.test\r\n", "/", "a")]
    for host, path, expected in cases:
        raw = b"GET " + path.encode() + b" HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n"
        assert exchange(address, raw).endswith(expected.encode() + b"\n")


def test_absolute_form_target(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address])
    exchange(address, b"GET http://other.test/p?q=1 HTTP/1.1\r\n" + H
             + b"Connection: close\r\n\r\n")
    assert a.requests[0]["path"] == "/p?q=1" and a.header(0, "Host") == ["other.test"]


def test_no_backend_is_503_and_refused_is_502(env: Env) -> None:
    address = env.balancer(["127.0.0.1:1"], pool={"retries": 0})
    assert status_of(exchange(address, CLOSE)) == 502
    env.close()
    env.handle = None
    address = env.balancer([{"address": "127.0.0.1:1", "state": "maintenance"}])
    assert status_of(exchange(address, CLOSE)) == 503


def test_retry_on_another_backend(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer(["127.0.0.1:1", a.address, "127.0.0.1:2"])
    for _ in range(6):
        assert status_of(exchange(address, get("/", b"Connection: close\r\n"))) == 200


def test_idempotent_request_retried_after_backend_reset(env: Env) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    bad = env.raw(reset)
    good = env.recorder("good")
    # Without passive ejection: the resets would take the bad backend out of rotation.
    address = env.balancer([bad.address, good.address], pool={"outlier": False})
    for _ in range(4):
        response = exchange(address, get("/", b"Connection: close\r\n"))
        assert status_of(response) == 200 and response.endswith(b"good\n")
    # A POST that reached a backend is not replayed: the client gets the 502.
    statuses = {status_of(exchange(address, b"POST / HTTP/1.1\r\n" + H
                                   + b"Content-Length: 1\r\nConnection: close\r\n\r\nx"))
                for _ in range(4)}
    assert statuses == {200, 502}


def test_slowloris_header_timeout_is_408(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address], timeouts={"header_read": 0.3, "shutdown_grace": 0})
    with connect(address) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        for _ in range(10):
            time.sleep(0.1)
            try:
                sock.sendall(b"X")
            except OSError:
                break
        response = read_all(sock)
    assert status_of(response) == 408 and time.monotonic() - started < 2.0
    assert a.requests == []


def test_idle_keep_alive_closed_quietly(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address], timeouts={"idle_keepalive": 0.2, "shutdown_grace": 0})
    with connect(address) as sock:
        sock.sendall(get())
        read_response(sock)
        assert read_all(sock) == b""  # closed without a response


def test_backend_response_timeout_is_504(env: Env) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
    raw = env.raw(silent)
    address = env.balancer([raw.address],
                           timeouts={"backend_response": 0.3, "shutdown_grace": 0})
    assert status_of(exchange(address, CLOSE)) == 504


def test_backend_connect_timeout_is_504(env: Env) -> None:
    with socket.socket() as full:  # a listener whose accept queue is full: SYNs are dropped
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(full.getsockname())
            fillers.append(filler)
        time.sleep(0.05)
        port = full.getsockname()[1]
        address = env.balancer([f"127.0.0.1:{port}"], pool={"retries": 0},
                               timeouts={"backend_connect": 0.3, "shutdown_grace": 0})
        started = time.monotonic()
        assert status_of(exchange(address, get("/", b"Connection: close\r\n"))) == 504
        assert time.monotonic() - started < 2
        for filler in fillers:
            filler.close()


def test_invalid_backend_response_is_502(env: Env) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n"
                     b"\r\nok")
        await writer.drain()
    raw = env.raw(garbage)
    address = env.balancer([raw.address], pool={"retries": 0})
    assert status_of(exchange(address, CLOSE)) == 502


def test_health_endpoint(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address])
    response = exchange(address, b"GET /.gtm/health HTTP/1.1\r\n" + H
                        + b"Connection: close\r\n\r\n")
    assert status_of(response) == 200 and a.requests == []


def test_websocket_echo_through_proxy(env: Env) -> None:
    async def ws_handler(request: web.Request, body: bytes) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            await ws.send_str("echo:" + message.data)
        return ws
    a = env.recorder("a")
    a.handler = ws_handler
    address = env.balancer([a.address])
    key = base64.b64encode(os.urandom(16))
    with connect(address) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        status, headers, rest = read_response(sock, head_only=True)
        assert status == 101 and headers["upgrade"].lower() == "websocket"
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                                  .digest())
        assert headers["sec-websocket-accept"].encode() == accept
        for text in (b"hello", b"world"):
            mask = os.urandom(4)
            payload = bytes(c ^ mask[i % 4] for i, c in enumerate(text))
            sock.sendall(bytes([0x81, 0x80 | len(text)]) + mask + payload)
            frame = rest
            while len(frame) < 2 + len(text) + 5:
                frame += sock.recv(1024)
            rest = b""
            assert frame[0] == 0x81 and frame[2:] == b"echo:" + text


def test_consistent_hash_on_cookie_is_sticky(env: Env) -> None:
    backends = [env.recorder(n) for n in "abc"]
    address = env.balancer([b.address for b in backends],
                           pool={"algorithm": "consistent_hash", "hash_key": "cookie:sid"})
    seen: dict[str, set[bytes]] = {}
    for user in range(12):
        for _ in range(3):
            response = exchange(address, get("/", b"Cookie: theme=dark; sid=user%d\r\n" % user
                                             + b"Connection: close\r\n"))
            seen.setdefault(str(user), set()).add(response.rsplit(b"\r\n\r\n", 1)[1])
    assert all(len(names) == 1 for names in seen.values())  # each user stays on one
    assert len(set().union(*seen.values())) > 1  # and users spread over the backends


def test_pipelined_flood_without_reading_is_held_back(env: Env) -> None:
    async def big(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.Response(body=b"z" * 65536)
    a = env.recorder("a")
    a.handler = big
    address = env.balancer([a.address])
    count = 1000
    with connect(address, timeout=20) as client:
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.sendall(get("/p") * count)
        time.sleep(1.0)
        forwarded_while_stalled = len(a.requests)
        assert forwarded_while_stalled < count // 4  # the proxy stopped taking requests
        for _ in range(count):
            status, _, body = read_response(client)
            assert status == 200 and len(body) == 65536
    assert len(a.requests) == count


def test_pooled_connection_reused_after_slow_client(env: Env) -> None:
    async def big(request: web.Request, body: bytes) -> web.StreamResponse:
        size = 8 * 1024 * 1024 if request.path == "/big" else 2
        return web.Response(body=b"b" * size)
    a = env.recorder("a")
    a.handler = big
    address = env.balancer([a.address], timeouts={"backend_response": 2.0, "shutdown_grace": 0})
    with connect(address, timeout=10) as client:
        client.sendall(get("/big"))
        time.sleep(0.5)  # the proxy pauses reading from the backend meanwhile
        status, _, body = read_response(client)
        assert status == 200 and len(body) == 8 * 1024 * 1024
        for _ in range(3):
            client.sendall(get("/small"))
            assert read_response(client)[:3:2] == (200, b"bb")
    assert len(a.peers) == 1  # one backend connection, reused after being paused


def test_early_backend_response_closes_client_connection(env: Env) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the head only: the body is not wanted
        writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n"
                     b"Connection: close\r\n\r\nnope")
        await writer.drain()
    raw = env.raw(refuse)
    address = env.balancer([raw.address])
    with connect(address) as client:
        client.sendall(b"POST /up HTTP/1.1\r\n" + H + b"Content-Length: 1000000\r\n\r\n"
                       + b"x" * 1000)
        status, headers, body = read_response(client)
        assert (status, body) == (413, b"nope") and headers["connection"] == "close"
        assert read_all(client) == b""


def test_backend_dying_mid_body_is_not_passed_off_as_complete(env: Env) -> None:
    async def dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
    raw = env.raw(dies)
    address = env.balancer([raw.address])
    with connect(address) as client:
        client.sendall(get())
        data = read_all(client)
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"partial")  # cut short:
    # the client sees 7 of 100 bytes and a closed connection, never a complete response.


def test_connections_over_the_limit_are_refused(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address], limits={"max_client_connections": 2})
    with connect(address) as first, connect(address) as second:
        time.sleep(0.1)
        with connect(address) as third:
            assert read_all(third) == b""  # closed at once
        for client in (first, second):
            client.sendall(get())
            assert read_response(client)[0] == 200
