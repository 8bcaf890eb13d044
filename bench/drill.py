"""Drill figures: how fast clients move and come back, for every fault type.

One command::

    .venv/bin/python bench/drill.py --trials 5        # every fault, ramp off and on
    .venv/bin/python bench/drill.py --trials 1 --ttl 2 --ramp-ttl 1 --duration 3  # smoke

Loopback faults (drain, force_down, stop_backends through the balancer's admin API):
it starts one `gtm up` (copies of the example regions, its own state directory, a free
DNS port), sets the steered name www's TTL to ``--ttl`` through the API, then runs
``gtm drill run`` for each fault without and with the TTL ramp-down (to
``--ramp-ttl``), ``--trials`` times each, from four vantage points (ECS subnets of GB,
FR, JP, US; GB and FR are served by the drilled region eu-west).

Lab faults (cut_link, partition, latency, loss, lab_stop_backends: the region's backend
processes stopped, stop_node) need a running network lab (`sudo gtm lab up`; ``--lab
DIR`` for another state directory): with one, the same drills run with
``gtm drill run --lab`` from inside the lab's client namespaces (gb, jp, us, br; gb is
served by eu-west; stop_node targets us-east's clients, whose answers must stay), the
lab's www TTL set to ``--ttl`` and put back afterwards. Without a lab they are skipped,
saying so.

From each report: time from the fault to the first moved answer and to all vantage
points moved, the client-observed recovery (restore to all returned), and the clients'
failed requests. Printed as p50 and max over the trials; JSON lines go to
bench/results/drill.jsonl.

Bounded: every drill has its own deadline, gtm up is stopped by PID at the end (also on
Ctrl-C), and nothing listens outside loopback and the lab's namespaces.
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
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
REGIONS = ("eu-west", "us-east", "ap-northeast", "sa-east")
LOCAL_FAULTS = ("force_down", "drain", "stop_backends")
LAB_FAULTS = ("cut_link", "partition", "latency", "loss", "lab_stop_backends", "stop_node")
FAULTS = LOCAL_FAULTS + LAB_FAULTS
VANTAGE = [{"name": "GB", "subnet": "81.2.69.0/24"}, {"name": "FR", "subnet": "62.4.0.0/24"},
           {"name": "JP", "subnet": "133.1.1.0/24"}, {"name": "US", "subnet": "8.8.8.0/24"}]
LAB_VANTAGE = [{"name": name, "lab": name} for name in ("gb", "jp", "us", "br")]
# What each lab fault is in a plan (its target region, and its own keys).
LAB_PLANS: dict[str, tuple[str, dict[str, Any]]] = {
    "cut_link": ("eu-west", {"type": "cut_link"}),
    "partition": ("eu-west", {"type": "partition", "nodes": ["dns1", "dns2"]}),
    "latency": ("eu-west", {"type": "latency", "latency_ms": 1500}),
    "loss": ("eu-west", {"type": "loss", "loss": 1.0}),
    "lab_stop_backends": ("eu-west", {"type": "stop_backends"}),
    "stop_node": ("us-east", {"type": "stop_node", "node": "dns1"}),
}


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


def set_ttl(api: str, token: str, ttl: int | None) -> int | None:
    """Set www's TTL (None: the steering file's default); the TTL it had. A version made
    meanwhile (gtm up still storing its first ones) is read again and the write retried."""
    for _ in range(20):
        try:
            return _set_ttl_once(api, token, ttl)
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise
            time.sleep(0.25)
    raise SystemExit("the steering section kept changing under the benchmark (409 x 20)")


def _set_ttl_once(api: str, token: str, ttl: int | None) -> int | None:
    live = api_call(api, token, "GET", "/v1/config")
    steering = live["document"]["steering"]
    key = next(k for k in steering if k.rstrip(".") == "gslb.example.test")
    www = steering[key]["names"]["www"]
    before = www.get("ttl")
    if ttl is None:
        www.pop("ttl", None)
    else:
        www["ttl"] = ttl
    api_call(api, token, "PUT", "/v1/config/sections/steering", {"value": steering},
             if_match=int(live["version"]))
    return before


def plan(fault: str, work: Path, args: argparse.Namespace, ramp: bool) -> dict[str, Any]:
    region, lab_fault = LAB_PLANS.get(fault, ("eu-west", {"type": fault}))
    body: dict[str, Any] = {
        "name": f"bench-{fault}-{'ramp' if ramp else 'noramp'}", "zone": "gslb.example.test",
        "target": {"region": region},
        "fault": {**lab_fault, "duration": args.duration},
        "observe": {"names": ["www.gslb.example.test"],
                    "vantage": LAB_VANTAGE if fault in LAB_FAULTS else VANTAGE,
                    "interval": 0.1, "timeout": 1.0},
        # Measuring, not guarding: no abort on errors, a generous move deadline.
        "abort": {"error_rate": False, "move_deadline": args.ttl + 30},
        "restore": {"expiry_grace": 60, "settle": args.ttl + 30},
        "safety": {"min_headroom": 0.0},
    }
    if fault in ("drain", "stop_backends"):
        body["fault"]["balancer"] = str(work / "eu-west.toml")
    if ramp:
        body["ramp"] = {"ttl": args.ramp_ttl, "steps": 2}
    return body


def run_one(work: Path, where: list[str], body: dict[str, Any], timeout: float
            ) -> dict[str, Any]:
    """One drill; ``where``: `--api URL --dns H:P` (gtm up) or `--lab DIR`."""
    path = work / "plan.json"
    path.write_text(json.dumps(body))
    result = subprocess.run([*gtm(), "drill", "run", str(path), *where, "--json"], cwd=work,
                            text=True, capture_output=True, timeout=timeout)
    if not result.stdout.strip():
        raise RuntimeError(f"drill failed: {result.stderr[-1000:]}")
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def find_lab(state_dir: str | None) -> tuple[Path, str, str] | None:
    """The running lab (state directory, API URL, token), or None, saying why."""
    sys.path.insert(0, str(ROOT))
    from gtm.lab.faults import LabControl
    from gtm.lab.system import LabError

    try:
        lab = LabControl.connect(Path(state_dir) if state_dir else None)
    except LabError as exc:
        print(f"lab faults skipped ({', '.join(LAB_FAULTS)}): no lab is up ({exc}); "
              "start one with `sudo gtm lab up`", flush=True)
        return None
    if lab.description.mode != "netns":
        print("lab faults skipped: the lab is a loopback lab (no namespaces, no network "
              "faults)", flush=True)
        return None
    return Path(lab.description.state_dir), lab.description.api_url, lab.description.token


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


def trials(faults: list[str], work: Path, where: list[str], args: argparse.Namespace
           ) -> list[dict[str, Any]]:
    rows = []
    timeout = args.duration + 4 * args.ttl + 120
    for fault in faults:
        for ramp in (False, True):
            for trial in range(args.trials):
                report = run_one(work, where, plan(fault, work, args, ramp), timeout)
                row = {"fault": fault, "ramp": ramp, "trial": trial, "ttl": args.ttl,
                       **figures(report)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def local_trials(faults: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="gtm-bench-drill-"))
    dns_port = free_port()
    process, api, token = start_up(work, dns_port)
    try:
        set_ttl(api, token, args.ttl)
        time.sleep(args.ttl + 5)  # probes see the balancers up; caches hold the TTL
        return trials(faults, work, ["--api", api, "--dns", f"127.0.0.1:{dns_port}"], args)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(work, ignore_errors=True)


def lab_trials(faults: list[str], lab: tuple[Path, str, str], args: argparse.Namespace
               ) -> list[dict[str, Any]]:
    state_dir, api, token = lab
    work = Path(tempfile.mkdtemp(prefix="gtm-bench-drill-lab-"))
    before = set_ttl(api, token, args.ttl)
    try:
        time.sleep(args.ttl + 2)  # the resolvers' caches hold the new TTL
        return trials(faults, work, ["--lab", str(state_dir)], args)
    finally:
        set_ttl(api, token, before)  # the lab is the operator's: its TTL goes back
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--ttl", type=int, default=30, help="www's TTL (the example's: 30)")
    parser.add_argument("--ramp-ttl", type=int, default=5, help="the ramp's target TTL")
    parser.add_argument("--duration", type=float, default=10.0, help="each fault's seconds")
    parser.add_argument("--fault", action="append", choices=FAULTS,
                        help="only these faults (repeatable; default: all)")
    parser.add_argument("--lab", metavar="STATE_DIR",
                        help="the lab's state directory (default: /run/gtmlab)")
    args = parser.parse_args()
    chosen = args.fault or list(FAULTS)
    local = [f for f in chosen if f in LOCAL_FAULTS]
    lab_faults = [f for f in chosen if f in LAB_FAULTS]
    rows: list[dict[str, Any]] = []
    try:
        if local:
            rows += local_trials(local, args)
        lab = find_lab(args.lab) if lab_faults else None
        if lab is not None:
            rows += lab_trials(lab_faults, lab, args)
    except KeyboardInterrupt:
        return 130
    RESULTS.mkdir(parents=True, exist_ok=True)
    with (RESULTS / "drill.jsonl").open("a") as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    print(f"\nwww TTL {args.ttl} s, ramp to {args.ramp_ttl} s, {args.trials} trial(s); "
          "loopback: 4 vantage points by ECS (GB, FR affected); lab: gb, jp, us, br from "
          "their namespaces (gb affected; us for stop_node, whose answers must stay)")
    for fault in [f for f in chosen if any(r["fault"] == f for r in rows)]:
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
