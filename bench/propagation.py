"""Propagation: from an API commit to every node answering DNS with the new data.

    python bench/propagation.py                      # 200 changes, Redis then reconcile-only
    python bench/propagation.py --changes 10         # a smoke run (about 15 s)
    python bench/propagation.py --mode redis         # one mode only

Runs the control plane in this process (PostgreSQL store + Redis fan-out, in a
namespace of its own that is dropped at the end) and three `gtm serve --control`
node processes. Each change sets www.example.test to a new address through the
API; the clock starts when the API confirms the commit (201) and stops when all
three nodes answer the new address over UDP (each polled every POLL seconds).

Modes:
  redis      the production path: Redis pub/sub and PostgreSQL NOTIFY, reconcile as backstop
  reconcile  neither: the nodes see a change only at their next reconcile
             (--reconcile-interval, 1 s here; 2 s by default in `gtm serve`)

Server URLs: GTM_BENCH_POSTGRES_URL / GTM_BENCH_REDIS_URL (this machine's defaults).
Target (issue 4): p99 under 200 ms with Redis. Results: bench/results/propagation-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message

from gtm.control.plane import ControlSettings, start_control_plane
from gtm.control.postgres_store import PostgresStore

POSTGRES_URL = os.environ.get("GTM_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("GTM_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
RESULTS = Path(__file__).resolve().parent / "results"
POLL = 0.002
CHANGE_TIMEOUT = 15.0
ZONE = """$TTL 60
@    SOA  ns1 hostmaster {serial} 7200 1800 1209600 60
@    NS   ns1
ns1  A    127.0.0.1
www  A    {address}
"""


def address(index: int) -> str:
    return f"10.{(index >> 16) & 255}.{(index >> 8) & 255}.{index & 255}"


def document(index: int) -> dict[str, Any]:
    return {"zones": {"example.test.": ZONE.format(serial=index + 1, address=address(index))}}


class NodeProcess:
    def __init__(self, name: str, workdir: Path, namespace: str, mode: str, reconcile: float):
        state = workdir / name
        state.mkdir(parents=True)
        self.log_path = state / "node.log"
        argv = [sys.executable, "-m", "gtm.cli", "serve", "--listen", "127.0.0.1:0",
                "--workers", "1", "--control", POSTGRES_URL, "--node-id", name,
                "--state-dir", str(state), "--namespace", namespace,
                "--reconcile-interval", str(reconcile)]
        if mode == "redis":
            argv += ["--redis", REDIS_URL]
        else:
            argv += ["--no-store-notify"]
        env = {**os.environ, "GTM_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=log, env=env)
        self.port = 0

    async def wait_port(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            for line in text.splitlines():
                if "listening on 127.0.0.1 port" in line:
                    self.port = int(line.rsplit(" port ", 1)[1].split()[0])
                    return self.port
            if self.process.poll() is not None:
                raise RuntimeError(f"node exited:\n{text}")
            await asyncio.sleep(0.05)
        raise RuntimeError("node did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


async def answer(port: int) -> str | None:
    query = dns.message.make_query("www.example.test.", "A")
    try:
        reply = await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=0.5)
    except (TimeoutError, OSError, dns.exception.DNSException):
        return None
    return str(reply.answer[0][0]) if reply.answer else None


async def until_served(port: int, expected: str, started: float) -> float:
    while time.monotonic() - started < CHANGE_TIMEOUT:
        if await answer(port) == expected:
            return time.monotonic() - started
        await asyncio.sleep(POLL)
    raise RuntimeError(f"node on port {port} did not serve {expected} in {CHANGE_TIMEOUT}s")


async def run_mode(mode: str, changes: int, reconcile: float, nodes: int) -> dict[str, Any]:
    namespace = f"gtm_bench_{secrets.token_hex(3)}"
    workdir = Path(tempfile.mkdtemp(prefix=f"gtm-propagation-{mode}-"))
    plane = await start_control_plane(ControlSettings(
        port=0, state_dir=workdir / "control", store_url=POSTGRES_URL,
        redis_url=REDIS_URL, namespace=namespace))
    token = plane.admin_token_path.read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    processes: list[NodeProcess] = []
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            base = await put(http, plane.url, 0, document(0))
            processes = [NodeProcess(f"bench-{i}", workdir, namespace, mode, reconcile)
                         for i in range(nodes)]
            ports = [await p.wait_port() for p in processes]
            await asyncio.gather(*(until_served(p, address(0), time.monotonic())
                                   for p in ports))
            await asyncio.sleep(1.0)  # every node subscribed
            from_commit, from_request = [], []
            for index in range(1, changes + 1):
                if mode == "reconcile":
                    # Right after a convergence every node has just reconciled, so an
                    # immediate change would always wait a whole interval. Real changes
                    # come at any phase of the timer: start each at a random one.
                    await asyncio.sleep(random.uniform(0, reconcile))
                sent = time.monotonic()
                base = await put(http, plane.url, base, document(index))
                committed = time.monotonic()
                done = await asyncio.gather(
                    *(until_served(p, address(index), committed) for p in ports))
                from_commit.append(max(done))
                from_request.append(max(done) + committed - sent)
    finally:
        for process in processes:
            process.stop()
        await plane.stop()
        await PostgresStore(POSTGRES_URL, namespace).drop_schema()
        await drop_redis_keys(namespace)
    return {"mode": mode, "changes": changes, "nodes": nodes, "reconcile_interval": reconcile,
            "from_commit": summary(from_commit), "from_request": summary(from_request)}


async def drop_redis_keys(namespace: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def put(http: aiohttp.ClientSession, url: str, base: int, doc: dict[str, Any]) -> int:
    async with http.put(f"{url}/v1/config", json={"document": doc, "message": "bench"},
                        headers={"If-Match": f'"{base}"'}) as response:
        body = await response.json()
        if response.status != 201:
            raise RuntimeError(f"commit failed: {response.status} {body}")
        return int(body["version"]["version"])


def summary(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": round(at(0.95), 1),
            "p99_ms": round(at(0.99), 1), "max_ms": round(ordered[-1] * 1000, 1),
            "n": len(ordered)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--mode", action="append", choices=["redis", "reconcile"])
    parser.add_argument("--reconcile-interval", type=float, default=1.0)
    args = parser.parse_args()
    results = []
    for mode in args.mode or ["redis", "reconcile"]:
        result = asyncio.run(run_mode(mode, args.changes, args.reconcile_interval, args.nodes))
        results.append(result)
        c, r = result["from_commit"], result["from_request"]
        print(f"{mode:<10} n={c['n']:<4} from commit: p50 {c['p50_ms']} ms, p95 {c['p95_ms']} ms,"
              f" p99 {c['p99_ms']} ms, max {c['max_ms']} ms | from request: p50 {r['p50_ms']} ms,"
              f" p99 {r['p99_ms']} ms", flush=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"propagation-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"results": results, "poll_seconds": POLL}, indent=2))
    print(f"results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
