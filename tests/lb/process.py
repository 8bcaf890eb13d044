"""Running ``gtm lb serve`` as a real process for lifecycle tests; stopped by PID."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.lb.conftest import connect, read_response

GTM = [sys.executable, "-m", "gtm.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LbProcess:
    def __init__(self, config: Path, workers: int = 1):
        self.config = config
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [*GTM, "lb", "serve", "--config", str(config), "--workers", str(workers)],
            stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def wait_for_log(self, pattern: str, timeout: float = 10.0, count: int = 1) -> re.Match[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            matches = [m for line in list(self.lines) if (m := re.search(pattern, line))]
            if len(matches) >= count:
                return matches[count - 1]
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} in log:\n" + "".join(self.lines))

    def wait_serving(self, address: tuple[str, int], timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with connect(address, 1.0) as client:
                    client.sendall(b"GET /.gtm/health HTTP/1.1\r\nHost: x\r\n\r\n")
                    if read_response(client)[0] == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("balancer not serving:\n" + "".join(self.lines))

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(p) for p in path.read_text().split()] if path.exists() else []

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def rss_peak_kb(self) -> int:
        """Peak resident memory of the process and its workers (VmHWM), in KiB."""
        total = 0
        for pid in [self.proc.pid, *self.children()]:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        return total

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


class LoadLoop:
    """Clients sending requests in a loop on keep-alive connections; every failure counted."""

    def __init__(self, address: tuple[str, int], clients: int = 4):
        self.address = address
        self.ok = 0
        self.failures: list[str] = []
        self.bodies: dict[str, int] = {}
        self.running = True
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        client = None
        while self.running:
            try:
                if client is None:
                    client = connect(self.address)
                client.sendall(b"GET /load HTTP/1.1\r\nHost: load\r\n\r\n")
                status, headers, body = read_response(client)
                if status != 200:
                    self.failures.append(f"status {status}: {body[:100]!r}")
                else:
                    self.ok += 1
                    name = body.decode().strip()
                    self.bodies[name] = self.bodies.get(name, 0) + 1
                if headers.get("connection", "").lower() == "close":
                    client.close()
                    client = None
            except Exception as exc:
                self.failures.append(repr(exc))
                if client is not None:
                    client.close()
                client = None
            time.sleep(0.002)
        if client is not None:
            client.close()

    def stop(self) -> None:
        self.running = False
        for thread in self.threads:
            thread.join(10)
