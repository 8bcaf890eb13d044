"""``gtm certs list``: what a certificate directory holds, and how long each pair lasts."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gtm.errors import CertificateError
from regional_lb.tls.certs import CertInfo, find_pairs, load_pair


def inventory(directory: Path, now: dt.datetime | None = None
              ) -> tuple[list[CertInfo], dict[str, str]]:
    """Every pair in the directory (expired ones too), and the broken ones with why."""
    now = now or dt.datetime.now(dt.UTC)
    found: list[CertInfo] = []
    broken: dict[str, str] = {}
    for name, files in find_pairs(directory).items():
        try:
            found.append(load_pair(files, now, allow_expired=True))
        except CertificateError as exc:
            broken[name] = str(exc)
    return found, broken


def status(info: CertInfo, now: dt.datetime, warn_days: float) -> str:
    left = info.days_left(now)
    if left <= 0:
        return "EXPIRED"
    return "WARN" if left <= warn_days else "ok"


def render_table(found: Iterable[CertInfo], broken: dict[str, str], now: dt.datetime,
                 warn_days: float) -> str:
    rows = [("NAME", "KEY", "NOT AFTER (UTC)", "DAYS", "STATUS", "ISSUER", "NAMES")]
    for info in sorted(found, key=lambda i: i.name):
        rows.append((info.name, info.key_type, f"{info.not_after:%Y-%m-%d %H:%M}",
                     f"{info.days_left(now):.1f}", status(info, now, warn_days),
                     _short(info.issuer), ",".join(info.names)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
             + "  " + row[-1] for row in rows]
    lines += [f"BROKEN {name}: {why}" for name, why in sorted(broken.items())]
    return "\n".join(lines)


def render_json(found: Iterable[CertInfo], broken: dict[str, str], now: dt.datetime,
                warn_days: float) -> str:
    items: list[dict[str, Any]] = [{
        "name": info.name, "names": list(info.names), "issuer": info.issuer,
        "subject": info.subject, "not_before": info.not_before.isoformat(),
        "not_after": info.not_after.isoformat(), "days_left": round(info.days_left(now), 2),
        "key_type": info.key_type, "status": status(info, now, warn_days),
    } for info in sorted(found, key=lambda i: i.name)]
    return json.dumps({"certificates": items, "broken": broken}, indent=2)


def _short(issuer: str) -> str:
    """The issuer's CN when it has one: the full DN rarely fits a table."""
    for part in issuer.split(","):
        if part.startswith("CN="):
            return part[3:]
    return issuer
