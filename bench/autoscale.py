"""Auto-scaling under a load ramp: `python bench/autoscale.py` (about 3 minutes).

A `gtm lb serve` process (one worker) in front of a pool that scales with the built-in
`process` actuator: each backend is this script in `--backend` mode (answers after
`--service-ms`), started on 127.0.0.1 in a port range. Clients send `--low` requests a
second, ramp to `--high` over `--ramp` seconds, hold `--hold` seconds, ramp back down
and hold low again (open loop: a request is sent on schedule whatever the answers). The
policy tracks in-flight requests per backend (`--target`), with short windows.

Modes (``--mode reactive | predictive | both``): reactive alone, then reactive +
predictive (forecast_and_scale) with a stored week of history in which the same shape
happened every day at this time (the "repeated daily shape"; one-minute resolution, so
the ramp is stretched onto minutes in the history).

Printed per mode: the time from the load crossing the target (the offered in-flight per
serving backend above the target) to the new capacity serving (the scale-out event),
p95 latency during the ramp, failed requests (not 200, or no answer), scaling actions.
``--report FILE.html`` writes the figures with an inline SVG chart: offered load,
backends serving and the forecast, second by second.

Everything listens on 127.0.0.1; the balancer and every backend are stopped by PID; the
run is bounded by its own timings. A smoke run: ``--low 20 --high 60 --ramp 2 --hold 1``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_range(count: int) -> tuple[int, int]:
    for base in range(21000, 30000, 50):
        try:
            for port in range(base, base + count):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
            return base, base + count - 1
        except OSError:
            continue
    raise SystemExit("no free run of ports")


# -- the backend ---------------------------------------------------------------------

def run_backend(listen: str, service: float) -> None:
    from aiohttp import web

    host, port = listen.rsplit(":", 1)

    async def handle(request: web.Request) -> web.Response:
        await asyncio.sleep(service)
        return web.Response(text="ok")

    async def main() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.TCPSite(runner, host, int(port)).start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


# -- the load ------------------------------------------------------------------------

def offered(args: argparse.Namespace, t: float) -> float:
    """Requests a second at t seconds into the run: low, ramp up, hold, ramp down, low."""
    low, high, ramp, hold = args.low, args.high, args.ramp, args.hold
    phases = [(args.warm, low, low), (ramp, low, high), (hold, high, high),
              (ramp, high, low), (args.warm, low, low)]
    for length, start, end in phases:
        if t < length:
            return start + (end - start) * t / length
        t -= length
    return 0.0


def duration(args: argparse.Namespace) -> float:
    return 2 * args.warm + 2 * args.ramp + args.hold


class Load:
    def __init__(self, port: int, connections: int):
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.open = 0
        self.limit = connections
        self.results: list[tuple[float, float, bool]] = []  # (sent at, seconds, ok)
        self.pending: set[asyncio.Task[None]] = set()

    async def one(self, sent: float) -> None:
        loop = asyncio.get_running_loop()
        connection = None
        ok = False
        try:
            if self.idle:
                connection = self.idle.pop()
            elif self.open < self.limit:
                self.open += 1
                connection = await asyncio.open_connection("127.0.0.1", self.port)
            else:
                return self.results.append((sent, 0.0, False))  # no connection left
            reader, writer = connection
            writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await asyncio.wait_for(reader.readexactly(length), 10)
            ok = head.startswith(b"HTTP/1.1 200")
            self.idle.append(connection)
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            if connection is not None:
                connection[1].close()
                self.open -= 1
        self.results.append((sent, loop.time() - sent, ok))

    async def run(self, args: argparse.Namespace, start: float) -> None:
        loop = asyncio.get_running_loop()
        owed = 0.0
        while (t := loop.time() - start) < duration(args):
            owed += offered(args, t) * 0.01
            while owed >= 1.0:
                owed -= 1.0
                task = loop.create_task(self.one(loop.time()))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)
            await asyncio.sleep(0.01)
        await asyncio.gather(*self.pending, return_exceptions=True)
        for _, writer in self.idle:
            writer.close()


# -- one mode ------------------------------------------------------------------------

def config(args: argparse.Namespace, work: Path, port: int, ports: tuple[int, int],
           predictive: bool) -> Path:
    policy = f"""
[lb.pools.autoscale]
min = 1
max = {args.max}
metric = "in_flight_per_backend"
target = {args.target}
warmup = {args.warmup}
deregistration_delay = 30
scale_out = {{ window = 0, backends = 4, period = 2 }}
scale_in = {{ window = {args.scale_in_window}, backends = 2, period = 2 }}
{predictive_line(args) if predictive else ''}
[lb.pools.autoscale.actuator]
type = "process"
host = "127.0.0.1"
ports = "{ports[0]}-{ports[1]}"
command = ["{sys.executable}", "{Path(__file__).resolve()}", "--backend", "{{address}}",
           "--service-ms", "{args.service_ms}"]
timeout = 30
"""
    path = work / f"lb-{'p' if predictive else 'r'}.toml"
    path.write_text(f"""
[lb]
region = "bench{'p' if predictive else 'r'}"
[lb.timeouts]
shutdown_grace = 0.0
[lb.autoscale]
store = "sqlite://{work / 'scale.db'}"
interval = 0.5
state_dir = "{work / 'scale'}"
[[lb.listeners]]
bind = "127.0.0.1:{port}"
[[lb.pools]]
name = "app"
algorithm = "least_request"
slow_start = 1
backends = []
retries = 1
{policy}
""")
    return path


def predictive_line(args: argparse.Namespace) -> str:
    return f'predictive = {{ mode = "forecast_and_scale", buffer = {args.buffer:g} }}'


def seed_history(args: argparse.Namespace, store: Any, region: str, now: float) -> None:
    """Seven days in which the run's shape happened daily at this time (the run starts
    `lead` s from now): each one-minute point the mean in-flight load of that minute of
    the run (offered rate x service time), `low` around it."""
    service = args.service_ms / 1000
    begin = now + args.lead
    history = {}
    for minute in range(int(now // 60) - 60, int((begin + duration(args)) // 60) + 60):
        seconds = [t - begin for t in range(minute * 60, minute * 60 + 60)]
        rates = [offered(args, t) if 0 <= t < duration(args) else args.low for t in seconds]
        for day in range(1, 8):
            history[minute - day * 1440] = sum(rates) / len(rates) * service
    asyncio.run(_add(store, region, history))


async def _add(store: Any, region: str, history: dict[int, float]) -> None:
    await store.add_history(region, "app", history)
    await store.close()


async def observe(store_path: Path, region: str, start: float, until: float,
                  samples: list[dict[str, Any]]) -> None:
    from gtm.scalestore import SqliteScaleStore

    store = SqliteScaleStore(store_path)
    loop = asyncio.get_running_loop()
    try:
        while loop.time() < until:
            status = (await store.statuses()).get(region, {}).get("pools", {}).get("app", {})
            forecast = (status.get("forecast") or {}).get("backends")
            samples.append({"t": loop.time() - start, "wall": time.time(),
                            "current": status.get("current"),
                            "forecast": forecast, "value": status.get("value")})
            await asyncio.sleep(0.5)
        samples.append({"events": await store.events(region, 1000)})
    finally:
        await store.close()


def run_mode(args: argparse.Namespace, work: Path, predictive: bool) -> dict[str, Any]:
    from gtm.scalestore import SqliteScaleStore

    port, ports = free_port(), free_range(args.max + 4)
    path = config(args, work, port, ports, predictive)
    region = f"bench{'p' if predictive else 'r'}"
    if predictive:
        seed_history(args, SqliteScaleStore(work / "scale.db"), region, time.time())
    proc = subprocess.Popen([sys.executable, "-m", "gtm.cli", "lb", "serve", "--config",
                             str(path)], cwd=ROOT, stderr=subprocess.DEVNULL)
    samples: list[dict[str, Any]] = []
    try:
        _wait_serving(port)
        if predictive:
            time.sleep(args.lead)  # the forecast's buffer starts counting before the shape

        async def both() -> Load:
            loop = asyncio.get_running_loop()
            start = loop.time()
            load = Load(port, args.connections)
            await asyncio.gather(load.run(args, start), observe(
                work / "scale.db", region, start, start + duration(args), samples))
            return load
        load = asyncio.run(both())
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        _stop_backends(work / "scale" / "processes")
    return summarise(args, load, samples, predictive)


def _wait_serving(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the balancer did not serve within 30 s")


def _stop_backends(directory: Path) -> None:
    """Whatever the balancer left running (it stops none at its own exit), by PID."""
    pids = []
    for pid_file in directory.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError, ProcessLookupError):
            pid = int(pid_file.read_text())
            os.killpg(pid, signal.SIGTERM)
            pids.append(pid)
        pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    return True


def summarise(args: argparse.Namespace, load: Load, samples: list[dict[str, Any]],
              predictive: bool) -> dict[str, Any]:
    events = samples.pop()["events"] if samples and "events" in samples[-1] else []
    service = args.service_ms / 1000
    ramp_start, ramp_end = args.warm, args.warm + 2 * args.ramp + args.hold
    ramp = [s for t, s, ok in load.results if ok and ramp_start <= t - load_start(load)
            <= ramp_end]
    failed = sum(1 for _, _, ok in load.results if not ok)
    crossed, need = None, 0
    for sample in samples:
        current = sample.get("current") or 0
        if current and offered(args, sample["t"]) * service / current > args.target:
            crossed, need = sample["t"], current
            break
    start_wall = samples[0]["wall"] - samples[0]["t"] if samples else 0.0
    # The first scale-out past what served at the crossing; when the capacity serving at
    # the crossing was itself added ahead of it (predictive), that one: negative.
    outs = sorted((e for e in events if e["type"] == "scale_out"), key=lambda e: e["at"])
    ahead = [e for e in outs if e.get("from", 0) < need <= e.get("to", 0)
             and crossed is not None and e["at"] - start_wall < crossed]
    later = [e for e in outs if e.get("to", 0) > need]
    chosen = ahead[-1:] or later[:1]
    served = chosen[0]["at"] - start_wall if chosen else None
    return {
        "mode": "reactive + predictive" if predictive else "reactive",
        "requests": len(load.results), "failed": failed,
        "p95_ms_ramp": round(statistics.quantiles(ramp, n=20)[18] * 1000, 1)
        if len(ramp) >= 20 else None,
        "crossed_at_s": None if crossed is None else round(crossed, 1),
        "capacity_after_s": None if served is None or crossed is None
        else round(served - crossed, 1),
        "first_added_s": next((round(e["at"] - start_wall, 1) for e in outs
                               if e.get("from")), None),
        "actions": sum(1 for e in events if e["type"] in ("scale_out", "drain")),
        "max_backends": max((s.get("current") or 0 for s in samples), default=0),
        "samples": samples,
    }


def load_start(load: Load) -> float:
    return min((t for t, _, _ in load.results), default=0.0)


# -- the report ----------------------------------------------------------------------

def svg_chart(args: argparse.Namespace, result: dict[str, Any]) -> str:
    """Offered load (requests/s, grey), backends serving (blue) and the forecast's
    backends (orange, dashed) over the run."""
    width, height, pad = 640, 220, 30
    samples = [s for s in result["samples"] if "t" in s]
    end = duration(args)
    top_rate = max(args.high, 1)
    top_backends = max([args.max] + [s.get("forecast") or 0 for s in samples])

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * t / end

    def y(value: float, top: float) -> float:
        return height - pad - (height - 2 * pad) * value / top

    rate = " ".join(f"{x(t):.1f},{y(offered(args, t), top_rate):.1f}"
                    for t in [i * end / 200 for i in range(201)])
    backends = " ".join(f"{x(s['t']):.1f},{y(s['current'] or 0, top_backends):.1f}"
                        for s in samples if s.get("current") is not None)
    forecast = " ".join(f"{x(s['t']):.1f},{y(s['forecast'], top_backends):.1f}"
                        for s in samples if s.get("forecast") is not None)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f'<rect width="{width}" height="{height}" fill="white" stroke="#ccc"/>'
            f'<polyline points="{rate}" fill="none" stroke="#999" stroke-width="2"/>'
            f'<polyline points="{backends}" fill="none" stroke="#1f5fbf" stroke-width="2"/>'
            + (f'<polyline points="{forecast}" fill="none" stroke="#e07000" '
               f'stroke-dasharray="5,3" stroke-width="2"/>' if forecast else "")
            + f'<text x="{pad}" y="18" font-size="12">{result["mode"]}: offered req/s (grey, '
            f'max {args.high:g}), backends (blue, max {top_backends}), forecast (orange)'
            f'</text></svg>')


def write_report(path: Path, args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    rows = "".join(
        f"<tr><td>{r['mode']}</td><td>{r['capacity_after_s']}</td><td>{r['p95_ms_ramp']}"
        f"</td><td>{r['failed']}</td><td>{r['actions']}</td><td>{r['max_backends']}</td>"
        f"<td>{r['requests']}</td></tr>" for r in results)
    charts = "".join(f"<p>{svg_chart(args, r)}</p>" for r in results)
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>gtm auto-scaling</title>"
        f"<h1>Auto-scaling under a ramp {args.low:g} → {args.high:g} req/s</h1>"
        f"<p>{json.dumps({k: v for k, v in vars(args).items() if k != 'report'})}</p>"
        "<table border=1 cellpadding=4><tr><th>mode</th><th>crossing → capacity (s; "
        "empty: never crossed)</th>"
        "<th>p95 during ramp (ms)</th><th>failed</th><th>actions</th><th>max backends</th>"
        f"<th>requests</th></tr>{rows}</table>{charts}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", metavar="ADDR", help=argparse.SUPPRESS)
    parser.add_argument("--low", type=float, default=200.0)
    parser.add_argument("--high", type=float, default=4000.0)
    parser.add_argument("--ramp", type=float, default=60.0, help="seconds up (and down)")
    parser.add_argument("--hold", type=float, default=20.0)
    parser.add_argument("--warm", type=float, default=10.0, help="seconds low before, after")
    parser.add_argument("--service-ms", type=float, default=20.0)
    parser.add_argument("--target", type=float, default=10.0, help="in flight per backend")
    parser.add_argument("--max", type=int, default=12)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--scale-in-window", type=float, default=10.0)
    parser.add_argument("--buffer", type=float, default=120.0, help="predictive, seconds")
    parser.add_argument("--lead", type=float, default=3.0,
                        help="predictive: seconds between start and the shape in history")
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--mode", choices=("reactive", "predictive", "both"), default="both")
    parser.add_argument("--report", type=Path, help="write an HTML report with a chart")
    args = parser.parse_args()
    if args.backend:
        run_backend(args.backend, args.service_ms / 1000)
        return 0
    modes = {"reactive": [False], "predictive": [True], "both": [False, True]}[args.mode]
    results = []
    for predictive in modes:
        with tempfile.TemporaryDirectory(prefix="gtm-autoscale-bench-") as work:
            results.append(run_mode(args, Path(work), predictive))
    print(f"(the ramp starts {args.warm:g} s into the run)")
    for r in results:
        crossing = (f"{r['capacity_after_s']} s" if r["crossed_at_s"] is not None else
                    "never (capacity stayed ahead)")
        print(f"{r['mode']:>22}: crossing the target -> new capacity serving {crossing}, "
              f"first backend added at {r['first_added_s']} s, "
              f"p95 during ramp {r['p95_ms_ramp']} ms, "
              f"failed {r['failed']} of {r['requests']}, actions {r['actions']}, "
              f"max backends {r['max_backends']}")
    if args.report:
        write_report(args.report, args, results)
        print(f"report: {args.report}")
    return 1 if any(r["failed"] for r in results) else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
