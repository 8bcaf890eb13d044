"""What changed between two documents, as a list of JSON-path changes.

Zones are master-file text; a change to one is shown as a unified diff of its
lines, which is how an operator reads zone changes. Everything else is compared
structurally, down to the leaves.
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from gtm.config.document import ZONES, zone_path

Change = dict[str, Any]


def diff_documents(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    changes = _zone_changes(old.get(ZONES, {}), new.get(ZONES, {}))
    for key in sorted((set(old) | set(new)) - {ZONES}):
        changes.extend(_value_changes(key, old.get(key, _MISSING), new.get(key, _MISSING)))
    return changes


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()


def _zone_changes(old: Any, new: Any) -> list[Change]:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return _value_changes(ZONES, old, new)
    changes: list[Change] = []
    for name in sorted(set(old) | set(new)):
        path = zone_path(name)
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            changes.append({"op": "add", "path": path, "text_diff": _lines("", after)})
        elif after is None:
            changes.append({"op": "remove", "path": path, "text_diff": _lines(before, "")})
        else:
            changes.append({"op": "change", "path": path, "text_diff": _lines(before, after)})
    return changes


def _lines(before: Any, after: Any) -> list[str]:
    lines = difflib.unified_diff(
        str(before).splitlines(), str(after).splitlines(), "before", "after", lineterm="", n=1
    )
    return list(lines)[2:]  # the ---/+++ header says nothing the path does not


def _value_changes(path: str, old: Any, new: Any) -> list[Change]:
    if old == new and type(old) is type(new):
        return []
    if old is _MISSING:
        return [{"op": "add", "path": path, "new": new}]
    if new is _MISSING:
        return [{"op": "remove", "path": path, "old": old}]
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[Change] = []
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if key.isidentifier() else f"{path}[{json.dumps(key)}]"
            out.extend(_value_changes(sub, old.get(key, _MISSING), new.get(key, _MISSING)))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            out.extend(_value_changes(f"{path}[{index}]", a, b))
        return out
    return [{"op": "change", "path": path, "old": old, "new": new}]


def render(changes: list[Change]) -> str:
    """A diff for people: one block per changed path."""
    if not changes:
        return "no changes\n"
    out: list[str] = []
    for change in changes:
        out.append(f"{change['op']:6} {change['path']}")
        for line in change.get("text_diff", ()):
            out.append(f"         {line}")
        if "old" in change:
            out.append(f"         - {json.dumps(change['old'], sort_keys=True)}")
        if "new" in change:
            out.append(f"         + {json.dumps(change['new'], sort_keys=True)}")
    return "\n".join(out) + "\n"
