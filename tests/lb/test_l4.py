"""The TCP proxy and the PROXY protocol, byte-exact on the wire."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from regional_lb.proxyproto import ProxyHeaderError, build_v2, parse_proxy_header
from tests.lb.conftest import Env, connect, read_all, read_response


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def tcp(env: Env, backends: list[str], pool: dict[str, Any] | None = None,
        listener: dict[str, Any] | None = None, **lb: Any) -> tuple[str, int]:
    spec = {"name": "tcp", "bind": "127.0.0.1:0", "mode": "tcp", **(listener or {})}
    return env.balancer(backends, pool=pool, listeners=[spec], **lb)


def test_tcp_echo_and_balancing(env: Env) -> None:
    names = []

    def named(name: bytes) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                       Awaitable[None]]:
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(name)
            await echo(reader, writer)
        return handler
    a, b = env.raw(named(b"a")), env.raw(named(b"b"))
    address = tcp(env, [a.address, b.address])
    for _ in range(4):
        with connect(address) as client:
            names.append(client.recv(1))
            client.sendall(b"x" * 100000)
            got = b""
            while len(got) < 100000:
                got += client.recv(65536)
            assert got == b"x" * 100000
    assert names == [b"a", b"b", b"a", b"b"]


def test_half_close_is_passed_on(env: Env) -> None:
    async def until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # to EOF: the client's FIN must arrive
        writer.write(b"got %d bytes" % len(data))
        await writer.drain()
    backend = env.raw(until_eof)
    address = tcp(env, [backend.address])
    with connect(address) as client:
        client.sendall(b"hello")
        client.shutdown_write()
        assert read_all(client) == b"got 5 bytes"


def test_connect_failure_moves_to_next_backend(env: Env) -> None:
    backend = env.raw(echo)
    address = tcp(env, ["127.0.0.1:1", backend.address])
    for _ in range(3):
        with connect(address) as client:
            client.sendall(b"ping")
            assert client.recv(4) == b"ping"


def test_idle_timeout_closes(env: Env) -> None:
    backend = env.raw(echo)
    address = tcp(env, [backend.address], timeouts={"tcp_idle": 0.3, "shutdown_grace": 0})
    with connect(address) as client:
        started = time.monotonic()
        assert read_all(client) == b""
        assert 0.2 < time.monotonic() - started < 2


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_sent_byte_exact(env: Env, version: str) -> None:
    seen = bytearray()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            seen.extend(data)
    backend = env.raw(record)
    address = tcp(env, [backend.address], pool={"proxy_protocol": version})
    with connect(address) as client:
        client.sendall(b"payload")
        client_port = client.sock.getsockname()[1]
        time.sleep(0.2)
    if version == "v1":
        expected = b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" % (client_port, address[1])
    else:
        expected = (b"\r\n\r\n\x00\r\nQUIT\n" + b"\x21\x11\x00\x0c" + socket.inet_aton("127.0.0.1")
                    + socket.inet_aton("127.0.0.1") + struct.pack("!HH", client_port, address[1]))
    assert bytes(seen) == expected + b"payload"


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n",
    build_v2(("192.0.2.7", 5555), ("127.0.0.1", 80)),
])
def test_proxy_protocol_accepted_from_trusted_tcp(env: Env, header: bytes) -> None:
    seen = bytearray()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            seen.extend(data)
    backend = env.raw(record)
    address = tcp(env, [backend.address], pool={"proxy_protocol": "v1"},
                  listener={"proxy_protocol": True, "trusted_networks": ["127.0.0.0/8"]})
    with connect(address) as client:
        client.sendall(header + b"data")
        time.sleep(0.2)
    assert bytes(seen) == b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 %d\r\ndata" % address[1]


def test_proxy_protocol_accepted_on_http_listener(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address], listeners=[{
        "name": "web", "bind": "127.0.0.1:0", "proxy_protocol": True,
        "trusted_networks": ["127.0.0.1/32"]}])
    with connect(address) as client:
        client.sendall(b"PROXY TCP6 2001:db8::1 ::1 4000 80\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        assert read_response(client)[0] == 200
    assert a.header(0, "X-Forwarded-For") == ["2001:db8::1"]
    assert a.header(0, "Forwarded") == ['for="[2001:db8::1]";host="h";proto=http']


def test_proxy_protocol_not_parsed_from_untrusted(env: Env) -> None:
    seen = bytearray()

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            seen.extend(data)
    backend = env.raw(record)
    header = b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\n"
    address = tcp(env, [backend.address],
                  listener={"proxy_protocol": True, "trusted_networks": ["10.0.0.0/8"]})
    with connect(address) as client:
        client.sendall(header)
        time.sleep(0.2)
    assert bytes(seen) == header  # passed through as data, never taken as the source


@pytest.mark.parametrize("raw", [
    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n", b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 ::1 ::1 1 2\r\n", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", b"PROXY " + b"x" * 120,
    b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + b"\x00" * 12,
])
def test_malformed_proxy_headers(raw: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_proxy_header(raw)


def test_proxy_header_incomplete_and_absent() -> None:
    assert parse_proxy_header(b"PROXY TCP4 1.2") is None
    assert parse_proxy_header(b"\r\n\r\n\x00") is None
    assert parse_proxy_header(b"GET / HTTP/1.1\r\n") == (None, 0)
    assert parse_proxy_header(b"PROXY UNKNOWN\r\nrest") == (None, 15)
