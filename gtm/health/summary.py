"""How a node's health summary reads: `gtm health`, the HEALTH column of `gtm status`
and the health lines of `gtm explain`. Pure formatting, no I/O."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any


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
