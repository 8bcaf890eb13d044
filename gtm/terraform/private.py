"""A resource's private state: bytes Terraform keeps beside its state, never shows, and
hands back on the next call about it (read, plan, apply).

``tf`` does not pass them on, so gtm.terraform.provider's servicer does: each call runs
in one thread, which gets the bytes Terraform sent (:func:`incoming`) and may set the
bytes to keep (:func:`keep`). gtm_steered_name keeps there what its simulated answers
were computed from, so a plan and the plan Terraform makes again during the apply
compute the same answers (see gtm.terraform.steering).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass
class Exchange:
    incoming: bytes
    outgoing: bytes | None = None


_local = threading.local()


@contextmanager
def exchange(incoming: bytes) -> Iterator[Exchange]:
    """One call's private state: what came in, and what to send back (None: the same)."""
    current = Exchange(incoming)
    _local.current = current
    try:
        yield current
    finally:
        _local.current = None


def incoming() -> dict[str, Any]:
    current: Exchange | None = getattr(_local, "current", None)
    if current is None or not current.incoming:
        return {}
    try:
        value = json.loads(current.incoming)
    except ValueError:
        return {}  # another provider version's bytes: as if there were none
    return value if isinstance(value, dict) else {}


def keep(value: dict[str, Any]) -> None:
    current: Exchange | None = getattr(_local, "current", None)
    if current is not None:
        current.outgoing = json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
