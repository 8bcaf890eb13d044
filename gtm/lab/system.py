"""The lab's hands on the system: `ip`, `nft`, processes, network namespaces.

Everything here acts inside namespaces whose name starts with the lab's prefix (or on
processes whose identity was recorded when the lab started them), never on the host's
own network. Commands run with an argument list, never through a shell.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from gtm.errors import GtmError

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000


class LabError(GtmError):
    """A lab step failed: the command, and what it said."""


class Unsupported(LabError):
    """Asked of a lab that cannot do it (the loopback lab has no network to cut)."""


def is_root() -> bool:
    return os.geteuid() == 0


def missing_tools(names: Iterable[str]) -> list[str]:
    return [name for name in names if shutil.which(name) is None]


def run(argv: Sequence[str], check: bool = True, stdin: str | None = None) -> str:
    """Run a command; its stdout, or a LabError naming it with its stderr."""
    result = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                            timeout=30, check=False)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({result.returncode}): "
                       f"{result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def ip(namespace: str | None, *args: str, check: bool = True) -> str:
    return run(["ip", *(("-n", namespace) if namespace else ()), *args], check=check)


def in_netns(namespace: str | None, argv: Sequence[str]) -> list[str]:
    """``argv`` run inside ``namespace`` (as is on the host when None). `ip netns exec`
    execs the command, so the process started keeps the PID the caller sees."""
    return ["ip", "netns", "exec", namespace, *argv] if namespace else list(argv)


def nft(namespace: str, script: str, check: bool = True) -> str:
    return run(in_netns(namespace, ["nft", "-f", "-"]), check=check, stdin=script)


def namespaces_with_prefix(prefix: str) -> list[str]:
    names = []
    for line in run(["ip", "netns", "list"], check=False).splitlines():
        name = line.split(" ", 1)[0]
        if name.startswith(prefix):
            names.append(name)
    return sorted(names)


def netns_inode(namespace: str) -> int | None:
    try:
        return (NETNS_DIR / namespace).stat().st_ino
    except OSError:
        return None


def pids_in_netns(namespace: str) -> list[int]:
    out = run(["ip", "netns", "pids", namespace], check=False)
    return [int(word) for word in out.split() if word.isdigit()]


@dataclass(frozen=True)
class ProcessId:
    """A process as the lab recorded it: its PID and the start time the kernel gave
    it, so a PID reused by another process after ours ended is never signalled."""

    pid: int
    start: int

    @classmethod
    def of(cls, pid: int) -> ProcessId | None:
        start = start_time(pid)
        return None if start is None else cls(pid, start)

    def alive(self) -> bool:
        return start_time(self.pid) == self.start and not _is_zombie(self.pid)


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (after the command name, which may hold spaces)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


def signal_all(processes: Iterable[ProcessId], grace: float) -> None:
    """SIGTERM to each still ours, SIGKILL to those alive after ``grace`` seconds."""
    targets = [p for p in processes if p.alive()]
    for process in targets:
        with suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(p.alive() for p in targets):
        time.sleep(0.05)
    for process in targets:
        if process.alive():
            with suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


def wait_gone(processes: Iterable[ProcessId], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    pending = list(processes)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if p.alive()]
        if pending:
            time.sleep(0.05)
    return not pending


_libc = ctypes.CDLL(None, use_errno=True)


def setns(namespace_file: str) -> None:
    """Move the calling thread into a network namespace (Python 3.11 has no os.setns)."""
    fd = os.open(namespace_file, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise LabError(f"setns({namespace_file}) failed: {os.strerror(errno)}")
    finally:
        os.close(fd)
