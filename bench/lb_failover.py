"""Failover time of the balancer tier: from a backend's death to its removal from rotation.

One command::

    /tmp/venv/bin/python bench/lb_failover.py              # 10 trials, default check settings
    /tmp/venv/bin/python bench/lb_failover.py --trials 3   # a short run

Three HTTP backends, each its own process on loopback, behind a balancer (in this
process) whose pool has ``check = { type = "http", path = "/healthz" }`` and nothing
else, so the defaults apply: interval 2 s, timeout 1 s, fall 2, rise 2, fastinter 0.5 s,
jitter 0.1. A trial waits a random fraction of the interval (deaths do not line up
with probes), kills backend 0 by PID (SIGKILL), and looks at the balancer's backend
state every 5 ms until it is out of rotation: that is the removal time. It then sends
``--requests`` requests through the balancer (none may reach the dead backend or
fail), restarts the backend on the same port and times its return (rise, then slow
start). With ``--passive`` the pool also has outlier detection and a client sends
requests all along, so live traffic can remove the backend before the checks do.

Everything is bounded: every wait has a deadline, processes are stopped by PID, and
the run stops itself after ``--deadline`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from regional_lb import start_balancer  # noqa: E402
from regional_lb.config import build_config  # noqa: E402

BACKEND = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = sys.argv[2].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer.allow_reuse_address = True
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(port: int, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", BACKEND, str(port), name],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_listening(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"backend on {port} did not start")


async def request(address: tuple[str, int]) -> tuple[int, bytes]:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), 3.0)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(reader.read(-1), 3.0)
    finally:
        writer.close()
    status = int(data[9:12]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data.rpartition(b"\r\n\r\n")[2]


async def until(condition: Any, timeout: float, step: float = 0.005) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(step)
    return time.monotonic() - start


async def traffic(address: tuple[str, int], stop: asyncio.Event, out: list[int]) -> None:
    while not stop.is_set():
        try:
            out.append((await request(address))[0])
        except (OSError, TimeoutError):
            out.append(0)
        await asyncio.sleep(0.005)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ports = [free_port() for _ in range(3)]
    procs = [spawn(port, f"b{i}") for i, port in enumerate(ports)]
    handle = None
    try:
        for port in ports:
            wait_listening(port, time.monotonic() + 10)
        pool: dict[str, Any] = {"name": "app", "backends": [f"127.0.0.1:{p}" for p in ports],
                                "check": {"type": "http", "path": "/healthz"},
                                "algorithm": "weighted_round_robin", "slow_start": 2.0}
        if args.passive:
            pool["outlier"] = {"consecutive_gateway": 3, "consecutive_5xx": 5,
                               "base_ejection": 2.0}
        config = build_config({"listeners": [{"name": "web", "bind": "127.0.0.1:0"}],
                               "pools": [pool], "timeouts": {"shutdown_grace": 0.0}}, "bench")
        handle = await start_balancer(config, admin=False)
        address = handle.address("web")
        check = config.pools[0].check
        assert check is not None
        removal, recovery, stray = [], [], 0
        for trial in range(args.trials):
            dead = handle.snapshot.pools["app"].backends[0]
            loop = asyncio.get_running_loop()
            await until(lambda: dead.healthy and (  # noqa: B023  (back, and past slow start)
                dead.since is None or loop.time() - dead.since >= 2.0), 30)  # noqa: B023
            await asyncio.sleep(random.uniform(0, check.interval))
            stop, statuses = asyncio.Event(), []  # type: ignore[var-annotated]
            client = asyncio.create_task(traffic(address, stop, statuses)) \
                if args.passive else None
            os.kill(procs[0].pid, signal.SIGKILL)
            procs[0].wait(5)
            took = await until(lambda: not dead.healthy, 30)  # noqa: B023
            stop.set()
            if client is not None:
                await client
            removal.append(took)
            bodies = [await request(address) for _ in range(args.requests)]
            stray += sum(1 for status, body in bodies if status != 200 or body == b"b0")
            procs[0] = spawn(ports[0], "b0")
            back = await until(lambda: dead.healthy, 90)  # noqa: B023
            recovery.append(back)
            print(f"trial {trial + 1}: removed after {took:.3f} s, back after {back:.3f} s"
                  + (f", {statuses.count(200)} ok / {len(statuses)} during" if args.passive
                     else ""), flush=True)
        return {
            "trials": args.trials, "passive": args.passive,
            "check": {"interval": check.interval, "timeout": check.timeout, "fall": check.fall,
                      "rise": check.rise, "fastinter": check.fastinter, "jitter": check.jitter},
            "removal_p50_s": round(statistics.median(removal), 3),
            "removal_max_s": round(max(removal), 3),
            "recovery_p50_s": round(statistics.median(recovery), 3),
            "recovery_max_s": round(max(recovery), 3),
            "requests_to_dead_or_failed_after_removal": stray,
        }
    finally:
        if handle is not None:
            await handle.stop(grace=0, deadline=1)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--requests", type=int, default=20,
                        help="requests after each removal; none may reach the dead backend")
    parser.add_argument("--passive", action="store_true",
                        help="outlier detection on, with live traffic during each death")
    parser.add_argument("--deadline", type=float, default=300.0)
    args = parser.parse_args()
    result = asyncio.run(asyncio.wait_for(run(args), args.deadline))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
