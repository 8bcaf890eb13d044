"""What `gtm up` says about drills: how to run the example plans against it, and the lab."""

from __future__ import annotations

import contextlib
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples" / "drills"


def up_hints(api_url: str, dns: str) -> list[str]:
    """Lines for `gtm up`'s log: the example drills with this process's API and DNS."""
    where = str(EXAMPLES) if EXAMPLES.is_dir() else "examples/drills"
    with contextlib.suppress(ValueError):  # elsewhere than the repository: the full path
        where = str(Path(where).relative_to(Path.cwd()))
    local = sorted(p.name for p in EXAMPLES.glob("eu-west-*.toml")) if EXAMPLES.is_dir() \
        else []
    return [
        f"drills: gtm drill run {where}/eu-west-force-down.toml --api {api_url} --dns {dns} "
        "--html drill.html"
        + (f" (also {', '.join(n for n in local if n != 'eu-west-force-down.toml')})"
           if len(local) > 1 else ""),
        f"drills in the network lab (root): gtm lab up, then gtm drill run "
        f"{where}/lab-cut-link.toml --lab",
    ]
