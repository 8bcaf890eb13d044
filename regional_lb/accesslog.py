"""The access log: off, one text line, or one JSON object per request (logger gtm.lb.access)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from gtm import log


def make_access_log(kind: str) -> Callable[[Any, float], None] | None:
    if kind == "off":
        return None
    return _json_line if kind == "json" else _text_line


def _fields(client: Any, seconds: float) -> dict[str, Any]:
    request = client.request
    backend = client.backend
    return {
        "client": client.client_ip.decode(),
        "method": request.method.decode() if request else "",
        "target": request.target.decode("latin-1") if request else "",
        "status": client.status,
        "ms": round(seconds * 1000, 3),
        "pool": client.pool.name if client.pool else "",
        "backend": backend.key if backend else "",
        "listener": client.listener_name,
    }


def _text_line(client: Any, seconds: float) -> None:
    f = _fields(client, seconds)
    log.lb_access.info('%s "%s %s" %s %.3fms %s %s', f["client"], f["method"], f["target"],
                       f["status"], f["ms"], f["pool"], f["backend"] or "-")


def _json_line(client: Any, seconds: float) -> None:
    log.lb_access.info(json.dumps(_fields(client, seconds), separators=(",", ":")))
