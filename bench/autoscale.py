"""Auto-scaling under a load ramp: `python bench/autoscale.py` (about 6 minutes).

A `gtm lb serve` process (one worker) in front of a pool that scales with the built-in
`process` actuator: each backend is this script in `--backend` mode, a small server
that works on at most `--slots` requests at once, each for `--service-ms`, and queues
the rest (so an under-provisioned pool answers late, as real ones do). Everything listens
on 127.0.0.1.

Clients send `--low` requests a second, ramp to `--high` over `--ramp` seconds, hold
`--hold` seconds, ramp back down and stay low `--warm` seconds (open loop: every 5 ms
the requests the schedule owes leave, whatever the answers; one that waits for a free
client connection counts the wait in its latency, so a client that falls behind shows
as latency, not as fewer requests). The policy tracks
in-flight requests per backend (`--target`) with the default 10 % tolerance band.

Modes (``--mode reactive | predictive | both``): reactive alone, then reactive +
predictive (forecast_and_scale) with a stored week of history in which the same shape
happened every day at this time (the "repeated daily shape"; the history has one point a
minute, so each minute holds the run's mean load over that minute).

A line every `--every` seconds shows the progress. Per mode, at the end: for each
scale-out while the load rose, the time from the load crossing the target for the
backends it started from (offered requests/s x the unloaded latency, the median of the
first `--warm` seconds, divided by those backends, above `--target`) to the new backends
serving (the scaler's `scale_out` event, written once they accept connections and the
pool has them; negative: the capacity came first), with the scaler's reason and the
actuator's share. The scaler acts only past the 10 % tolerance band and does not grow
again from data while new backends warm up (`--warmup`), so a reactive lag includes the
time the load takes to rise through the band. Also: p50 and p95 latency during the ramp;
failed requests (not a 200, a reset, or no answer within 10 s); scaling actions during
the run; backend-seconds (the capacity's cost). ``--report FILE.html`` writes the
figures with an inline SVG chart per mode.

Bounded: the load stops at the end of its shape, the run has a deadline (each mode's
shape plus 60 s), and the deadline, SIGINT, SIGTERM or SIGHUP stop the balancer and
every backend (by PID) before exiting (bench/common.py's stop handlers and Servers). A
smoke run: ``--low 20 --high 200 --ramp 5 --hold 2 --warm 3 --max 3 --mode reactive``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from common import (  # noqa: E402  (bench/'s scripts find it beside them)
    Deadline,
    Interrupted,
    Servers,
    free_port,
    install_stop_handlers,
)

ANSWER_TIMEOUT = 10.0   # seconds a request may wait for its answer before it failed
OVERTIME = 60.0         # seconds a mode may take beyond its load's shape (start, stop)
TRACE_STEP = 0.1        # seconds between samples of the requests in flight
TICK = 0.005            # seconds between the client's sends
SMOOTHING = 10          # samples averaged into the in-flight load (1 s)


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
# asyncio protocols rather than aiohttp: at a few thousand requests a second on two
# cores, the backends, the balancer and the clients share the CPU, and a framework's
# cost per request would measure the bench instead of the scaler.

BACKEND_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


class BackendWork:
    """At most `slots` requests worked on at once, each for `service` seconds; the rest
    wait in arrival order."""

    def __init__(self, service: float, slots: int):
        self.service, self.slots = service, slots
        self.busy = 0
        self.waiting: deque[asyncio.Transport] = deque()

    def submit(self, transport: asyncio.Transport) -> None:
        if self.busy < self.slots:
            self._start(transport)
        else:
            self.waiting.append(transport)

    def _start(self, transport: asyncio.Transport) -> None:
        self.busy += 1
        asyncio.get_running_loop().call_later(self.service, self._finish, transport)

    def _finish(self, transport: asyncio.Transport) -> None:
        self.busy -= 1
        if not transport.is_closing():
            transport.write(BACKEND_ANSWER)
        while self.waiting and self.busy < self.slots:
            waiting = self.waiting.popleft()
            if not waiting.is_closing():
                self._start(waiting)


class BackendConnection(asyncio.Protocol):
    def __init__(self, work: BackendWork):
        self.work = work
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        # Requests without bodies (the bench sends GET only); each head is one request.
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            self.buffer = self.buffer[end + 4:]
            assert self.transport is not None
            self.work.submit(self.transport)
        if len(self.buffer) > 65536:
            assert self.transport is not None
            self.transport.close()


def run_backend(listen: str, service: float, slots: int) -> None:
    host, port = listen.rsplit(":", 1)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        work = BackendWork(service, slots)
        server = await loop.create_server(lambda: BackendConnection(work), host, int(port),
                                          reuse_address=True, backlog=1024)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        server.close()

    asyncio.run(main())


# -- the load ------------------------------------------------------------------------

def offered(args: argparse.Namespace, t: float) -> float:
    """Requests a second at t seconds into the run: low, ramp up, hold, ramp down, low."""
    low, high, ramp, hold = args.low, args.high, args.ramp, args.hold
    phases = [(args.warm, low, low), (ramp, low, high), (hold, high, high),
              (ramp, high, low), (args.warm, low, low)]
    for length, start, end in phases:
        if t < length:
            return float(start + (end - start) * t / length)
        t -= length
    return 0.0


def duration(args: argparse.Namespace) -> float:
    return float(2 * args.warm + 2 * args.ramp + args.hold)


class Results:
    """Per request, in the order answers came: when it was due (loop time), its latency,
    whether it was a 200. Arrays, not tuples: a run holds about a million."""

    def __init__(self) -> None:
        self.due = array("d")
        self.latency = array("d")
        self.ok = bytearray()

    def add(self, due: float, latency: float, ok: bool) -> None:
        self.due.append(due)
        self.latency.append(latency)
        self.ok.append(ok)

    def __len__(self) -> int:
        return len(self.ok)


class ClientConnection(asyncio.Protocol):
    """One keep-alive connection with at most one request outstanding."""

    def __init__(self, load: Load):
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.due: float | None = None  # the outstanding request's due time

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.load.ready(self)

    def send(self, due: float) -> None:
        assert self.transport is not None
        self.due = due
        self.transport.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.due is None:
            if self.due is None or len(self.buffer) > 65536:
                self.fail()
            return
        head = self.buffer[:end].split(b"\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buffer) < end + 4 + length:
            return
        rest, self.buffer = self.buffer[end + 4 + length:], b""
        due, self.due = self.due, None
        self.load.answered(due, head[0].startswith(b"HTTP/1.1 200"))
        closing = any(line.lower().replace(b" ", b"") == b"connection:close" for line in head)
        if rest or closing:
            self.fail()
        else:
            self.load.ready(self)

    def fail(self) -> None:
        """Give up this connection (and count its outstanding request as failed)."""
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.lost(self, self.due)
        self.due = None


class Load:
    """An open-loop client: each request is due at its time and goes on an idle
    connection, a new one (up to `limit`), or waits for one; latency counts from due."""

    def __init__(self, port: int, limit: int):
        self.port, self.limit = port, limit
        self.idle: list[ClientConnection] = []
        self.busy: set[ClientConnection] = set()
        self.opening = 0
        self.open = 0
        self.queue: deque[float] = deque()
        self.results = Results()
        self.in_flight = array("d")  # requests sent or waiting, every TRACE_STEP s

    def outstanding(self) -> int:
        return len(self.busy) + len(self.queue)

    def due(self, at: float) -> None:
        if self.idle:
            connection = self.idle.pop()
            self.busy.add(connection)
            connection.send(at)
            return
        self.queue.append(at)
        if self.open + self.opening < self.limit:
            self.opening += 1
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: ClientConnection(self), "127.0.0.1",
                                         self.port)
            self.open += 1
        except OSError:
            if self.queue:  # a connection refused or reset costs the oldest request
                self.results.add(self.queue.popleft(), 0.0, False)
        finally:
            self.opening -= 1

    def ready(self, connection: ClientConnection) -> None:
        self.busy.discard(connection)
        if self.queue:
            self.busy.add(connection)
            connection.send(self.queue.popleft())
        else:
            self.idle.append(connection)

    def answered(self, due: float, ok: bool) -> None:
        self.results.add(due, asyncio.get_running_loop().time() - due, ok)

    def lost(self, connection: ClientConnection, due: float | None) -> None:
        if connection.transport is not None:
            self.open -= 1
        self.busy.discard(connection)
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)
        if due is not None:
            self.results.add(due, asyncio.get_running_loop().time() - due, False)

    def expire(self, now: float) -> None:
        """Requests past ANSWER_TIMEOUT fail: waiting ones, and outstanding ones (their
        connection is closed, as a client that gives up would)."""
        while self.queue and now - self.queue[0] > ANSWER_TIMEOUT:
            self.results.add(self.queue.popleft(), ANSWER_TIMEOUT, False)
        for connection in list(self.busy):
            if connection.due is not None and now - connection.due > ANSWER_TIMEOUT:
                connection.fail()

    async def run(self, args: argparse.Namespace, start: float) -> None:
        loop = asyncio.get_running_loop()
        owed, last, swept = 0.0, start, start
        while (now := loop.time()) - start < duration(args):
            # The requests owed since the last step leave now, due now: a step is a few
            # milliseconds (TICK), and dating them earlier would add half a step to
            # every latency. Waiting for a connection still counts.
            owed += offered(args, now - start) * (now - last)
            count = int(owed)
            owed -= count
            for _ in range(count):
                self.due(now)
            # After they left: in flight is then exactly what is due and unanswered.
            while len(self.in_flight) * TRACE_STEP <= now - start:
                self.in_flight.append(self.outstanding())
            last = now
            if now - swept > 0.25:
                self.expire(now)
                swept = now
            await asyncio.sleep(TICK)
        deadline = loop.time() + ANSWER_TIMEOUT + 1
        while (self.busy or self.queue) and loop.time() < deadline:
            self.expire(loop.time())
            await asyncio.sleep(0.1)
        for connection in self.idle + list(self.busy):
            connection.fail()


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
           "--service-ms", "{args.service_ms}", "--slots", "{args.slots}"]
timeout = 30
"""
    path = work / f"lb-{'p' if predictive else 'r'}.toml"
    path.write_text(f"""
[lb]
region = "{region_of(predictive)}"
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


def region_of(predictive: bool) -> str:
    return "benchp" if predictive else "benchr"


def predictive_line(args: argparse.Namespace) -> str:
    return f'predictive = {{ mode = "forecast_and_scale", buffer = {args.buffer:g} }}'


def seed_history(args: argparse.Namespace, store: Any, region: str, now: float,
                 measured: list[float] | None) -> None:
    """Seven days in which the run's shape happened daily at this time (the run starts
    `lead` s from now): each one-minute point the mean in-flight load of that minute of
    the run. `measured`: the in-flight load an earlier run of the shape saw (what a
    scaler would have recorded; the reactive run's, with `--mode both`); without it,
    offered rate x service time (which leaves out the balancer's share of the latency).
    Around the run, the load of its first seconds."""
    def load_at(t: float) -> float:
        if measured:
            return measured[max(0, min(int(t / TRACE_STEP), len(measured) - 1))]
        return offered(args, t) * args.service_ms / 1000

    quiet = load_at(args.warm / 2)
    begin = now + args.lead
    history = {}
    for minute in range(int(now // 60) - 60, int((begin + duration(args)) // 60) + 60):
        loads = [load_at(t - begin) if 0 <= t - begin < duration(args) else quiet
                 for t in range(minute * 60, minute * 60 + 60)]
        for day in range(1, 8):
            history[minute - day * 1440] = sum(loads) / len(loads)
    asyncio.run(_add(store, region, history))


async def _add(store: Any, region: str, history: dict[int, float]) -> None:
    await store.add_history(region, "app", history)
    await store.close()


class Observer:
    """The scaler's published status every 0.5 s, and a progress line every `every` s."""

    def __init__(self, args: argparse.Namespace, store_path: Path, region: str,
                 load: Load, label: str):
        self.args, self.store_path, self.region = args, store_path, region
        self.load, self.label = load, label
        self.samples: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    async def run(self, start: float, until: float) -> None:
        from gtm.scalestore import SqliteScaleStore

        store = SqliteScaleStore(self.store_path)
        loop = asyncio.get_running_loop()
        printed, seen = start, 0
        try:
            while (now := loop.time()) < until:
                status = (await store.statuses()).get(self.region, {})
                pool = status.get("pools", {}).get("app", {})
                forecast = (pool.get("forecast") or {}).get("backends")
                self.samples.append({"t": now - start, "current": pool.get("current"),
                                     "forecast": forecast, "value": pool.get("value")})
                if now - printed >= self.args.every:
                    seen = self.progress(now - start, now - printed, seen)
                    printed = now
                await asyncio.sleep(0.5)
            self.events = await store.events(self.region, 1000)
        finally:
            await store.close()

    def progress(self, t: float, span: float, seen: int) -> int:
        results = self.load.results
        latencies = sorted(results.latency[seen:])
        failed = len(results) - seen - sum(results.ok[seen:])
        last = self.samples[-1]
        value = last["value"]
        forecast = "" if last["forecast"] is None else f", forecast {last['forecast']}"
        mean = sum(offered(self.args, t - span * i / 20) for i in range(20)) / 20
        print(f"[{self.label}] t={t:5.0f} s  offered {mean:6.0f}/s  "
              f"answered {len(latencies) / span:6.0f}/s  "
              f"p95 {percentile(latencies, 0.95) * 1000:6.1f} ms  failed {failed}  "
              f"backends {last['current']}{forecast}  in flight/backend "
              f"{'-' if value is None else f'{value:.1f}'} (target {self.args.target:g})",
              flush=True)
        return len(results)


def percentile(ordered: list[float], share: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_mode(args: argparse.Namespace, work: Path, predictive: bool,
             measured: list[float] | None = None) -> dict[str, Any]:
    """One mode: the balancer (stopped by PID with whatever it started, however the
    mode ends), the load and the scaler's view of it, summarised."""
    from gtm.scalestore import SqliteScaleStore

    port, ports = free_port(), free_range(args.max + 4)
    path = config(args, work, port, ports, predictive)
    region = region_of(predictive)
    label = "reactive + predictive" if predictive else "reactive"
    if predictive:
        seed_history(args, SqliteScaleStore(work / "scale.db"), region, time.time(),
                     measured)
    print(f"[{label}] starting the balancer on 127.0.0.1:{port}, backends in "
          f"{ports[0]}-{ports[1]}", flush=True)
    servers = Servers()
    try:
        balancer = servers.start("balancer", [sys.executable, "-m", "gtm.cli", "lb", "serve",
                                              "--config", str(path)], work / "lb.log", ROOT)
        _wait_serving(port, balancer.process, balancer.log_tail)
        if predictive:
            time.sleep(args.lead)  # the forecast's buffer starts counting before the shape
        load = Load(port, args.connections)
        observer = Observer(args, work / "scale.db", region, load, label)

        async def both() -> tuple[float, float]:
            loop = asyncio.get_running_loop()
            start, wall = loop.time(), time.time()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(load.run(args, start))
                tg.create_task(observer.run(start, start + duration(args)))
            return start, wall
        start, wall = asyncio.run(both())
    finally:
        servers.stop_all()
        _stop_backends(work / "scale" / "processes")
    return summarise(args, load, observer, start, wall, label)


def _wait_serving(port: int, proc: subprocess.Popen[bytes],
                  log_tail: Callable[[], str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the balancer did not serve within 30 s"
                     + ("" if proc.poll() is None else f" (it exited {proc.returncode})")
                     + f"; its log ends:\n{log_tail()}")


def _stop_backends(directory: Path) -> None:
    """What the balancer left running (it stops none at its own exit, so that a restart
    finds them), by the PIDs in the actuator's pid files ("PID KEY")."""
    pids = []
    for pid_file in directory.glob("*.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().split()[0])
            os.killpg(pid, signal.SIGTERM)
            pids.append(pid)
        pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + 5
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _alive(pid)]
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError, IndexError):
        return not Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    return True


# -- the figures ---------------------------------------------------------------------

def smoothed(in_flight: array[float]) -> list[float]:
    """The clients' requests in flight, each point the mean of the second around it
    (centred: a trailing mean would see a rising load half a second late)."""
    half = SMOOTHING // 2
    out = []
    for i in range(len(in_flight)):
        window = in_flight[max(0, i - half):i + half + 1]
        out.append(sum(window) / len(window))
    return out


def crossing(args: argparse.Namespace, unloaded: float, backends: int) -> float | None:
    """When the rising load first asks more than `target` in flight of each of
    `backends`: offered requests/s x the unloaded latency (Little's law: what the load
    holds in flight when nothing queues) / backends, to a hundredth of a second.

    Not the clients' measured in-flight count: that also grows with the queueing of a
    pool already short of backends, which would date the need for the next step by the
    lateness of the one before."""
    rising_end = args.warm + args.ramp + args.hold
    for step in range(int(rising_end * 100) + 1):
        t = step / 100
        if offered(args, t) * unloaded / backends > args.target:
            return t
    return None


def scale_steps(args: argparse.Namespace, events: list[dict[str, Any]], unloaded: float,
                wall_start: float) -> list[dict[str, Any]]:
    """Each scale-out until the load stopped rising (those before the run included: the
    forecast's): when it served (run time), from how many backends, and its lag behind
    the load crossing the target for those backends."""
    rising_end = args.warm + args.ramp + args.hold
    begun = {e.get("intent"): e["at"] for e in events if e.get("type") == "scale_out.begin"}
    steps = []
    for event in sorted(events, key=lambda e: e["at"]):
        if event.get("type") != "scale_out" or event.get("pool") != "app":
            continue
        at = event["at"] - wall_start
        if at > rising_end or not event.get("from"):
            continue  # the start's scale-out to `min`, or capacity for the way down
        crossed = crossing(args, unloaded, int(event["from"]))
        steps.append({"at": round(at, 2), "from": event["from"], "to": event["to"],
                      "crossed": crossed, "reason": event.get("reason", ""),
                      "actuator": round(event["at"] - begun[event.get("intent")], 2)
                      if event.get("intent") in begun else None,
                      "lag": None if crossed is None else round(at - crossed, 2)})
    return steps


def summarise(args: argparse.Namespace, load: Load, observer: Observer, start: float,
              wall_start: float, label: str) -> dict[str, Any]:
    """`start`: the run's beginning in loop time (requests' due times), `wall_start` the
    same in wall-clock time (the scaler's events)."""
    results = load.results
    ramp_start, ramp_end = args.warm, args.warm + 2 * args.ramp + args.hold
    ramp = sorted(results.latency[i] for i in range(len(results))
                  if results.ok[i] and ramp_start <= results.due[i] - start <= ramp_end)
    in_flight = smoothed(load.in_flight)
    quiet = sorted(results.latency[i] for i in range(len(results))
                   if results.ok[i] and results.due[i] - start < args.warm)
    unloaded = percentile(quiet, 0.5) or args.service_ms / 1000
    steps = scale_steps(args, observer.events, unloaded, wall_start)
    lags = sorted(s["lag"] for s in steps if s["lag"] is not None)
    first = next((s["lag"] for s in steps if s["lag"] is not None), None)
    return {
        "mode": label,
        "requests": len(results), "failed": len(results) - sum(results.ok),
        "p95_ms_ramp": round(percentile(ramp, 0.95) * 1000, 1),
        "p50_ms_ramp": round(percentile(ramp, 0.50) * 1000, 1),
        "unloaded_ms": round(unloaded * 1000, 2),
        "backend_seconds": round(backend_seconds(observer.samples, duration(args))),
        "steps": steps,
        "lag_first_s": first,
        "lag_median_s": lags[len(lags) // 2] if lags else None,
        "lag_max_s": lags[-1] if lags else None,
        "actions": sum(1 for e in observer.events if e.get("type") in ("scale_out", "drain")
                       and e["at"] >= wall_start),  # not the start's scale-out to `min`
        "max_backends": max((s.get("current") or 0 for s in observer.samples), default=0),
        "samples": observer.samples,
        "in_flight": in_flight[::5],  # every half second, for the chart
        "trace": load.in_flight,
    }


def backend_seconds(samples: list[dict[str, Any]], end: float) -> float:
    """Backends serving, integrated over the run (what the capacity cost)."""
    total = 0.0
    points = [(s["t"], s.get("current") or 0) for s in samples if "t" in s]
    for (t, current), (later, _) in zip(points, [*points[1:], (end, 0)], strict=True):
        total += current * max(0.0, min(later, end) - t)
    return total


def print_summary(args: argparse.Namespace, r: dict[str, Any]) -> None:
    print(f"\n{r['mode']}: {r['requests']} requests, {r['failed']} failed; during the ramp "
          f"p50 {r['p50_ms_ramp']} ms, p95 {r['p95_ms_ramp']} ms; {r['actions']} scaling "
          f"actions (scale-outs and drains); at most {r['max_backends']} backends, "
          f"{r['backend_seconds']} backend-seconds; unloaded latency {r['unloaded_ms']} ms")
    for s in r["steps"]:
        crossed = ("the load never crossed the target for them" if s["crossed"] is None
                   else f"load crossed the target for {s['from']} at {s['crossed']:.1f} s, "
                        f"lag {s['lag']:+.1f} s")
        actuator = "" if s["actuator"] is None else f", the actuator took {s['actuator']} s"
        print(f"  scale-out {s['from']} -> {s['to']} serving at {s['at']:.1f} s: {crossed} "
              f"({s['reason']}{actuator})")
    if r["lag_median_s"] is not None:
        print(f"  crossing -> new capacity serving: first {r['lag_first_s']:+.1f} s, "
              f"median {r['lag_median_s']:+.1f} s, worst {r['lag_max_s']:+.1f} s")


# -- the report ----------------------------------------------------------------------

def svg_chart(args: argparse.Namespace, result: dict[str, Any]) -> str:
    """Offered load (requests/s, grey), backends serving (blue), the backends the load
    asks for at the target (the clients' requests in flight / target: green, dotted) and
    the forecast's backends (orange, dashed) over the run."""
    width, height, pad = 640, 240, 30
    samples = [s for s in result["samples"] if "t" in s]
    end = duration(args)
    top_rate = max(args.high, 1)
    top_backends = max([args.max] + [s.get("forecast") or 0 for s in samples])

    def x(t: float) -> float:
        return pad + (width - 2 * pad) * t / end

    def y(value: float, top: float) -> float:
        return height - pad - (height - 2 * pad) * min(value, top) / top

    times = [i * end / 200 for i in range(201)]
    rate = " ".join(f"{x(t):.1f},{y(offered(args, t), top_rate):.1f}" for t in times)
    step = TRACE_STEP * 5
    needed = " ".join(f"{x(i * step):.1f},{y(value / args.target, top_backends):.1f}"
                      for i, value in enumerate(result["in_flight"]))
    backends = " ".join(f"{x(s['t']):.1f},{y(s['current'] or 0, top_backends):.1f}"
                        for s in samples if s.get("current") is not None)
    forecast = " ".join(f"{x(s['t']):.1f},{y(s['forecast'], top_backends):.1f}"
                        for s in samples if s.get("forecast") is not None)
    line = '<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{}/>'
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
            f'<rect width="{width}" height="{height}" fill="white" stroke="#ccc"/>'
            + line.format(rate, "#999", "")
            + line.format(needed, "#2a9d3a", ' stroke-dasharray="2,3"')
            + (line.format(forecast, "#e07000", ' stroke-dasharray="5,3"') if forecast else "")
            + line.format(backends, "#1f5fbf", "")  # last: on top of a forecast it matches
            + f'<text x="{pad}" y="16" font-size="12">{result["mode"]}: req/s (grey, top '
            f'{args.high:g}); backends: serving (blue), needed (green), forecast (orange), '
            f'top {top_backends}</text>'
            f'<text x="{pad}" y="{height - 8}" font-size="11">0 s</text>'
            f'<text x="{width - pad - 20}" y="{height - 8}" font-size="11">{end:g} s</text>'
            '</svg>')


def write_report(path: Path, args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    rows = "".join(
        f"<tr><td>{r['mode']}</td><td>{r['lag_first_s']}</td><td>{r['lag_median_s']}</td>"
        f"<td>{r['lag_max_s']}</td><td>{r['p95_ms_ramp']}</td><td>{r['failed']}</td>"
        f"<td>{r['actions']}</td><td>{r['max_backends']}</td><td>{r['backend_seconds']}</td>"
        f"<td>{r['requests']}</td></tr>"
        for r in results)
    charts = "".join(f"<p>{svg_chart(args, r)}</p>" for r in results)
    shown = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
             if k not in ("report", "backend")}
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>gtm auto-scaling</title>"
        f"<h1>Auto-scaling under a ramp {args.low:g} → {args.high:g} req/s</h1>"
        f"<p><code>{json.dumps(shown)}</code></p>"
        "<table border=1 cellpadding=4><tr><th>mode</th><th colspan=3>crossing the target "
        "→ new capacity serving, s (first, median, worst; negative: ahead)</th>"
        "<th>p95 during ramp (ms)</th><th>failed</th><th>actions</th><th>max backends</th>"
        f"<th>backend-seconds</th><th>requests</th></tr>{rows}</table>{charts}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", metavar="ADDR", help=argparse.SUPPRESS)
    parser.add_argument("--low", type=float, default=200.0)
    parser.add_argument("--high", type=float, default=4000.0)
    parser.add_argument("--ramp", type=float, default=60.0, help="seconds up (and down)")
    parser.add_argument("--hold", type=float, default=20.0)
    parser.add_argument("--warm", type=float, default=10.0, help="seconds low before, after")
    parser.add_argument("--service-ms", type=float, default=20.0)
    parser.add_argument("--slots", type=int, default=16,
                        help="requests a backend works on at once (the rest queue)")
    parser.add_argument("--target", type=float, default=10.0, help="in flight per backend")
    parser.add_argument("--max", type=int, default=12)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--scale-in-window", type=float, default=10.0)
    parser.add_argument("--buffer", type=float, default=120.0, help="predictive, seconds")
    parser.add_argument("--lead", type=float, default=3.0,
                        help="predictive: seconds between start and the shape in history")
    parser.add_argument("--connections", type=int, default=400)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between lines")
    parser.add_argument("--mode", choices=("reactive", "predictive", "both"), default="both")
    parser.add_argument("--report", type=Path, help="write an HTML report with a chart")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    args = parser.parse_args()
    if args.backend:
        run_backend(args.backend, args.service_ms / 1000, args.slots)
        return 0
    modes = {"reactive": [False], "predictive": [True], "both": [False, True]}[args.mode]
    # Stop signals and the run's deadline raise Interrupted, so every `finally` stops
    # what it started.
    install_stop_handlers(Deadline(len(modes) * (duration(args) + args.lead + OVERTIME)))
    results: list[dict[str, Any]] = []
    for predictive in modes:
        with tempfile.TemporaryDirectory(prefix="gtm-autoscale-bench-") as work:
            measured = smoothed(results[0]["trace"]) if results else None
            results.append(run_mode(args, Path(work), predictive, measured))
    print(f"\n(the ramp starts {args.warm:g} s into the run, reaches {args.high:g}/s at "
          f"{args.warm + args.ramp:g} s)")
    for r in results:
        print_summary(args, r)
    if args.report:
        write_report(args.report, args, results)
        print(f"report: {args.report}")
    if args.json:
        args.json.write_text(json.dumps(
            [{k: v for k, v in r.items() if k not in ("samples", "in_flight", "trace")}
             for r in results], indent=1))
    return 1 if any(r["failed"] for r in results) else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except Interrupted as stopped:
        print(f"{stopped}: the balancer and its backends are stopped", file=sys.stderr)
        raise SystemExit(130) from None
