"""`python -m gtm.drill.restore OVERRIDE`: undo one lab override of a drill.

The control plane runs this as a child when a ``lab`` override expires, is recovered or
aborted (it does not import the lab's code: gtm.control sits below gtm.lab). It imports
the lab's client only, so it starts in a fraction of the time the whole `gtm` command
takes: restores run while clients are failing. `gtm drill restore-override` is the same.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from gtm.errors import GtmError
from gtm.lab.faults import restore_override


def restore_lab_override(override: dict[str, Any]) -> str:
    """Undo a ``lab`` override as the control plane recorded it; what was done."""
    try:
        return restore_override(override["lab"], override["fault"], override["args"])
    except (KeyError, TypeError, ValueError) as exc:
        raise GtmError(f"not a lab override: {exc}") from None


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m gtm.drill.restore OVERRIDE_JSON", file=sys.stderr)
        return 2
    try:
        print(restore_lab_override(json.loads(argv[0])))
    except (GtmError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
