"""The HTTP/2 suite: `gtm lb serve` against HAProxy with h2load, the same nginx backends.

Method (the lb suite's, /work/shared/BENCHMARKS.md): the proxy under test runs on the
server CPU (`taskset -c 1`); h2load and the nginx upstreams on the client CPU. The
proxy's CPU seconds (its process tree, from /proc) are read just before and after each
h2load run; the figure compared is requests per second per proxy core. Both proxies
speak HTTP/1.1 to the same two nginx servers, with pooled keep-alive connections.

  h2c          HTTP/2 with prior knowledge: gtm `h2c = true`, HAProxy `proto h2`
  h2 tls       HTTP/2 over TLS 1.3 by ALPN (both `alpn h2,http/1.1`)

Each listener must first answer `ok` to curl over HTTP/2. h2load runs `-c CONNECTIONS
-m STREAMS` (10 x 10) for `--seconds` (-D); a run with any failed or errored request, or
a non-2xx status, gets no figure.
Rounds interleave the proxies; medians are reported with gtm/HAProxy ratios.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
import time
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
from lb_bench import gtm_executable, start_upstreams, wait_ready
from tls_bench import write_certificate

CONNECTIONS = 10
STREAMS = 10
STARTUP_TIMEOUT = 15.0
WORKLOADS = (("h2c", "h2c"), ("h2 tls", "tls"))
PEERS = ("gtm", "haproxy")

HAPROXY_CONF = """global
  nbthread 1
  maxconn 8000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe_h2c
  bind 127.0.0.1:{h2c} proto h2
  option forwardfor
  default_backend be
frontend fe_tls
  bind 127.0.0.1:{tls} ssl crt {workdir}/certs/bench.pem alpn h2,http/1.1
  option forwardfor
  default_backend be
backend be
  balance roundrobin
  http-reuse always
  server s1 127.0.0.1:{port1}
  server s2 127.0.0.1:{port2}
"""

GTM_CONF = """[lb]
workers = 1
access_log = "off"
[lb.tls]
watch_interval = 0
[[lb.listeners]]
name = "h2c"
bind = "127.0.0.1:{h2c}"
h2c = true
[[lb.listeners]]
name = "tls"
bind = "127.0.0.1:{tls}"
tls = {{ certificates = "{workdir}/certs", default = "bench", alpn = ["h2", "http/1.1"] }}
[[lb.pools]]
name = "app"
algorithm = "round_robin"
backends = ["127.0.0.1:{port1}", "127.0.0.1:{port2}"]
"""


@dataclass(frozen=True)
class H2loadResult:
    requests_per_s: float
    succeeded: int
    failed: int
    mean_ms: float
    protocol: str


@dataclass(frozen=True)
class Run:
    round: int
    workload: str
    server: str
    requests_per_s: float
    server_cpu_pct: float
    per_core: float
    mean_ms: float
    requests: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_h2load(text: str) -> H2loadResult:
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text)
    counts = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, "
                       r"(\d+) failed, (\d+) errored, (\d+) timeout", text)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", text)
    protocol = re.search(r"Application protocol: (\S+)", text)
    if rate is None or counts is None or codes is None or mean is None or protocol is None:
        raise BenchError(f"h2load output not understood:\n{text[-1500:]}")
    succeeded, failed, errored, timeouts = (int(x) for x in counts.groups())
    bad = failed + errored + timeouts + sum(int(x) for x in codes.groups()[1:])
    return H2loadResult(float(rate.group(1)), succeeded, bad,
                        float(mean.group(1)) * _UNITS[mean.group(2)], protocol.group(1))


def _fetch(url: str, curl: str) -> tuple[int, bytes]:
    """200 and the body when curl gets them over HTTP/2 (prior knowledge for http://,
    ALPN for https://); else 0 and what curl said."""
    how = "--http2-prior-knowledge" if url.startswith("http:") else "--http2"
    done = subprocess.run([curl, "-sk", how, "-o", "-", "-w", "\n%{http_code} %{http_version}",
                           url], capture_output=True, timeout=5, check=False)
    body, _, tail = done.stdout.rpartition(b"\n")
    status, _, version = tail.partition(b" ")
    if done.returncode != 0 or version != b"2":
        return 0, done.stdout + done.stderr
    return int(status), body


def start_peer(name: str, args: argparse.Namespace, tools: dict[str, str], servers: Servers,
               workdir: Path, ports: dict[str, int]) -> Server:
    if name == "gtm":
        config = workdir / "gtm-h2.toml"
        config.write_text(GTM_CONF.format(workdir=workdir, **ports))
        argv = [gtm_executable(args), "lb", "serve", "--config", str(config), "--workers", "1"]
    else:
        config = workdir / "haproxy-h2.cfg"
        config.write_text(HAPROXY_CONF.format(workdir=workdir, **ports))
        argv = [tools["haproxy"], "-f", str(config), "-db"]
    return servers.start(name, pinned(args.server_cpu, argv), workdir / f"{name}.log")


def run_h2load(args: argparse.Namespace, tools: dict[str, str], url: str,
               deadline: Deadline) -> H2loadResult:
    argv = pinned(args.client_cpu, [
        tools["h2load"], "-c", str(CONNECTIONS), "-m", str(STREAMS),
        "-D", f"{args.seconds:g}", url])
    done = run_measured(argv, deadline.cap(args.seconds + 30))
    if done.returncode != 0:
        raise BenchError(f"h2load failed ({done.returncode}): {done.stderr[-1000:]}")
    result = parse_h2load(done.stdout)
    if result.failed or not result.succeeded:
        raise BenchError(f"h2load saw {result.failed} failed requests against {url}:\n"
                         f"{done.stdout[-1500:]}")
    if result.protocol != "h2" and result.protocol != "h2c":
        raise BenchError(f"h2load spoke {result.protocol} to {url}, not HTTP/2")
    return result


def one_round(round_no: int, args: argparse.Namespace, tools: dict[str, str],
              servers: Servers, workdir: Path, upstream: dict[str, int],
              deadline: Deadline) -> list[Run]:
    runs = []
    for name in PEERS if round_no % 2 else tuple(reversed(PEERS)):
        ports = {**upstream, "h2c": free_port(), "tls": free_port()}
        server = start_peer(name, args, tools, servers, workdir, ports)
        urls = {"h2c": f"http://127.0.0.1:{ports['h2c']}/",
                "tls": f"https://127.0.0.1:{ports['tls']}/"}
        wait_ready(server, list(urls.values()), deadline,
                   lambda url: _fetch(url, tools["curl"]))
        for workload, kind in WORKLOADS:
            cpu_before = server.cpu_seconds()
            start = time.monotonic()
            result = run_h2load(args, tools, urls[kind], deadline)
            wall = time.monotonic() - start
            cpu = server.cpu_seconds() - cpu_before
            if not server.alive():
                raise BenchError(f"{name} died during the run; log:\n{server.log_tail()}")
            # Per core: all the run's requests over the proxy's CPU seconds in it.
            run = Run(round_no, workload, name, result.requests_per_s, 100 * cpu / wall,
                      per_core(result.succeeded / wall, cpu, wall), result.mean_ms,
                      result.succeeded)
            runs.append(run)
            say(f"round {round_no} {workload:7} {name:8} {run.requests_per_s:9.0f} req/s  "
                f"CPU {run.server_cpu_pct:4.0f}%  {run.per_core:9.0f}/core  "
                f"mean {run.mean_ms:.2f} ms  ({run.requests} requests)")
        servers.stop(server)
    return runs


def summarize(runs: list[Run]) -> tuple[list[list[str]], dict[str, Any]]:
    rows: list[list[str]] = []
    summary: dict[str, Any] = {}
    for workload, _kind in WORKLOADS:
        figures = {}
        for name in PEERS:
            mine = [r for r in runs if r.workload == workload and r.server == name]
            figures[name] = {
                "requests_per_s": median([r.requests_per_s for r in mine]),
                "server_cpu_pct": median([r.server_cpu_pct for r in mine]),
                "per_core": median([r.per_core for r in mine]),
                "mean_ms": median([r.mean_ms for r in mine]),
            }
            f = figures[name]
            rows.append([f"{workload} / {name}", f"{f['requests_per_s']:.0f}",
                         f"{f['server_cpu_pct']:.0f}", f"{f['per_core']:.0f}",
                         f"{f['mean_ms']:.2f}"])
        ratio = figures["gtm"]["per_core"] / figures["haproxy"]["per_core"]
        rows.append([f"{workload} / gtm:haproxy", "", "", f"{ratio:.2f}x", ""])
        summary[workload] = {**figures, "ratio_per_core": ratio}
    return rows, summary


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """No options of its own: --seconds, --rounds and the CPUs are shared."""


def budget_seconds(args: argparse.Namespace) -> float:
    per_peer = STARTUP_TIMEOUT + len(WORKLOADS) * (args.seconds + 8) + 10
    return args.rounds * len(PEERS) * per_peer + 60


def run(args: argparse.Namespace, deadline: Deadline, tools: dict[str, str]) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="gtm-bench-h2-"))
    info = machine_info()
    say(f"h2: {args.rounds} round(s) of {len(WORKLOADS)} workloads x {args.seconds:g} s per "
        f"proxy; h2load -c {CONNECTIONS} -m {STREAMS}; proxies on CPU {args.server_cpu}, "
        f"h2load and nginx on CPU {args.client_cpu}")
    runs: list[Run] = []
    try:
        write_certificate(workdir / "certs")
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
    print_table(["workload / proxy", "req/s", "CPU %", "req/s per core", "mean ms"], rows)
    print("\ntarget: gtm per core >= 0.80x HAProxy")
    path = write_results("h2", {
        "suite": "h2", "machine": info, "summary": summary,
        "method": "lb suite's: proxy pinned apart from h2load and nginx; CPU from /proc",
        "options": {"seconds": args.seconds, "rounds": args.rounds,
                    "connections": CONNECTIONS, "streams": STREAMS,
                    "server_cpu": args.server_cpu, "client_cpu": args.client_cpu},
        "runs": [asdict(r) for r in runs]})
    print(f"\nresults: {path}")
    return 0


SUITE = Suite(
    name="h2",
    help="gtm lb serve vs HAProxy over HTTP/2: h2c and h2 over TLS (h2load, nginx upstreams)",
    tools={"h2load": "nghttp2-client", "curl": "curl", "haproxy": "haproxy",
           "nginx": "nginx", "taskset": "util-linux"},
    add_arguments=add_arguments,
    budget_seconds=budget_seconds,
    run=run,
)
