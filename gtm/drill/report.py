"""A drill's report: the milestones computed from observations (pure), and the report
as text, JSON and a self-contained HTML page.

The chart is inline SVG written here: the page opens anywhere with no script, no
network and no plotting library to install on the machine that runs drills (a
control-plane host), and a test can read it as text.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MILESTONES = ("fault_injected", "first_moved", "all_moved", "clients_ok_again", "restored",
              "all_returned")
LABELS = {
    "fault_injected": "fault injected", "first_moved": "first moved answer",
    "all_moved": "all vantage points moved", "clients_ok_again": "clients succeeding again",
    "restored": "restore", "all_returned": "all returned",
}
Obs = Mapping[str, Any]


def baseline_regions(observations: Sequence[Obs], before: float) -> dict[str, str | None]:
    """Each vantage point's usual region before the fault (its most common answer)."""
    counts: dict[str, Counter[str]] = {}
    for o in observations:
        counts.setdefault(o["vantage"], Counter())
        if o["t"] < before and o["region"]:
            counts[o["vantage"]][o["region"]] += 1
    return {v: (c.most_common(1)[0][0] if c else None) for v, c in counts.items()}


def milestones(observations: Sequence[Obs], target: str, injected: float | None,
               restored: float | None) -> dict[str, Any]:
    """The timeline: absolute times (None: did not happen) and, per vantage point that
    the target served, when it moved and came back."""
    out: dict[str, Any] = dict.fromkeys(MILESTONES)
    out["fault_injected"], out["restored"] = injected, restored
    if injected is None:
        return {**out, "affected": [], "per_vantage": {}}
    baseline = baseline_regions(observations, injected)
    affected = sorted(v for v, region in baseline.items() if region == target)
    end = restored if restored is not None else float("inf")
    per: dict[str, dict[str, float | None]] = {}
    for vantage in affected:
        mine = [o for o in observations if o["vantage"] == vantage]
        during = [o for o in mine if injected <= o["t"] < end]
        moved = next((o["t"] for o in during if o["region"] and o["region"] != target), None)
        failures = [o["t"] for o in during if not o["ok"]]
        ok_again = None
        if failures:
            ok_again = next((o["t"] for o in during if o["ok"] and o["t"] > failures[-1]),
                            None)
        returned = None
        if restored is not None:
            returned = next((o["t"] for o in mine if o["t"] >= restored
                             and o["region"] == target), None)
        per[vantage] = {"moved": moved, "ok_again": ok_again, "returned": returned,
                        "failures": len(failures)}
    moved_times = [p["moved"] for p in per.values()]
    if any(t is not None for t in moved_times):
        out["first_moved"] = min(t for t in moved_times if t is not None)
    if moved_times and all(t is not None for t in moved_times):
        out["all_moved"] = max(t for t in moved_times if t is not None)
    failing = [p for p in per.values() if p["failures"]]
    if failing and all(p["ok_again"] is not None for p in failing):
        out["clients_ok_again"] = max(p["ok_again"] for p in failing
                                      if p["ok_again"] is not None)
    returned = [p["returned"] for p in per.values()]
    if returned and all(t is not None for t in returned):
        out["all_returned"] = max(t for t in returned if t is not None)
    return {**out, "affected": affected, "per_vantage": per}


def summarise(observations: Sequence[Obs]) -> dict[str, Any]:
    """Per vantage point: requests, error rate, latency p50/p95, TTLs seen, regions."""
    result: dict[str, Any] = {}
    for vantage in sorted({o["vantage"] for o in observations}):
        mine = [o for o in observations if o["vantage"] == vantage]
        latencies = sorted(o["latency_ms"] for o in mine if o["ok"] and o["latency_ms"])
        ttls = [o["ttl"] for o in mine if o["ttl"] is not None]
        result[vantage] = {
            "requests": len(mine),
            "errors": sum(1 for o in mine if not o["ok"]),
            "error_rate": round(sum(1 for o in mine if not o["ok"]) / len(mine), 4),
            "p50_ms": percentile(latencies, 0.5), "p95_ms": percentile(latencies, 0.95),
            "ttl_max": max(ttls) if ttls else None, "ttl_min": min(ttls) if ttls else None,
            "regions": dict(Counter(o["region"] or "-" for o in mine)),
        }
    return result


def percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(share * len(values)))], 3)


def region_runs(observations: Iterable[Obs]) -> list[tuple[float, float, str, bool]]:
    """Consecutive observations of one vantage point merged: (from, to, region, ok)."""
    runs: list[tuple[float, float, str, bool]] = []
    for o in observations:
        region, ok = o["region"] or "-", bool(o["ok"])
        if runs and runs[-1][2] == region and runs[-1][3] == ok:
            runs[-1] = (runs[-1][0], o["t"], region, ok)
        else:
            runs.append((o["t"], o["t"], region, ok))
    return runs


def _offset(t: float | None, start: float) -> str:
    return "-" if t is None else f"+{t - start:.2f} s"


def render_text(report: Mapping[str, Any]) -> str:
    start = report["started_at"]
    times = report["milestones"]
    lines = [f"drill {report['id']} ({report['plan']['name']}): {report['outcome'].upper()}"
             + (f" — {report['reason']}" if report.get("reason") else ""),
             f"  fault: {report['fault']}; region {report['plan']['target']['region']} of "
             f"{report['plan']['zone']}",
             f"  ramp: {report['ramp'] or 'none'}",
             "  timeline:"]
    for key in MILESTONES:
        lines.append(f"    {LABELS[key]:<26} {_offset(times.get(key), start)}")
    for name, value in report.get("durations", {}).items():
        lines.append(f"  {name.replace('_', ' ')}: "
                     + ("-" if value is None else f"{value:.2f} s"))
    lines.append("  vantage points:")
    for vantage, stats in report["vantage"].items():
        regions = ", ".join(f"{r} {n}" for r, n in stats["regions"].items())
        lines.append(f"    {vantage:<8} requests {stats['requests']:>5}  errors "
                     f"{stats['error_rate'] * 100:5.1f}%  p50 {stats['p50_ms'] or '-'} ms  "
                     f"p95 {stats['p95_ms'] or '-'} ms  TTL {stats['ttl_min']}..{stats['ttl_max']}"
                     f"  regions: {regions}")
        for t0, t1, region, ok in report["runs"].get(vantage, []):
            lines.append(f"      {_offset(t0, start):>10} .. {_offset(t1, start):>10}  "
                         f"{region}{'' if ok else ' (failing)'}")
    for refusal in report.get("overridden", []):
        lines.append(f"  safety overridden (--force): {refusal}")
    return "\n".join(lines) + "\n"


COLOURS = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f")


def render_html(report: Mapping[str, Any]) -> str:
    """One page: the outcome, the timeline chart (SVG), the milestones and the stats."""
    e = html.escape
    rows = "".join(f"<tr><td>{e(LABELS[k])}</td><td>{e(_offset(report['milestones'].get(k), report['started_at']))}</td></tr>"  # noqa: E501
                   for k in MILESTONES)
    stats = "".join(
        f"<tr><td>{e(v)}</td><td>{s['requests']}</td><td>{s['error_rate'] * 100:.1f}%</td>"
        f"<td>{s['p50_ms'] or '-'}</td><td>{s['p95_ms'] or '-'}</td>"
        f"<td>{s['ttl_min']}..{s['ttl_max']}</td>"
        f"<td>{e(', '.join(f'{r} {n}' for r, n in s['regions'].items()))}</td></tr>"
        for v, s in report["vantage"].items())
    title = f"Drill {report['id']}: {report['plan']['name']}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
.outcome{{font-size:1.3em;font-weight:bold}}</style></head><body>
<h1>{e(title)}</h1>
<p class="outcome">{e(report['outcome'].upper())}{e(_reason(report))}</p>
<p>Fault: {e(report['fault'])}. Ramp: {e(str(report['ramp'] or 'none'))}.</p>
{timeline_svg(report)}
<h2>Timeline</h2><table><tr><th>milestone</th><th>after start</th></tr>{rows}</table>
<h2>Vantage points</h2><table><tr><th>vantage</th><th>requests</th><th>errors</th>
<th>p50 ms</th><th>p95 ms</th><th>TTL</th><th>regions</th></tr>{stats}</table>
</body></html>
"""


def _reason(report: Mapping[str, Any]) -> str:
    return f" — {report['reason']}" if report.get("reason") else ""


def timeline_svg(report: Mapping[str, Any]) -> str:
    """One lane per vantage point coloured by the region answering (hatched red where
    requests failed), vertical lines at the milestones."""
    e = html.escape
    start, end = report["started_at"], max(report["ended_at"], report["started_at"] + 0.1)
    lanes = list(report["runs"])
    regions = sorted({run[2] for runs in report["runs"].values() for run in runs})
    colour = {r: COLOURS[i % len(COLOURS)] for i, r in enumerate(regions)}
    left, width, lane = 90, 760, 26
    height = 40 + lane * len(lanes) + 40

    def x(t: float) -> float:
        return left + (t - start) / (end - start) * width

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" '
             f'height="{height}" role="img" aria-label="drill timeline">']
    for i, vantage in enumerate(lanes):
        y = 30 + i * lane
        parts.append(f'<text x="4" y="{y + 16}" font-size="12">{e(vantage)}</text>')
        for t0, t1, region, ok in report["runs"][vantage]:
            w = max(x(t1) - x(t0), 1.5)
            parts.append(f'<rect x="{x(t0):.1f}" y="{y}" width="{w:.1f}" height="20" '
                         f'fill="{colour[region]}"><title>{e(region)}</title></rect>')
            if not ok:
                parts.append(f'<rect x="{x(t0):.1f}" y="{y + 14}" width="{w:.1f}" '
                             'height="6" fill="#e15759"><title>failing</title></rect>')
    bottom = 30 + lane * len(lanes)
    for key in MILESTONES:
        t = report["milestones"].get(key)
        if t is None:
            continue
        parts.append(f'<line x1="{x(t):.1f}" y1="22" x2="{x(t):.1f}" y2="{bottom}" '
                     'stroke="#333" stroke-dasharray="3,2"/>')
        parts.append(f'<text x="{x(t):.1f}" y="16" font-size="9" text-anchor="middle">'
                     f'{e(LABELS[key])}</text>')
    for i, region in enumerate(regions):
        parts.append(f'<rect x="{left + i * 120}" y="{bottom + 12}" width="12" height="12" '
                     f'fill="{colour[region]}"/><text x="{left + i * 120 + 16}" '
                     f'y="{bottom + 22}" font-size="11">{e(region)}</text>')
    parts.append(f'<text x="{left + width}" y="{bottom + 22}" font-size="11" '
                 f'text-anchor="end">{end - start:.1f} s</text></svg>')
    return "\n".join(parts)
