"""Hop-by-hop removal never changes framing; Upgrade only where a listener allows it.

The backend here is h11 (an independent, strict HTTP/1.1 implementation): if the
balancer forwarded a body without its framing, h11 would read the body as a second
request. Every case sends a request whose body is itself a request, then a second,
ordinary request over the same pooled backend connection, and checks that the backend
saw exactly the two requests the clients sent, in order, with their bodies intact, and
that each client got its own response.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import pytest

from tests.lb.conftest import Env, RawBackend, connect, exchange, read_response, status_of

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
# As seen with nginx: a body ending in an unfinished header line swallows the start of
# the next client's request on the pooled backend connection.
SMUGGLED_PREFIX = b"GET /smuggled HTTP/1.1\r\nHost: x\r\nX-Ignore: "
PROTECTED = ["Content-Length", "Transfer-Encoding", "Host", "X-Request-ID",
             "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "Forwarded"]


class StrictBackend(RawBackend):
    """An h11 server: one record per complete request; answers with what it saw."""

    def __init__(self) -> None:
        super().__init__(self._h11)
        self.requests: list[dict[str, Any]] = []
        self.errors: list[str] = []

    async def _h11(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        current: dict[str, Any] = {}
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await reader.read(65536)
                    conn.receive_data(data)
                    if not data and conn.their_state is not h11.DONE:
                        return
                    continue
                if isinstance(event, h11.Request):
                    current = {"method": event.method.decode(), "target": event.target.decode(),
                               "headers": [(k.decode(), v.decode()) for k, v in event.headers],
                               "body": b""}
                elif isinstance(event, h11.Data):
                    current["body"] += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    self.requests.append(current)
                    body = f"target={current['target']}".encode()
                    writer.write(conn.send(h11.Response(status_code=200, headers=[
                        ("Content-Length", str(len(body)))])))
                    writer.write(conn.send(h11.Data(data=body)))
                    writer.write(conn.send(h11.EndOfMessage()))
                    await writer.drain()
                    conn.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except h11.RemoteProtocolError as exc:
            self.errors.append(str(exc))

    def header(self, index: int, name: str) -> list[str]:
        return [v for k, v in self.requests[index]["headers"] if k.lower() == name.lower()]


@pytest.fixture
def strict(env: Env) -> StrictBackend:
    backend = StrictBackend()
    env.loop.run(backend.start())
    env.backends.append(backend)
    return backend


def _attack(option: str, body_kind: str, payload: bytes) -> bytes:
    head = b"POST /a HTTP/1.1\r\nHost: x\r\nX-Request-ID: client-id\r\n"
    head += b"Connection: " + option.encode() + b"\r\n"
    if body_kind == "cl":
        return head + b"Content-Length: %d\r\n\r\n" % len(payload) + payload
    if body_kind == "chunked":
        return head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % len(payload) + payload \
            + b"\r\n0\r\n\r\n"
    return head + b"\r\n"


@pytest.mark.parametrize("reuse", ["keep-alive", "fresh"])
@pytest.mark.parametrize("body_kind", ["cl", "chunked", "none"])
@pytest.mark.parametrize("option", PROTECTED)
def test_connection_option_never_removes_framing_or_identity(
        env: Env, strict: StrictBackend, option: str, body_kind: str, reuse: str) -> None:
    address = env.balancer([strict.address])
    payload = SMUGGLED_PREFIX if option == "Content-Length" else SMUGGLED
    with connect(address) as first:
        first.sendall(_attack(option, body_kind, payload))
        status, _, body = read_response(first)
        assert (status, body) == (200, b"target=/a")
        if reuse == "keep-alive":
            first.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(first)[2] == b"target=/next"
        else:
            with connect(address) as second:
                second.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
                assert read_response(second)[2] == b"target=/next"
    assert [r["target"] for r in strict.requests] == ["/a", "/next"], strict.requests
    assert strict.errors == []
    assert strict.connections == 1  # the second request really used the pooled connection
    sent = strict.requests[0]
    assert sent["body"] == (b"" if body_kind == "none" else payload)
    assert strict.header(0, "Host") == ["x"]
    assert strict.header(0, "X-Request-ID") == ["client-id"]
    assert len(strict.header(0, "X-Forwarded-For")) == 1
    assert strict.header(0, "Connection") == []


def test_other_connection_options_are_still_hop_by_hop(env: Env, strict: StrictBackend) -> None:
    address = env.balancer([strict.address])
    raw = (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: X-Secret, , Keep-Alive\r\n"
           b"X-Secret: 1\r\nX-Kept: 2\r\nKeep-Alive: timeout=5\r\n\r\n")
    with connect(address) as client:
        client.sendall(raw)
        assert read_response(client)[0] == 200
    assert strict.header(0, "X-Secret") == [] and strict.header(0, "Keep-Alive") == []
    assert strict.header(0, "X-Kept") == ["2"]


def test_the_reported_reproduction(env: Env, strict: StrictBackend) -> None:
    """The issue's bytes exactly: Content-Length 35, Connection: Content-Length."""
    address = env.balancer([strict.address])
    body = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    assert len(body) == 35
    raw = (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 35\r\n"
           b"Connection: Content-Length\r\n\r\n" + body)
    with connect(address) as client:
        client.sendall(raw)
        assert read_response(client)[2] == b"target=/a"
    assert [r["target"] for r in strict.requests] == ["/a"]
    assert strict.requests[0]["body"] == body
    assert strict.header(0, "Content-Length") == ["35"]


# -- the response side --------------------------------------------------------------------
def _answers(*responses: bytes) -> Any:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for response in responses:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(response)
            await writer.drain()
        await reader.read()
    return handler


@pytest.mark.parametrize("first", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: Content-Length\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n\r\n"
    b"5\r\nhello\r\n0\r\n\r\n",
], ids=["content-length", "chunked"])
def test_response_framing_survives_connection_options(env: Env, first: bytes) -> None:
    second = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nworld"
    backend = env.raw(_answers(first, second))
    address = env.balancer([backend.address])
    with connect(address) as client:
        client.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = read_response(client)
        assert (status, body) == (200, b"hello")
        assert "content-length" in headers or headers.get("transfer-encoding") == "chunked"
        client.sendall(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(client)[2] == b"world"


# -- Upgrade ------------------------------------------------------------------------------
def _upgrading(seen: list[bytes], answer_protocol: bytes | None = None) -> Any:
    """A backend that switches protocols whenever it is asked to (as h2c servers do)."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            offered = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"upgrade:")]
            if offered:
                protocol = answer_protocol or offered[0]
                writer.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\n"
                             b"Upgrade: " + protocol + b"\r\n\r\n")
                await writer.drain()
                await reader.read()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    return handler


H2C = (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
       b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")


def test_h2c_upgrade_is_never_tunnelled(env: Env) -> None:
    seen: list[bytes] = []
    backend = env.raw(_upgrading(seen))
    address = env.balancer([backend.address])
    with connect(address) as client:
        client.sendall(H2C)
        status, _, body = read_response(client)
        assert (status, body) == (200, b"ok")
    lower = seen[0].lower()
    assert b"upgrade" not in lower and b"http2-settings" not in lower


def test_h2c_cannot_be_allowed(env: Env) -> None:
    from gtm.errors import ConfigError
    with pytest.raises(ConfigError, match=r"upgrades\[0\].*h2c"):
        env.balancer(["127.0.0.1:9"], listeners=[{"name": "web", "bind": "127.0.0.1:0",
                                                  "upgrades": ["h2c"]}])


def test_upgrade_on_a_request_with_a_body_is_not_honoured(env: Env) -> None:
    seen: list[bytes] = []
    backend = env.raw(_upgrading(seen))
    address = env.balancer([backend.address])
    raw = (b"POST / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Content-Length: 4\r\n\r\nbody")
    with connect(address) as client:
        client.sendall(raw)
        assert read_response(client)[:3:2] == (200, b"ok")
    assert b"upgrade" not in seen[0].lower()


def test_listener_without_upgrades_forwards_no_upgrade(env: Env) -> None:
    seen: list[bytes] = []
    backend = env.raw(_upgrading(seen))
    address = env.balancer([backend.address], listeners=[
        {"name": "web", "bind": "127.0.0.1:0", "upgrades": []}])
    raw = (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with connect(address) as client:
        client.sendall(raw)
        assert read_response(client)[0] == 200
    assert b"upgrade:" not in seen[0].lower()


def test_only_allowed_protocols_of_an_offer_are_forwarded(env: Env) -> None:
    seen: list[bytes] = []
    backend = env.raw(_upgrading(seen))
    address = env.balancer([backend.address])
    raw = (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
           b"Upgrade: h2c, WebSocket\r\n\r\n")
    with connect(address) as client:
        client.sendall(raw)
        status, headers, _ = read_response(client, head_only=True)
        assert status == 101 and headers["upgrade"] == "WebSocket"
    assert b"\r\nUpgrade: WebSocket\r\n" in seen[0]


def test_switch_to_a_protocol_not_offered_is_a_502(env: Env) -> None:
    seen: list[bytes] = []
    backend = env.raw(_upgrading(seen, answer_protocol=b"h2c"))
    address = env.balancer([backend.address], pool={"retries": 0})
    raw = (b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\n"
           b"Upgrade: websocket\r\n\r\n")
    assert status_of(exchange(address, raw)) == 502


# -- request-target forms, versions, limits (RFC 9112 3, 2.3; RFC 9110 5.6.1) ------------
@pytest.mark.parametrize(("raw", "status"), [
    (b"GET /a#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET http://x/a#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 501),
    (b"CONNECT /a HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    (b"GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /\r\n", 400),               # HTTP/0.9: refused at once, not after a timeout
    (b"GET /index.html\r\n\r\n", 400),
    (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,\r\n\r\n", 400),
], ids=["fragment", "fragment-absolute", "connect", "connect-origin", "authority-form",
        "asterisk-not-options", "http09", "http09-blank", "http2-line", "http09-versioned",
        "te-empty-list"])
def test_request_line_rules(env: Env, raw: bytes, status: int) -> None:
    strict_bytes = bytearray()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        strict_bytes.extend(await reader.read())
    backend = env.raw(sink)
    address = env.balancer([backend.address], timeouts={"header_read": 30.0})
    response = exchange(address, raw, timeout=5.0)
    assert status_of(response) == status, response
    assert bytes(strict_bytes) == b""


def test_higher_minor_version_is_served_as_1_1(env: Env, strict: StrictBackend) -> None:
    address = env.balancer([strict.address])
    response = exchange(address, b"GET /v HTTP/1.7\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200") and response.endswith(b"target=/v")


def test_absolute_form_with_query_and_no_path(env: Env, strict: StrictBackend) -> None:
    address = env.balancer([strict.address])
    exchange(address, b"GET http://Example.Test?q=1 HTTP/1.1\r\nHost: other\r\n"
             b"Connection: close\r\n\r\n")
    assert strict.requests[0]["target"] == "/?q=1"
    assert strict.header(0, "Host") == ["example.test"]


def test_empty_list_elements_in_transfer_encoding(env: Env, strict: StrictBackend) -> None:
    address = env.balancer([strict.address])
    raw = (b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , chunked,\r\n"
           b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert exchange(address, raw).endswith(b"target=/te")
    assert strict.requests[0]["body"] == b"abc"


@pytest.mark.parametrize("partial", [False, True])
def test_long_target_is_414_even_when_the_head_is_too_large(env: Env, partial: bool) -> None:
    backend = env.raw(_answers())
    address = env.balancer([backend.address], limits={"max_request_line": 100,
                                                      "max_header_bytes": 150})
    raw = b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n" + (b"" if partial else b"\r\n")
    assert status_of(exchange(address, raw)) == 414
