"""The last-known-good snapshot on local disk: what a node serves when nothing answers.

Written atomically (temporary file, fsync, rename, fsync of the directory), so
a crash at any moment leaves either the old snapshot or the new one, never half
of one. Sealed: the file carries the SHA-256 of its content (format, version,
document), so a snapshot edited by hand or damaged on disk is refused rather than
served as if it were that version. A snapshot that cannot be read or fails its seal
is set aside (``.bad``) rather than deleted, for whoever investigates, and the node
takes its configuration from the store instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gtm import log
from gtm.atomic import write_atomic
from gtm.config.document import canonical_json

SNAPSHOT_FILE = "snapshot.json"
FORMAT = 2  # 1 was unsealed: refused, as anyone could have written it
SEAL = "sha256"


@dataclass(frozen=True)
class Snapshot:
    version: int
    document: dict[str, Any]


def snapshot_path(state_dir: Path) -> Path:
    return state_dir / SNAPSHOT_FILE


def write_snapshot(state_dir: Path, version: int, document: dict[str, Any]) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    content = {"format": FORMAT, "version": version, "document": document}
    text = canonical_json({**content, SEAL: _seal(content)})
    write_atomic(snapshot_path(state_dir), text)


def read_snapshot(state_dir: Path) -> Snapshot | None:
    path = snapshot_path(state_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"unknown or unsealed snapshot format {data.get('format')!r}")
        seal = data.pop(SEAL, None)
        if seal != _seal(data):
            raise ValueError("its content does not match its seal: edited or damaged "
                             "since this node wrote it")
        return Snapshot(int(data["version"]), dict(data["document"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.follower.error("REFUSING the snapshot %s: %s. Set aside as %s; this node takes "
                           "its configuration from the store instead", path, exc,
                           path.with_suffix(".bad").name)
        with contextlib.suppress(OSError):
            os.replace(path, path.with_suffix(".bad"))
        return None


def _seal(content: dict[str, Any]) -> str:
    """The SHA-256 of a snapshot's content in its one canonical text."""
    return hashlib.sha256(canonical_json(content).encode()).hexdigest()

