"""`gtm scale status|history|set|pause|resume`: auto-scaling over the control API."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any
from urllib.parse import quote, urlencode

from gtm.errors import ConfigError

SPARK = " ▁▂▃▄▅▆▇█"


def add_commands(commands: Any, client_options: Any) -> None:
    scale = commands.add_parser("scale", help="auto-scaling of the regions' pools")
    sub = scale.add_subparsers(dest="scale_command", required=True)
    status = client_options(sub.add_parser(
        "status", help="per pool: backends, desired, metric vs target, last actions, forecast"))
    status.add_argument("--region", help="one region only")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)
    history = client_options(sub.add_parser("history", help="scaling events, newest first"))
    history.add_argument("--region")
    history.add_argument("--limit", type=int, default=50)
    history.add_argument("--json", action="store_true")
    history.set_defaults(handler=cmd_history)
    bounds = client_options(sub.add_parser("set", help="operator min/max of a pool"))
    bounds.add_argument("pool")
    bounds.add_argument("--region", help="needed when several regions have the pool")
    bounds.add_argument("--min", type=int)
    bounds.add_argument("--max", type=int)
    bounds.set_defaults(handler=cmd_set)
    for verb in ("pause", "resume"):
        parser = client_options(sub.add_parser(verb, help=f"{verb} a pool's scaling"))
        parser.add_argument("pool")
        parser.add_argument("--region")
        parser.set_defaults(handler=lambda args, v=verb: cmd_toggle(args, v))


def _client(args: argparse.Namespace) -> Any:
    from gtm.control import cli as control_cli

    return control_cli.client(args)


def cmd_status(args: argparse.Namespace) -> int:
    query = f"?{urlencode({'region': args.region})}" if args.region else ""
    regions = _client(args).get(f"/v1/scale{query}")["regions"]
    if args.json:
        print(json.dumps(regions, indent=1))
        return 0
    if not regions:
        print("no region reports auto-scaling (no pool has [lb.pools.autoscale], or no "
              "balancer runs)")
        return 1
    for name, status in sorted(regions.items()):
        print("\n".join(render_status(name, status)))
    return 0


def render_status(region: str, status: dict[str, Any], now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    age = now - float(status.get("at", now))
    lines = [f"region {region}: leader {status.get('leader')} (token {status.get('token')}, "
             f"{age:.0f} s ago)"]
    for pool, info in sorted(status.get("pools", {}).items()):
        value = info.get("value")
        shown = "no data" if value is None else f"{value:.3g}"
        target = info.get("target")
        lines.append(
            f"  pool {pool}: {info['current']} backends ({info.get('warm', 0)} warm), desired "
            f"{info['desired']}, min {info['min']} max {info['max']}"
            f"{', AT MAX' if info.get('at_max') else ''}{', PAUSED' if info['paused'] else ''}")
        lines.append(f"    {info['metric']} {shown}"
                     + (f" vs target {target:g}" if target is not None else "")
                     + f": {info.get('reason') or '-'}")
        if info.get("draining"):
            lines.append(f"    draining: {', '.join(info['draining'])}")
        for action in info.get("last_actions", [])[:5]:
            when = time.strftime("%H:%M:%S", time.localtime(action.get("at", 0)))
            what = {k: v for k, v in action.items()
                    if k in ("from", "to", "added", "removed", "backends", "error")}
            lines.append(f"    {when} {action['type']} {json.dumps(what)}")
        lines += _forecast_lines(info)
    return lines


def _forecast_lines(info: dict[str, Any]) -> list[str]:
    forecast = info.get("forecast")
    if not forecast:
        return []
    points, actual = forecast.get("points") or [], info.get("load") or []
    lines = [f"    forecast ({forecast['mode']}, buffer {forecast['buffer']:g} s): "
             f"{forecast.get('backends')} backends wanted"]
    if points or actual:
        top = max([v for _, v in points] + [v for _, v in actual] + [1e-9])
        lines.append(f"    actual   {_spark([v for _, v in actual][-60:], top)}  (last hour)")
        lines.append(f"    forecast {_spark([v for _, v in points][:60], top)}  (next hour,"
                     f" peak {max([v for _, v in points], default=0):.3g})")
    return lines


def _spark(values: list[float], top: float) -> str:
    return "".join(SPARK[min(len(SPARK) - 1, round(v / top * (len(SPARK) - 1)))]
                   for v in values) or "-"


def cmd_history(args: argparse.Namespace) -> int:
    params = {"limit": str(args.limit), **({"region": args.region} if args.region else {})}
    events = _client(args).get(f"/v1/scale/history?{urlencode(params)}")["events"]
    if args.json:
        print(json.dumps(events, indent=1))
        return 0
    for event in events:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.get("at", 0)))
        rest = {k: v for k, v in event.items()
                if k not in ("at", "region", "pool", "type", "id", "leader")}
        print(f"{when} {event.get('region')}/{event.get('pool')} {event['type']} "
              f"{json.dumps(rest)}")
    return 0


def _region_of(args: argparse.Namespace, client: Any) -> str:
    if args.region:
        return str(args.region)
    regions = [name for name, status in client.get("/v1/scale")["regions"].items()
               if args.pool in status.get("pools", {})]
    if len(regions) != 1:
        raise ConfigError(f"pool {args.pool!r} is in {len(regions)} regions' status: name "
                          "one", "command line", "--region")
    return regions[0]


def cmd_set(args: argparse.Namespace) -> int:
    if args.min is None and args.max is None:
        raise ConfigError("give --min and/or --max", "command line", "--min")
    client = _client(args)
    region = _region_of(args, client)
    body = {k: v for k, v in (("min", args.min), ("max", args.max)) if v is not None}
    reply = client.call("PUT", f"/v1/scale/{quote(region, safe='')}/"
                        f"{quote(args.pool, safe='')}", body)
    print(json.dumps(reply.body["settings"]))
    return 0


def cmd_toggle(args: argparse.Namespace, verb: str) -> int:
    client = _client(args)
    region = _region_of(args, client)
    reply = client.call("POST", f"/v1/scale/{quote(region, safe='')}/"
                        f"{quote(args.pool, safe='')}/{verb}")
    print(json.dumps(reply.body["settings"]))
    return 0
