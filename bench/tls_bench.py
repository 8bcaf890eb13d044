"""The TLS suite: `gtm lb serve` against HAProxy terminating TLS, same ECDSA P-256 cert.

Method (/work/shared/BENCHMARKS.md): the proxy under test runs on the server CPU, the
load generators and the nginx upstream on the client CPU; the proxy's CPU seconds come
from /proc around each run; figures are per proxy core. Three workloads:

  full handshakes   `openssl s_time -new`: a client that never resumes (TLS 1.3)
  resumed           `openssl s_time -reuse`: every connection resumes with a ticket
  https keep-alive  wrk -t2 -c64 over TLS 1.3, keep-alive, pooled upstreams

s_time sends `GET / HTTP/1.0` on each connection (so TLS 1.3 tickets are read) and
reads the answer; two s_time processes run side by side. The servers' own counters are
read after each run (gtm: its metrics; HAProxy: `show info` on its stats socket) so a
"full" figure that was secretly resumed would show.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
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
    say,
    write_results,
)
from lb_bench import STARTUP_TIMEOUT, gtm_executable, run_wrk, start_upstreams

PEERS = ("gtm", "haproxy")
WORKLOADS = ("full handshakes", "resumed", "https keep-alive")
S_TIME_CLIENTS = 2
TOKEN = "bench-token"

HAPROXY_CONF = """global
  nbthread 1
  maxconn 8000
  stats socket {workdir}/haproxy.sock level admin
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
frontend fe
  bind 127.0.0.1:{https} ssl crt {workdir}/certs/bench.pem alpn http/1.1
  option forwardfor
  http-request set-header X-Forwarded-Proto https
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:{upstream}
"""

GTM_CONF = """[lb]
workers = 1
access_log = "off"
admin = "127.0.0.1:{admin}"
admin_token = "{token}"
[lb.tls]
watch_interval = 0
[[lb.listeners]]
name = "https"
bind = "127.0.0.1:{https}"
tls = {{ certificates = "{workdir}/certs", default = "bench" }}
[[lb.pools]]
name = "app"
backends = ["127.0.0.1:{upstream}"]
"""


@dataclass(frozen=True)
class Run:
    round: int
    workload: str
    server: str
    per_second: float
    server_cpu_pct: float
    per_core: float
    server_full: int      # the server's own count of full handshakes in the run (-1: n/a)
    server_resumed: int


def write_certificate(directory: Path) -> None:
    """A self-signed ECDSA P-256 pair: bench.pem (chain + key) for both proxies."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("bench.test")]), False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))


def _insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wait_ready(server: Server, url: str, deadline: Deadline) -> None:
    end = time.monotonic() + deadline.cap(STARTUP_TIMEOUT)
    last = ""
    while time.monotonic() < end:
        if not server.alive():
            raise BenchError(f"{server.name} exited; its log ends:\n{server.log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=2, context=_insecure()) as response:
                if response.status == 200 and response.read() == b"ok":
                    return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise BenchError(f"{server.name} not answering over TLS ({last}):\n{server.log_tail()}")


# -- the servers' own handshake counters --------------------------------------------------
def gtm_counts(admin: int) -> tuple[int, int]:
    request = urllib.request.Request(f"http://127.0.0.1:{admin}/metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = response.read().decode()
    counts = dict.fromkeys(("full", "resumed"), 0)
    for kind, value in re.findall(r'^gtm_lb_tls_handshakes_total\{kind="(\w+)",'
                                  r'listener="https"\} (\S+)$', text, re.M):
        counts[kind] = int(float(value))
    return counts["full"], counts["resumed"]


def haproxy_counts(workdir: Path) -> tuple[int, int]:
    """(all TLS connections, -1): HAProxy keeps a reuse percentage, not a resumed count."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(workdir / "haproxy.sock"))
        sock.sendall(b"show info\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    info = dict(line.split(": ", 1) for line in data.decode().splitlines() if ": " in line)
    return int(info.get("CumSslConns", "0")), int(info.get("SslFrontendSessionReuse_pct", "-1"))


# -- load ---------------------------------------------------------------------------------
def s_time(args: argparse.Namespace, tools: dict[str, str], port: int, mode: str,
           deadline: Deadline) -> float:
    """Connections per second of S_TIME_CLIENTS s_time processes side by side."""
    argv = pinned(args.client_cpu, [
        tools["openssl"], "s_time", "-connect", f"127.0.0.1:{port}", f"-{mode}", "-tls1_3",
        "-www", "/", "-time", f"{args.seconds:g}"])
    started = time.monotonic()
    processes = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, stdin=subprocess.DEVNULL)
                 for _ in range(S_TIME_CLIENTS)]
    total = 0
    for process in processes:
        try:
            out, err = process.communicate(timeout=deadline.cap(args.seconds + 30))
        except subprocess.TimeoutExpired as exc:
            for other in processes:
                other.kill()
            raise BenchError("s_time did not finish") from exc
        found = re.findall(r"(\d+) connections in [\d.]+s", out)
        if process.returncode != 0 or not found:
            raise BenchError(f"s_time failed ({process.returncode}): {(out + err)[-800:]}")
        total += int(found[-1])
    return total / (time.monotonic() - started)


def one_run(name: str, workload: str, server: Server, ports: dict[str, int],
            args: argparse.Namespace, tools: dict[str, str], workdir: Path,
            deadline: Deadline) -> tuple[float, float, float, tuple[int, int]]:
    counts = (lambda: gtm_counts(ports["admin"])) if name == "gtm" else \
        (lambda: haproxy_counts(workdir))
    before = counts()
    cpu_before = server.cpu_seconds()
    start = time.monotonic()
    if workload == "https keep-alive":
        result = run_wrk(args, tools, f"https://127.0.0.1:{ports['https']}/", (), deadline)
        if result.errors:
            raise BenchError(f"wrk saw {result.errors} errors through {name}")
        rate = result.requests_per_s
    else:
        rate = s_time(args, tools, ports["https"], "new" if workload.startswith("full")
                      else "reuse", deadline)
    wall = time.monotonic() - start
    cpu = server.cpu_seconds() - cpu_before
    after = counts()
    if name == "gtm":
        delta = (after[0] - before[0], after[1] - before[1])
    else:
        delta = (after[0] - before[0], after[1])  # (connections, reuse % since start)
    return rate, cpu, wall, delta


def start_peer(name: str, args: argparse.Namespace, tools: dict[str, str], servers: Servers,
               workdir: Path, ports: dict[str, int]) -> Server:
    if name == "gtm":
        config = workdir / "gtm-lb.toml"
        config.write_text(GTM_CONF.format(workdir=workdir, token=TOKEN, **ports))
        argv = [gtm_executable(args), "lb", "serve", "--config", str(config), "--workers", "1"]
    else:
        config = workdir / "haproxy.cfg"
        config.write_text(HAPROXY_CONF.format(workdir=workdir, **ports))
        argv = [tools["haproxy"], "-f", str(config), "-db"]
    return servers.start(name, pinned(args.server_cpu, argv), workdir / f"{name}.log")


def one_round(round_no: int, args: argparse.Namespace, tools: dict[str, str],
              servers: Servers, workdir: Path, upstream: int, deadline: Deadline) -> list[Run]:
    runs = []
    for name in PEERS if round_no % 2 else tuple(reversed(PEERS)):
        ports = {"upstream": upstream, "https": free_port(), "admin": free_port()}
        server = start_peer(name, args, tools, servers, workdir, ports)
        wait_ready(server, f"https://127.0.0.1:{ports['https']}/", deadline)
        for workload in WORKLOADS:
            rate, cpu, wall, (full, resumed) = one_run(name, workload, server, ports, args,
                                                       tools, workdir, deadline)
            run = Run(round_no, workload, name, rate, 100 * cpu / wall,
                      per_core(rate, cpu, wall), full, resumed)
            runs.append(run)
            say(f"round {round_no} {workload:17} {name:8} {rate:9.0f}/s  CPU "
                f"{run.server_cpu_pct:4.0f}%  {run.per_core:9.0f}/core  server counts "
                f"{full} / {resumed}")
        servers.stop(server)
    return runs


def summarize(runs: list[Run]) -> tuple[list[list[str]], dict[str, Any]]:
    rows: list[list[str]] = []
    summary: dict[str, Any] = {}
    for workload in WORKLOADS:
        figures = {}
        for name in PEERS:
            mine = [r for r in runs if r.workload == workload and r.server == name]
            figures[name] = {"per_second": median([r.per_second for r in mine]),
                             "server_cpu_pct": median([r.server_cpu_pct for r in mine]),
                             "per_core": median([r.per_core for r in mine])}
            f = figures[name]
            rows.append([f"{workload} / {name}", f"{f['per_second']:.0f}",
                         f"{f['server_cpu_pct']:.0f}", f"{f['per_core']:.0f}"])
        ratio = figures["gtm"]["per_core"] / figures["haproxy"]["per_core"]
        rows.append([f"{workload} / gtm:haproxy", "", "", f"{ratio:.2f}x"])
        summary[workload] = {**figures, "ratio_per_core": ratio}
    return rows, summary


def add_arguments(group: argparse._ArgumentGroup) -> None:
    """No options of its own: --seconds, --rounds and the CPUs are shared."""


def budget_seconds(args: argparse.Namespace) -> float:
    per_peer = STARTUP_TIMEOUT + len(WORKLOADS) * (args.seconds + 10) + 10
    return args.rounds * len(PEERS) * per_peer + 60


def run(args: argparse.Namespace, deadline: Deadline, tools: dict[str, str]) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="gtm-bench-tls-"))
    info = machine_info()
    say(f"tls: {args.rounds} round(s) x {len(WORKLOADS)} workloads x {args.seconds:g} s per "
        f"proxy; proxies on CPU {args.server_cpu}, clients and nginx on {args.client_cpu}")
    runs: list[Run] = []
    try:
        write_certificate(workdir / "certs")
        with Servers() as servers:
            upstream = start_upstreams(servers, tools, workdir, deadline,
                                       args.client_cpu)["port1"]
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
    print_table(["workload / proxy", "per s", "CPU %", "per core"], rows)
    print("\ntarget: gtm per core >= 0.80x HAProxy on each workload")
    path = write_results("tls", {"suite": "tls", "machine": info, "summary": summary,
                                 "options": {"seconds": args.seconds, "rounds": args.rounds,
                                             "s_time_clients": S_TIME_CLIENTS},
                                 "runs": [asdict(r) for r in runs]})
    print(f"\nresults: {path}")
    return 0


SUITE = Suite(
    name="tls",
    help="gtm lb serve vs HAProxy terminating TLS 1.3 (ECDSA P-256): full and resumed "
         "handshakes (openssl s_time), HTTPS keep-alive (wrk)",
    tools={"wrk": "wrk", "haproxy": "haproxy", "nginx": "nginx", "openssl": "openssl",
           "taskset": "util-linux"},
    add_arguments=add_arguments,
    budget_seconds=budget_seconds,
    run=run,
)
