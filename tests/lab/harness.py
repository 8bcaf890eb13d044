"""What the lab's tests share (tests/lab, tests/drill): whether this machine can build a
lab, starting `gtm lab up` and waiting for it, and `gtm lab down`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gtm.lab.state import STATE_FILE
from tests.integration.servers import gtm_command, wait_until

TOOLS_PACKAGES = {"ip": "iproute2", "nft": "nftables", "dig": "bind9-dnsutils",
                  "curl": "curl"}


def lab_requirements(tools: tuple[str, ...]) -> str | None:
    """Why this machine cannot build a lab (None: it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        packages = " ".join(TOOLS_PACKAGES[tool] for tool in tools)
        return f"missing {', '.join(missing)}: apt-get install {packages}"
    return None


def wait(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Until ``condition()`` is truthy (its value), at most ``timeout`` seconds."""
    return wait_until(lambda: condition() or None, timeout, what)


def lab_ready(state_dir: Path) -> bool:
    try:
        return bool(json.loads((state_dir / STATE_FILE).read_text())["ready"])
    except (OSError, ValueError, KeyError):
        return False


def lab_down(prefix: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(gtm_command("lab", "down", "--prefix", prefix, "--state-dir",
                                      str(state_dir)), capture_output=True, text=True,
                          timeout=60, check=False)


@contextmanager
def lab_up(prefix: str, state_dir: Path, output: Path,
           timeout: float) -> Iterator[subprocess.Popen[bytes]]:
    """`gtm lab up` until it is ready; then stopped (SIGTERM, else killed by PID) and
    `gtm lab down`, whatever happened meanwhile."""
    with output.open("wb") as log:
        up = subprocess.Popen(gtm_command("lab", "up", "--prefix", prefix, "--state-dir",
                                          str(state_dir)), stdout=log,
                              stderr=subprocess.STDOUT)
        try:
            wait(lambda: lab_ready(state_dir) or up.poll() is not None, timeout,
                 "the lab to be ready")
            assert up.poll() is None, output.read_text()
            yield up
        finally:
            if up.poll() is None:
                up.terminate()
                try:
                    up.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    up.kill()
                    up.wait()
            lab_down(prefix, state_dir)
