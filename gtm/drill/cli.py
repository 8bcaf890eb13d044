"""`gtm drill ...`: run, check, report, list, abort, recover, and store/schedule plans.

    gtm drill check PLAN                       validate a plan (errors name the key path)
    gtm drill run PLAN [--dns H:P] [--force --reason TEXT] [--json] [--html FILE]
    gtm drill run --stored NAME                a plan kept in the control plane
    gtm drill report ID [--json] [--html FILE]
    gtm drill list | abort ID | recover [ID]
    gtm drill plans store PLAN | plans list
    gtm drill schedule NAME --plan P --weekly mon,thu@10:00 [--blocked-date D]... | --remove
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gtm.config.drills import DRILLS, parse_plan, parse_scheduled
from gtm.config_reader import Listen, parse_listen, read_json_file
from gtm.control.client import Client
from gtm.errors import ConfigError
from gtm.toml_input import read_toml

REFUSED_EXIT = 3
OUTCOME_EXIT = {"succeeded": 0, "failed": 1, "aborted": 1, "abandoned": 1, "refused": 3}
ClientOptions = Callable[[argparse.ArgumentParser], argparse.ArgumentParser]


def add_commands(commands: Any, client_options: ClientOptions) -> None:
    drill = commands.add_parser("drill", help="failover drills: run, report, abort, recover")
    sub = drill.add_subparsers(dest="drill_command", required=True)
    check = sub.add_parser("check", help="validate a drill plan (TOML or JSON)")
    check.add_argument("plan", type=Path)
    check.set_defaults(handler=cmd_check)
    run = client_options(sub.add_parser("run", help="run a drill and print its report"))
    run.add_argument("plan", type=Path, nargs="?", help="the plan file (TOML or JSON)")
    run.add_argument("--stored", metavar="NAME", help="a plan kept in the control plane")
    run.add_argument("--dns", action="append", metavar="HOST:PORT",
                     help="the DNS server(s) to observe through (default: the plan's)")
    run.add_argument("--force", action="store_true",
                     help="start although safety rules refuse (needs --reason; audited)")
    run.add_argument("--reason", default="", help="why --force is used")
    run.add_argument("--scheduled", help=argparse.SUPPRESS)
    _output_options(run)
    run.set_defaults(handler=cmd_run)
    report = client_options(sub.add_parser("report", help="a drill's report"))
    report.add_argument("id")
    _output_options(report)
    report.set_defaults(handler=cmd_report)
    listing = client_options(sub.add_parser("list", help="drills, newest first"))
    listing.add_argument("--active", action="store_true")
    listing.set_defaults(handler=cmd_list)
    abort = client_options(sub.add_parser("abort", help="abort a running drill (restores now)"))
    abort.add_argument("id")
    abort.add_argument("--reason", default="operator abort")
    abort.set_defaults(handler=cmd_abort)
    recover = client_options(sub.add_parser(
        "recover", help="restore every override of active drills now (or of one)"))
    recover.add_argument("id", nargs="?")
    recover.set_defaults(handler=cmd_recover)
    plans = sub.add_parser("plans", help="plans kept in the control plane")
    plans_sub = plans.add_subparsers(dest="plans_command", required=True)
    store = client_options(plans_sub.add_parser("store", help="keep (or replace) a plan"))
    store.add_argument("plan", type=Path)
    store.set_defaults(handler=cmd_plans_store)
    plans_list = client_options(plans_sub.add_parser("list", help="stored plans and schedule"))
    plans_list.set_defaults(handler=cmd_plans_list)
    schedule = client_options(sub.add_parser(
        "schedule", help="recurring practice runs, started by the control-plane process"))
    schedule.add_argument("name")
    schedule.add_argument("--plan", help="the stored plan to run")
    schedule.add_argument("--weekly", action="append", metavar="DAYS@HH:MM",
                          help="e.g. tue,thu@10:00 (UTC; repeatable)")
    schedule.add_argument("--blocked-date", action="append", default=[], metavar="YYYY-MM-DD")
    schedule.add_argument("--window", type=float, default=3600.0,
                          help="skip a run not started this many seconds after its time")
    schedule.add_argument("--remove", action="store_true")
    schedule.set_defaults(handler=cmd_schedule)
    restore = sub.add_parser("restore-override", help=argparse.SUPPRESS)
    restore.add_argument("override")
    restore.set_defaults(handler=cmd_restore_override)


def _output_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--html", type=Path, metavar="FILE",
                        help="write the report as a self-contained HTML page")


def _client(args: argparse.Namespace) -> Client:
    from gtm.control import cli as control_cli

    return control_cli.client(args)


def read_plan_file(path: Path) -> dict[str, Any]:
    raw = read_json_file(path) if path.suffix.lower() == ".json" else read_toml(path)
    if not isinstance(raw, dict):
        raise ConfigError("a plan must be a table (JSON object)", str(path))
    return raw


def cmd_check(args: argparse.Namespace) -> int:
    plan = parse_plan(read_plan_file(args.plan), str(args.plan))
    print(f"plan {plan.name}: {plan.fault.type} of region {plan.region} in {plan.zone} for "
          f"{plan.fault.duration:g} s, {len(plan.observe.vantage)} vantage points: ok")
    return 0


def _load_for_run(args: argparse.Namespace, api: Client) -> tuple[dict[str, Any], str, Path]:
    if (args.plan is None) == (args.stored is None):
        raise ConfigError("give a plan file or --stored NAME (one of them)", "command line",
                          "plan")
    if args.plan is not None:
        return read_plan_file(args.plan), str(args.plan), args.plan.resolve().parent
    section = api.get("/v1/config")["document"].get(DRILLS, {})
    raw = (section.get("plans") or {}).get(args.stored)
    if raw is None:
        raise ConfigError(f"no stored plan {args.stored!r} (gtm drill plans list)",
                          "command line", "--stored")
    return raw, f"{DRILLS}.plans.{args.stored}", Path.cwd()


def cmd_run(args: argparse.Namespace) -> int:
    from gtm.drill.runner import DrillRefused, Runner, RunOptions

    api = _client(args)
    raw, source, plan_dir = _load_for_run(args, api)
    plan = parse_plan(raw, source)
    dns: tuple[Listen, ...] = tuple(parse_listen(text, 53) for text in args.dns or ())
    if args.force and not args.reason:
        raise ConfigError("--force needs --reason (it is audited)", "command line", "--reason")
    options = RunOptions(dns, args.force, args.reason, plan_dir, args.scheduled,
                         say=lambda line: print(line, file=sys.stderr, flush=True))
    try:
        report = asyncio.run(Runner(plan, raw, api, options).run())
    except DrillRefused as exc:
        for refusal in exc.refusals:
            print(f"refused by safety rule {refusal.rule}: {refusal.message}",
                  file=sys.stderr)
        print(f"drill {exc.drill_id} refused (--force --reason TEXT overrides, audited)",
              file=sys.stderr)
        return REFUSED_EXIT
    _show(report, args)
    return OUTCOME_EXIT.get(report["outcome"], 1)


def _show(report: dict[str, Any], args: argparse.Namespace) -> None:
    from gtm.drill.report import render_html, render_text

    if args.html is not None:
        args.html.write_text(render_html(report), encoding="utf-8")
        print(f"wrote {args.html}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=1, sort_keys=True))
    else:
        sys.stdout.write(render_text(report))


def cmd_report(args: argparse.Namespace) -> int:
    record = _client(args).get(f"/v1/drills/{args.id}")
    report = record.get("report")
    if report is None:
        print(f"drill {record['id']} ({record['name']}): {record['status']}"
              + (f" — {record['reason']}" if record["reason"] else "")
              + " (no report: it did not run to a report)")
        return OUTCOME_EXIT.get(record["status"], 1) if record["status"] != "running" else 0
    report = {**report, "outcome": record["status"], "reason": record["reason"]}
    _show(report, args)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    path = "/v1/drills" + ("?active=true" if args.active else "")
    for item in _client(args).get(path)["items"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(item["created_at"]))
        open_overrides = sum(1 for o in item["overrides"] if not o.get("restored_at"))
        extra = f"  ({open_overrides} override(s) in force)" if open_overrides else ""
        print(f"{item['id']}  {when}Z  {item['status']:<10} {item['name']:<20} "
              f"{item['created_by']:<24} {item['reason']}{extra}")
    return 0


def cmd_abort(args: argparse.Namespace) -> int:
    record = _client(args).call("POST", f"/v1/drills/{args.id}/abort",
                                {"reason": args.reason}).body
    restored = sum(1 for o in record["overrides"] if o.get("restored_at"))
    print(f"drill {record['id']} aborted; {restored} override(s) restored")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    target = args.id or "active"
    results = _client(args).call("POST", f"/v1/drills/{target}/recover").body["drills"]
    if not results:
        print("no active drill: nothing to restore")
    for item in results:
        print(f"drill {item['id']}: {item['restored']} override(s) restored")
    return 0


def _edit_section(api: Client, edit: Callable[[dict[str, Any]], None], message: str) -> int:
    live = api.call("GET", "/v1/config")
    version = int(live.body["version"])
    section = json.loads(json.dumps(live.body["document"].get(DRILLS, {})))
    edit(section)
    reply = api.call("PUT", f"/v1/config/sections/{DRILLS}",
                     {"value": section, "message": message}, if_match=version)
    return int(reply.body["version"]["version"])


def cmd_plans_store(args: argparse.Namespace) -> int:
    raw = read_plan_file(args.plan)
    plan = parse_plan(raw, str(args.plan))
    version = _edit_section(_client(args),
                            lambda s: s.setdefault("plans", {}).__setitem__(plan.name, raw),
                            f"drill plan {plan.name} stored")
    print(f"plan {plan.name} stored: version {version}")
    return 0


def cmd_plans_list(args: argparse.Namespace) -> int:
    section = _client(args).get("/v1/config")["document"].get(DRILLS, {})
    for name, raw in sorted((section.get("plans") or {}).items()):
        print(f"plan {name}: {raw['fault']['type']} of {raw['target']['region']} "
              f"in {raw['zone']}")
    for name, raw in sorted((section.get("schedule") or {}).items()):
        weekly = "; ".join(f"{','.join(w['days'])}@{w['at']}" for w in raw["weekly"])
        print(f"schedule {name}: plan {raw['plan']} {weekly} UTC"
              + (f", blocked {', '.join(raw['blocked_dates'])}" if raw.get("blocked_dates")
                 else ""))
    return 0


def cmd_schedule(args: argparse.Namespace) -> int:
    if args.remove:
        def remove(section: dict[str, Any]) -> None:
            if args.name not in (section.get("schedule") or {}):
                raise ConfigError(f"no schedule {args.name!r}", "command line", "name")
            del section["schedule"][args.name]

        version = _edit_section(_client(args), remove, f"drill schedule {args.name} removed")
        print(f"schedule {args.name} removed: version {version}")
        return 0
    if not args.plan or not args.weekly:
        raise ConfigError("a schedule needs --plan and at least one --weekly DAYS@HH:MM",
                          "command line", "--weekly")
    weekly = []
    for text in args.weekly:
        days, _, at = text.partition("@")
        weekly.append({"days": [d.strip().lower() for d in days.split(",") if d.strip()],
                       "at": at})
    entry = {"plan": args.plan, "weekly": weekly, "blocked_dates": args.blocked_date,
             "window": args.window}
    parse_scheduled(args.name, entry, "command line", "schedule")
    version = _edit_section(
        _client(args), lambda s: s.setdefault("schedule", {}).__setitem__(args.name, entry),
        f"drill schedule {args.name} set")
    print(f"schedule {args.name}: plan {args.plan} {', '.join(args.weekly)} UTC: "
          f"version {version} (run by the control-plane process)")
    return 0


def cmd_restore_override(args: argparse.Namespace) -> int:
    from gtm.drill.faults import restore_lab_override

    restore_lab_override(json.loads(args.override))
    return 0
