"""Drill figures on `gtm up` (loopback): how fast clients move and come back.

One command::

    .venv/bin/python bench/drill.py --trials 5        # every local fault, ramp off and on
    .venv/bin/python bench/drill.py --trials 1 --ttl 2 --ramp-ttl 1 --duration 3  # smoke

It starts one `gtm up` (copies of the example regions, its own state directory, a free
DNS port), sets the steered name www's TTL to ``--ttl`` through the API, then runs
``gtm drill run`` for each fault (drain, force_down, stop_backends) without and with
the TTL ramp-down (to ``--ramp-ttl``), ``--trials`` times each, from four vantage points
(GB, FR, JP, US; GB and FR are served by the drilled region eu-west). From each report:
time from the fault to the first moved answer and to all vantage points moved, the
client-observed recovery (restore to all returned), and the clients' failed requests.
Printed as p50 and max over the trials; JSON lines go to bench/results/drill.jsonl.

Bounded: every drill has its own deadline, gtm up is stopped by PID at the end (also on
Ctrl-C), and nothing listens outside loopback.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REGIONS = ("eu-west", "us-east", "ap-northeast", "sa-east")
FAULTS = ("force_down", "drain", "stop_backends")
VANTAGE = [{"name": "GB", "subnet": "81.2.69.0/24"}, {"name": "FR", "subnet": "62.4.0.0/24"},
           {"name": "JP", "subnet": "133.1.1.0/24"}, {"name": "US", "subnet": "8.8.8.0/24"}]


def gtm() -> list[str]:
    return [sys.executable, "-m", "gtm.cli"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_call(api: str, token: str, method: str, path: str, body: Any = None,
             if_match: int | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    request = urllib.request.Request(api + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def start_up(work: Path, dns_port: int) -> tuple[subprocess.Popen[bytes], str, str]:
    regions: list[str] = []
    for name in REGIONS:
        shutil.copy(ROOT / "examples" / "lb" / f"{name}.toml", work / f"{name}.toml")
        regions += ["--region", str(work / f"{name}.toml")]
    log = (work / "up.log").open("wb")
    process = subprocess.Popen([*gtm(), "up", "--zones", str(ROOT / "zones"), "--listen",
                                f"127.0.0.1:{dns_port}", "--api-listen", "127.0.0.1:0",
                                *regions], cwd=work, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"control plane API on (http://\S+)", (work / "up.log").read_text())
        token_file = work / "var" / "control" / "admin.token"
        if match and token_file.exists():
            return process, match.group(1), token_file.read_text().strip()
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    raise SystemExit(f"gtm up did not start:\n{(work / 'up.log').read_text()[-2000:]}")


def set_ttl(api: str, token: str, ttl: int) -> None:
    live = api_call(api, token, "GET", "/v1/config")
    steering = live["document"]["steering"]
    key = next(k for k in steering if k.rstrip(".") == "gslb.example.test")
    steering[key]["names"]["www"]["ttl"] = ttl
    api_call(api, token, "PUT", "/v1/config/sections/steering", {"value": steering},
             if_match=int(live["version"]))


def plan(fault: str, work: Path, args: argparse.Namespace, ramp: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"bench-{fault}-{'ramp' if ramp else 'noramp'}", "zone": "gslb.example.test",
        "target": {"region": "eu-west"},
        "fault": {"type": fault, "duration": args.duration},
        "observe": {"names": ["www.gslb.example.test"], "vantage": VANTAGE,
                    "interval": 0.1, "timeout": 1.0},
        # Measuring, not guarding: no abort on errors, a generous move deadline.
        "abort": {"error_rate": False, "move_deadline": args.ttl + 30},
        "restore": {"expiry_grace": 60, "settle": args.ttl + 30},
        "safety": {"min_headroom": 0.0},
    }
    if fault != "force_down":
        body["fault"]["balancer"] = str(work / "eu-west.toml")
    if ramp:
        body["ramp"] = {"ttl": args.ramp_ttl, "steps": 2}
    return body


def run_one(work: Path, api: str, dns_port: int, body: dict[str, Any],
            timeout: float) -> dict[str, Any]:
    path = work / "plan.json"
    path.write_text(json.dumps(body))
    result = subprocess.run([*gtm(), "drill", "run", str(path), "--api", api, "--dns",
                             f"127.0.0.1:{dns_port}", "--json"], cwd=work, text=True,
                            capture_output=True, timeout=timeout)
    if not result.stdout.strip():
        raise RuntimeError(f"drill failed: {result.stderr[-1000:]}")
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def figures(report: dict[str, Any]) -> dict[str, Any]:
    durations = report["durations"]
    errors = sum(v["errors"] for v in report["vantage"].values())
    return {"outcome": report["outcome"], "first_moved": durations["time_to_first_move"],
            "all_moved": durations["time_to_all_moved"],
            "recovery": durations["time_to_all_returned"], "client_errors": errors}


def summary(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    missing = f" ({len(values) - len(known)} missing)" if len(known) < len(values) else ""
    return f"p50 {statistics.median(known):6.2f} s  max {max(known):6.2f} s{missing}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--ttl", type=int, default=30, help="www's TTL (the example's: 30)")
    parser.add_argument("--ramp-ttl", type=int, default=5, help="the ramp's target TTL")
    parser.add_argument("--duration", type=float, default=10.0, help="each fault's seconds")
    parser.add_argument("--fault", action="append", choices=FAULTS,
                        help="only these faults (repeatable; default: all)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gtm-bench-drill-"))
    dns_port = free_port()
    process, api, token = start_up(work, dns_port)
    rows: list[dict[str, Any]] = []
    try:
        set_ttl(api, token, args.ttl)
        time.sleep(args.ttl + 5)  # probes see the balancers up; caches hold the TTL
        timeout = args.duration + 4 * args.ttl + 120
        for fault in args.fault or FAULTS:
            for ramp in (False, True):
                for trial in range(args.trials):
                    row = {"fault": fault, "ramp": ramp, "trial": trial, "ttl": args.ttl,
                           **figures(run_one(work, api, dns_port,
                                             plan(fault, work, args, ramp), timeout))}
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    except KeyboardInterrupt:
        return 130
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "drill.jsonl").open("a") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    print(f"\nwww TTL {args.ttl} s, ramp to {args.ramp_ttl} s, {args.trials} trial(s), "
          "4 vantage points (GB, FR affected)")
    for fault in args.fault or FAULTS:
        for ramp in (False, True):
            mine = [r for r in rows if r["fault"] == fault and r["ramp"] == ramp]
            label = f"{fault} {'with' if ramp else 'without'} ramp"
            print(f"{label:<32} first moved {summary([r['first_moved'] for r in mine])}")
            print(f"{'':<32} all moved   {summary([r['all_moved'] for r in mine])}")
            print(f"{'':<32} recovery    {summary([r['recovery'] for r in mine])}")
            print(f"{'':<32} client errors {sum(r['client_errors'] for r in mine)}, outcomes "
                  f"{', '.join(sorted({r['outcome'] for r in mine}))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
