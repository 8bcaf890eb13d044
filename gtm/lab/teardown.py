"""`gtm lab down`: remove a lab, whether its `gtm lab up` still runs or was killed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from gtm.lab import network
from gtm.lab.state import CONTROL_SOCKET, STATE_FILE, Lab, LabProcess
from gtm.lab.system import LabError, is_root, netns_inode, signal_all, wait_gone

SUPERVISOR_GRACE = 20.0  # it stops its children and removes the network itself


def take_down(state_dir: Path, prefix: str) -> list[str]:
    """What was done, line by line; a LabError when something could not be removed."""
    lab = Lab.load_or_none(state_dir)
    done: list[str] = []
    if lab is not None:
        prefix = lab.prefix
        if belongs(lab.supervisor):
            signal_all([lab.supervisor.id], SUPERVISOR_GRACE)
            wait_gone([lab.supervisor.id], 5.0)
            done.append(f"stopped `gtm lab up` (PID {lab.supervisor.pid})")
    recorded = [p.id for p in lab.processes if belongs(p)] if lab else []
    if recorded:
        done.append("stopping processes it left: " + ", ".join(str(p.pid) for p in recorded))
    if lab is not None and lab.mode == "loopback":
        signal_all(recorded, 2.0)
        left = [] if wait_gone(recorded, 5.0) else ["processes " + ", ".join(
            str(p.pid) for p in recorded if p.alive())]
    elif is_root():
        left = network.teardown(prefix, recorded)
    else:
        raise LabError("removing a namespaced lab needs root")
    for name in (STATE_FILE, CONTROL_SOCKET):
        (state_dir / name).unlink(missing_ok=True)
    for name in ("control", "configs"):
        shutil.rmtree(state_dir / name, ignore_errors=True)
    if left:
        raise LabError("could not remove: " + "; ".join(left))
    done.append(f"lab {prefix} is down: no namespace, link, nft table or process of it "
                "is left")
    return done


def belongs(process: LabProcess) -> bool:
    """Still the process the lab started: alive with the kernel start time recorded
    (not another that reused the PID), and inside the namespace it was started in."""
    if not process.id.alive():
        return False
    if process.namespace is None:
        return True
    expected = netns_inode(process.namespace)
    if expected is None:  # its namespace is gone already: the start time decides
        return True
    try:
        return os.stat(f"/proc/{process.pid}/ns/net").st_ino == expected
    except OSError:
        return False
