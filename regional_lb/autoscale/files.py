"""Where a balancer keeps its scaling files: the SQLite scale store of a balancer with no
other, and the process actuator's pid files."""

from __future__ import annotations

from pathlib import Path

from regional_lb.config import LbConfig


def state_dir(config: LbConfig) -> Path:
    """``[lb.autoscale] state_dir``; else the config file's directory; else (a table that
    is no file and names none) the working directory, as for its other relative paths.
    A followed balancer and `gtm up` give their region file's directory
    (regional_lb.autoscale.start.with_scale_store)."""
    if config.autoscale.state_dir is not None:
        return config.autoscale.state_dir
    source = Path(config.source)
    return source.parent.resolve() if source.is_file() else Path.cwd()
