"""The load balancer suite: `gtm lb serve` against HAProxy, with the same nginx backends.

Method (/work/shared/BENCHMARKS.md): the proxy under test runs on the server CPU
(`taskset -c 1`), wrk and the two nginx upstreams on the client CPU. The proxy's CPU
seconds (its process tree, from /proc) are read just before and after each wrk run;
the figure compared is req/s per proxy core. Three workloads, each through both
proxies in the same run:

  http keep-alive   wrk -t2 -c64, HTTP/1.1 keep-alive to the proxy, pooled upstreams
  http close        the same with `Connection: close`: a new client connection per request
  tcp               the L4 listener (mode tcp), wrk's keep-alive HTTP through it

Both proxies are checked before measuring: a request through each listener must come
back 200 with nginx's body. Rounds interleave the proxies; medians are reported, with
gtm/HAProxy ratios of req/s per core and of p99 latency (target: >= 0.8 and <= 1.5).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import (
    BenchError,
    Deadline,
    Server,
    Servers,
    Suite,
    free_port,
    machine_info,
    median,
    per_core,
    pinned,
    print_table,
    run_measured,
    say,
    write_results,
)

WRK_THREADS = 2
WRK_CONNECTIONS = 64
STARTUP_TIMEOUT = 15.0
WORKLOADS = (
    ("http keep-alive", "http", ()),
    ("http close", "http", ("-H", "Connection: close")),
    ("tcp", "tcp", ()),
)
PEERS = ("gtm", "haproxy")

NGINX_CONF = """worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  server {{ listen 127.0.0.1:{port1}; location / {{ return 200 'ok'; }} }}
  server {{ listen 127.0.0.1:{port2}; location / {{ return 200 'ok'; }} }}
}}
"""

HAPROXY_CONF = """global
  nbthread 1
  maxconn 8000
defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  mode http
  bind 127.0.0.1:{http}
  option forwardfor
  default_backend be
backend be
  mode http
  balance roundrobin
  http-reuse always
  server s1 127.0.0.1:{port1}
  server s2 127.0.0.1:{port2}
frontend fe_tcp
  mode tcp
  bind 127.0.0.1:{tcp}
  default_backend be_tcp
backend be_tcp
  mode tcp
  balance roundrobin
  server s1 127.0.0.1:{port1}
  server s2 127.0.0.1:{port2}
"""

GTM_CONF = """[lb]
workers = 1
access_log = "off"
[[lb.listeners]]
name = "http"
bind = "127.0.0.1:{http}"
[[lb.listeners]]
name = "tcp"
mode = "tcp"
bind = "127.0.0.1:{tcp}"
[[lb.pools]]
name = "app"
algorithm = "round_robin"
backends = ["127.0.0.1:{port1}", "127.0.0.1:{port2}"]
"""


@dataclass(frozen=True)
class WrkResult:
    requests_per_s: float
    p50_s: float
    p99_s: float
    errors: int


@dataclass(frozen=True)
class Run:
    round: int
    workload: str
    server: str
    requests_per_s: float
    server_cpu_pct: float
    per_core: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise BenchError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(text: str) -> WrkResult:
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p50 = re.search(r"^\s+50%\s+(\S+)", text, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    if rate is None or p50 is None or p99 is None:
        raise BenchError(f"wrk output without req/s or latency percentiles:\n{text[-1500:]}")
    errors = 0
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                              r"timeout (\d+)", text)
    if socket_errors is not None:
        errors += sum(int(x) for x in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if non2xx is not None:
        errors += int(non2xx.group(1))
    return WrkResult(float(rate.group(1)), _seconds(p50.group(1)), _seconds(p99.group(1)),
                     errors)


def fetch(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read()


def wait_ready(server: Server, urls: list[str], deadline: Deadline,
               get: Callable[[str], tuple[int, bytes]] = fetch) -> None:
    """Until every URL answers 200 'ok' through the proxy (asked with ``get``); fail if
    the proxy exits."""
    end = time.monotonic() + deadline.cap(STARTUP_TIMEOUT)
    last = ""
    while time.monotonic() < end:
        if not server.alive():
            raise BenchError(f"{server.name} exited (status {server.process.returncode}); "
                             f"its log ends:\n{server.log_tail()}")
        try:
            results = [get(url) for url in urls]
            if all(r == (200, b"ok") for r in results):
                return
            last = repr(results)
        except (OSError, subprocess.SubprocessError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(f"{server.name} not answering 200 ok within {STARTUP_TIMEOUT:.0f} s "
                     f"({last}); its log ends:\n{server.log_tail()}")


def start_upstreams(servers: Servers, tools: dict[str, str], workdir: Path, deadline: Deadline,
                    cpu: int | None = None) -> dict[str, int]:
    """The proxies' backends: two nginx servers answering 'ok' (one process, on ``cpu``
    when given), ready; their ports as port1 and port2."""
    upstream = {"port1": free_port(), "port2": free_port()}
    (workdir / "upstream.conf").write_text(NGINX_CONF.format(workdir=workdir, **upstream))
    argv = [tools["nginx"], "-p", str(workdir), "-c", str(workdir / "upstream.conf")]
    nginx = servers.start("nginx", pinned(cpu, argv) if cpu is not None else argv,
                          workdir / "nginx.log")
    for port in upstream.values():
        wait_ready(nginx, [f"http://127.0.0.1:{port}/"], deadline)
    return upstream


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
    return servers.start(name, pinned(args.server_cpu, argv), workdir / f"{name}.log")


def run_wrk(args: argparse.Namespace, tools: dict[str, str], url: str, extra: tuple[str, ...],
            deadline: Deadline) -> WrkResult:
    argv = pinned(args.client_cpu, [
        tools["wrk"], f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{args.seconds:g}s",
        "--latency", *extra, url])
    done = run_measured(argv, deadline.cap(args.seconds + 30))
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr[-1000:]}")
    return parse_wrk(done.stdout)


def measure(server: Server, url: str, extra: tuple[str, ...], args: argparse.Namespace,
            tools: dict[str, str], deadline: Deadline) -> tuple[WrkResult, float, float]:
    """wrk's figures, the proxy's CPU seconds and the wall seconds of the run."""
    cpu_before = server.cpu_seconds()
    start = time.monotonic()
    result = run_wrk(args, tools, url, extra, deadline)
    wall = time.monotonic() - start
    cpu = server.cpu_seconds() - cpu_before
    if not server.alive():
        raise BenchError(f"{server.name} died during the run; log:\n{server.log_tail()}")
    return result, cpu, wall


def one_round(round_no: int, args: argparse.Namespace, tools: dict[str, str],
              servers: Servers, workdir: Path, upstream: dict[str, int],
              deadline: Deadline) -> list[Run]:
    runs = []
    for name in PEERS if round_no % 2 else tuple(reversed(PEERS)):
        ports = {**upstream, "http": free_port(), "tcp": free_port()}
        server = start_peer(name, args, tools, servers, workdir, ports)
        urls = {"http": f"http://127.0.0.1:{ports['http']}/",
                "tcp": f"http://127.0.0.1:{ports['tcp']}/"}
        wait_ready(server, list(urls.values()), deadline)
        for workload, mode, extra in WORKLOADS:
            result, cpu, wall = measure(server, urls[mode], extra, args, tools, deadline)
            run = Run(round_no, workload, name, result.requests_per_s, 100 * cpu / wall,
                      per_core(result.requests_per_s, cpu, wall), result.p50_s * 1000,
                      result.p99_s * 1000, result.errors)
            runs.append(run)
            say(f"round {round_no} {workload:16} {name:8} {run.requests_per_s:9.0f} req/s  "
                f"CPU {run.server_cpu_pct:4.0f}%  {run.per_core:9.0f}/core  "
                f"p50 {run.p50_ms:.2f} ms  p99 {run.p99_ms:.2f} ms  errors {run.errors}")
        servers.stop(server)
    return runs


def summarize(runs: list[Run]) -> tuple[list[list[str]], dict[str, Any]]:
    rows: list[list[str]] = []
    summary: dict[str, Any] = {}
    for workload, _mode, _extra in WORKLOADS:
        figures = {}
        for name in PEERS:
            mine = [r for r in runs if r.workload == workload and r.server == name]
            figures[name] = {
                "requests_per_s": median([r.requests_per_s for r in mine]),
                "server_cpu_pct": median([r.server_cpu_pct for r in mine]),
                "per_core": median([r.per_core for r in mine]),
                "p50_ms": median([r.p50_ms for r in mine]),
                "p99_ms": median([r.p99_ms for r in mine]),
                "errors": sum(r.errors for r in mine),
            }
            f = figures[name]
            rows.append([f"{workload} / {name}", f"{f['requests_per_s']:.0f}",
                         f"{f['server_cpu_pct']:.0f}", f"{f['per_core']:.0f}",
                         f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}", str(f["errors"])])
        ratio_core = figures["gtm"]["per_core"] / figures["haproxy"]["per_core"]
        ratio_p99 = figures["gtm"]["p99_ms"] / max(figures["haproxy"]["p99_ms"], 1e-9)
        ratio_rate = figures["gtm"]["requests_per_s"] / figures["haproxy"]["requests_per_s"]
        rows.append([f"{workload} / gtm:haproxy", f"{ratio_rate:.2f}x", "",
                     f"{ratio_core:.2f}x", "", f"{ratio_p99:.2f}x", ""])
        summary[workload] = {**figures, "ratio_per_core": ratio_core, "ratio_p99": ratio_p99}
    return rows, summary


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """No options of its own: --seconds, --rounds and the CPUs are shared."""


def budget_seconds(args: argparse.Namespace) -> float:
    per_peer = STARTUP_TIMEOUT + len(WORKLOADS) * (args.seconds + 5) + 10
    return args.rounds * len(PEERS) * per_peer + 60


def gtm_executable(args: argparse.Namespace) -> str:
    candidate = args.gtm or str(Path(sys.executable).parent / "gtm")
    found = shutil.which(candidate)
    if found is None:
        raise BenchError(f"no gtm executable at {candidate}; give one with --gtm")
    return found


def run(args: argparse.Namespace, deadline: Deadline, tools: dict[str, str]) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="gtm-bench-lb-"))
    info = machine_info()
    say(f"lb: {args.rounds} round(s) of {len(WORKLOADS)} workloads x {args.seconds:g} s per "
        f"proxy; proxies on CPU {args.server_cpu}, wrk and nginx on CPU {args.client_cpu}; "
        f"load average {info['loadavg_at_start'][0]:.2f}")
    runs: list[Run] = []
    try:
        with Servers() as servers:
            upstream = start_upstreams(servers, tools, workdir, deadline, args.client_cpu)
            for round_no in range(1, args.rounds + 1):
                runs.extend(one_round(round_no, args, tools, servers, workdir, upstream,
                                      deadline))
    finally:
        if args.keep_workdir:
            say(f"configs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    rows, summary = summarize(runs)
    print()
    print_table(["workload / proxy", "req/s", "CPU %", "req/s per core", "p50 ms", "p99 ms",
                 "errors"], rows)
    print("\ntargets: gtm per core >= 0.80x HAProxy, gtm p99 <= 1.5x HAProxy "
          "(http close: compare connections per second; wrk's latency excludes connect)")
    data = {
        "suite": "lb",
        "method": "BENCHMARKS.md: proxy pinned apart from wrk and nginx; CPU from /proc",
        "options": {"seconds": args.seconds, "rounds": args.rounds, "threads": WRK_THREADS,
                    "connections": WRK_CONNECTIONS, "server_cpu": args.server_cpu,
                    "client_cpu": args.client_cpu},
        "machine": info,
        "summary": summary,
        "runs": [asdict(r) for r in runs],
    }
    path = write_results("lb", data)
    print(f"\nresults: {path}")
    return 0


SUITE = Suite(
    name="lb",
    help="gtm lb serve vs HAProxy: HTTP keep-alive, HTTP close, TCP (wrk, nginx upstreams)",
    tools={"wrk": "wrk", "haproxy": "haproxy", "nginx": "nginx", "taskset": "util-linux"},
    add_arguments=add_arguments,
    budget_seconds=budget_seconds,
    run=run,
)
