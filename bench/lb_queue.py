"""Requests served per priority class from a saturated pool: `python bench/lb_queue.py`.

A `gtm lb serve` process (one worker) in front of one backend that takes one request at
a time (`max_connections = 1`) and answers each after `--service-ms`. Clients of each
class (`X-Priority: high | normal | low`; `--clients 4` of each, or `1,2,4`) send
requests in a loop on keep-alive connections for `--seconds`; the pool queues up to
`--queue-size` for up to `--queue-timeout`. Printed per class: answered 200, 503 (queue timeout or
full), and the median and 95th percentile time to an answer.

Everything listens on 127.0.0.1 (ports from the kernel); the balancer is stopped by its
PID; the run is bounded by --seconds (and the clients' timeouts).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("high", "normal", "low")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def backend(service: float) -> asyncio.base_events.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await asyncio.sleep(service)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.close()  # the balancer went (or the run ended): nothing more to serve
    return await asyncio.start_server(serve, "127.0.0.1", 0)


async def client(port: int, klass: str, until: float, results: dict[str, list[float]],
                 failures: dict[str, int]) -> None:
    request = (b"GET / HTTP/1.1\r\nHost: bench\r\nX-Priority: " + klass.encode()
               + b"\r\n\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    loop = asyncio.get_running_loop()
    try:
        while loop.time() < until:
            started = loop.time()
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            if head.startswith(b"HTTP/1.1 200"):
                results[klass].append(loop.time() - started)
            else:
                failures[klass] += 1
                if b"connection: close" in head.lower():
                    break
    finally:
        writer.close()


def write_config(path: Path, port: int, backend_port: int, args: argparse.Namespace) -> None:
    path.write_text(f"""[lb]
[lb.timeouts]
shutdown_grace = 0
shutdown_deadline = 2
[[lb.listeners]]
name = "web"
bind = "127.0.0.1:{port}"
priority_header = "X-Priority"
[[lb.pools]]
name = "app"
backends = ["127.0.0.1:{backend_port}"]
max_connections = 1
queue_size = {args.queue_size}
queue_timeout = {args.queue_timeout}
""")


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("the balancer did not start")


async def run(args: argparse.Namespace) -> None:
    server = await backend(args.service_ms / 1000)
    backend_port = server.sockets[0].getsockname()[1]
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "lb.toml"
        write_config(config, port, backend_port, args)
        proc = subprocess.Popen([sys.executable, "-m", "gtm.cli", "lb", "serve", "--config",
                                 str(config)], cwd=ROOT, stderr=subprocess.DEVNULL)
        try:
            await asyncio.get_running_loop().run_in_executor(None, wait_listening, port, proc)
            results: dict[str, list[float]] = {k: [] for k in CLASSES}
            failures = dict.fromkeys(CLASSES, 0)
            until = asyncio.get_running_loop().time() + args.seconds
            counts = [int(n) for n in args.clients.split(",")]
            if len(counts) == 1:
                counts *= len(CLASSES)
            await asyncio.gather(*(client(port, klass, until, results, failures)
                                   for klass, count in zip(CLASSES, counts, strict=True)
                                   for _ in range(count)))
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(10)
    server.close()
    total = sum(len(r) for r in results.values())
    print(f"{args.seconds:g} s, clients (high,normal,low) {args.clients}, 1 backend slot, "
          f"{args.service_ms:g} ms a request, queue_size {args.queue_size}, "
          f"queue_timeout {args.queue_timeout:g} s")
    print(f"{'class':<8} {'200':>6} {'share':>6} {'503':>6} {'p50 ms':>8} {'p95 ms':>8}")
    for klass in CLASSES:
        times = sorted(results[klass])
        p50 = statistics.median(times) * 1000 if times else 0.0
        p95 = times[int(len(times) * 0.95)] * 1000 if times else 0.0
        share = len(times) / total if total else 0.0
        print(f"{klass:<8} {len(times):>6} {share:>6.0%} {failures[klass]:>6} {p50:>8.1f} "
              f"{p95:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", default="4",
                        help="clients per class: N for each, or HIGH,NORMAL,LOW")
    parser.add_argument("--service-ms", type=float, default=5.0)
    parser.add_argument("--queue-size", type=int, default=100)
    parser.add_argument("--queue-timeout", type=float, default=1.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
