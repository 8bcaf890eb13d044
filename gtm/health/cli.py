"""`gtm health`, the health options of `gtm serve` / `gtm up`, and the health lines of
`gtm status` and `gtm explain`."""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any

from gtm.errors import ConfigError
from gtm.health.service import HealthSettings


def add_probe_options(parser: argparse.ArgumentParser, serve: bool) -> None:
    group = parser.add_argument_group("health checking")
    if serve:
        group.add_argument("--probe", action="store_true",
                           help="probe the endpoints whose pools define a check")
    else:
        group.add_argument("--no-probe", action="store_true", help="do not probe endpoints")
    group.add_argument("--observer-id", help="this node's name on its observations "
                       "(default: host:pid)")
    group.add_argument("--quorum", type=int, default=1,
                       help="fresh observers that must agree on a state (1)")
    group.add_argument("--observation-expiry", type=float, default=6.0,
                       help="seconds an observation counts as fresh (6)")
    group.add_argument("--coalesce", type=float, default=0.5,
                       help="at most one answer rebuild per this many seconds (0.5)")
    group.add_argument("--doubt-ttl", type=int, default=5,
                       help="cap on steered TTLs while observers disagree; 0 to keep TTLs (5)")


def health_settings(args: argparse.Namespace, probe: bool) -> HealthSettings | None:
    if not probe:
        return None
    if args.quorum < 1:
        raise ConfigError("must be at least 1", "command line", "--quorum")
    if args.observation_expiry <= 0:
        raise ConfigError("must be above 0", "command line", "--observation-expiry")
    if args.coalesce < 0:
        raise ConfigError("must not be negative", "command line", "--coalesce")
    return HealthSettings(
        observer_id=args.observer_id or f"{os.uname().nodename}:{os.getpid()}",
        quorum=args.quorum, expiry=args.observation_expiry, coalesce=args.coalesce,
        doubt_ttl=args.doubt_ttl or None, redis_url=getattr(args, "redis", None),
        namespace=getattr(args, "namespace", "gtm"),
    )


def add_commands(commands: Any, client_options: Any) -> None:
    health = client_options(commands.add_parser(
        "health", help="endpoints: state, reason, last results and observers"))
    health.add_argument("--redis", metavar="URL",
                        help="read the nodes' health summaries from Redis instead of the API")
    health.add_argument("--namespace", default="gtm", help="Redis key prefix (gtm)")
    health.set_defaults(handler=cmd_health)


def summaries_from_api(args: argparse.Namespace) -> list[dict[str, Any]]:
    from gtm.control import cli as control_cli

    nodes = control_cli.client(args).get("/v1/nodes")["items"]
    return [n["info"]["health"] for n in nodes if (n.get("info") or {}).get("health")]


def summaries_from_redis(url: str, namespace: str) -> list[dict[str, Any]]:
    from gtm.health.bus import RedisBus

    async def read() -> list[dict[str, Any]]:
        bus = RedisBus(url, namespace, expiry=1.0)
        try:
            return await bus.summaries()
        finally:
            await bus.close()

    return asyncio.run(read())


def cmd_health(args: argparse.Namespace) -> int:
    summaries = (summaries_from_redis(args.redis, args.namespace) if args.redis
                 else summaries_from_api(args))
    if not summaries:
        print("no node reports health (is a node running with checks defined and probing?)")
        return 1
    for summary in sorted(summaries, key=lambda s: str(s.get("observer"))):
        print("\n".join(render_summary(summary)))
        print()
    return 0


def render_summary(summary: Mapping[str, Any]) -> list[str]:
    """A node's view: each endpoint and region as it is handed out, with the cause
    (admin, probe, region report), then the evidence (observations, backends)."""
    now = time.time()
    head = (f"node {summary['observer']}: quorum {summary['quorum']}, observations fresh for "
            f"{summary['expiry']:g} s, {'probing' if summary.get('probing') else 'listening'}")
    lines = [head]
    if summary.get("isolated"):
        lines.append("  ISOLATED: too few fresh observers for quorum; keeping the last agreed "
                     "state instead of acting on this node's view alone")
    served: Mapping[str, Any] = summary.get("served") or {}
    probed: Mapping[str, Any] = summary.get("endpoints", {})
    lines.append(f"  {'ENDPOINT':<34} {'STATE':<5} {'SINCE':>8}  WHY")
    for tid in _endpoint_ids(served, probed):
        lines.append(_endpoint_line(tid, served, probed.get(tid), now))
        if tid in probed:
            lines.extend(_observation_lines(probed[tid]))
    lines.extend(_region_lines(served, summary.get("regions", {}), now))
    return lines


def _endpoint_ids(served: Mapping[str, Any], probed: Mapping[str, Any]) -> list[str]:
    ids = {f"{zone.rstrip('.')}/{name}" for zone, view in served.items()
           for name in view.get("endpoints", {})}
    return sorted(ids | set(probed))


def _served_endpoint(served: Mapping[str, Any], tid: str) -> Mapping[str, Any] | None:
    zone, _, name = tid.rpartition("/")
    view: Mapping[str, Any] = served.get(f"{zone}.") or {}
    endpoint: Mapping[str, Any] | None = view.get("endpoints", {}).get(name)
    return endpoint


def _endpoint_line(tid: str, served: Mapping[str, Any], item: Mapping[str, Any] | None,
                   now: float) -> str:
    since = f"{now - item['since']:.0f} s" if item and item.get("since") else "-"
    flags = " (in doubt)" if item and item.get("doubt") else ""
    shown = _served_endpoint(served, tid)
    if shown is None:  # a node that does not say what it serves: the probes' view
        assert item is not None
        return f"  {tid:<34} {item['state']:<5} {since:>8}  {item['reason']}{flags}"
    why = _cause(shown)
    if item is not None and shown["cause"] != "probe":
        why += f"; probes: {item['state']}, {item['reason']}"
    return f"  {tid:<34} {shown['state']:<5} {since:>8}  {why}{flags}"


def _cause(view: Mapping[str, Any]) -> str:
    if view["cause"] == "none":
        return "nothing reported or set by hand"
    if view["cause"] == "region":
        return str(view["reason"])  # "region eu-west down (admin: drill)"
    return f"{view['cause']}: {view['reason']}" if view["reason"] else str(view["cause"])


def _region_lines(served: Mapping[str, Any], reported: Mapping[str, Any],
                  now: float) -> list[str]:
    """One line per region as served (with its cause), then its balancer's report."""
    lines: list[str] = []
    zones_of: dict[str, list[str]] = {}
    for zone, view in served.items():
        for region in view.get("regions", {}):
            zones_of.setdefault(region, []).append(zone)
    for region in sorted(set(zones_of) | set(reported)):
        fact = reported.get(region)
        report = ""
        if fact is not None:
            headroom = "-" if fact.get("headroom") is None else f"{fact['headroom']:.2f}"
            report = f"headroom {headroom} ({now - fact['time']:.1f} s ago)"
        for zone in zones_of.get(region, []):
            view = served[zone]["regions"][region]
            label = region if len(zones_of[region]) == 1 else f"{region} in {zone}"
            state = "up" if view["state"] == "up" else "DOWN"
            shown = report
            if fact is not None and view["cause"] != "region report":
                shown = f"{fact['detail']}, {report}"  # what the balancer says beside it
            lines.append(f"  region {label}: {state} ({_cause(view)})"
                         + (f", {shown}" if shown else ""))
        if region not in zones_of and fact is not None:  # reported, steered by no zone
            lines.append(f"  region {region}: {'up' if fact['healthy'] else 'DOWN'}, "
                         f"{fact['detail']}, {report}")
        for backend in (fact or {}).get("backends", []):
            admin = "" if backend.get("state") == "enabled" else f", admin {backend['state']}"
            panic = ", serving in panic" if backend.get("panic") else ""
            lines.append(f"      backend {backend['address']}: {backend['health']}{admin}"
                         f"{panic} ({backend['reason']})")
    return lines


def _observation_lines(item: Mapping[str, Any]) -> list[str]:
    lines = []
    for obs in item.get("observations", []):
        fresh = "" if obs.get("fresh") else " (stale)"
        lines.append(f"      seen by {obs['observer']}: {'up' if obs['ok'] else 'down'} "
                     f"{obs['age']:.1f} s ago{fresh}, {obs['reason']}, "
                     f"{obs['latency'] * 1000:.1f} ms")
    local = item.get("local")
    if local and local.get("last"):
        last = ", ".join(f"{'ok' if r['ok'] else 'fail'} {r['latency'] * 1000:.1f} ms"
                         for r in local["last"])
        lines.append(f"      last probes here ({item['check']} {item['address']}): {last}")
    return lines


def status_column(info: Mapping[str, Any]) -> str:
    """The HEALTH column of `gtm status`."""
    summary = info.get("health")
    if not summary:
        return "-"
    endpoints = summary.get("endpoints", {}).values()
    up = sum(1 for e in endpoints if e["state"] == "up")
    text = f"{up}/{len(endpoints)} up"
    return f"{text} ISOLATED" if summary.get("isolated") else text


def explain_lines(summary: Mapping[str, Any], zone: str, endpoints: list[str]) -> list[str]:
    """The health facts behind a decision: who saw what, when."""
    lines = [f"health facts (node {summary['observer']}, quorum {summary['quorum']}"
             + (", ISOLATED: holding last agreed state" if summary.get("isolated") else "")
             + "):"]
    items = summary.get("endpoints", {})
    for name in endpoints:
        item = items.get(f"{zone.rstrip('.')}/{name}")
        if item is None:
            lines.append(f"  {name}: not checked")
            continue
        doubt = " (in doubt)" if item.get("doubt") else ""
        lines.append(f"  {name}: {item['state']}{doubt}, {item['reason']}")
        lines.extend(line[2:] for line in _observation_lines(item))
    for region, fact in summary.get("regions", {}).items():
        lines.append(f"  region {region}: {fact['detail']}")
    return lines
