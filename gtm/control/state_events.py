"""What a new version changed of the hand-set steering state, as events (pure).

`gtm steer` writes the document's ``state`` section; the version's own event says that a
version was made, these say what an operator changed by hand: one event per region or
endpoint whose state differs, with the state before and after.
"""

from __future__ import annotations

from typing import Any

STATE = "state"
KINDS = (("regions", "steer.region", "region"), ("endpoints", "steer.endpoint", "endpoint"))

Change = tuple[str, str, dict[str, Any]]  # type, subject, detail


def state_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    before, after = _table(old.get(STATE)), _table(new.get(STATE))
    out: list[Change] = []
    for zone in sorted(set(before) | set(after)):
        old_zone, new_zone = _table(before.get(zone)), _table(after.get(zone))
        for key, kind, noun in KINDS:
            was, now = _table(old_zone.get(key)), _table(new_zone.get(key))
            for name in sorted(set(was) | set(now)):
                if was.get(name) != now.get(name):
                    out.append((kind, f"{noun} {zone.rstrip('.')}/{name}",
                                {"zone": zone, noun: name, "before": was.get(name),
                                 "after": now.get(name)}))
    return out


def _table(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
