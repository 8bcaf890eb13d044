"""`gtm lab up | down | status | exec`: a multi-region network on one machine."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from gtm.lab.plan import DEFAULT_PREFIX, LabPlan, load_plan
from gtm.lab.state import STATE_FILE, Lab, default_state_dir
from gtm.lab.system import LabError, is_root


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lab = commands.add_parser("lab", help="regions, DNS nodes and clients as real network "
                              "hosts (namespaces) to drill on")
    lab_commands = lab.add_subparsers(dest="lab_command", required=True)
    up = _where(lab_commands.add_parser("up", help="build the lab and run it until Ctrl-C "
                                        "or `gtm lab down`"))
    up.add_argument("--regions", type=Path, metavar="FILE",
                    help="regions, vantage points and names (default: "
                    "examples/lab/regions.toml)")
    up.add_argument("--loopback", action="store_true",
                    help="without root: 127.0.x.x addresses, no latency or link faults")
    up.set_defaults(handler=cmd_up)
    down = _where(lab_commands.add_parser(
        "down", help="remove everything the lab made (safe after a crash; idempotent)"))
    down.set_defaults(handler=cmd_down)
    status = _where(lab_commands.add_parser("status", help="the lab's hosts, processes "
                                            "and faults"))
    status.add_argument("--json", action="store_true", help="the lab's description file")
    status.set_defaults(handler=cmd_status)
    run = _where(lab_commands.add_parser("exec", help="run a command inside a vantage "
                                         "point's namespace (dig, curl)"))
    run.add_argument("vantage", help="a vantage point (gtm lab status lists them)")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                     help="the command and its arguments")
    run.set_defaults(handler=cmd_exec)


def _where(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--prefix", default=DEFAULT_PREFIX,
                        help=f"names of its namespaces and links ({DEFAULT_PREFIX})")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="its description, sockets and logs (default: /run/PREFIX as "
                        "root, else var/PREFIX)")
    return parser


def _state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir or default_state_dir(args.prefix))


def cmd_up(args: argparse.Namespace) -> int:
    from gtm.lab.supervisor import Supervisor
    from gtm.process import run_async

    if not args.loopback and not is_root():
        raise LabError("the lab needs root for network namespaces (or `gtm lab up "
                       "--loopback`: 127.0.x.x, no latency, loss or link faults)")
    plan = load_plan(args.regions, args.prefix, args.loopback, _locate)
    supervisor = Supervisor(plan, _state_dir(args))
    run_async(lambda: supervisor.run(lambda lab: _announce(plan, lab)))
    return 0


def _locate(address: str) -> tuple[str | None, float, float] | None:
    from gtm.geo.locate import DEFAULT_DATABASE, Locator

    with Locator(DEFAULT_DATABASE) as locator:
        where = locator.locate(address)
    if where.latitude is None or where.longitude is None:
        return None
    return where.country, where.latitude, where.longitude


def _announce(plan: LabPlan, lab: Lab) -> None:
    out = sys.stdout
    print(f"lab {lab.prefix} is up ({lab.mode}); described in "
          f"{Path(lab.state_dir) / STATE_FILE}", file=out)
    print(f"  control API  {lab.api_url}  (inside the lab: {lab.api_url_inside}; "
          f"token in the description)", file=out)
    for node in lab.nodes.values():
        where = f" in {node.namespace}" if node.namespace else ""
        print(f"  DNS node     {node.name:12} {node.address}:{node.port}{where}", file=out)
    for region in lab.regions.values():
        addresses = ", ".join(region.endpoints.values())
        print(f"  region       {region.name:12} {addresses}  admin {region.admin_url}",
              file=out)
    for vantage in lab.vantages.values():
        print(f"  vantage      {vantage.name:12} {vantage.address} ({vantage.country})  "
              f"gtm lab exec {vantage.name} -- dig @{plan.nodes[0].address} "
              f"www.{plan.zone}", file=out)
    for what in lab.cannot:
        print(f"  cannot: {what}", file=out)
    print("stop with Ctrl-C or `gtm lab down`", file=out, flush=True)


def cmd_down(args: argparse.Namespace) -> int:
    from gtm.lab.teardown import take_down

    state_dir = _state_dir(args)
    for line in take_down(state_dir, args.prefix):
        print(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lab = Lab.load(_state_dir(args))
    if args.json:
        sys.stdout.write(lab.to_json())
        return 0
    alive = lab.supervisor.id.alive()
    state = ("ready" if lab.ready else "starting") if alive else "NOT RUNNING (gtm lab down)"
    print(f"lab {lab.prefix} ({lab.mode}): {state}; supervisor PID {lab.supervisor.pid}")
    print(f"  control API {lab.api_url} (inside: {lab.api_url_inside})")
    for process in lab.processes:
        where = process.namespace or "host"
        mark = "running" if process.id.alive() else "EXITED"
        print(f"  {process.role:24} PID {process.pid:<8} {mark:8} {where}")
    for vantage in lab.vantages.values():
        print(f"  vantage {vantage.name:8} {vantage.address:16} {vantage.country or '?':3} "
              f"{vantage.namespace}")
    print(f"  faults: {_faults_text(lab)}")
    for what in lab.cannot:
        print(f"  cannot: {what}")
    return 0 if alive else 1


def _faults_text(lab: Lab) -> str:
    parts: list[str] = []
    faults: dict[str, Any] = lab.faults
    parts += [f"link of {name} cut" for name in faults.get("cut", [])]
    parts += [f"{name} partitioned from {', '.join(nodes)}"
              for name, nodes in faults.get("partitions", {}).items()]
    parts += [f"{role} stopped" for role in faults.get("stopped", [])]
    parts += [f"{name} loses {share:.0%} of UDP" for name, share in lab.loss.items() if share]
    return "; ".join(parts) or "none"


def cmd_exec(args: argparse.Namespace) -> int:
    lab = Lab.load(_state_dir(args))
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise LabError("give a command: gtm lab exec VANTAGE -- dig ...")
    vantage = lab.vantages.get(args.vantage)
    if vantage is None or vantage.namespace is None:
        raise LabError(f"no vantage point {args.vantage!r} (the lab has "
                       f"{', '.join(lab.vantages) or 'none: a loopback lab'})")
    sys.stdout.flush()
    os.execvp("ip", ["ip", "netns", "exec", vantage.namespace, *argv])
