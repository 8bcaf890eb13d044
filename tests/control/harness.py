"""Outages without touching the shared servers: a TCP relay to cut, a Redis of our own,
and real `gtm serve --control` node processes, each stopped by its PID."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import pytest

LISTENING = re.compile(r"listening on (\S+) port (\d+)")


class TcpRelay:
    """Forwards 127.0.0.1:<port> to a target, and fails on demand the ways a network does.

    ``cut()`` makes the target unreachable: open connections are closed and new ones
    are accepted and closed at once, which is what a client sees of a server that went
    away. ``freeze()`` makes it hang: connections stay open and nothing is delivered
    either way until ``thaw()``. ``swallow_reply_to(pattern)``: the next request that
    contains ``pattern`` reaches the target, which acts on it, but the connection
    breaks before the reply gets back.
    """

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.is_cut = False
        self.is_frozen = False
        self.open: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.closed = False
        self._swallow: bytes | None = None
        self._after: bytes | None = None
        self.swallowed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, template: str) -> str:
        """``template`` (a URL naming the target) pointed at the relay instead."""
        host, port = self.target
        return template.replace(f"{host}:{port}", f"127.0.0.1:{self.port}")

    def cut(self) -> None:
        with self.lock:
            self.is_cut = True
            for sock in list(self.open):
                _close(sock)
            self.open.clear()

    def restore(self) -> None:
        self.is_cut = False

    def freeze(self) -> None:
        self.is_frozen = True

    def thaw(self) -> None:
        self.is_frozen = False

    def swallow_reply_to(self, pattern: bytes, after: bytes | None = None) -> None:
        """``after``: only on a connection that has sent it first (a statement of the
        write meant, where other writers, such as the event log, commit too)."""
        self.swallowed.clear()
        self._after = after
        self._swallow = pattern

    def close(self) -> None:
        self.closed = True
        self.is_frozen = False
        self.cut()
        _close(self.listener)

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.is_cut:
                _close(client)
                continue
            if self.is_frozen:  # a hung server still accepts; it just never answers
                with self.lock:
                    self.open.add(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self.lock:
                self.open.update((client, upstream))
            link = {"swallowing": False, "armed": False}
            threading.Thread(target=self._pump, args=(client, upstream, link, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, link, False),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, link: dict[str, bool],
              to_target: bool) -> None:
        try:
            while data := source.recv(65536):
                while self.is_frozen and not self.closed:
                    time.sleep(0.02)
                after = self._after
                if to_target and after is not None and after in data:
                    link["armed"] = True
                if to_target and self._swallow is not None and self._swallow in data \
                        and (after is None or link.get("armed")):
                    self._swallow = None
                    link["swallowing"] = True
                elif not to_target and link["swallowing"]:
                    self.swallowed.set()  # the target has acted and answered: drop it
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self.lock:
                self.open.discard(source)
                self.open.discard(sink)
            _close(source)
            _close(sink)


class FrozenServer:
    """Accepts connections and reads what they send, but never answers: a server that
    is up and hung (a Redis stuck in a long command, a stopped VM). ``holding()`` counts
    the requests it is sitting on: open connections that sent something."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: dict[socket.socket, int] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, scheme: str) -> str:
        return f"{scheme}://127.0.0.1:{self.port}/0"

    def holding(self) -> int:
        with self.lock:
            return sum(1 for count in self.received.values() if count)

    def close(self) -> None:
        _close(self.listener)
        with self.lock:
            for sock in self.received:
                _close(sock)
            self.received.clear()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.received[client] = 0
            threading.Thread(target=self._read, args=(client,), daemon=True).start()

    def _read(self, client: socket.socket) -> None:
        try:
            while data := client.recv(65536):
                with self.lock:
                    self.received[client] = self.received.get(client, 0) + len(data)
        except OSError:
            pass
        with self.lock:
            self.received.pop(client, None)
        _close(client)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A throwaway redis-server on a free port; stop() and start() it at will."""

    def __init__(self, directory: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI") == "true":
                pytest.fail("redis-server is not installed: CI requires it")
            pytest.skip("!!! SKIPPED: redis-server is not installed !!!")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.2
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


@dataclass
class Node:
    """One `gtm serve --control` process."""

    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Nodes:
    def __init__(self, directory: Path):
        self.directory = directory
        self.nodes: list[Node] = []

    def start(self, node_id: str, store_url: str, namespace: str, *,
              redis_url: str | None = None, reconcile: float = 0.5) -> Node:
        state_dir = self.directory / node_id
        state_dir.mkdir(parents=True, exist_ok=True)
        log_path = state_dir / "node.log"
        args = [sys.executable, "-m", "gtm.cli", "serve", "--listen", "127.0.0.1:0",
                "--workers", "1", "--control", store_url, "--node-id", node_id,
                "--state-dir", str(state_dir), "--namespace", namespace,
                "--reconcile-interval", str(reconcile)]
        if redis_url:
            args += ["--redis", redis_url]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GTM_LOG_LEVEL": "INFO"}
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(args, stdout=log_file, stderr=log_file, env=env)
        node = Node(process, log_path)
        self.nodes.append(node)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            match = LISTENING.search(node.log())
            if match:
                node.port = int(match.group(2))
                return node
            if process.poll() is not None:
                raise RuntimeError(f"node {node_id} exited:\n{node.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"node {node_id} did not start:\n{node.log()}")

    def kill(self, node: Node) -> None:
        if node.process.poll() is None:
            node.process.send_signal(signal.SIGKILL)
            node.process.wait(timeout=10)

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill(node)


HEARING_REDIS = "hearing announcements through Redis"


async def wait_for_log(node: Node, text: str, count: int, timeout: float = 5.0) -> None:
    """Until ``text`` is in the node's log ``count`` times (a subscription, a restart)."""
    import asyncio

    deadline = time.monotonic() + timeout
    while node.log().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not {count} times in the log:\n{node.log()}")
        await asyncio.sleep(0.02)


async def www(port: int, name: str = "www.example.test.") -> str | None:
    """The first A address the node at ``port`` answers for ``name``; None otherwise."""
    query = dns.message.make_query(name, "A")
    try:
        reply = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=1.0)
    except (TimeoutError, OSError, dns.exception.DNSException):
        return None
    if reply.rcode() != dns.rcode.NOERROR or not reply.answer:
        return None
    return str(reply.answer[0][0])


async def wait_for_answer(port: int, expected: str, timeout: float) -> float:
    """Seconds until the node at ``port`` answers ``expected``; fails after ``timeout``."""
    import asyncio

    started = time.monotonic()
    last = None
    while time.monotonic() - started < timeout:
        last = await www(port)
        if last == expected:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"node on port {port} answers {last}, not {expected}, after {timeout}s")


API_LISTENING = re.compile(r"control plane API on (http\S+)")


@dataclass
class ApiProcess:
    """One `gtm api` process."""

    process: subprocess.Popen[bytes]
    log_path: Path
    state_dir: Path
    url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class ApiProcesses:
    """Real `gtm api` processes over one store, each on a free port, stopped by PID."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.apis: list[ApiProcess] = []

    def start(self, name: str, store_url: str, namespace: str, *,
              redis_url: str | None = None, extra: tuple[str, ...] = ()) -> ApiProcess:
        state_dir = self.directory / name
        state_dir.mkdir(parents=True, exist_ok=True)
        log_path = state_dir / "api.log"
        args = [sys.executable, "-m", "gtm.cli", "api", "--listen", "127.0.0.1:0",
                "--postgres", store_url, "--namespace", namespace,
                "--state-dir", str(state_dir), *extra]
        if redis_url:
            args += ["--redis", redis_url]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GTM_LOG_LEVEL": "INFO"}
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(args, stdout=log_file, stderr=log_file, env=env)
        api = ApiProcess(process, log_path, state_dir)
        self.apis.append(api)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            match = API_LISTENING.search(api.log())
            if match:
                api.url = match.group(1)
                return api
            if process.poll() is not None:
                raise RuntimeError(f"api {name} exited:\n{api.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"api {name} did not start:\n{api.log()}")

    def stop_all(self) -> None:
        for api in self.apis:
            if api.process.poll() is None:
                api.process.send_signal(signal.SIGTERM)
        for api in self.apis:
            try:
                api.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                api.process.send_signal(signal.SIGKILL)
                api.process.wait(timeout=10)
