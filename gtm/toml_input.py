"""Reading TOML files: the one place their errors become a ConfigError naming the file."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from gtm.errors import ConfigError


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; every failure a ConfigError naming the file. The one
    reader of TOML files (settings, steering definitions, balancer configs)."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", str(path)) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"not valid TOML: {exc}", str(path)) from exc
