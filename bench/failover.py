"""Failover time of the GTM tier: from an endpoint's death to the DNS answers moving.

One command::

    /tmp/venv/bin/python bench/failover.py              # 10 trials, default check settings
    /tmp/venv/bin/python bench/failover.py --trials 3   # a short run

A real ``gtm serve --probe`` serves a steered name ``api`` that prefers eu
(127.0.1.1) and fails over to us (127.0.2.1). Each endpoint is an HTTP server in its
own process. A trial waits a random fraction of the check interval (deaths do not
line up with probes), kills eu's server by PID (SIGKILL), and asks the server every
20 ms until the answer is us: that is the failover time. It then watches the answer
for ``--hold`` seconds (any change back is a flap), restarts eu, and times the
return the same way. The check is the defaults of ``[pools.<name>.check]``:
interval 2 s, timeout 1 s, fall 2, rise 2, fastinter 0.5 s, jitter 0.1, and the
node's default coalescing interval (0.5 s). A resolver would add up to the TTL on
top; while the endpoint is in doubt the TTL is capped (``--doubt-ttl``, 5 s).

Everything is bounded: every wait has a deadline, processes are stopped by PID, and
the run stops itself after ``--deadline`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message
import dns.query

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
EU, US = "127.0.1.1", "127.0.2.1"
ZONE = """$TTL 60
@    SOA  ns1 hostmaster 1 7200 1800 1209600 60
@    NS   ns1
ns1  A    127.0.0.1
"""


def steering(port: int, check: dict[str, float]) -> str:
    lines = "\n".join(f"{k} = {v}" for k, v in check.items())
    return f"""
[regions.eu]
latitude = 53.3
longitude = -6.3
[regions.us]
latitude = 38.9
longitude = -77.4

[pools.web]
endpoints = [
  {{ name = "eu-1", region = "eu", ipv4 = "{EU}" }},
  {{ name = "us-1", region = "us", ipv4 = "{US}" }},
]
[pools.web.check]
type = "http"
port = {port}
path = "/healthz"
{lines}

[names.api]
pool = "web"
ttl = 30
[[names.api.filters]]
type = "failover"
groups = [["eu"], ["us"]]
"""


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_endpoint(host: str, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.health.endpoint", f"{host}:{port}"], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.02)
    stop(process)
    raise RuntimeError(f"endpoint {host}:{port} did not start")


def stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGKILL) -> None:
    if process is not None and process.poll() is None:
        os.kill(process.pid, sig)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)


def answer(port: int) -> str | None:
    try:
        reply = dns.query.udp(dns.message.make_query("api.fo.test.", "A"), "127.0.0.1",
                              port=port, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return None
    texts = sorted(r.to_text() for rrset in reply.answer for r in rrset)
    return texts[0] if len(texts) == 1 else ",".join(texts) or None


def wait_answer(port: int, expected: str, timeout: float) -> float:
    start = time.monotonic()
    while answer(port) != expected:
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"answer not {expected} after {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def flaps(port: int, expected: str, hold: float) -> int:
    """Answers other than expected while holding for ``hold`` seconds."""
    count, end = 0, time.monotonic() + hold
    while time.monotonic() < end:
        count += answer(port) != expected
        time.sleep(0.05)
    return count


def start_gtm(zones: Path, dns_port: int, log: Path, coalesce: float) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gtm.cli", "serve", "--zones", str(zones), "--workers", "1",
             "--listen", f"127.0.0.1:{dns_port}", "--probe", "--observer-id", "bench",
             "--coalesce", str(coalesce)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while answer(dns_port) is None:
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"gtm serve did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    return process


def _deadline(signum: int, frame: object) -> None:
    raise TimeoutError("the run's deadline passed; stopping (servers stopped by PID)")


def summarise(name: str, values: list[float]) -> str:
    return (f"{name:<22} p50 {statistics.median(values):6.2f} s   max {max(values):6.2f} s   "
            f"min {min(values):6.2f} s   (n={len(values)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=1.0)
    parser.add_argument("--fall", type=int, default=2)
    parser.add_argument("--rise", type=int, default=2)
    parser.add_argument("--fastinter", type=float, default=0.5)
    parser.add_argument("--coalesce", type=float, default=0.5)
    parser.add_argument("--hold", type=float, default=1.0, help="seconds watched for flaps")
    parser.add_argument("--deadline", type=float, default=600.0)
    args = parser.parse_args()
    check = {"interval": args.interval, "timeout": args.timeout, "fall": args.fall,
             "rise": args.rise, "fastinter": args.fastinter}
    signal.signal(signal.SIGALRM, _deadline)
    signal.alarm(int(args.deadline))
    port, dns_port = free_port(EU), free_port("127.0.0.1")
    eu = us = gtm = None
    failover: list[float] = []
    recovery: list[float] = []
    flapped = 0
    with tempfile.TemporaryDirectory() as work:
        zones = Path(work)
        (zones / "fo.test.zone").write_text(ZONE)
        (zones / "fo.test.steering.toml").write_text(steering(port, check))
        try:
            eu, us = start_endpoint(EU, port), start_endpoint(US, port)
            gtm = start_gtm(zones, dns_port, zones / "gtm.log", args.coalesce)
            limit = args.interval * (args.fall + 1) + args.timeout * args.fall + 10
            wait_answer(dns_port, EU, limit)
            for trial in range(1, args.trials + 1):
                time.sleep(random.uniform(0, args.interval))
                stop(eu)
                eu = None
                failover.append(wait_answer(dns_port, US, limit))
                flapped += flaps(dns_port, US, args.hold)
                eu = start_endpoint(EU, port)
                recovery.append(wait_answer(dns_port, EU, limit))
                flapped += flaps(dns_port, EU, args.hold)
                print(f"trial {trial}: answers moved after {failover[-1]:.2f} s, "
                      f"returned after {recovery[-1]:.2f} s", flush=True)
        finally:
            stop(gtm, signal.SIGTERM)
            stop(eu)
            stop(us)
    print(f"check: {check}, coalesce {args.coalesce} s")
    print(summarise("death -> answers move", failover))
    print(summarise("back -> answers return", recovery))
    print(f"flaps (answers off while holding {args.hold} s after each move): {flapped}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"failover-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"check": check, "coalesce": args.coalesce,
                               "failover_s": failover, "recovery_s": recovery,
                               "flaps": flapped}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0 if flapped == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
