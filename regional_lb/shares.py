"""What each worker of a supervised balancer tells the others: its in-flight counts.

Worker 0 serves the admin API; a drain is done when every worker has applied it and
has nothing in flight to that backend. Each worker writes a small JSON file
(``<config>.workers/worker-<i>.json``) a few times a second; worker 0 reads them all.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from gtm.atomic import SHARED, write_atomic
from regional_lb.snapshot import Snapshot

INTERVAL = 0.1


def share_dir(config_path: Path) -> Path:
    return config_path.with_name(config_path.name + ".workers")


def write_share(directory: Path, index: int, snapshot: Snapshot) -> None:
    backends = snapshot.backends()
    data = {
        "time": time.time(),
        "in_flight": {key: b.active for key, b in backends.items()},
        "state": {key: b.admin for key, b in backends.items()},
    }
    directory.mkdir(exist_ok=True)
    path = directory / f"worker-{index}.json"
    write_atomic(path, json.dumps(data), SHARED, durable=False)  # rewritten every tick


def read_shares(directory: Path, workers: int) -> list[dict[str, Any] | None]:
    """Each worker's latest share, or None where there is none (yet)."""
    shares: list[dict[str, Any] | None] = []
    for index in range(workers):
        try:
            shares.append(json.loads((directory / f"worker-{index}.json").read_text()))
        except (OSError, ValueError):
            shares.append(None)
    return shares


def drained(shares: list[dict[str, Any] | None], key: str, since: float) -> tuple[bool, int]:
    """(every worker has applied the drain after `since` and has 0 in flight, total)."""
    done, total = True, 0
    for share in shares:
        if share is None or share["time"] < since or share["state"].get(key) != "drain":
            done = False
            continue
        count = int(share["in_flight"].get(key, 0))
        total += count
        done = done and count == 0
    return done, total
