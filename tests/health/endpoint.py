"""A tiny HTTP endpoint for health tests, run in-process or as a process stopped by PID.

Modes: ``ok`` (200), ``error`` (500), ``hang`` (never answers), ``slow`` (answers after
``delay``), ``flap`` (200 and 500 in turn, request by request). The mode can be
changed at run time with ``POST /mode/<mode>`` (in-process tests set it directly).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]


class Endpoint:
    def __init__(self, host: str, port: int, mode: str = "ok", delay: float = 0.0):
        self.host, self.port, self.mode, self.delay = host, port, mode, delay
        self.turn = itertools.count()
        self.runner: web.AppRunner | None = None
        self.hits = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if request.method == "POST" and request.path.startswith("/mode/"):
            self.mode = request.path.removeprefix("/mode/")
            return web.Response(text=f"mode {self.mode}\n")
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        if self.mode == "error" or (self.mode == "flap" and next(self.turn) % 2):
            return web.Response(status=500, text="broken\n")
        return web.Response(text=f"healthy {self.host}:{self.port}\n")

    async def start(self) -> Endpoint:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        await web.TCPSite(self.runner, self.host, self.port, reuse_address=True).start()
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EndpointProcess:
    """The endpoint in its own process: dies for real (SIGKILL by PID) and comes back."""

    def __init__(self, host: str, port: int, mode: str = "ok"):
        self.host, self.port, self.mode = host, port, mode
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> EndpointProcess:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.health.endpoint", f"{self.host}:{self.port}",
             "--mode", self.mode], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("endpoint process exited at start") from None
                time.sleep(0.02)
        raise RuntimeError(f"endpoint {self.host}:{self.port} did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.process = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("listen")
    parser.add_argument("--mode", default="ok")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)

    async def run() -> None:
        await Endpoint(host, int(port), args.mode).start()
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
