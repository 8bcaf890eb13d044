"""Harness for the balancer tests: a background event loop, real backends, raw clients.

Everything listens on 127.0.0.0/8 with ports chosen by the kernel. The balancer and
the backends run in one event loop on a background thread; test code talks to them
with plain blocking sockets, each with a timeout, and asserts what is on the wire.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvloop
from aiohttp import web

from regional_lb import BalancerHandle, start_balancer
from regional_lb.config import build_config

TIMEOUT = 5.0


class LoopThread:
    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Awaitable[Any], timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def call(self, fn: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            return fn()
        return self.run(wrapper())

    def close(self) -> None:
        async def cancel_all() -> None:
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Recorder:
    """An aiohttp backend that records every request it receives."""

    def __init__(self, name: str):
        self.name = name
        self.requests: list[dict[str, Any]] = []
        self.peers: set[tuple[str, int]] = set()
        self.port = 0
        self.runner: web.AppRunner | None = None
        self.handler: Callable[[web.Request, bytes], Awaitable[web.StreamResponse]] | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer:
            self.peers.add(peer[:2])
        self.requests.append({"method": request.method, "path": request.path_qs,
                              "headers": list(request.raw_headers), "body": body})
        if self.handler is not None:
            return await self.handler(request, body)
        if request.method in ("POST", "PUT"):
            return web.Response(body=body, headers={"X-Backend": self.name})
        return web.Response(text=f"{self.name}\n", headers={"X-Backend": self.name})

    def header(self, index: int, name: str) -> list[str]:
        wanted = name.lower().encode()
        return [v.decode() for k, v in self.requests[index]["headers"] if k.lower() == wanted]

    async def start(self) -> None:
        app = web.Application(client_max_size=2**31)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        # shutdown_timeout: a test's end cancels handlers still running (a slow backend's
        # sleep) rather than waiting up to a minute for them.
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False,
                                    shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


class RawBackend:
    """A TCP server whose behaviour is one coroutine per connection (streams are fine here)."""

    def __init__(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                         Awaitable[None]]):
        self.handler = handler
        self.server: asyncio.base_events.Server | None = None
        self.connections = 0
        self.received = bytearray()
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """Head and Content-Length body of one request (for raw backends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return head, body


class Env:
    """One test's world: the loop, the backends it started, the balancer."""

    def __init__(self, loop: LoopThread):
        self.loop = loop
        self.backends: list[Recorder | RawBackend] = []
        self.handle: BalancerHandle | None = None

    def recorder(self, name: str = "b") -> Recorder:
        backend = Recorder(name)
        self.loop.run(backend.start())
        self.backends.append(backend)
        return backend

    def raw(self, handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                    Awaitable[None]]) -> RawBackend:
        backend = RawBackend(handler)
        self.loop.run(backend.start())
        self.backends.append(backend)
        return backend

    def balancer(self, backends: list[Any] | None = None, pool: dict[str, Any] | None = None,
                 **lb: Any) -> tuple[str, int]:
        config = dict(lb)
        config.setdefault("timeouts", {}).setdefault("shutdown_grace", 0.0)
        if "pools" not in config:
            config["pools"] = [{"name": "app", "backends": backends or [], **(pool or {})}]
        config.setdefault("listeners", [{"name": "web", "bind": "127.0.0.1:0"}])
        built = build_config(config, "test")
        self.handle = self.loop.run(start_balancer(built))
        first = built.listeners[0].name
        return self.handle.address(first)

    def address(self, listener: str) -> tuple[str, int]:
        assert self.handle is not None
        return self.handle.address(listener)

    def close(self) -> None:
        if self.handle is not None:
            self.loop.run(self.handle.stop(grace=0, deadline=0.5))
        for backend in self.backends:
            self.loop.run(backend.stop())


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def env(loop_thread: LoopThread) -> Iterator[Env]:
    world = Env(loop_thread)
    yield world
    world.close()


# -- blocking clients -----------------------------------------------------------------
class Client:
    """A blocking socket with a push-back buffer, so responses can be read one at a time."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.pushed = b""

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, size: int) -> bytes:
        if self.pushed:
            data, self.pushed = self.pushed[:size], self.pushed[size:]
            return data
        return self.sock.recv(size)

    def unread(self, data: bytes) -> None:
        self.pushed = data + self.pushed

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(address: tuple[str, int], timeout: float = TIMEOUT) -> Client:
    sock = socket.create_connection(address, timeout=timeout)
    sock.settimeout(timeout)
    return Client(sock)


def exchange(address: tuple[str, int], data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send raw bytes, read until the server closes (or the timeout)."""
    with connect(address, timeout) as client:
        client.sendall(data)
        return read_all(client)


def read_all(sock: Client) -> bytes:
    chunks = []
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def read_response(sock: Client, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One response from a keep-alive connection: status, headers (lower-case), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if head_only or status in (204, 304) or 100 <= status < 200:
        sock.unread(rest)
        return status, headers, b""
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
        sock.unread(rest[length:])
        return status, headers, rest[:length]
    if headers.get("transfer-encoding") == "chunked":
        return status, headers, _read_chunked(sock, rest)
    return status, headers, rest + read_all(sock)


def _read_chunked(sock: Client, data: bytes) -> bytes:
    body = b""
    while True:
        while b"\r\n" not in data:
            data += sock.recv(65536)
        line, _, data = data.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        while len(data) < size + 2:
            data += sock.recv(65536)
        if size == 0:
            data = data[size:]
            while not data.startswith(b"\r\n") and b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            end = 2 if data.startswith(b"\r\n") else data.find(b"\r\n\r\n") + 4
            sock.unread(data[end:])
            return body
        body += data[:size]
        data = data[size + 2 :]


def status_of(response: bytes) -> int:
    if not response.startswith(b"HTTP/1.1 "):
        return 0
    return int(response[9:12])
