"""bench/connections.py: what an idle keep-alive client connection costs, gtm vs HAProxy.

    python bench/connections.py                      # 5,000 connections, gtm then HAProxy
    python bench/connections.py --connections 10000 --cycles 3
    python bench/connections.py --breakdown          # what one gtm connection is made of

Each proxy (``gtm lb serve --workers 1``; HAProxy with ``nbthread 1``) is started in
turn in front of the same two nginx upstreams (the lb suite's), with equivalent
configs (60 s idle keep-alive, room for every connection). Then, per cycle:

1. Memory of the proxy's process from ``/proc/PID/smaps_rollup`` (RSS, and USS: its
   private pages, what it would give back by exiting).
2. N client connections, opened one after another: each sends ``GET /`` (HTTP/1.1,
   keep-alive), reads the whole 200 response and then stays open, idle. One at a time,
   so each proxy needs one upstream connection and only client connections grow.
3. Memory again, once every connection is checked to be still open: (after - before)
   / N is the figure, **bytes per idle connection**.
4. Every connection closed; memory once the proxy's open descriptors are back to what
   they were (a deadline bounds the wait): what it kept after they closed.

With ``--cycles 2`` or more the same N connections are opened and closed again: a peak
that does not grow means what was kept is reused (the allocator's free lists), not lost.

``--breakdown`` runs gtm's balancer in this process under tracemalloc, has a child
process hold N idle connections, and prints what they cost by source line, what one
connection's objects weigh (sys.getsizeof), and whether Python's traced memory and the
RSS went back down after they closed.

Everything is on 127.0.0.1, on ports the kernel picks; the proxies and nginx are stopped
by their PIDs; every wait has a deadline and the whole run one too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import linecache
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (
    BenchError,
    Deadline,
    Interrupted,
    Server,
    Servers,
    ensure_tools,
    free_port,
    install_stop_handlers,
    machine_info,
    print_table,
    say,
    write_results,
)
from lb_bench import start_upstreams, wait_ready

PEERS = ("gtm", "haproxy")
REQUEST = b"GET / HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: connections-bench\r\n\r\n"
SOCKET_TIMEOUT = 5.0
SETTLE_SECONDS = 0.5      # after the last connection opens, before reading memory
CLOSED_SETTLE_SECONDS = 1.0  # after the last closes (gtm gives back two sweeps later)
CLOSE_TIMEOUT = 30.0      # for the proxy to notice every close
SHARED_ATTRIBUTES = ("worker", "listener", "listener_name", "pool")

GTM_CONF = """[lb]
workers = 1
access_log = "off"
[lb.timeouts]
header_read = 10.0
idle_keepalive = 60.0
[lb.limits]
max_client_connections = {maxconn}
[[lb.listeners]]
name = "http"
bind = "127.0.0.1:{http}"
[[lb.pools]]
name = "app"
algorithm = "round_robin"
backends = ["127.0.0.1:{port1}", "127.0.0.1:{port2}"]
"""

HAPROXY_CONF = """global
  nbthread 1
  maxconn {maxconn}
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-request 10s
  timeout http-keep-alive 60s
frontend fe
  bind 127.0.0.1:{http}
  option forwardfor
  default_backend be
backend be
  balance roundrobin
  http-reuse always
  server s1 127.0.0.1:{port1}
  server s2 127.0.0.1:{port2}
"""


# -- memory of a process ----------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    rss: int  # bytes
    uss: int  # private pages (clean + dirty), bytes
    pss: int


def memory(pid: int) -> Memory:
    """The process's RSS, USS and PSS from smaps_rollup (VmRSS alone when it is missing)."""
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except FileNotFoundError:
        text = ""
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        words = rest.split()
        if len(words) == 2 and words[1] == "kB":
            fields[name] = int(words[0]) * 1024
    if "Rss" not in fields:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
                return Memory(rss, rss, rss)
        raise BenchError(f"no memory figures for pid {pid}")
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return Memory(fields["Rss"], uss, fields.get("Pss", fields["Rss"]))


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- the clients ------------------------------------------------------------------------


def raise_nofile(wanted: int) -> None:
    """Room for `wanted` descriptors in this process (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < wanted:
        raise BenchError(f"{wanted} descriptors needed, RLIMIT_NOFILE allows {soft} "
                         "(raise the hard limit or give fewer --connections)")


def one_exchange(sock: socket.socket) -> None:
    """Send one keep-alive request and read its whole response (Content-Length framed)."""
    sock.sendall(REQUEST)
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(4096)
        if not piece:
            raise BenchError(f"connection closed before a response head: {data[:200]!r}")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 200"):
        raise BenchError(f"not a 200: {lines[0]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        if name.strip().lower() == b"connection" and b"close" in value.lower():
            raise BenchError("the proxy answered Connection: close: not a keep-alive client")
    if length is None:
        raise BenchError(f"a response without Content-Length: {head!r}")
    while len(body) < length:
        piece = sock.recv(4096)
        if not piece:
            raise BenchError("connection closed in the middle of a response body")
        body += piece


def open_idle(port: int, count: int, deadline: Deadline) -> list[socket.socket]:
    """`count` keep-alive connections that each had one request answered, left idle."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            deadline.cap(SOCKET_TIMEOUT)  # raises once the run's time is up
            sock = socket.create_connection(("127.0.0.1", port), timeout=SOCKET_TIMEOUT)
            sockets.append(sock)
            one_exchange(sock)
            sock.setblocking(False)  # from now on only peeked at (still_open) and closed
    except BaseException:
        close_all(sockets)
        raise
    return sockets


def still_open(sockets: list[socket.socket]) -> int:
    """How many the proxy has not closed (nothing to read and no EOF)."""
    alive = 0
    for sock in sockets:
        try:
            data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            alive += 1
            continue
        except OSError:
            continue
        if data:
            raise BenchError(f"the proxy sent bytes on an idle connection: {data!r}")
    return alive


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.close()
    sockets.clear()


def wait_descriptors(pid: int, at_most: int, deadline: Deadline) -> int:
    """Until the process holds at most `at_most` descriptors; how many it holds then."""
    end = time.monotonic() + deadline.cap(CLOSE_TIMEOUT)
    count = open_descriptors(pid)
    while count > at_most and time.monotonic() < end:
        time.sleep(0.05)
        count = open_descriptors(pid)
    if count > at_most:
        raise BenchError(f"pid {pid} still holds {count} descriptors {CLOSE_TIMEOUT:.0f} s "
                         f"after the clients closed (at most {at_most} expected)")
    return count


# -- one proxy --------------------------------------------------------------------------


@dataclass(frozen=True)
class Cycle:
    before: Memory
    peak: Memory
    after_close: Memory
    open_seconds: float


@dataclass(frozen=True)
class Result:
    server: str
    connections: int
    cycles: list[Cycle]

    @property
    def per_connection_rss(self) -> float:
        first = self.cycles[0]
        return (first.peak.rss - first.before.rss) / self.connections

    @property
    def per_connection_uss(self) -> float:
        first = self.cycles[0]
        return (first.peak.uss - first.before.uss) / self.connections

    @property
    def kept_rss(self) -> int:
        """RSS still held after the last cycle's connections closed, over the start."""
        return self.cycles[-1].after_close.rss - self.cycles[0].before.rss

    @property
    def returned_share(self) -> float:
        """Of what the first cycle's connections added, the share given back on closing."""
        first = self.cycles[0]
        added = first.peak.rss - first.before.rss
        return (first.peak.rss - first.after_close.rss) / added if added > 0 else 1.0


def start_peer(name: str, args: argparse.Namespace, tools: dict[str, str], servers: Servers,
               workdir: Path, ports: dict[str, int]) -> Server:
    if name == "gtm":
        config = workdir / "gtm-lb.toml"
        config.write_text(GTM_CONF.format(**ports))
        argv = [gtm_executable(args), "lb", "serve", "--config", str(config), "--workers", "1"]
    else:
        config = workdir / "haproxy.cfg"
        config.write_text(HAPROXY_CONF.format(**ports))
        argv = [tools["haproxy"], "-f", str(config), "-db"]
    return servers.start(name, argv, workdir / f"{name}.log")


def gtm_executable(args: argparse.Namespace) -> str:
    candidate = args.gtm or str(Path(sys.executable).parent / "gtm")
    found = shutil.which(candidate)
    if found is None:
        raise BenchError(f"no gtm executable at {candidate}; give one with --gtm")
    return found


def warm_up(port: int, deadline: Deadline) -> None:
    """Caches, the upstream pool and lazily built paths exist before the first reading."""
    for _ in range(3):
        sockets = open_idle(port, 50, deadline)
        close_all(sockets)
    time.sleep(SETTLE_SECONDS)


def measure_peer(name: str, args: argparse.Namespace, tools: dict[str, str],
                 servers: Servers, workdir: Path, upstream: dict[str, int],
                 deadline: Deadline) -> Result:
    ports = {**upstream, "http": free_port(), "maxconn": args.connections + 1000}
    server = start_peer(name, args, tools, servers, workdir, ports)
    wait_ready(server, [f"http://127.0.0.1:{ports['http']}/"], deadline)
    warm_up(ports["http"], deadline)
    cycles = []
    for cycle_no in range(1, args.cycles + 1):
        descriptors = open_descriptors(server.pid)
        before = memory(server.pid)
        start = time.monotonic()
        sockets = open_idle(ports["http"], args.connections, deadline)
        opened = time.monotonic() - start
        try:
            time.sleep(SETTLE_SECONDS)
            alive = still_open(sockets)
            if alive != len(sockets):
                raise BenchError(f"{name} closed {len(sockets) - alive} of {len(sockets)} "
                                 "idle connections before they were measured")
            peak = memory(server.pid)
        finally:
            close_all(sockets)
        wait_descriptors(server.pid, descriptors + 2, deadline)
        time.sleep(CLOSED_SETTLE_SECONDS)
        after = memory(server.pid)
        if not server.alive():
            raise BenchError(f"{name} died; its log ends:\n{server.log_tail()}")
        cycles.append(Cycle(before, peak, after, opened))
        say(f"{name} cycle {cycle_no}: RSS {mib(before.rss)} -> {mib(peak.rss)} with "
            f"{args.connections} idle ({(peak.rss - before.rss) / args.connections:.0f} B "
            f"each, opened in {opened:.1f} s) -> {mib(after.rss)} after closing")
    servers.stop(server)
    return Result(name, args.connections, cycles)


def mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


def report(results: dict[str, Result]) -> list[list[str]]:
    rows = []
    for name, result in results.items():
        first, last = result.cycles[0], result.cycles[-1]
        peaks = " / ".join(mib(c.peak.rss) for c in result.cycles)
        rows.append([name, mib(first.before.rss), peaks,
                     f"{result.per_connection_rss:.0f}", f"{result.per_connection_uss:.0f}",
                     mib(last.after_close.rss), f"{100 * result.returned_share:.0f}%",
                     f"{result.kept_rss / result.connections:.0f}"])
    return rows


def run_comparison(args: argparse.Namespace, deadline: Deadline) -> int:
    tools = ensure_tools({"haproxy": "haproxy", "nginx": "nginx"})
    raise_nofile(args.connections + 200)
    workdir = Path(tempfile.mkdtemp(prefix="gtm-bench-conns-"))
    results: dict[str, Result] = {}
    info = machine_info()
    say(f"connections: {args.connections} idle keep-alive clients x {args.cycles} cycle(s) "
        f"per proxy; load average {info['loadavg_at_start'][0]:.2f}")
    try:
        with Servers() as servers:
            upstream = start_upstreams(servers, tools, workdir, deadline)
            for name in args.servers:
                results[name] = measure_peer(name, args, tools, servers, workdir, upstream,
                                             deadline)
    finally:
        if args.keep_workdir:
            say(f"configs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    print_table(["proxy", "RSS before", "RSS with N idle (per cycle)", "B/conn RSS",
                 "B/conn USS", "RSS after close", "given back", "kept B/conn"],
                report(results))
    summary: dict[str, Any] = {name: {"bytes_per_connection_rss": r.per_connection_rss,
                                      "bytes_per_connection_uss": r.per_connection_uss,
                                      "kept_rss_bytes": r.kept_rss,
                                      "returned_share": r.returned_share}
                               for name, r in results.items()}
    if "gtm" in results and "haproxy" in results:
        ratio = results["gtm"].per_connection_rss / results["haproxy"].per_connection_rss
        summary["ratio_rss"] = ratio
        print(f"\nbytes per idle connection, gtm/HAProxy: {ratio:.2f}x (goal: <= 1.00x)")
    path = write_results("connections", {
        "suite": "connections",
        "options": {"connections": args.connections, "cycles": args.cycles},
        "machine": info,
        "summary": summary,
        "results": {name: [asdict(c) for c in r.cycles] for name, r in results.items()},
    })
    print(f"results: {path}")
    return 0


# -- --breakdown: gtm in this process, under tracemalloc --------------------------------


def hold_clients(port: int, count: int) -> int:
    """Child of --breakdown: open `count` idle connections, wait for a line, close them."""
    raise_nofile(count + 50)
    deadline = Deadline(300)
    sockets = open_idle(port, count, deadline)
    print(f"open {len(sockets)}", flush=True)
    sys.stdin.readline()
    alive = still_open(sockets)
    close_all(sockets)
    print(f"closed {alive}", flush=True)
    return 0


@contextlib.contextmanager
def nginx_upstreams(tools: dict[str, str], workdir: Path,
                    deadline: Deadline) -> Iterator[dict[str, int]]:
    with Servers() as servers:
        yield start_upstreams(servers, tools, workdir, deadline)


def run_breakdown(args: argparse.Namespace, deadline: Deadline) -> int:
    tools = ensure_tools({"nginx": "nginx"})
    raise_nofile(args.connections + 200)
    workdir = Path(tempfile.mkdtemp(prefix="gtm-bench-conns-"))
    try:
        with nginx_upstreams(tools, workdir, deadline) as upstream:
            config = workdir / "gtm-lb.toml"
            config.write_text(GTM_CONF.format(**upstream, http=0,
                                              maxconn=args.connections + 1000))
            import uvloop  # gtm lb serve's loop

            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                runner.run(breakdown(config, args.connections, args.top, deadline))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


async def breakdown(config: Path, count: int, top: int, deadline: Deadline) -> None:
    import gc
    import tracemalloc

    from regional_lb.node import start_balancer

    handle = await start_balancer(config)
    port = handle.address("http")[1]
    child_argv = [sys.executable, __file__, "--hold", str(port), "--connections"]
    try:
        for warm in range(3):  # caches and the upstream pool, as in the comparison
            await child_cycle([*child_argv, "50"], deadline, keep=None)
            del warm
        gc.collect()
        tracemalloc.start(8)
        before_traced = tracemalloc.get_traced_memory()[0]
        before_rss = memory(os.getpid())
        before = tracemalloc.take_snapshot()
        snapshots: dict[str, Any] = {}

        def while_open() -> None:
            gc.collect()
            snapshots["open"] = tracemalloc.take_snapshot()
            snapshots["traced_open"] = tracemalloc.get_traced_memory()[0]
            snapshots["rss_open"] = memory(os.getpid())
            snapshots["objects"] = one_connection(handle.worker)

        await child_cycle([*child_argv, str(count)], deadline, keep=while_open)
        await wait_until(lambda: not handle.worker.connections, deadline)
        await asyncio.sleep(CLOSED_SETTLE_SECONDS)
        gc.collect()
        after_traced = tracemalloc.get_traced_memory()[0]
        after_rss = memory(os.getpid())
        tracemalloc.stop()
    finally:
        await handle.stop(grace=0, deadline=1)
    print_breakdown(count, top, before, snapshots, before_traced, before_rss,
                    after_traced, after_rss)


async def wait_until(condition: Any, deadline: Deadline) -> None:
    end = time.monotonic() + deadline.cap(CLOSE_TIMEOUT)
    while not condition():
        if time.monotonic() > end:
            raise BenchError("the balancer did not see every connection close in time")
        await asyncio.sleep(0.05)


async def child_cycle(argv: list[str], deadline: Deadline, keep: Any) -> None:
    """A child opens its connections, we look (keep()), it closes them."""
    child = await asyncio.create_subprocess_exec(
        *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), deadline.cap(300))
        if not line.startswith(b"open "):
            raise BenchError(f"the client child failed: {line!r}")
        await asyncio.sleep(SETTLE_SECONDS)
        if keep is not None:
            keep()
        child.stdin.write(b"close\n")
        await child.stdin.drain()
        line = await asyncio.wait_for(child.stdout.readline(), deadline.cap(60))
        opened = int(argv[-1])
        if line.strip() != f"closed {opened}".encode():
            raise BenchError(f"idle connections were closed by the balancer: {line!r}")
        await asyncio.wait_for(child.wait(), deadline.cap(30))
    finally:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()


def one_connection(worker: Any) -> list[tuple[str, int]]:
    """sys.getsizeof of what one idle client connection holds of its own."""
    connection = next(iter(worker.connections))
    rows = [(f"protocol object ({type(connection).__name__})", sys.getsizeof(connection))]
    attributes = getattr(connection, "__dict__", None)
    if attributes is not None:
        rows.append(("  its instance __dict__", sys.getsizeof(attributes)))
    names = sorted({*(attributes or {}), *slot_names(type(connection))})
    shared = {id(v) for v in (None, True, False, b"", (), 0, 0.0, 1)}
    for name in names:
        value = getattr(connection, name, None)
        if value is None or id(value) in shared or name in SHARED_ATTRIBUTES \
                or (isinstance(value, int) and -5 <= value <= 256) \
                or (isinstance(value, float) and value == 0.0):
            continue  # shared with every connection (CPython caches small ints)
        if isinstance(value, bytes | tuple | list | dict | float | int | str | bytearray):
            rows.append((f"  .{name} ({type(value).__name__})", sys.getsizeof(value)))
    transport = connection.transport
    rows.append((f"transport object ({type(transport).__name__})", sys.getsizeof(transport)))
    rows.append(("entry in worker.connections (set slots / live)",
                 sys.getsizeof(worker.connections) // max(1, len(worker.connections))))
    return rows


def slot_names(cls: type) -> list[str]:
    names: list[str] = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return [name for name in names if not name.startswith("__")]


def print_breakdown(count: int, top: int, before: Any, snapshots: dict[str, Any],
                    before_traced: int, before_rss: Memory, after_traced: int,
                    after_rss: Memory) -> None:
    import tracemalloc

    own = tracemalloc.Filter(False, tracemalloc.__file__)
    old, new = before.filter_traces([own]), snapshots["open"].filter_traces([own])
    stats = new.compare_to(old, "lineno")
    total = sum(stat.size_diff for stat in stats)
    print(f"\nPython allocations per idle connection ({count} connections, tracemalloc, "
          f"by the line that allocated):")
    rows = []
    for stat in sorted(stats, key=lambda s: -s.size_diff)[:top]:
        if stat.size_diff < count:  # under a byte per connection
            break
        frame = stat.traceback[0]
        rows.append([f"{short_path(frame.filename)}:{frame.lineno}",
                     f"{stat.size_diff / count:.0f}", f"{stat.count_diff / count:.2f}",
                     block_sizes(old, new, frame, count),
                     what(frame.filename, frame.lineno)])
    rows.append(["total (all lines)", f"{total / count:.0f}", "", "", ""])
    print_table(["where", "bytes/conn", "blocks/conn", "block sizes (bytes x per conn)", "what"],
                rows)
    print("\nOne connection's objects (sys.getsizeof, shallow; asking for a __dict__ makes one):")
    print_table(["object", "bytes"], [[name, str(size)] for name, size in snapshots["objects"]])
    rss_added = snapshots["rss_open"].rss - before_rss.rss
    print(f"\nwith {count} open: traced +{(snapshots['traced_open'] - before_traced) / count:.0f}"
          f" B/conn; RSS +{rss_added / count:.0f} B/conn (tracemalloc's own records included)")
    print(f"after closing: traced {fmt_signed(after_traced - before_traced)} over the start "
          f"(Python objects still held), RSS {fmt_signed(after_rss.rss - before_rss.rss)} "
          f"(pages the allocators keep)")


def block_sizes(old: Any, new: Any, frame: Any, count: int) -> str:
    """The sizes of the blocks a line allocated per connection, e.g. '680x1.00 248x1.00'."""
    def histogram(snapshot: Any) -> dict[int, int]:
        sizes: dict[int, int] = {}
        for trace in snapshot.traces:
            first = trace.traceback[-1]  # a trace's frames run from the oldest
            if first.filename == frame.filename and first.lineno == frame.lineno:
                sizes[trace.size] = sizes.get(trace.size, 0) + 1
        return sizes

    before, after = histogram(old), histogram(new)
    grown = [(size, n - before.get(size, 0)) for size, n in after.items()]
    grown = sorted((g for g in grown if g[1] >= count // 2), key=lambda g: -g[0] * g[1])
    return " ".join(f"{size}x{n / count:.2f}" for size, n in grown[:5])


def what(filename: str, lineno: int) -> str:
    """What a line allocates: its source, or whose it is where the line does not say."""
    if filename.endswith("asyncio/runners.py"):
        return "uvloop C code (no Python frame): transport, libuv handle, callbacks"
    if filename.endswith("weakref.py"):
        return "uvloop: loop._transports, a WeakValueDictionary of every transport"
    return linecache.getline(filename, lineno).strip()[:70]


def fmt_signed(value: int) -> str:
    return f"{'+' if value >= 0 else '-'}{mib(abs(value))}"


def short_path(filename: str) -> str:
    for marker in ("/regional_lb/", "/gtm/", "/asyncio/", "/uvloop/"):
        if marker in filename:
            return marker.strip("/") + "/" + filename.split(marker, 1)[1]
    if "/lib/python3" in filename:  # the standard library: its module's name is enough
        return filename.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return filename


# -- command line -----------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=5000,
                        help="idle keep-alive client connections per cycle (5000)")
    parser.add_argument("--cycles", type=int, default=2,
                        help="open-then-close cycles per proxy (2)")
    parser.add_argument("--servers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--gtm", help="the gtm executable (default: next to this Python)")
    parser.add_argument("--breakdown", action="store_true",
                        help="gtm in this process under tracemalloc: what a connection holds")
    parser.add_argument("--top", type=int, default=15, help="lines shown by --breakdown (15)")
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="the whole run's deadline in seconds (600)")
    parser.add_argument("--hold", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.connections <= 100_000:
        parser.error("--connections must be between 1 and 100000")
    if not 1 <= args.cycles <= 10:
        parser.error("--cycles must be between 1 and 10")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.hold is not None:
        return hold_clients(args.hold, args.connections)
    deadline = Deadline(args.timeout)
    install_stop_handlers(deadline)
    try:
        if args.breakdown:
            return run_breakdown(args, deadline)
        return run_comparison(args, deadline)
    except Interrupted as exc:
        print(f"bench: interrupted: {exc}", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench: no figure: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
